"""How good the projected LiDAR depth is, measured against the synthetic scene's exact depth.

Shared by the tests (which assert the thresholds) and `scripts/depth_accuracy.py` (which
prints the figures). Frames whose +-N sweep neighbourhood is incomplete at the sequence
ends are left out so single-sweep and accumulated depth are compared on the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocess.sources.kitti360.reader import Sequence
from preprocess.sources.kitti360.sweeps import DepthSettings, SweepAccumulator
from preprocess.synthetic import load_gt_depth

OUTLIER_REL = 0.05


@dataclass(frozen=True)
class DepthAccuracy:
    frames: int
    coverage: float  # mean share of pixels with depth
    median_rel_error: float  # over all depth pixels of all frames
    outlier_share: float  # depth pixels > 5% off GT (or on sky), over all depth pixels


DepthPairs = list[tuple[np.ndarray, np.ndarray]]


def depth_pairs(seq: Sequence, gt_root: Path, accumulate: int, margin: int = 4) -> DepthPairs:
    """(projected depth, GT depth) at native resolution for the frames `margin` from the ends."""
    frames = sorted(set(seq.frames) & set(seq.world_from_rect))
    centres = frames[margin : len(frames) - margin]
    sweeps = SweepAccumulator(seq, DepthSettings(accumulate=accumulate))
    return [
        (result.depth, load_gt_depth(gt_root, seq.name, centre))
        for centre, result in sweeps.run(centres, seq.calib.K, seq.calib.size)
    ]


def depth_accuracy(pairs: DepthPairs) -> DepthAccuracy:
    rel, outliers = [], 0
    for depth, gt in pairs:
        valid = depth > 0
        err = np.abs(depth[valid] - gt[valid]) / np.maximum(gt[valid], 1e-6)
        rel.append(err)
        outliers += int(((err > OUTLIER_REL) | (gt[valid] == 0)).sum())
    errors = np.concatenate(rel)
    return DepthAccuracy(
        frames=len(pairs),
        coverage=float(np.mean([(d > 0).mean() for d, _ in pairs])),
        median_rel_error=float(np.median(errors)),
        outlier_share=outliers / max(len(errors), 1),
    )
