"""`vggt-train`: LoRA fine-tuning of VGGT on prepared shards (one process or torchrun DDP)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from .config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


@app.callback()
def _main() -> None:
    """LoRA fine-tuning of VGGT."""


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def run(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option(help="YAML config, e.g. configs/train/strategy_b.yaml")],
    shards: Annotated[Path | None, typer.Option(help="Prepared output root (overrides data.shards)")] = None,
    weights: Annotated[str | None, typer.Option(help="Base weights: local path or HF id")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<name>)")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint that loads")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard checkpoints and logs of an earlier run in --out")
    ] = False,
) -> None:
    """Train; extra arguments are `section.key=value` config overrides."""
    from .distributed import setup, teardown
    from .resume import NoLoadableCheckpoint
    from .trainer import Trainer, TrainingDiverged

    overrides = list(ctx.args)
    if shards is not None:
        overrides.append(f"data.shards={shards}")
    if weights is not None:
        overrides.append(f"model.weights={weights}")
    try:
        cfg = load_config(config, overrides)
        if cfg.data.shards is None:
            raise ConfigError("data.shards: no shard root given (use --shards OUT)")
        if not (Path(cfg.data.shards) / "index").is_dir():
            raise ConfigError(f"data.shards: {cfg.data.shards} has no index/ folder; run kitti360-prep build")
    except ConfigError as exc:
        console.print(f"[bold red]config error:[/] {exc}")
        raise typer.Exit(code=2) from None
    info = setup(cfg.run.device)
    logging.basicConfig(
        level=logging.INFO if info.is_main else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    run_dir = Path(out or Path("runs") / cfg.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg, run_dir, info, resume=resume, overwrite=overwrite)
        trainer.run()
    except ConfigError as exc:
        console.print(f"[bold red]config error:[/] {exc}")
        raise typer.Exit(code=2) from None
    except NoLoadableCheckpoint as exc:
        console.print(f"[bold red]cannot resume:[/] {exc}")
        raise typer.Exit(code=1) from None
    except TrainingDiverged as exc:
        console.print(f"[bold red]training stopped:[/] {exc}")
        raise typer.Exit(code=1) from None
    finally:
        teardown()
    if info.is_main:
        console.print(f"run directory: {run_dir} (checkpoints/, metrics.jsonl, tensorboard/)")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
