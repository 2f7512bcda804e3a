"""Benchmark the training input pipeline and the tiny-model step on CPU.

Measures, on shards of the synthetic scene at width 518:
  * loader throughput (frames/s) from shards with 2 DataLoader workers, 8-frame windows;
  * the training step's consumption rate (frames/s) of the tiny model on CPU, and steps/s;
  * the share of step time spent waiting for data (from the trainer's own metrics).
Usage: python scripts/bench_train.py [--shards OUT] [--steps 30]
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
from train.data import RankSampler, WindowDataset
from train.distributed import DistInfo
from train.run_dir import METRICS_FILE
from train.trainer import Trainer

DEMO = Path(__file__).resolve().parents[1] / "configs" / "train" / "demo.yaml"


def loader_throughput(shards: Path, windows: int, workers: int) -> float:
    cfg = load_config(
        DEMO, [f"data.shards={shards}", "data.seq_len=8", "data.crop_height=null", "data.crop_width=null"]
    )
    dataset = WindowDataset(str(shards), cfg.data, seed=0, total_samples=windows)
    loader = DataLoader(dataset, batch_size=1, sampler=RankSampler(windows, 1, 0, 1), num_workers=workers,
                        prefetch_factor=4 if workers else None)  # fmt: skip
    start = time.perf_counter()
    frames = sum(batch["images"].shape[1] for batch in loader)
    return frames / (time.perf_counter() - start)


def training_rate(shards: Path, run_dir: Path, steps: int) -> tuple[float, float, float]:
    overrides = [f"data.shards={shards}", "data.seq_len=8", "data.crop_height=null", "data.crop_width=null"]
    overrides += [f"run.steps={steps}", f"run.steps_per_epoch={steps}", f"run.log_every={steps}"]
    cfg = load_config(DEMO, [*overrides, "data.num_workers=2"])
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
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    shards = args.shards
    if shards is None:
        data = generate_synthetic_kitti360(work / "synthetic", frames=40)
        shards = work / "shards"
        build(Kitti360Source(data.root), shards, progress=False)
    loader_fps = loader_throughput(shards, windows=40, workers=2)
    steps_per_s, step_fps, wait = training_rate(shards, work / "run", args.steps)
    print("\ntraining input pipeline, 8-frame windows of 518x140 frames, CPU")
    print(f"loader, 2 workers:                 {loader_fps:8.1f} frames/s")
    print(f"tiny-model training step consumes: {step_fps:8.1f} frames/s ({steps_per_s:.2f} steps/s)")
    print(f"loader / consumption:              {loader_fps / step_fps:8.1f}x")
    print(f"share of step time waiting on data: {wait:.1%}")


if __name__ == "__main__":
    main()
