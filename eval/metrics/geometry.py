"""Building geometry of one window: surface normal error and facade planarity.

GT normals come from local plane fits on the GT point cloud (open3d), not from finite
differences of sparse depth, and predicted normals from the same fits on the aligned predicted
points of the same pixels. Planes are found by RANSAC on GT building points; the aligned
predicted points of a plane's pixels are scored by their distance to that GT plane.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from eval.metrics.result import MetricResult

NORMAL_THRESHOLDS_DEG: tuple[float, ...] = (11.25, 22.5, 30.0)
PLANE_THRESHOLDS_M: tuple[float, ...] = (0.05, 0.10, 0.20)


@dataclass(frozen=True)
class GeometryParams:
    """Scene-scale settings in metres; defaults suit street scenes with LiDAR-density GT."""

    normal_radius: float = 0.5
    normal_max_nn: int = 30
    normal_min_neighbors: int = 5
    plane_distance: float = 0.05
    plane_min_inliers: int = 200
    max_planes: int = 10
    ransac_iterations: int = 1000
    max_points: int | None = 100_000
    seed: int = 0


def estimate_normals(
    points: np.ndarray,
    centres: np.ndarray,
    radius: float,
    max_nn: int,
    min_neighbors: int,
    scored: np.ndarray,
) -> np.ndarray:
    """Unit normals [M,3] of the ``scored`` points (bool [N]) from local plane fits on all ``points``.

    Each normal comes from a KD-tree hybrid search over the whole cloud (so a facade's neighbourhood
    is complete) and is flipped toward its camera ``centres`` [N,3]. A scored point with fewer than
    ``min_neighbors`` points within ``radius`` (itself included) has no local plane and gets NaN,
    rather than open3d's silent default normal.
    """
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
    normals = np.asarray(cloud.normals)[scored]
    at = points[scored]
    away = ((centres[scored] - at) * normals).sum(-1) < 0
    normals[away] *= -1.0
    # distance to the min_neighbors-th nearest point (self included) decides support; far
    # cheaper than counting every point within the radius
    kth = cKDTree(points).query(at, k=[min_neighbors], distance_upper_bound=radius * (1 + 1e-9))[0]
    normals[~np.isfinite(kth[:, 0])] = np.nan
    return normals


def _summarise(values: np.ndarray, stats: dict[str, Callable[[np.ndarray], float]]) -> dict[str, float]:
    """Named statistics of ``values`` and their count; NaN statistics when there are none."""
    return {name: float(fn(values)) if values.size else float("nan") for name, fn in stats.items()} | {
        "count": int(values.size)
    }


def _pct_below(threshold: float, inclusive: bool = False) -> Callable[[np.ndarray], float]:
    return lambda v: float(((v <= threshold) if inclusive else (v < threshold)).mean() * 100.0)


NORMAL_STATS: dict[str, Callable[[np.ndarray], float]] = {
    "normal_mean": np.mean,
    "normal_median": np.median,
    **{f"normal_pct_{t:g}": _pct_below(t) for t in NORMAL_THRESHOLDS_DEG},
}
PLANARITY_STATS: dict[str, Callable[[np.ndarray], float]] = {
    "planarity_mean": np.mean,
    **{f"planarity_pct_{round(t * 100)}cm": _pct_below(t, inclusive=True) for t in PLANE_THRESHOLDS_M},
}


def normal_angle_deg(n_gt: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    """Sign-free angle (degrees) between normals; a missing predicted normal counts as the worst, 90."""
    cos = np.abs((n_gt * n_pred).sum(-1))
    err = np.degrees(np.arctan2(np.linalg.norm(np.cross(n_gt, n_pred), axis=-1), cos))
    return np.where(np.isfinite(err), err, 90.0)


def _least_squares_plane(points: np.ndarray) -> np.ndarray:
    """Unit plane [a,b,c,d] of least squares through ``points``; refines RANSAC's 3-point model."""
    centroid = points.mean(0)
    normal = np.linalg.svd(points - centroid, full_matrices=False)[2][-1]
    return np.append(normal, -normal @ centroid)


