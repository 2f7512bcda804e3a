"""Benchmark `vggt-infer`: frames per second end to end (decode, resize, model, chaining, writing
depth/confidence/COLMAP/PLY) against the bare model forward on the same windows, measured in
the same run, so the ratio shows what the tool adds around the model.

CPU (always): the tiny model on synthetic KITTI-360 frames (1408x376 -> 518x140).
GPU (when CUDA is available): VGGT-1B (random weights) in bf16 at 8-frame windows: frames/s and
peak memory. Random weights predict no usable field of view, so the synthetic camera's known
intrinsics are passed (as `--intrinsics` does); everything else runs as in a real call.
Usage: python scripts/bench_infer.py [--frames 16] [--seq-len 8] [--stride 6] [--images DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from eval.inference.grid import to_model_input
from eval.inference.inputs import folder_frames
from eval.inference.run import InferSettings, run_inference
from eval.inference.windows import plan_windows
from eval.predict import Predictor

KNOWN_INTRINSICS = (552.554261, 552.554261, 682.049453, 238.769549)  # KITTI-360 (and synthetic) P_rect_00


def synthetic_frames(work: Path, frames: int) -> Path:
    from preprocess.synthetic import generate_synthetic_kitti360

    scene = generate_synthetic_kitti360(work / "scene", frames=frames, seed=0, sequences=1)
    return scene.root / "data_2d_raw" / scene.sequences[0] / "image_00" / "data_rect"


def bare_forward(images: Path, size: str, device: str, bf16: bool, seq_len: int, stride: int) -> float:
    """Frames/s of the model alone over the same windows (inputs decoded and resized beforehand)."""
    frames = folder_frames(images)
    inputs = [to_model_input(f.read(), "crop")[0] for f in frames]
    predictor = Predictor(size, None, device, bf16)
    windows = plan_windows(len(frames), seq_len, stride)
    predictor.outputs(torch.stack([inputs[i] for i in windows[0]]))  # warm-up
    start, count = time.perf_counter(), 0
    for window in windows:
        predictor.outputs(torch.stack([inputs[i] for i in window]))
        count += len(window)
    return count / (time.perf_counter() - start)


def tool(images: Path, out: Path, size: str, device: str, bf16: bool, seq_len: int, stride: int) -> dict:
    settings = InferSettings(
        checkpoint=None, out=out, images=images, model_size=size, seq_len=seq_len, stride=stride,
        device=device, bf16=bf16, force=True, intrinsics=KNOWN_INTRINSICS,
    )  # fmt: skip
    run_inference(settings)
    return json.loads((out / "meta.json").read_text())["timing"]


def row(table: Table, label: str, images: Path, out: Path, size: str, device: str, bf16: bool, args) -> None:
    tool(images, out, size, device, bf16, args.seq_len, args.stride)  # warm-up (allocator, kernels)
    timing = tool(images, out, size, device, bf16, args.seq_len, args.stride)
    bare = bare_forward(images, size, device, bf16, args.seq_len, args.stride)
    peak = timing["peak_gpu_mem_gb"]
    table.add_row(
        label,
        str(timing["frames"]),
        f"{bare:.2f}",
        f"{timing['model_frames_per_s']:.2f}",
        f"{timing['frames_per_s']:.2f}",
        f"{timing['frames_per_s'] / bare:.2f}",
        f"{timing['write_s']:.2f}",
        "-" if peak is None else f"{peak:.2f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=16, help="synthetic frames (without --images)")
    parser.add_argument(
        "--images", type=Path, default=None, help="an image folder instead of synthetic frames"
    )
    parser.add_argument("--seq-len", type=int, default=8)
    parser.add_argument("--stride", type=int, default=6)
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep outputs here instead of a temporary folder"
    )
    args = parser.parse_args()
    console = Console(width=160)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_infer_"))
    try:
        images = args.images or synthetic_frames(work, args.frames)
        table = Table(
            title=f"vggt-infer, windows of {args.seq_len} every {args.stride} frames "
            f"({torch.get_num_threads()} CPU threads)"
        )
        for column in (
            "model / device", "frames", "bare model frames/s", "in-tool model frames/s",
            "end-to-end frames/s", "end-to-end / bare", "writing s", "peak GPU GB",
        ):  # fmt: skip
            table.add_column(column, justify="right")
        row(table, "tiny, cpu", images, work / "out_tiny", "tiny", "cpu", False, args)
        if torch.cuda.is_available():
            row(table, "1b bf16, cuda", images, work / "out_1b", "1b", "cuda", True, args)
        console.print(table)
        if not torch.cuda.is_available():
            console.print("VGGT-1B bf16 on GPU: not measured (no CUDA device on this machine)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
