"""Numba kernels shared by every source: point projection into a z-buffer, sweep
registration, per-point label lookup, removal of points hidden behind nearer surfaces, and
unprojection of depth to world points.

Pixel (i, j) is centred at (x=j, y=i); a point lands in the pixel nearest to it and the
nearest point wins (never an average of depths).
"""

from __future__ import annotations

import numba as nb
import numpy as np

NO_LABELS = np.zeros((0, 0), dtype=np.uint8)


@nb.njit(cache=True, nogil=True, inline="always")
def _transform_point(points: np.ndarray, n: int, T: np.ndarray) -> tuple[float, float, float]:
    """Point n of (N, 3) `points` through the 4x4 rigid transform T, as float64.

    A loop body, not `points @ R.T`: BLAS would start its thread pool for a 3x3 product, and
    its spinning threads steal the cores the read-ahead and shard-writer threads need."""
    px, py, pz = np.float64(points[n, 0]), np.float64(points[n, 1]), np.float64(points[n, 2])
    x = T[0, 0] * px + T[0, 1] * py + T[0, 2] * pz + T[0, 3]
    y = T[1, 0] * px + T[1, 1] * py + T[1, 2] * pz + T[1, 3]
    z = T[2, 0] * px + T[2, 1] * py + T[2, 2] * pz + T[2, 3]
    return x, y, z


@nb.njit(cache=True, nogil=True, inline="always")
def _nearest_pixel(xn: float, yn: float, K: np.ndarray) -> tuple[int, int]:
    """(row, col) of the pixel nearest to normalised image coordinates (x/z, y/z)."""
    col = int(np.floor(K[0, 0] * xn + K[0, 1] * yn + K[0, 2] + 0.5))
    row = int(np.floor(K[1, 1] * yn + K[1, 2] + 0.5))
    return row, col


@nb.njit(cache=True, nogil=True)
def zbuffer_points(
    points: np.ndarray,
    keep: np.ndarray,
    cam_from_points: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray,
    min_depth: float,
    labels: np.ndarray,
    K_labels: np.ndarray,
    reject_label: np.ndarray,
) -> int:
    """Project `points` (N,3) with keep[n] into `depth` (z-buffer, 0 = empty), in place.

    When `labels` is non-empty, a point whose pixel in that label image (intrinsics
    K_labels) carries a label with reject_label[label] is dropped. Returns points written.
    The depth test is written as a select, not a branch: whether a point is nearer than
    the pixel's current one is a coin flip the CPU cannot predict.
    """
    height, width = depth.shape
    lh, lw = labels.shape
    written = 0
    for n in range(points.shape[0]):
        if not keep[n]:
            continue
        x, y, z = _transform_point(points, n, cam_from_points)
        if z <= min_depth:
            continue
        inv_z = 1.0 / z
        xn, yn = x * inv_z, y * inv_z
        i, j = _nearest_pixel(xn, yn, K)
        if i < 0 or i >= height or j < 0 or j >= width:
            continue
        if lh > 0:
            il, jl = _nearest_pixel(xn, yn, K_labels)
            if 0 <= il < lh and 0 <= jl < lw and reject_label[labels[il, jl]]:
                continue
        current = depth[i, j]
        nearer = np.float32(z)
        depth[i, j] = nearer if (current == 0.0) | (nearer < current) else current
        written += 1
    return written


