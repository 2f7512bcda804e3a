"""Benchmark `vggt-eval`: share of wall time in metric code vs model inference, and windows/s.

Evaluates the baseline (tiny model, random init) over the val windows of prepared shards, as
`vggt-eval` does, and prints the runtime block the evaluator records. Without --shards a small
synthetic KITTI-360 scene is generated and prepared first (not timed).
Usage: python scripts/bench_eval.py [--shards OUT] [--seq-len 8] [--device cpu] [--model-size tiny]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from eval.discover import BASELINE, Checkpoint
from eval.predict import Predictor
from eval.runner import RunSettings, evaluate_checkpoint
from eval.window_metrics import MetricOptions
from eval.windows import select_windows
from preprocess.accumulate import DepthSettings
from preprocess.build import BuildConfig, build
from preprocess.synthetic import generate_synthetic_kitti360
from shards import ShardStore


def prepared_shards(work: Path) -> Path:
    scene = generate_synthetic_kitti360(work / "scene", frames=40, seed=0, sequences=2)
    out = work / "shards"
    build(scene.root, out, split="val", config=BuildConfig(depth=DepthSettings(accumulate=2)), progress=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path)
    parser.add_argument("--seq-len", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-size", default="tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or prepared_shards(Path(tmp))
        store = ShardStore(shards)
        windows = select_windows(store.index, "val", args.seq_len, args.seq_len)
        settings = RunSettings(
            split="val", seq_len=args.seq_len, seq_stride=args.seq_len, align="window",
            model_size=args.model_size, weights=None, seed=0, device=args.device, bf16=False, geometry=True,
        )  # fmt: skip
        predictor = Predictor(args.model_size, None, args.device, bf16=False)
        predictor.predict(store.read(windows[0].sequence, windows[0].frames[0])["image"][None])  # warm-up
        summary = evaluate_checkpoint(
            Checkpoint(BASELINE, None, 0), predictor, store, windows, MetricOptions(), settings, Path(tmp)
        )
    runtime = summary["runtime"]
    print(f"{len(windows)} windows of {args.seq_len} frames, {args.model_size} model on {args.device}")
    print(json.dumps(runtime, indent=2))
    print(f"metrics share of eval time: {100 * runtime['metrics_share']:.1f}% (goal < 20%)")


if __name__ == "__main__":
    main()
