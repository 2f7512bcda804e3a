"""What the model-using command lines share: the base-model options (defaults from the run, as
in `vggt-eval`), logging to the console, and how an error is reported."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

BaseWeights = Annotated[
    str | None,
    typer.Option("--weights", help="Base weights: local path or HF id [default: the run's model.weights]"),
]
ModelSize = Annotated[
    str | None, typer.Option("--model-size", help="1b or tiny [default: the run's model.size, else 1b]")
]
BaseSeed = Annotated[
    int | None, typer.Option("--seed", help="Random-init base seed [default: the run's run.seed]")
]


def setup_logging(console: Console) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )


def fail(console: Console, message: object) -> typer.Exit:
    """Print `message` as an error (unwrapped, so paths stay whole) and give exit code 2."""
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code=2)