@nb.njit(cache=True, nogil=True)
def register_sweep(
    points: np.ndarray,
    world_from_points: np.ndarray,
    cam_from_points: np.ndarray,
    K: np.ndarray,
    labels: np.ndarray,
    reject_label: np.ndarray,
    margin: int,
) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates (M, 3) float64 of the sweep points that matter, and which of them are
    trusted for accumulation into other frames.

    With labels (this frame's semantics, intrinsics K), only points its own camera sees,
    within `margin` pixels of the label image, are kept: a spinning LiDAR sees all around,
    the camera about a quarter of that. Trusted are the kept points inside the label image
    whose label is not rejected: a point this frame cannot label might belong to a moving
    object. The margin keeps every point that lands in this frame's own (resized) image, so
    the frame's depth loses nothing. Without labels every point is kept and trusted.
    """
    n_points = points.shape[0]
    lh, lw = labels.shape
    kept = np.ones(n_points, dtype=np.bool_)
    trusted = np.ones(n_points, dtype=np.bool_)
    if lh > 0:
        for n in range(n_points):
            x, y, z = _transform_point(points, n, cam_from_points)
            if z <= 0.0:
                kept[n] = False
                continue
            inv_z = 1.0 / z
            i, j = _nearest_pixel(x * inv_z, y * inv_z, K)
            kept[n] = -margin <= i < lh + margin and -margin <= j < lw + margin
            trusted[n] = 0 <= i < lh and 0 <= j < lw and not reject_label[labels[i, j]]
    count = int(kept.sum())
    world = np.empty((count, 3), dtype=np.float64)
    out_trusted = np.empty(count, dtype=np.bool_)
    m = 0
    for n in range(n_points):
        if kept[n]:
            world[m, 0], world[m, 1], world[m, 2] = _transform_point(points, n, world_from_points)
            out_trusted[m] = trusted[n]
            m += 1
    return world, out_trusted


@nb.njit(cache=True, nogil=True)
def remove_occluded(depth: np.ndarray, radius: int, rel_tol: float) -> int:
    """Zero pixels that show a surface seen *through* a nearer one, in place.

    A pixel is occluded when, within `radius`, nearer pixels (by more than `rel_tol`)
    lie on both opposite sides of it: left and right, above and below, or across either
    diagonal. Background points leaking through gaps of a sparse foreground are enclosed
    like that; a slanted surface (road, oblique facade) has nearer points on one side
    only and survives. Returns the number of pixels removed.
    """
    height, width = depth.shape
    source = depth.copy()
    removed = 0
    for i in range(height):
        for j in range(width):
            z = source[i, j]
            if z == 0.0:
                continue
            limit = z / (1.0 + rel_tol)
            left = right = up = down = False
            ul = dr = ur = dl = False
            for di in range(-radius, radius + 1):
                ii = i + di
                if ii < 0 or ii >= height:
                    continue
                for dj in range(-radius, radius + 1):
                    jj = j + dj
                    if jj < 0 or jj >= width or (di == 0 and dj == 0):
                        continue
                    q = source[ii, jj]
                    if q == 0.0 or q >= limit:
                        continue
                    left |= dj < 0
                    right |= dj > 0
                    up |= di < 0
                    down |= di > 0
                    ul |= di < 0 and dj < 0
                    dr |= di > 0 and dj > 0
                    ur |= di < 0 and dj > 0
                    dl |= di > 0 and dj < 0
            if (left and right) or (up and down) or (ul and dr) or (ur and dl):
                depth[i, j] = 0.0
                removed += 1
    return removed


def depth_to_world(depth: np.ndarray, K: np.ndarray, world_from_cam: np.ndarray) -> np.ndarray:
    """(H,W,3) float32 world points of pixel centres at their depth; zeros where depth == 0."""
    world = np.zeros((*depth.shape, 3), dtype=np.float32)
    _unproject(
        np.ascontiguousarray(depth), np.asarray(K, np.float64), np.asarray(world_from_cam, np.float64), world
    )
    return world


@nb.njit(cache=True, nogil=True)
def _unproject(depth: np.ndarray, K: np.ndarray, T: np.ndarray, world: np.ndarray) -> None:
    """Only pixels with depth are touched: sparse LiDAR depth leaves most of the image empty."""
    height, width = depth.shape
    for i in range(height):
        for j in range(width):
            z = np.float64(depth[i, j])
            if z <= 0.0:
                continue
            y = (i - K[1, 2]) / K[1, 1] * z
            x = (j - K[0, 2] - K[0, 1] * y / z) / K[0, 0] * z
            for c in range(3):
                world[i, j, c] = T[c, 0] * x + T[c, 1] * y + T[c, 2] * z + T[c, 3]


def label_lut(labels: tuple[int, ...] | list[int]) -> np.ndarray:
    """Boolean lookup table over uint8 label ids."""
    lut = np.zeros(256, dtype=np.bool_)
    lut[list(labels)] = True
    return lut
