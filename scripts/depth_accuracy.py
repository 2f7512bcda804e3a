"""Depth accuracy of `build`'s projection on the synthetic scene, against its exact GT depth.

Prints, per sequence at native resolution (1408x376): coverage, median relative error and
the share of depth pixels > 5% off GT, for the single sweep and for +-N accumulation. Then,
for whole builds (+-N) at width 518 and native, LiDAR-only against LiDAR + static clouds:
depth pixels > 5% off the exact depth ray-cast at the stored size, coverage, and building
coverage over the whole image and its top third.
Usage: python scripts/depth_accuracy.py [--frames 40] [--accumulate 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from preprocess.driver import build
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from preprocess.sources.kitti360.reader import Sequence, list_sequences, read_calibration
from preprocess.synthetic import generate_synthetic_kitti360

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support ships outside the package
from tests.support.accuracy import depth_accuracy, depth_pairs  # noqa: E402
from tests.support.static_accuracy import built_accuracy  # noqa: E402


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--accumulate", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None, help="reuse or keep the synthetic scene here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="depth_accuracy_"))
    root = work / "KITTI-360"
    if not root.is_dir():
        generate_synthetic_kitti360(work, frames=args.frames, seed=0, sequences=2)
    calib = read_calibration(root)
    header = ("sequence", "sweeps", "frames", "coverage", "median rel", "> 5% off")
    print(" ".join(f"{h:{w}s}" for h, w in zip(header, ("28", ">7", ">6", ">9", ">11", ">9"), strict=True)))
    for name in list_sequences(root):
        seq = Sequence(root, name, calib)
        gt_root = work / "ground_truth"
        results = {n: depth_accuracy(depth_pairs(seq, gt_root, n)) for n in (0, args.accumulate)}
        for n, acc in results.items():
            print(
                f"{name:28s} {2 * n + 1:7d} {acc.frames:6d} {acc.coverage:9.2%} "
                f"{acc.median_rel_error:11.3%} {acc.outlier_share:9.3%}"
            )
        ratio = results[args.accumulate].coverage / results[0].coverage
        print(f"{'':28s} coverage ratio +-{args.accumulate} / single: {ratio:.2f}x")
    print("\nwhole builds, all sequences:")
    for width in (518, None):
        for clouds in (False, True):
            config = Kitti360Config(
                DepthSettings(accumulate=args.accumulate), width=width, static_clouds=clouds
            )
            out = work / f"build_{width}_{clouds}"
            if not out.is_dir():
                build(Kitti360Source(root, config), out, progress=False)
            label = f"{width or 'native'} {'LiDAR + static clouds' if clouds else 'LiDAR only'}"
            print(f"{label:32s} {built_accuracy(out, args.frames).line()}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
