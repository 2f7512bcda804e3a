"""Surface geometry of one window: normal error (building pixels and the whole image) and
facade planarity.

GT normals come from local plane fits on the GT point cloud, not from finite differences of
sparse depth, and predicted normals from plane fits through the aligned predicted points of the
same pixels (the same neighbourhoods, eval.metrics.normals). Planes are found by seeded RANSAC
on GT building points (eval.metrics.planes); the aligned predicted points of a plane's pixels
are scored by their distance to that GT plane. The residuals include GT's own distance to its
plane (at most ``plane_distance``), a floor that is the same for every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from eval.metrics.normals import neighbourhoods, plane_normals
from eval.metrics.planes import extract_planes
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


def _facing(normals: np.ndarray, points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Normals flipped toward the camera centre that saw each point (the score is sign-free;
    this only makes stored normals readable)."""
    away = ((centres - points) * normals).sum(-1) < 0
    return np.where(away[:, None], -normals, normals)


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


@dataclass(frozen=True)
class ReferenceGeometry:
    """The GT side of one window's surface geometry (subsample, GT normals, GT facade planes).

    It is the same for every checkpoint, so the evaluator computes it once per window.
    """

    params: GeometryParams
    keep: np.ndarray  # [K] indices of the valid pixels the metrics use (a fixed-seed subsample)
    scored: np.ndarray  # [K] bool: building pixels (building normals and facade planes)
    viewpoints: np.ndarray  # [K,3] GT centre of the camera that saw each kept pixel
    neighbours: np.ndarray  # [K, normal_max_nn] GT neighbourhood of each kept pixel (indices into keep)
    counts: np.ndarray  # [K] size of each neighbourhood
    normals: np.ndarray  # [K,3] GT normals of the kept pixels (NaN: no local plane)
    planes: list[tuple[np.ndarray, np.ndarray]]  # (unit plane [a,b,c,d], indices into scored pixels)

    @property
    def nbytes(self) -> int:
        arrays = [
            self.keep,
            self.scored,
            self.viewpoints,
            self.neighbours,
            self.counts,
            self.normals,
            *(a for pl in self.planes for a in pl),
        ]
        return sum(a.nbytes for a in arrays)


def reference_geometry(
    gt_points: np.ndarray, building: np.ndarray, viewpoints: np.ndarray, params: GeometryParams | None = None
) -> ReferenceGeometry:
    """GT side of the geometry metrics, from per-valid-pixel GT points [N,3], building mask [N]
    (all False without building labels) and the GT centre of the camera that saw each pixel
    [N,3] (orients normals)."""
    p = params or GeometryParams()
    keep = np.arange(len(gt_points))
    if p.max_points is not None and len(keep) > p.max_points:
        keep = np.sort(np.random.default_rng(p.seed).choice(len(keep), p.max_points, replace=False))
    gt, scored = gt_points[keep].astype(np.float64), building[keep]
    centres = viewpoints[keep].astype(np.float32)  # only orients normals
    neighbours, counts = neighbourhoods(gt, p.normal_radius, p.normal_max_nn)
    normals = _facing(plane_normals(gt, neighbours, counts, p.normal_min_neighbors), gt, centres)
    planes = extract_planes(
        gt[scored], p.plane_distance, p.plane_min_inliers, p.max_planes, p.ransac_iterations, p.seed
    )
    return ReferenceGeometry(p, keep.astype(np.int32), scored, centres, neighbours, counts, normals, planes)


def building_geometry(
    pred_points: np.ndarray, reference: ReferenceGeometry, align_record: Mapping[str, object]
) -> MetricResult:
    """Normal angle error (building pixels and all pixels) and facade planarity of one window.

    ``pred_points`` [N,3] are the predicted points of the window's valid pixels, already aligned
    to GT world (as ``align_record`` says); ``reference`` is the window's GT side. Normals are
    fitted over the GT neighbourhoods of all kept pixels (so a facade's neighbourhood is complete)
    and scored where GT has a local plane. Groups: ``normals`` (building pixels) and
    ``normals_all`` (every pixel), in degrees and percent, and ``planarity`` (metres, percent).
    """
    p, ref = reference.params, reference
    pr = pred_points[ref.keep].astype(np.float64)
    pred_normals = plane_normals(pr, ref.neighbours, ref.counts, p.normal_min_neighbors)
    has_gt = np.isfinite(ref.normals).all(-1)
    err = normal_angle_deg(ref.normals[has_gt], pred_normals[has_gt])
    bld_pr = pr[ref.scored]
    residual = np.concatenate(
        [np.abs(bld_pr[idx] @ model[:3] + model[3]) for model, idx in ref.planes] or [np.empty(0)]
    )
    groups = {
        "normals": _summarise(err[ref.scored[has_gt]], NORMAL_STATS),
        "normals_all": _summarise(err, NORMAL_STATS),
        "planarity": _summarise(residual, PLANARITY_STATS) | {"n_planes": len(ref.planes)},
    }
    return MetricResult(groups, dict(align_record))
