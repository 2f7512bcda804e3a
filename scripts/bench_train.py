"""Benchmark the training input pipeline against what the tiny-model training step consumes, on CPU.

Measures, on shards of the synthetic scene at width 518 (518x140 frames), with 2 DataLoader
workers, in one run so the figures share the machine's load:
  * loader throughput (frames/s) without augmentation (the reference: 8-frame windows, stored size);
  * loader throughput with every augmentation on (per-frame colour jitter, zoom crops up to 30%,
    aspect ratio 0.33-1 per step, 2-8 frames per window with the batch sized to 16 frames: a
    CPU-sized frame budget, upstream's 2-24 / 48 only changes how frames are batched);
  * the training step's consumption (frames/s) of the tiny model on CPU with the same
    augmentation, the loader / consumption ratio and the share of step time waiting on data.
Usage: python scripts/bench_train.py [--shards OUT] [--steps 5] [--windows 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from preprocess.driver import build
from preprocess.sources.kitti360 import Kitti360Source
from preprocess.synthetic import generate_synthetic_kitti360
from train.config import load_config
from train.data import WindowDataset, step_sampler
from train.distributed import DistInfo
from train.run_dir import METRICS_FILE
from train.trainer import Trainer

DEMO = Path(__file__).resolve().parents[1] / "configs" / "train" / "demo.yaml"
STORED = ["data.seq_len=8", "augment.crop.height=null", "augment.crop.width=null"]
NO_AUGMENT = [*STORED, "augment.colour.enabled=false", "augment.crop.zoom=false"]
ALL_AUGMENT = [
    *STORED,
    "augment.colour.enabled=true",
    "augment.crop.zoom=true",
    "augment.crop.aspect=true",
    "augment.frames.enabled=true",
    "augment.frames.max_frames=8",
    "augment.frames.frames_per_gpu=16",
]


def loader_throughput(shards: Path, overrides: list[str], steps: int, workers: int) -> tuple[float, float]:
    """(frames/s, mean pixels per frame) of the loader alone."""
    cfg = load_config(DEMO, [f"data.shards={shards}", *overrides])
    dataset = WindowDataset(str(shards), cfg.data, seed=0, total_samples=10**6, augment=cfg.augment)
    sampler = step_sampler(dataset, steps, cfg.data.batch_size, rank=0, world_size=1)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, prefetch_factor=4)
    frames = pixels = 0
    start = time.perf_counter()
    for batch in loader:
        n, s, _, h, w = batch["images"].shape
        frames += n * s
        pixels += n * s * h * w
    return frames / (time.perf_counter() - start), pixels / max(frames, 1)


def training_rate(
    shards: Path, run_dir: Path, overrides: list[str], steps: int
) -> tuple[float, float, float]:
    """(steps/s, frames/s consumed, data-wait share) of the tiny-model trainer."""
    runs = [f"run.steps={steps}", f"run.steps_per_epoch={steps}", f"run.log_every={steps}"]
    cfg = load_config(DEMO, [f"data.shards={shards}", *overrides, *runs, "data.num_workers=2"])
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    start = time.perf_counter()
    Trainer(cfg, run_dir, info).run()
    elapsed = time.perf_counter() - start
    record = json.loads((run_dir / METRICS_FILE).read_text().splitlines()[-1])
    return steps / elapsed, record["frames_per_s"], record["data_wait_share"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=5, help="training steps timed")
    parser.add_argument("--windows", type=int, default=40, help="loader batches timed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    shards = args.shards
    if shards is None:
        data = generate_synthetic_kitti360(work / "synthetic", frames=40)
        shards = work / "shards"
        build(Kitti360Source(data.root), shards, progress=False)
    print("\ntraining input pipeline on synthetic 518x140 shards, CPU, 2 loader workers", flush=True)
    plain_fps, plain_px = loader_throughput(shards, NO_AUGMENT, args.windows, workers=2)
    print(f"loader, no augmentation (8-frame windows): {plain_fps:7.1f} frames/s ({plain_px / 1e3:.0f} kpx)")
    aug_fps, aug_px = loader_throughput(shards, ALL_AUGMENT, args.windows, workers=2)
    print(f"loader, all augmentations on:              {aug_fps:7.1f} frames/s ({aug_px / 1e3:.0f} kpx)")
    print(f"  ratio to no augmentation:                {aug_fps / plain_fps:7.2f}x", flush=True)
    steps_per_s, step_fps, wait = training_rate(shards, work / "run", ALL_AUGMENT, args.steps)
    print(f"tiny-model training step consumes:         {step_fps:7.1f} frames/s ({steps_per_s:.3f} steps/s)")
    print(f"loader (all augmentations) / consumption:  {aug_fps / step_fps:7.1f}x")
    print(f"share of step time waiting on data:        {wait:.1%}")


if __name__ == "__main__":
    main()
