"""Point cloud accuracy / completeness / Chamfer of one window, per region."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.spatial import cKDTree

from eval.metrics.result import MetricResult


def cloud_distances(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean nearest-neighbour distances: accuracy (pred->GT), completeness (GT->pred), their mean."""
    if len(pred) == 0 or len(gt) == 0:
        nan = float("nan")
        return {"accuracy": nan, "completeness": nan, "chamfer": nan, "count": 0}
    acc = float(cKDTree(gt).query(pred, workers=-1)[0].mean())
    comp = float(cKDTree(pred).query(gt, workers=-1)[0].mean())
    return {"accuracy": acc, "completeness": comp, "chamfer": (acc + comp) / 2.0, "count": len(pred)}


def pointcloud_metrics(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    valid: np.ndarray,
    align_record: Mapping[str, object],
    building: np.ndarray | None = None,
    max_points: int | None = 100_000,
    seed: int = 0,
) -> MetricResult:
    """Accuracy, completeness and Chamfer (metres) of aligned predicted vs GT world points.

    Both clouds are taken at the same valid pixels [S,H,W] (so sparse GT does not penalise
    predictions where GT has no measurement); ``pred_points`` must already be aligned to GT
    world, as described by ``align_record``. Both clouds keep the same ``max_points`` pixels,
    drawn with a fixed seed, so an exact prediction still scores 0 after subsampling.
    Groups ``all``, ``building``, ``non_building`` (empty without a mask).
    """
    regions = {"all": valid}
    if building is not None:
        regions |= {"building": valid & building, "non_building": valid & ~building}
    groups = {}
    for name in ("all", "building", "non_building"):
        pixels = np.flatnonzero(regions.get(name, np.zeros_like(valid)))
        if max_points is not None and len(pixels) > max_points:
            pixels = np.random.default_rng(seed).choice(pixels, max_points, replace=False)
        groups[name] = cloud_distances(
            pred_points.reshape(-1, 3)[pixels].astype(np.float64),
            gt_points.reshape(-1, 3)[pixels].astype(np.float64),
        )
    return MetricResult(groups, dict(align_record))
