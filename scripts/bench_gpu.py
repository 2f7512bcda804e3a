"""GPU figures of VGGT-1B for `make bench-gpu`: forward and training-step time and memory, and
whether the loader keeps up.

  * forward, bf16 aggregator, random weights: seconds and peak GB at 1, 8 and 20 frames of
    518x140 and 518x518;
  * one training step of strategy_a and strategy_b (8-frame windows x batch 4 from shards of
    the synthetic scene, 518x140) with activation checkpointing off and on: seconds, frames/s,
    peak GB; plus strategy_b with every head run, to show what leaving out heads without a
    loss weight saves;
  * the loader's frames/s (DataLoader workers as configured, and 2) beside what the step needs.

`--tiny` runs the same on CPU with the tiny random-weight model (float32), a check that the
script works; it measures nothing about GPUs.
Usage: python scripts/bench_gpu.py [--tiny] [--shards OUT] [--json FILE] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from preprocess.driver import build
from preprocess.sources.kitti360 import Kitti360Source
from preprocess.synthetic import generate_synthetic_kitti360
from train.config import load_config
from train.data import WindowDataset, step_sampler
from train.distributed import DistInfo
from train.model import build_base_model
from train.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"
SIZES = ((140, 518), (518, 518))  # height, width


def measure(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float | None]:
    """Median seconds of `repeats` calls after a warm-up call, and peak GB on CUDA."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def forward_rows(size: str, device: torch.device, frames_list: list[int], repeats: int) -> list[dict]:
    model = build_base_model(size=size, bf16=device.type == "cuda").to(device).eval()
    rows = []
    for height, width in SIZES:
        for frames in frames_list:
            images = torch.rand(1, frames, 3, height, width, device=device)

            def forward(images=images, model=model) -> object:
                with torch.inference_mode():
                    return model(images)

            seconds, peak = _guarded(lambda forward=forward: measure(forward, repeats, device))
            rows.append({"size": f"{width}x{height}", "frames": frames, "seconds": seconds, "peak_gb": peak})
    del model
    _free(device)
    return rows


def _guarded(fn: Callable[[], tuple[float, float | None]]) -> tuple[float | None, float | None]:
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        return None, None


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


OVERRIDES: list[str] = []  # --set key=value, applied to every config


def _config(name: str, shards: Path, tiny: bool, batch: int, frames: int, *extra: str):
    overrides = [
        f"data.shards={shards}", "model.weights=null", f"data.batch_size={batch}", f"data.seq_len={frames}",
        "data.crop_height=null", "data.crop_width=null", "run.steps=1000000", "run.log_every=1000000",
        *extra, *OVERRIDES,
    ]  # fmt: skip
    if tiny:
        overrides += ["model.size=tiny", "optim.precision=fp32", "run.device=cpu"]
        if name == "strategy_b":  # blocks 16-23 of 24 -> 2-3 of the tiny model's 4
            overrides += ["lora.frame_blocks=2-3", "lora.global_blocks=2-3"]
    return load_config(CONFIGS / f"{name}.yaml", overrides)


def step_rows(shards: Path, work: Path, tiny: bool, batch: int, frames: int, repeats: int) -> list[dict]:
    device = torch.device("cpu" if tiny else "cuda")
    info = DistInfo(0, 1, 0, device)
    rows = []
    cases = [(n, c, False) for n in ("strategy_a", "strategy_b") for c in (False, True)]
    cases.append(("strategy_b", True, True))
    for name, checkpointing, all_heads in cases:
        cfg = _config(name, shards, tiny, batch, frames, f"model.activation_checkpointing={checkpointing}",
                      "data.num_workers=0")  # fmt: skip
        trainer = Trainer(cfg, work / f"{name}_{checkpointing}_{all_heads}", info, overwrite=True)
        if all_heads:
            trainer.heads = ("camera", "depth", "point")
        batch_data = next(iter(trainer.loader))

        def step(trainer=trainer, batch_data=batch_data) -> None:  # what Trainer.run does per step
            trainer._micro_step(batch_data, 0.5)
            trainer._apply_gradients()

        seconds, peak = _guarded(lambda step=step: measure(step, repeats, device))
        window_frames = batch_data["images"].shape[0] * batch_data["images"].shape[1]
        rows.append({
            "config": name, "activation_checkpointing": checkpointing, "heads": ",".join(trainer.heads),
            "seconds": seconds, "frames_per_s": None if seconds is None else window_frames / seconds,
            "peak_gb": peak, "precision": cfg.optim.precision,
        })  # fmt: skip
        del trainer, step
        _free(device)
    return rows


