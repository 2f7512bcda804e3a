"""Point cloud accuracy / completeness / Chamfer of one window, per region."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import open3d as o3d

from eval.metrics.result import MetricResult


def cloud_distances(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean nearest-neighbour distances: accuracy (pred->GT), completeness (GT->pred), their mean."""
    if len(pred) == 0 or len(gt) == 0:
        nan = float("nan")
        return {"accuracy": nan, "completeness": nan, "chamfer": nan, "count": 0}
    pred_cloud, gt_cloud = (o3d.geometry.PointCloud(o3d.utility.Vector3dVector(x)) for x in (pred, gt))
    acc = float(np.asarray(pred_cloud.compute_point_cloud_distance(gt_cloud)).mean())
    comp = float(np.asarray(gt_cloud.compute_point_cloud_distance(pred_cloud)).mean())
    return {"accuracy": acc, "completeness": comp, "chamfer": (acc + comp) / 2.0, "count": len(pred)}


def pointcloud_metrics(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    align_record: Mapping[str, object],
    building: np.ndarray | None = None,
    max_points: int | None = 100_000,
    seed: int = 0,
) -> MetricResult:
    """Accuracy, completeness and Chamfer (metres) of aligned predicted vs GT world points.

    ``pred_points``/``gt_points`` [N,3] are the two clouds at the same valid pixels (so sparse GT
    does not penalise predictions where GT has no measurement), and ``building`` [N] their mask;
    ``pred_points`` must already be aligned to GT world, as described by ``align_record``. Both
    clouds keep the same ``max_points`` pixels, drawn with a fixed seed, so an exact prediction
    still scores 0 after subsampling. Groups ``all``, ``building``, ``non_building`` (empty
    without a mask).
    """
    everything = np.ones(len(gt_points), dtype=bool)
    regions = {"all": everything}
    if building is not None:
        regions |= {"building": building, "non_building": ~building}
    groups = {}
    for name in ("all", "building", "non_building"):
        pixels = np.flatnonzero(regions.get(name, ~everything))
        if max_points is not None and len(pixels) > max_points:
            pixels = np.random.default_rng(seed).choice(pixels, max_points, replace=False)
        groups[name] = cloud_distances(
            pred_points[pixels].astype(np.float64), gt_points[pixels].astype(np.float64)
        )
    return MetricResult(groups, dict(align_record))
