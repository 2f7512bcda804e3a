"""`vggt-export merge`: base + adapter as one VGGT state dict; `vggt-export from-seed`: the seed
fork's checkpoint as a peft adapter folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..cli_common import BaseSeed, BaseWeights, ModelSize, fail, setup_logging

console = Console(stderr=True)
app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output")]


@app.command("merge")
def merge(
    checkpoint: Annotated[Path, typer.Argument(help="Adapter dir, or run dir (its newest adapter)")],
    out: Annotated[Path, typer.Option(help="Output .safetensors file")],
    dtype: Annotated[str, typer.Option(help="fp32 or bf16")] = "fp32",
    weights: BaseWeights = None,
    model_size: ModelSize = None,
    seed: BaseSeed = None,
    force: Force = False,
) -> None:
    """Fold the adapter into the base: a plain state dict in the published VGGT key layout."""
    from ..base_model import resolve_base
    from ..checkpoints import newest_adapter
    from .merge import export_merged

    setup_logging(console)
    try:
        adapter = newest_adapter(checkpoint)
        base = resolve_base([adapter], model_size, weights, seed)
        path = export_merged(adapter, base, out, dtype, force)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise fail(console, exc) from None
    console.print(f"merged model: {path}", soft_wrap=True)


@app.command("from-seed")
def from_seed(
    checkpoint: Annotated[Path, typer.Argument(help="The seed fork's checkpoint_N.pt")],
    out: Annotated[Path, typer.Option(help="Adapter folder to write")],
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (not stored in the checkpoint)")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="The seed's training YAML: alpha (and a rank check) from its lora: section"),
    ] = None,
    model_size: Annotated[
        str | None, typer.Option(help="1b or tiny [default: read from the tensors]")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Base to check the checkpoint's base weights against (and record)")
    ] = None,
    allow_base_mismatch: Annotated[
        bool, typer.Option("--allow-base-mismatch", help="Convert even if the trained-on base differs")
    ] = False,
    force: Force = False,
) -> None:
    """Convert a seed-fork checkpoint ({"model": PeftModel state dict, ...}) into a peft adapter."""
    from .from_seed import convert_seed_checkpoint

    setup_logging(console)
    try:
        path = convert_seed_checkpoint(
            checkpoint, out, alpha=alpha, seed_config=config, model_size=model_size, weights=weights,
            allow_base_mismatch=allow_base_mismatch, force=force,
        )  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise fail(console, exc) from None
    console.print(f"adapter: {path}", soft_wrap=True)


def main() -> None:
    app(prog_name="vggt-export")


if __name__ == "__main__":
    main()