def loader_fps(
    shards: Path, name: str, tiny: bool, batch: int, frames: int, workers: int, windows: int
) -> float:
    cfg = _config(name, shards, tiny, batch, frames)
    dataset = WindowDataset(str(shards), cfg.data, seed=0, total_samples=windows, augment=cfg.augment)
    loader = DataLoader(dataset, batch_sampler=step_sampler(dataset, windows // batch, batch, 0, 1),
                        num_workers=workers, prefetch_factor=4 if workers else None)  # fmt: skip
    start = time.perf_counter()
    seen = sum(b["images"].shape[0] * b["images"].shape[1] for b in loader)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random model on CPU (a check of the script)"
    )
    parser.add_argument(
        "--shards", type=Path, default=None, help="prepared shards (default: synthetic scene)"
    )
    parser.add_argument("--scene-frames", type=int, default=40, help="frames per synthetic sequence")
    parser.add_argument(
        "--frames", type=int, nargs="+", default=[1, 8, 20], help="forward: frames per window"
    )
    parser.add_argument("--window", type=int, default=8, help="training step: frames per window")
    parser.add_argument("--batch", type=int, default=4, help="training step: windows per batch")
    parser.add_argument("--loader-windows", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    OVERRIDES.extend(args.set)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device; use --tiny for a CPU check of the script")
    device = torch.device("cpu" if args.tiny else "cuda")
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    shards = args.shards
    if shards is None:
        scene = generate_synthetic_kitti360(work / "synthetic", frames=args.scene_frames)
        shards = work / "shards"
        build(Kitti360Source(scene.root), shards, progress=False)
    where = "CPU, tiny random model, float32" if args.tiny else f"{torch.cuda.get_device_name()}, VGGT-1B"
    stamp = datetime.date.today().isoformat()
    results: dict = {"date": stamp, "device": where, "torch": torch.__version__}

    results["forward"] = forward_rows("tiny" if args.tiny else "1b", device, args.frames, args.repeats)
    table = Table(title=f"forward ({where}; aggregator bf16 on GPU), random weights, {stamp}")
    for column in ("size", "frames", "seconds", "frames/s", "peak GB"):
        table.add_column(column, justify="right")
    for r in results["forward"]:
        fps = "-" if r["seconds"] is None else f"{r['frames'] / r['seconds']:.1f}"
        seconds = "out of memory" if r["seconds"] is None else f"{r['seconds']:.3f}"
        table.add_row(r["size"], str(r["frames"]), seconds, fps, gb(r["peak_gb"]))
    console.print(table)

    results["step"] = step_rows(shards, work, args.tiny, args.batch, args.window, args.repeats)
    table = Table(title=f"training step, {args.window} frames x batch {args.batch}, 518x140 ({where})")
    for column in (
        "config",
        "act. checkpointing",
        "heads run",
        "precision",
        "s / step",
        "frames/s",
        "peak GB",
    ):
        table.add_column(column, justify="right")
    for r in results["step"]:
        seconds = "out of memory" if r["seconds"] is None else f"{r['seconds']:.3f}"
        fps = "-" if r["frames_per_s"] is None else f"{r['frames_per_s']:.1f}"
        table.add_row(r["config"], "on" if r["activation_checkpointing"] else "off", r["heads"],
                      r["precision"], seconds, fps, gb(r["peak_gb"]))  # fmt: skip
    console.print(table)

    configured = _config("strategy_b", shards, args.tiny, args.batch, args.window).data.num_workers
    need = next(r["frames_per_s"] for r in results["step"] if r["config"] == "strategy_b"
                and r["activation_checkpointing"] and "point" not in r["heads"])  # fmt: skip
    results["loader"] = [
        {"workers": w, "frames_per_s": loader_fps(shards, "strategy_b", args.tiny, args.batch, args.window, w,
                                                  args.loader_windows)}
        for w in sorted({2, configured})
    ]  # fmt: skip
    for r in results["loader"]:
        ratio = "-" if not need else f"{r['frames_per_s'] / need:.2f}x"
        console.print(
            f"loader, {r['workers']} workers: {r['frames_per_s']:.1f} frames/s; the strategy_b step "
            f"(checkpointing on) needs {need or 0:.1f} frames/s -> loader / need = {ratio}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        console.print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