def _fit_planes(points: np.ndarray, p: GeometryParams) -> list[tuple[np.ndarray, np.ndarray]]:
    """RANSAC planes extracted one after another: (unit plane [a,b,c,d], inlier indices) each.

    The residuals measured against these planes include GT's own distance to its plane (at most
    ``plane_distance``), a floor that is the same for every checkpoint.
    """
    o3d.utility.random.seed(p.seed)
    remaining = np.arange(len(points))
    planes = []
    while len(planes) < p.max_planes and len(remaining) >= max(p.plane_min_inliers, 3):
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[remaining]))
        _, inliers = cloud.segment_plane(p.plane_distance, 3, p.ransac_iterations)
        if len(inliers) < p.plane_min_inliers:
            break
        planes.append((_least_squares_plane(points[remaining[inliers]]), remaining[inliers]))
        remaining = np.delete(remaining, inliers)
    return planes


@dataclass(frozen=True)
class ReferenceGeometry:
    """The GT side of one window's building geometry (subsample, GT normals, GT planes).

    It is the same for every checkpoint, so the evaluator computes it once per window.
    """

    params: GeometryParams
    keep: np.ndarray  # [K] indices of the valid pixels the metrics use (a fixed-seed subsample)
    scored: np.ndarray  # [K] bool: building pixels, where normals and planes are scored
    viewpoints: np.ndarray  # [K,3] GT centre of the camera that saw each kept pixel
    normals: np.ndarray  # [M,3] GT normals of the scored pixels (NaN: no local plane)
    planes: list[tuple[np.ndarray, np.ndarray]]  # (unit plane [a,b,c,d], indices into scored pixels)

    @property
    def nbytes(self) -> int:
        arrays = [
            self.keep,
            self.scored,
            self.viewpoints,
            self.normals,
            *(a for pl in self.planes for a in pl),
        ]
        return sum(a.nbytes for a in arrays)


def reference_geometry(
    gt_points: np.ndarray, building: np.ndarray, viewpoints: np.ndarray, params: GeometryParams | None = None
) -> ReferenceGeometry:
    """GT side of the building metrics, from per-valid-pixel GT points [N,3], building mask [N]
    and the GT centre of the camera that saw each pixel [N,3] (orients normals)."""
    p = params or GeometryParams()
    keep = np.arange(len(gt_points))
    if p.max_points is not None and len(keep) > p.max_points:
        keep = np.sort(np.random.default_rng(p.seed).choice(len(keep), p.max_points, replace=False))
    gt, scored = gt_points[keep].astype(np.float64), building[keep]
    centres = viewpoints[keep].astype(np.float32)  # only orients normals
    normals = np.empty((0, 3))
    if scored.any():
        normals = estimate_normals(
            gt, centres, p.normal_radius, p.normal_max_nn, p.normal_min_neighbors, scored
        )
    return ReferenceGeometry(p, keep.astype(np.int32), scored, centres, normals, _fit_planes(gt[scored], p))


def building_geometry(
    pred_points: np.ndarray, reference: ReferenceGeometry, align_record: Mapping[str, object]
) -> MetricResult:
    """Normal angle error and facade planarity on building pixels of one window.

    ``pred_points`` [N,3] are the predicted points of the window's valid pixels, already aligned
    to GT world (as ``align_record`` says); ``reference`` is the window's GT side. Normals are
    fitted on all kept pixels (so a facade's neighbourhood is complete) and scored on building
    pixels where GT has a local plane. Groups: ``normals`` (degrees, percent) and ``planarity``
    (metres, percent).
    """
    p, ref = reference.params, reference
    pr = pred_points[ref.keep].astype(np.float64)
    err = np.empty(0)
    if ref.scored.any():
        pred_normals = estimate_normals(
            pr, ref.viewpoints, p.normal_radius, p.normal_max_nn, p.normal_min_neighbors, ref.scored
        )
        has_gt = np.isfinite(ref.normals).all(-1)
        err = normal_angle_deg(ref.normals[has_gt], pred_normals[has_gt])
    bld_pr = pr[ref.scored]
    residual = np.concatenate(
        [np.abs(bld_pr[idx] @ model[:3] + model[3]) for model, idx in ref.planes] or [np.empty(0)]
    )
    groups = {
        "normals": _summarise(err, NORMAL_STATS),
        "planarity": _summarise(residual, PLANARITY_STATS) | {"n_planes": len(ref.planes)},
    }
    return MetricResult(groups, dict(align_record))
