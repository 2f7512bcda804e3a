"""Benchmark `kitti360-prep colmap` on a 100-image COLMAP model of the synthetic scene.

Reports frames/s of the build (model read + per-frame decode, z-buffer, write) at the
default width 518 and at native width, and the valid depth points per frame that
`kitti360-prep stats` reports for the scene.
Usage: python scripts/bench_colmap.py [--images 100] [--sources 10] [--stride 8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from preprocess.data_summary import DEFAULT_MIN_VALID_POINTS, sparse_sequences, summarize
from preprocess.driver import build
from preprocess.sources.colmap import ColmapConfig, ColmapScene, ColmapSource
from preprocess.sources.colmap.reader import read_model
from preprocess.synthetic import generate_synthetic_kitti360
from shards import ShardStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support ships outside the package
from tests.support.synthetic_colmap import synthetic_colmap_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--sources", type=int, default=10, help="frames whose GT depth seeds the points")
    parser.add_argument("--stride", type=int, default=8, help="pixel stride of the seeded points")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_colmap_"))
    data = generate_synthetic_kitti360(work / "synthetic", frames=args.images, seed=0, sequences=1)
    frames = list(range(args.images))
    sources = frames[:: max(1, args.images // args.sources)][: args.sources]
    start = time.perf_counter()
    model = synthetic_colmap_model(data, data.sequences[0], frames, sources, args.stride, work / "model")
    observations = sum(len(t) for t in model.tracks)
    print(f"model: {len(frames)} images, {len(model.points)} points, {observations} observations "
          f"(written in {time.perf_counter() - start:.1f} s)")  # fmt: skip
    start = time.perf_counter()
    read_model(model.model)
    print(f"model read (pycolmap + tracks): {time.perf_counter() - start:.2f} s")
    scene = ColmapScene("bench", model.model, model.images)
    for width in (518, None):
        out = work / f"out_{width or 'native'}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = build(ColmapSource(scene, ColmapConfig(width=width)), out, progress=False)
        seconds = time.perf_counter() - start
        written, label = summary["frames_written"], width or "native"
        print(f"width {label}: {written} frames in {seconds:.2f} s = {written / seconds:.1f} frames/s")
        index = ShardStore(out).index
        row = summarize(index).iloc[0]
        sparse = sparse_sequences(index)
        print(
            f"  stats valid points per frame p10/p50/p90: {row['points_p10']:.0f}/{row['points_p50']:.0f}/"
            f"{row['points_p90']:.0f}; coverage p50 {100 * row['coverage_p50']:.2f}%; frames below "
            f"{DEFAULT_MIN_VALID_POINTS}: {row['below_min_points']}; flagged sparse: {not sparse.empty}"
        )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
