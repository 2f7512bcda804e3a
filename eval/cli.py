"""`vggt-eval`: evaluate the baseline and every checkpoint; `vggt-eval compare` runs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from .windows import DEFAULT_MAX_GAP, DEFAULT_MIN_BASELINE_M

console = Console(stderr=True)
app = typer.Typer(add_completion=False, help=__doc__)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )


@app.command("evaluate")
def evaluate(
    ckpt_dir: Annotated[Path, typer.Argument(help="Run dir, folder of adapters, or one adapter")],
    shards: Annotated[Path, typer.Option(help="Prepared output root")],
    weights: Annotated[
        str | None, typer.Option(help="Base weights: local path or HF id [default: the run's model.weights]")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random-init base seed [default: the run's run.seed, else 0]")
    ] = None,
    model_size: Annotated[
        str | None, typer.Option(help="1b or tiny [default: the run's model.size, else 1b]")
    ] = None,
    split: Annotated[str, typer.Option(help="train | val | all")] = "val",
    sequences: Annotated[
        str | None,
        typer.Option(
            help="Only these sequences, comma-separated: full names or KITTI-360 drive numbers "
            "(a held-out drive: with --split all)"
        ),
    ] = None,
    seq_len: Annotated[int, typer.Option(help="Frames per window")] = 8,
    seq_stride: Annotated[int, typer.Option(help="Frames between window starts")] = 8,
    max_seqs: Annotated[int | None, typer.Option(help="Evaluate at most N sequences")] = None,
    max_gap: Annotated[
        int,
        typer.Option(help="A window never spans a jump of more than this many frames in the frame numbers"),
    ] = DEFAULT_MAX_GAP,
    min_baseline: Annotated[
        float, typer.Option(help="Windows whose GT camera path is shorter (metres) skip pose metrics")
    ] = DEFAULT_MIN_BASELINE_M,
    align: Annotated[
        str, typer.Option(help="Depth alignment: window | window_median | frame_median | scale_shift | none")
    ] = "window",
    out: Annotated[Path | None, typer.Option(help="Output folder (default CKPT_DIR/eval)")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:0 ...")] = "auto",
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast for the aggregator (CUDA)")] = False,
    geometry: Annotated[bool, typer.Option(help="Normals and facade planarity (slower)")] = True,
    pointmap: Annotated[
        str,
        typer.Option(
            help="Score the point head's geometry (pointmap/...): auto (when a run adapts the "
            "point head) | on | off"
        ),
    ] = "auto",
    composite: Annotated[str | None, typer.Option(help="JSON of composite weights per metric")] = None,
    top_k: Annotated[int, typer.Option(help="Keep-list: top k per headline metric")] = 1,
    adjust: Annotated[
        str, typer.Option(help="Multiple-comparison adjustment over the report's tests: holm | bh")
    ] = "holm",
) -> None:
    """Evaluate (resumably) and write windows.parquet, metrics, plots and report.md."""
    from .pipeline import run_evaluation
    from .settings import EvalSettings

    _setup_logging()
    try:
        settings = EvalSettings(
            ckpt_dir=ckpt_dir, shards=shards, weights=weights, seed=seed, model_size=model_size, split=split,
            sequences=_sequence_list(sequences), seq_len=seq_len, seq_stride=seq_stride, max_seqs=max_seqs,
            max_gap=max_gap, min_baseline_m=min_baseline, align=align, out=out or Path(ckpt_dir) / "eval",
            device=device, bf16=bf16, geometry=geometry, pointmap=_switch(pointmap, "--pointmap"),
            composite=_composite(composite), top_k=top_k, adjust=adjust,
        )  # fmt: skip
        report = run_evaluation(settings)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    console.print(f"report: {report}")


def _switch(text: str, option: str) -> bool | None:
    """auto | on | off -> None | True | False."""
    choices = {"auto": None, "on": True, "off": False}
    if text not in choices:
        raise ValueError(f"{option}: need auto, on or off, got {text!r}")
    return choices[text]


def _sequence_list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def _composite(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--composite: not valid JSON ({exc})") from None


@app.command("compare")
def compare(
    eval_dirs: Annotated[list[Path], typer.Argument(help="Two or more EVAL_DIRs")],
    out: Annotated[Path, typer.Option(help="Output folder")],
    adjust: Annotated[
        str, typer.Option(help="Multiple-comparison adjustment over all tests: holm | bh")
    ] = "holm",
) -> None:
    """Side-by-side table and overlaid curves of several evaluated runs."""
    from .compare import compare_runs

    _setup_logging()
    if len(eval_dirs) < 2:
        console.print("[bold red]error:[/] compare needs at least two EVAL_DIRs")
        raise typer.Exit(code=2)
    try:
        comparison = compare_runs(eval_dirs, out, adjust)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    console.print(f"comparison: {comparison}")


def main() -> None:
    """`vggt-eval CKPT_DIR ...` evaluates; `vggt-eval compare A B ...` compares."""
    argv = sys.argv[1:]
    if argv and argv[0] not in ("evaluate", "compare", "--help", "-h"):
        argv = ["evaluate", *argv]
    app(args=argv, prog_name="vggt-eval")


if __name__ == "__main__":
    main()
