"""Benchmark `vggt-eval`: share of wall time in metric code vs model inference, and windows/s.

Evaluates the baseline (tiny model, random init) over the val windows of prepared shards, as
`vggt-eval` does, then evaluates the same model again --passes - 1 times, standing in for the
checkpoints of a run (a LoRA checkpoint costs the same to score; its inference is no cheaper), so
the GT-only geometry the evaluator computes once per window is reused as in a real run. Prints
the runtime block the evaluator records for each pass and the share over all passes. Without
--shards a small synthetic KITTI-360 scene is generated and prepared first (not timed).
--threads N runs both sides on N threads (torch, BLAS and OpenMP), which makes the share a
ratio of CPU work that holds on a machine shared with other jobs.
Usage: python scripts/bench_eval.py [--shards OUT] [--seq-len 8] [--passes 3] [--device cpu] [--threads N]
       [--pointmap]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from eval.checkpoints import BASELINE, Checkpoint
from eval.predict import Predictor
from eval.runner import evaluate_checkpoint
from eval.settings import EvalSettings
from eval.window_metrics import ReferenceCache
from eval.windows import select_windows
from preprocess.driver import build
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from preprocess.synthetic import generate_synthetic_kitti360
from shards import ShardStore


def prepared_shards(work: Path) -> Path:
    scene = generate_synthetic_kitti360(work / "scene", frames=40, seed=0, sequences=2)
    out = work / "shards"
    config = Kitti360Config(depth=DepthSettings(accumulate=2))
    build(Kitti360Source(scene.root, config, split="val"), out, progress=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path)
    parser.add_argument("--seq-len", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-size", default="tiny")
    parser.add_argument("--passes", type=int, default=3, help="baseline + (passes - 1) stand-in checkpoints")
    parser.add_argument("--pointmap", action="store_true", help="also score the point head (pointmap/...)")
    parser.add_argument(
        "--threads", type=int, help="threads for inference and metrics (default: library defaults)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or prepared_shards(Path(tmp))
        store = ShardStore(shards)
        selection = select_windows(store, "val", args.seq_len, args.seq_len)
        windows = selection.windows
        settings = EvalSettings(
            ckpt_dir=Path(tmp), shards=shards, out=Path(tmp), split="val", seq_len=args.seq_len,
            seq_stride=args.seq_len, model_size=args.model_size, seed=0, device=args.device,
            pointmap=args.pointmap,
        )  # fmt: skip
        predictor = Predictor(args.model_size, None, args.device, bf16=False)
        predictor.predict(store.read(windows[0].sequence, windows[0].frames[0])["image"][None])  # warm-up
        references = ReferenceCache()
        runtimes = [
            evaluate_checkpoint(
                Checkpoint(BASELINE if i == 0 else f"pass{i}", None, i), predictor, store, selection,
                settings, Path(tmp), references,
            )["runtime"]
            for i in range(args.passes)
        ]  # fmt: skip
    threads = f"{args.threads} thread(s)" if args.threads else "default threads"
    print(
        f"{len(windows)} windows of {args.seq_len} frames, {args.model_size} model on {args.device}, "
        f"{threads}, point-head geometry {'on' if args.pointmap else 'off'}"
    )
    for i, runtime in enumerate(runtimes):
        print(f"pass {i} ({'baseline' if i == 0 else 'stand-in checkpoint'}): {json.dumps(runtime)}")
    infer = sum(r["inference_s"] for r in runtimes)
    metrics = sum(r["metrics_s"] for r in runtimes)
    n_windows = len(windows) * len(runtimes)
    print(f"first pass: metrics {100 * runtimes[0]['metrics_share']:.1f}% of eval time")
    print(
        f"all {len(runtimes)} passes: metrics {100 * metrics / (infer + metrics):.1f}% of eval time "
        f"(goal < 20%), {n_windows / (infer + metrics):.2f} windows/s"
    )


if __name__ == "__main__":
    main()
