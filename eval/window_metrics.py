"""All metric groups of one window, from a prediction and the window's ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import align_points
from .metrics.depth import depth_metrics
from .metrics.geometry import GeometryParams, building_geometry
from .metrics.pointcloud import pointcloud_metrics
from .metrics.pose import camera_centres, pose_metrics
from .windows import WindowData


@dataclass
class Prediction:
    """Model output for one window, in the model's own (first-camera, up-to-scale) frame."""

    depth: np.ndarray  # [S,H,W]
    cam_from_world: np.ndarray  # [S,4,4]
    world_points: np.ndarray  # [S,H,W,3]


@dataclass(frozen=True)
class MetricOptions:
    align: str = "window"
    geometry: bool = True
    # subsampling caps keep metric time well below model time; every checkpoint sees the same
    # pixels (fixed seed), so comparisons stay paired
    geometry_params: GeometryParams = GeometryParams(max_points=10_000)
    pointcloud_max_points: int = 5_000


def evaluate_window(pred: Prediction, gt: WindowData, options: MetricOptions) -> list[dict]:
    """Rows `{metric_group, group, align, ..., metric values}` for one window."""
    building = gt.building if gt.has_building_labels else None
    rows = [
        {"metric_group": "depth", **r}
        for r in depth_metrics(pred.depth, gt.depth, building, options.align).rows()
    ]
    rows += [
        {"metric_group": "pose", **r} for r in pose_metrics(pred.cam_from_world, gt.cam_from_world).rows()
    ]
    sim = align_points(pred.world_points, gt.world_points, gt.valid)
    aligned = sim.apply(pred.world_points.astype(np.float64))
    record = sim.record("sim3_points")
    cloud = pointcloud_metrics(
        aligned, gt.world_points, gt.valid, record, building, max_points=options.pointcloud_max_points
    )
    rows += [{"metric_group": "pointcloud", **r} for r in cloud.rows()]
    if options.geometry and building is not None and building[gt.valid].any():
        geometry = building_geometry(
            aligned, gt.world_points, gt.valid, building, camera_centres(gt.cam_from_world), record,
            options.geometry_params,
        )  # fmt: skip
        rows += [{"metric_group": "geometry", **r} for r in geometry.rows()]
    return rows
