"""All metric groups of one window, from a prediction and the window's ground truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from threadpoolctl import ThreadpoolController

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

    depth: np.ndarray  # [S,H,W] z-depth (depth head)
    cam_from_world: np.ndarray  # [S,4,4] (camera head)
    intrinsics: np.ndarray  # [S,3,3] at the evaluated resolution (camera head)
    world_points: np.ndarray  # [S,H,W,3] (point head)

    def unprojected_depth(self, pixels: np.ndarray) -> np.ndarray:
        """World points [N,3] of sorted flat pixel indices ``pixels`` into [S,H,W]: the predicted
        depth unprojected through the predicted intrinsics and extrinsics (pixel (i, j) at x=j, y=i)."""
        n_frames, height, width = self.depth.shape
        bounds = np.searchsorted(pixels, np.arange(n_frames + 1) * height * width)
        points = np.empty((len(pixels), 3))
        for f, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            row, col = np.divmod(pixels[lo:hi] - f * height * width, width)
            z = self.depth[f].reshape(-1)[pixels[lo:hi] - f * height * width].astype(np.float64)
            k, cfw = self.intrinsics[f].astype(np.float64), self.cam_from_world[f].astype(np.float64)
            cam = np.stack([(col - k[0, 2]) / k[0, 0] * z, (row - k[1, 2]) / k[1, 1] * z, z], axis=-1)
            points[lo:hi] = (cam - cfw[:3, 3]) @ cfw[:3, :3]  # world = R^T (cam - t)
        return points


@dataclass(frozen=True)
class MetricOptions:
    align: str = "window"
    geometry: bool = True
    pointmap: bool = True  # also score the point head (group "pointmap")
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


# The metrics multiply [N,3] arrays by 3x3 matrices: a BLAS thread pool only adds hand-off cost
# there, and on a busy CPU (model inference between windows) it made them 10-80x slower.
_THREADS = ThreadpoolController()

# Point metric groups: (cloud group, geometry group, alignment record name) per point source.
DEPTH_POINTS = ("pointcloud", "geometry", "sim3_depth_cameras")
POINT_HEAD = ("pointmap", "pointmap", "sim3_points")
MIN_POINTS = 3  # valid pixels a window needs for point metrics (a Sim(3) fit)


class NonFinitePrediction(ValueError):
    """The model predicted NaN or inf where ground truth is valid (a broken checkpoint)."""


def _point_rows(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    building: np.ndarray | None,
    reference: Callable[[], ReferenceGeometry] | None,
    options: MetricOptions,
    names: tuple[str, str, str],
) -> list[dict]:
    """Point cloud and geometry rows of one source of predicted points [N,3] (valid pixels),
    aligned to GT world by one Sim(3) for the window."""
    cloud_group, geometry_group, align_name = names
    if not np.isfinite(pred_points).all():
        raise NonFinitePrediction(f"non-finite predicted points ({cloud_group})")
    sim = align_points(pred_points, gt_points)
    aligned = sim.apply(pred_points)
    record = sim.record(align_name)
    cloud = pointcloud_metrics(aligned, gt_points, record, building, max_points=options.pointcloud_max_points)
    rows = [{"metric_group": cloud_group, **r} for r in cloud.rows()]
    if reference is not None:
        rows += [
            {"metric_group": geometry_group, **r}
            for r in building_geometry(aligned, reference(), record).rows()
        ]
    return rows


@_THREADS.wrap(limits=1, user_api="blas")
def evaluate_window(
    pred: Prediction,
    gt: WindowData,
    options: MetricOptions,
    references: ReferenceCache | None = None,
    pose: bool = True,
) -> list[dict]:
    """Rows `{metric_group, group, align, ..., metric values}` for one window.

    Headline geometry (``pointcloud``, ``geometry``) scores the predicted depth unprojected with
    the predicted cameras, what depth and camera training change; ``pointmap`` scores the point
    head the same way. ``pose=False`` leaves pose metrics out (a window without camera motion).
    """
    # intrinsics may be infinite (a zero field of view, as a random camera head predicts): the
    # unprojected points are then still finite, and checked where they are made
    if not np.isfinite(pred.cam_from_world).all():
        raise NonFinitePrediction("non-finite predicted cameras")
    if not np.isfinite(pred.depth[gt.valid_mask]).all():
        raise NonFinitePrediction("non-finite predicted depth at valid pixels")
    building = gt.building_mask if gt.has_building_labels else None
    rows = [
        {"metric_group": "depth", **r}
        for r in depth_metrics(pred.depth, gt.depth, building, options.align).rows()
    ]
    if pose:
        rows += [
            {"metric_group": "pose", **r} for r in pose_metrics(pred.cam_from_world, gt.cam_from_world).rows()
        ]
    # point metrics read only valid pixels: gather them once, flat
    pixels = np.flatnonzero(gt.valid_mask)
    if len(pixels) < MIN_POINTS:
        return rows
    gt_points = gt.world_points.reshape(-1, 3)[pixels]
    pixel_building = None if building is None else building.reshape(-1)[pixels]
    reference = None
    if options.geometry:

        def make_reference() -> ReferenceGeometry:
            viewpoints = camera_centres(gt.cam_from_world)[pixels // gt.valid_mask[0].size]
            labels = np.zeros(len(pixels), dtype=bool) if pixel_building is None else pixel_building
            return reference_geometry(gt_points, labels, viewpoints, options.geometry_params)

        reference = (
            make_reference if references is None else partial(references.get, gt.window_id, make_reference)
        )

    rows += _point_rows(
        pred.unprojected_depth(pixels), gt_points, pixel_building, reference, options, DEPTH_POINTS
    )
    if options.pointmap:
        head_points = pred.world_points.reshape(-1, 3)[pixels].astype(np.float64)
        rows += _point_rows(head_points, gt_points, pixel_building, reference, options, POINT_HEAD)
    return rows
