"""Small Numba kernels that the surfel and the planar-patch renderers share: the closed-form
normal of a plane through a 3x3 covariance (and through a set of points), the depth where a
pixel's ray meets a plane, and the z-buffer test that skips what nearer depth already hides."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def cross(a: tuple, b: tuple) -> tuple[float, float, float]:
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


@nb.njit(cache=True, nogil=True, inline="always")
def smallest_eigenvector(c00, c01, c02, c11, c12, c22):
    """Unit eigenvector of the smallest eigenvalue of a symmetric 3x3 matrix and the ratio of
    the smallest to the middle eigenvalue (0: a perfect plane); closed form, no LAPACK call."""
    p1 = c01 * c01 + c02 * c02 + c12 * c12
    q = (c00 + c11 + c22) / 3.0
    p2 = (c00 - q) ** 2 + (c11 - q) ** 2 + (c22 - q) ** 2 + 2.0 * p1
    if p2 <= 1e-30:
        return 0.0, 0.0, 0.0, 1.0
    p = np.sqrt(p2 / 6.0)
    b00, b11, b22 = (c00 - q) / p, (c11 - q) / p, (c22 - q) / p
    b01, b02, b12 = c01 / p, c02 / p, c12 / p
    det = b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02) + b02 * (b01 * b12 - b11 * b02)
    r = min(1.0, max(-1.0, det / 2.0))
    phi = np.arccos(r) / 3.0
    largest = q + 2.0 * p * np.cos(phi)
    smallest = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    middle = 3.0 * q - largest - smallest
    ratio = smallest / middle if middle > 1e-30 else 1.0
    # rows of C - smallest*I span the plane; their cross product is the eigenvector
    r0 = (c00 - smallest, c01, c02)
    r1 = (c01, c11 - smallest, c12)
    r2 = (c02, c12, c22 - smallest)
    # the cross products of the three row pairs, unrolled (a loop over tuples costs more than
    # the rest of the k-NN fit); the longest is the best conditioned
    x01, y01, z01 = cross(r0, r1)
    x02, y02, z02 = cross(r0, r2)
    x12, y12, z12 = cross(r1, r2)
    best, bx, by, bz = x01 * x01 + y01 * y01 + z01 * z01, x01, y01, z01
    norm = x02 * x02 + y02 * y02 + z02 * z02
    if norm > best:
        best, bx, by, bz = norm, x02, y02, z02
    norm = x12 * x12 + y12 * y12 + z12 * z12
    if norm > best:
        best, bx, by, bz = norm, x12, y12, z12
    if best <= 1e-30:
        return 0.0, 0.0, 0.0, 1.0
    inv = 1.0 / np.sqrt(best)
    return bx * inv, by * inv, bz * inv, ratio


@nb.njit(cache=True, nogil=True, inline="always")
def normal_about(
    points: np.ndarray, members: np.ndarray, count: int, mx: float, my: float, mz: float
) -> tuple[float, float, float, float]:
    """smallest_eigenvector of the scatter of points[members[:count]] about (mx, my, mz): the
    normal of the plane through them there, and how far they are from one."""
    c00 = c01 = c02 = c11 = c12 = c22 = 0.0
    for c in range(count):
        m = members[c]
        dx, dy, dz = points[m, 0] - mx, points[m, 1] - my, points[m, 2] - mz
        c00 += dx * dx
        c01 += dx * dy
        c02 += dx * dz
        c11 += dy * dy
        c12 += dy * dz
        c22 += dz * dz
    return smallest_eigenvector(c00, c01, c02, c11, c12, c22)


@nb.njit(cache=True, nogil=True, inline="always")
def ray_plane_depth(
    nx: float, ny: float, nz: float, plane: float, dx: float, dy: float, min_cos: float, min_depth: float,
    max_depth: float,
) -> float:  # fmt: skip
    """Depth at which the ray (dx, dy, 1) meets the plane n . p = plane (camera frame), or 0
    when it meets it more edge-on than min_cos (cosine between ray and normal) or outside
    min_depth..max_depth: the one rule discs and planar patches are drawn by."""
    facing = nx * dx + ny * dy + nz
    if facing * facing < min_cos * min_cos * (dx * dx + dy * dy + 1.0):
        return 0.0
    zt = plane / facing
    if zt <= min_depth or zt > max_depth:
        return 0.0
    return zt


@nb.njit(cache=True, nogil=True, inline="always")
def covered(depth: np.ndarray, i0: int, i1: int, j0: int, j1: int, zmin: float) -> bool:
    """Whether every pixel of rows i0..i1, columns j0..j1 already holds a surface nearer than
    zmin (then nothing whose nearest point is at zmin can show there). Inlined: it runs for
    most discs and patch rows of every frame, and a call costs reference-count updates."""
    for i in range(i0, i1 + 1):
        for j in range(j0, j1 + 1):
            current = depth[i, j]
            if current == 0.0 or current >= zmin:
                return False
    return True
