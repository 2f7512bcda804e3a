"""`kitti360-prep`: synthetic scene, KITTI-360 and COLMAP builds, and dataset statistics."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from .errors import InputError
from .lifetime import BuildLocked

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# wide enough for the stats table when output goes to a file or CI log
console = Console(width=None if sys.stdout.isatty() else 160)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to create (KITTI-360/ and ground_truth/ inside)")],
    frames: Annotated[int, typer.Option(help="Frames per sequence")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    sequences: Annotated[int, typer.Option(help="Number of sequences")] = 2,
    static_spacing: Annotated[
        float, typer.Option(help="Static-cloud sample spacing in metres (0: no static clouds)")
    ] = 0.2,
) -> None:
    """Write the synthetic KITTI-360 scene with exact ground-truth depth."""
    from .synthetic import generate_synthetic_kitti360

    _setup_logging(False)
    spacing = static_spacing if static_spacing > 0 else None
    data = generate_synthetic_kitti360(
        out, frames=frames, seed=seed, sequences=sequences, static_spacing=spacing
    )
    console.print(f"synthetic KITTI-360 root: [bold]{data.root}[/]  ground truth: {data.gt_root}")


@app.command()
def build(
    root: Annotated[Path, typer.Option(help="KITTI-360 root (holds calibration/, data_2d_raw/, ...)")],
    out: Annotated[Path, typer.Option(help="Output root for shards/, index/, manifest.json")],
    seqs: Annotated[str, typer.Option(help="'all', short ids '0000,0002' or full names")] = "all",
    split: Annotated[str, typer.Option(help="train | val | all")] = "all",
    accumulate: Annotated[int, typer.Option(help="Accumulate +-N neighbouring sweeps")] = 4,
    width: Annotated[str, typer.Option(help="Stored width (multiple of 14) or 'native'")] = "518",
    building_labels: Annotated[str, typer.Option(help="Label ids counted as building")] = "11",
    chunk_frames: Annotated[int, typer.Option(help="Frames per unit (resume granularity)")] = 128,
    static_clouds: Annotated[
        bool | None,
        typer.Option(
            "--static-clouds/--no-static-clouds",
            help="Merge the fused static clouds (data_3d_semantics/train/<seq>/static) into the depth; "
            "default: for every sequence that has them",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel worker processes")] = 1,
    force: Annotated[bool, typer.Option("--force", help="Rebuild finished units")] = False,
    skip_bad_sequences: Annotated[
        bool,
        typer.Option(
            "--skip-bad-sequences",
            help="Skip a sequence that cannot be read (reason in the manifest) instead of stopping",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Project KITTI-360 LiDAR (+-N sweeps) and static clouds into depth, masks and points; write shards."""
    from .driver import build as run_build
    from .sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source

    _setup_logging(verbose)
    try:
        labels = tuple(int(v) for v in building_labels.split(","))
        config = Kitti360Config(
            depth=DepthSettings(accumulate=accumulate),
            width=_stored_width(width),
            building_labels=labels,
            chunk_frames=chunk_frames,
            static_clouds=static_clouds,
        )
        source = Kitti360Source(root, config, seqs, split, skip_bad_sequences)
        summary = run_build(source, out, workers=workers, force=force)
    except (InputError, ValueError, BuildLocked) as exc:
        _fail(exc)
    entries = summary["sequences"].values()
    bad = sum("error" in entry for entry in entries)
    dropped = sum(n for e in entries for counts in e.get("dropped", {}).values() for n in counts.values())
    console.print(
        f"wrote {summary['frames_written']} frames ({len(summary['skipped'])} frames and {bad} "
        f"sequences skipped, {dropped} non-finite points dropped, reasons in {summary['manifest']}) to {out}"
    )


