"""Facade planes of a point cloud: seeded RANSAC, planes extracted one after another.

open3d's `segment_plane` draws its samples from one shared generator inside an OpenMP loop
that stops early once a good plane is found, so which samples it scores depends on thread
timing: seeded, it still returned a different plane in about 1 of 12 launches on a dominant
noisy facade. Planarity must not depend on thread timing, so here every hypothesis is drawn up
front from a numpy Generator and scored in fixed batches in order (vectorised, one matrix
product per batch): the same points and seed always give the same planes.
"""

from __future__ import annotations

import math

import numpy as np

# open3d's default: stop once a better plane is this unlikely to be missed
RANSAC_CONFIDENCE = 0.99999999
_BATCH = 256


def least_squares_plane(points: np.ndarray) -> np.ndarray:
    """Unit plane [a,b,c,d] (a x + b y + c z + d = 0) of least squares through ``points`` [N,3]."""
    centroid = points.mean(0)
    normal = np.linalg.svd(points - centroid, full_matrices=False)[2][-1]
    return np.append(normal, -normal @ centroid)


def _planes_through(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Unit planes [K,4] through point triples [K,3] each; degenerate triples (repeated or
    collinear points) give NaN rows."""
    normal = np.cross(b - a, c - a)
    norm = np.linalg.norm(normal, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normal = np.where(norm > 0, normal / norm, np.nan)
    return np.concatenate([normal, -(normal * a).sum(1, keepdims=True)], axis=1)


def _iterations_needed(inlier_ratio: float, cap: int) -> int:
    """Hypotheses after which a plane with more inliers is missed with probability < 1 - confidence."""
    if inlier_ratio >= 1.0:
        return 0
    if inlier_ratio <= 0.0:
        return cap
    return min(cap, math.ceil(math.log(1 - RANSAC_CONFIDENCE) / math.log(1 - inlier_ratio**3)))


def ransac_plane(
    points: np.ndarray, distance: float, iterations: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Indices of the inliers (distance < ``distance``) of the three-point plane with the most
    inliers among up to ``iterations`` hypotheses; None when every hypothesis is degenerate.

    Ties keep the earlier hypothesis; scoring stops early (at a batch boundary) once enough
    hypotheses were tried for the best inlier ratio so far, as open3d does.
    """
    n = len(points)
    triples = rng.integers(0, n, size=(iterations, 3))
    best, best_count, needed = None, 0, iterations
    for start in range(0, iterations, _BATCH):
        if start >= needed:
            break
        t = triples[start : start + _BATCH]
        planes = _planes_through(points[t[:, 0]], points[t[:, 1]], points[t[:, 2]])
        planes = planes[np.isfinite(planes).all(1)]
        if not len(planes):
            continue
        counts = (np.abs(points @ planes[:, :3].T + planes[:, 3]) < distance).sum(0)
        k = int(np.argmax(counts))
        if counts[k] > best_count:
            best, best_count = planes[k], int(counts[k])
            needed = _iterations_needed(best_count / n, iterations)
    if best is None:
        return None
    return np.flatnonzero(np.abs(points @ best[:3] + best[3]) < distance)


def extract_planes(
    points: np.ndarray, distance: float, min_inliers: int, max_planes: int, iterations: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Planes found one after another, each on the points the earlier ones left: a list of
    (unit plane [a,b,c,d] refined by least squares on its inliers, inlier indices into
    ``points``), largest first; stops at ``max_planes`` or a plane under ``min_inliers``."""
    rng = np.random.default_rng(seed)
    remaining = np.arange(len(points))
    planes = []
    while len(planes) < max_planes and len(remaining) >= max(min_inliers, 3):
        inliers = ransac_plane(points[remaining], distance, iterations, rng)
        if inliers is None or len(inliers) < min_inliers:
            break
        planes.append((least_squares_plane(points[remaining[inliers]]), remaining[inliers]))
        remaining = np.delete(remaining, inliers)
    return planes
