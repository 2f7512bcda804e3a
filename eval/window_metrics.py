"""All metric groups of one window, from a prediction and the window's ground truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shards.windows import camera_centres

from .align import align_points
from .metrics.depth import depth_metrics
from .metrics.geometry import GeometryParams, ReferenceGeometry, building_geometry, reference_geometry
from .metrics.pointcloud import pointcloud_metrics
from .metrics.pose import pose_metrics
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


class ReferenceCache:
    """GT-only geometry of each window, reused by every checkpoint evaluated in one run.

    Checkpoints sweep the windows one after another, a cyclic pattern that defeats LRU eviction,
    so the cache simply stops adding once ``max_bytes`` is reached; later windows recompute.
    """

    def __init__(self, max_bytes: int = 512 << 20):
        self.max_bytes = max_bytes
        self._entries: dict[str, ReferenceGeometry] = {}
        self._bytes = 0

    def get(self, window_id: str, make: Callable[[], ReferenceGeometry]) -> ReferenceGeometry:
        if window_id in self._entries:
            return self._entries[window_id]
        reference = make()
        if self._bytes + reference.nbytes <= self.max_bytes:
            self._entries[window_id] = reference
            self._bytes += reference.nbytes
        return reference


def evaluate_window(
    pred: Prediction, gt: WindowData, options: MetricOptions, references: ReferenceCache | None = None
) -> list[dict]:
    """Rows `{metric_group, group, align, ..., metric values}` for one window."""
    building = gt.building_mask if gt.has_building_labels else None
    rows = [
        {"metric_group": "depth", **r}
        for r in depth_metrics(pred.depth, gt.depth, building, options.align).rows()
    ]
    rows += [
        {"metric_group": "pose", **r} for r in pose_metrics(pred.cam_from_world, gt.cam_from_world).rows()
    ]
    # point metrics read only valid pixels: gather them once, flat
    pixels = np.flatnonzero(gt.valid_mask)
    gt_points = gt.world_points.reshape(-1, 3)[pixels]
    pred_points = pred.world_points.reshape(-1, 3)[pixels].astype(np.float64)
    sim = align_points(pred_points, gt_points)
    aligned = sim.apply(pred_points)
    pixel_building = None if building is None else building.reshape(-1)[pixels]
    record = sim.record("sim3_points")
    cloud = pointcloud_metrics(
        aligned, gt_points, record, pixel_building, max_points=options.pointcloud_max_points
    )
    rows += [{"metric_group": "pointcloud", **r} for r in cloud.rows()]
    if options.geometry and pixel_building is not None and pixel_building.any():

        def make_reference() -> ReferenceGeometry:
            viewpoints = camera_centres(gt.cam_from_world)[pixels // gt.valid_mask[0].size]
            return reference_geometry(gt_points, pixel_building, viewpoints, options.geometry_params)

        reference = make_reference() if references is None else references.get(gt.window_id, make_reference)
        geometry = building_geometry(aligned, reference, record)
        rows += [{"metric_group": "geometry", **r} for r in geometry.rows()]
    return rows