@app.command()
def colmap(
    model: Annotated[Path, typer.Option(help="COLMAP model folder (cameras/images/points3D .txt or .bin)")],
    images: Annotated[Path, typer.Option(help="Image folder; the model's image names are relative to it")],
    name: Annotated[str, typer.Option(help="Scene name (the index's sequence)")],
    out: Annotated[Path, typer.Option(help="Output root for shards/, index/, manifest.json")],
    masks: Annotated[
        Path | None, typer.Option(help="ETH3D occlusion masks (PNG: 0 visible, 1/2 dropped)")
    ] = None,
    depth: Annotated[
        Path | None, typer.Option(help="Dense GT depth: raw float32 (ETH3D) or 16-bit PNG; replaces points")
    ] = None,
    depth_scale: Annotated[float, typer.Option(help="16-bit depth PNG units per metre (1000: mm)")] = 1000.0,
    building_masks: Annotated[
        Path | None, typer.Option(help="Building masks (PNG, non-zero = building)")
    ] = None,
    width: Annotated[str, typer.Option(help="Stored width (multiple of 14) or 'native'")] = "518",
    split: Annotated[str, typer.Option(help="train | val | test")] = "train",
    chunk_frames: Annotated[int, typer.Option(help="Frames per unit (resume granularity)")] = 128,
    force: Annotated[bool, typer.Option("--force", help="Rebuild finished units")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Project a COLMAP / ETH3D scene (sparse points or dense GT depth) into shards."""
    from .driver import build as run_build
    from .sources.colmap import ColmapConfig, ColmapScene, ColmapSource

    _setup_logging(verbose)
    try:
        scene = ColmapScene(name, model, images, masks, depth, building_masks)
        config = ColmapConfig(
            width=_stored_width(width), depth_scale=depth_scale, split=split, chunk_frames=chunk_frames
        )
        summary = run_build(ColmapSource(scene, config), out, force=force)
    except (InputError, ValueError, BuildLocked) as exc:
        _fail(exc)
    key = f"{ColmapSource.dataset}/{name}"
    unregistered = summary["sequences"][key]["unregistered"]
    console.print(
        f"wrote {summary['frames_written']} frames of {key} ({len(summary['skipped'])} skipped, "
        f"{len(unregistered)} unregistered, reasons in {summary['manifest']}) to {out}"
    )


@app.command()
def stats(
    out: Annotated[Path, typer.Argument(help="Output root of a build")],
    plots: Annotated[Path | None, typer.Option(help="Write PNG plots to this folder")] = None,
    min_valid_points: Annotated[int, typer.Option(help="Threshold for 'too sparse' frames")] = 2000,
) -> None:
    """Coverage, valid points, building ratio and strata per split/sequence."""
    from shards import ShardError, ShardStore

    from .data_summary import (
        building_coverage_by_stratum,
        building_ratio_histogram,
        sparse_sequences,
        summarize,
    )

    try:
        store = ShardStore(out)
        store.check()
    except (FileNotFoundError, ShardError) as exc:
        _fail(exc)
    index = store.index
    if index.empty:
        _fail(ValueError(f"{out} holds no finished frames (no index rows)"))
    summary = summarize(index, min_valid_points)
    table = Table(title=f"{len(index)} frames in {out}")
    for column in ("split", "sequence", "stratum", "frames", "coverage % p10/50/90", "valid px p10/50/90",
                   f"< {min_valid_points} px", "building px w/ depth", "building ratio"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("split", "sequence", "stratum") else "right")
    for _, r in summary.iterrows():
        table.add_row(
            r["split"], f"{r['dataset']}/{r['sequence']}", r["stratum"], str(r["frames"]),
            "/".join(f"{100 * r[f'coverage_p{q}']:.1f}" for q in (10, 50, 90)),
            "/".join(f"{r[f'points_p{q}']:.0f}" for q in (10, 50, 90)),
            str(r["below_min_points"]), _count(r["building_points"]), _fmt(r["building_ratio_mean"]),
        )  # fmt: skip
    console.print(table)
    coverage = building_coverage_by_stratum(index)
    if not coverage.empty:
        cov_table = Table(title="building pixels with depth, mean per frame")
        for column in ("stratum", "depth source", "frames", "building %", "top third %"):
            cov_table.add_column(column, justify="left" if column in ("stratum", "depth source") else "right")
        for _, r in coverage.iterrows():
            cov_table.add_row(
                r["stratum"],
                r["depth_source"],
                str(r["frames"]),
                f"{100 * r['building']:.1f}",
                _pct(r["top_third"]),
            )
        console.print(cov_table)
    hist = building_ratio_histogram(index)
    if not hist.empty:
        console.print("building-ratio histogram (frames per bin):")
        console.print(hist.to_string())
    sparse = sparse_sequences(index, min_valid_points)
    for _, row in sparse.iterrows():
        console.print(
            f"[bold yellow]warning:[/] {row['dataset']}/{row['sequence']}: {row['share_below']:.0%} of "
            f"{row['frames']} frames have < {min_valid_points} valid depth pixels "
            f"(median {row['median_points']:.0f}); too sparse to supervise depth"
        )
    if plots is not None:
        from .summary_plots import write_all

        for path in write_all(store, plots):
            console.print(f"plot: {path}")


@app.command()
def verify(out: Annotated[Path, typer.Argument(help="Output root of a build")]) -> None:
    """Read every chunk (checksums verified) and check every index row against its unit and the
    manifest; exits 1 naming each problem."""
    from .verify import verify_output

    if not out.is_dir():
        _fail(FileNotFoundError(f"output root {out} does not exist"))
    problems, units, frames = verify_output(out)
    for problem in problems:
        console.print(f"[bold red]problem:[/] {escape(problem)}", soft_wrap=True)
    if problems:
        console.print(f"{len(problems)} problems in {out}")
        raise typer.Exit(code=1)
    console.print(f"{out}: {units} units, {frames} frames, every chunk read and matching the index")


def _stored_width(width: str) -> int | None:
    """--width: a number, or 'native' (None) to keep the source's size."""
    if width == "native":
        return None
    try:
        return int(width)
    except ValueError:
        raise ValueError(f"--width must be 'native' or a positive multiple of 14, got {width!r}") from None


def _pct(value: float) -> str:
    return "-" if pd.isna(value) else f"{100 * value:.1f}"


def _count(value: object) -> str:
    """A summed count, '-' when unknown (null for every frame)."""
    return "-" if pd.isna(value) else f"{int(value):,}"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.3g}"
    return str(value)


if __name__ == "__main__":
    app()
