"""`vggt-infer`: depth maps, confidence, COLMAP cameras and a fused point cloud from a folder of
images (or shard sequences), with the base model or a fine-tuned adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..cli_common import BaseSeed, BaseWeights, ModelSize, fail, setup_logging

console = Console(stderr=True)
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def infer(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(help="Run dir (its newest adapter) or adapter dir; none = base model alone"),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder (refused if it exists, unless --force)")] = ...,
    images: Annotated[Path | None, typer.Option(help="Folder of images, used in file-name order")] = None,
    shards: Annotated[Path | None, typer.Option(help="Prepared shard root (instead of --images)")] = None,
    split: Annotated[str, typer.Option(help="With --shards: train | val | all")] = "val",
    sequences: Annotated[
        list[str] | None,
        typer.Option(help="With --shards: sequence names (repeat or comma-separate) [default: all]"),
    ] = None,
    weights: BaseWeights = None,
    model_size: ModelSize = None,
    seed: BaseSeed = None,
    seq_len: Annotated[int, typer.Option(help="Frames per window")] = 8,
    stride: Annotated[
        int | None, typer.Option(help="Frames between window starts [default: seq-len minus a quarter]")
    ] = None,
    conf_threshold: Annotated[
        float, typer.Option(help="Confidence quantile below which pixels leave points.ply / points3D")
    ] = 0.5,
    resize: Annotated[str, typer.Option(help="crop (width 518) or pad (518x518, any aspect)")] = "crop",
    intrinsics: Annotated[
        str | None,
        typer.Option(help="Known intrinsics fx,fy,cx,cy (input pixels, OpenCV centres) instead of predicted"),
    ] = None,
    colmap_points: Annotated[int, typer.Option(help="At most this many points in points3D.txt")] = 50_000,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:0 ...")] = "auto",
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast for the aggregator (CUDA)")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing vggt-infer output")] = False,
) -> None:
    """Run VGGT (+ adapter) on images and write depth, confidence, cameras and points."""
    from .inputs import InputError
    from .run import InferSettings, run_inference

    setup_logging(console)
    names = [n.strip() for item in sequences or [] for n in item.split(",") if n.strip()]
    try:
        known = None if intrinsics is None else tuple(float(v) for v in intrinsics.split(","))
    except ValueError:
        raise fail(console, f"--intrinsics takes four numbers fx,fy,cx,cy, got {intrinsics!r}") from None
    settings = InferSettings(
        checkpoint=checkpoint, out=out, images=images, shards=shards, split=split, sequences=names,
        weights=weights, model_size=model_size, seed=seed, seq_len=seq_len, stride=stride,
        conf_threshold=conf_threshold, resize=resize, intrinsics=known, colmap_points=colmap_points,
        device=device, bf16=bf16, force=force,
    )  # fmt: skip
    try:
        clouds = run_inference(settings)
    except (InputError, FileNotFoundError, ValueError) as exc:
        raise fail(console, exc) from None
    for cloud in clouds:
        console.print(f"point cloud: {cloud}", soft_wrap=True)


def main() -> None:
    app(prog_name="vggt-infer")


if __name__ == "__main__":
    main()
