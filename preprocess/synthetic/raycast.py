"""Exact ray casting against the synthetic scene: a ground plane (z = 0) and boxes that
are rotated about the vertical axis. Numba-parallel over rays."""

from __future__ import annotations

import numba as nb
import numpy as np

NO_HIT = -1


@nb.njit(cache=True, parallel=True)
def cast_rays(
    origins: np.ndarray,
    dirs: np.ndarray,
    centres: np.ndarray,
    yaws: np.ndarray,
    halves: np.ndarray,
    max_t: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit per ray: distance t (along unit or non-unit `dirs`), object id (len(boxes)
    for the ground, -1 for nothing) and hit face axis in the object's frame (0, 1, 2)."""
    n = dirs.shape[0]
    m = centres.shape[0]
    t_out = np.full(n, np.inf)
    obj_out = np.full(n, NO_HIT, dtype=np.int64)
    axis_out = np.full(n, 2, dtype=np.int64)
    cos_y = np.cos(yaws)
    sin_y = np.sin(yaws)
    for r in nb.prange(n):
        o = origins[r] if origins.shape[0] == n else origins[0]
        d = dirs[r]
        best, best_obj, best_axis = max_t, NO_HIT, 2
        if d[2] < 0.0:
            t = -o[2] / d[2]
            if 0.0 < t < best:
                best, best_obj, best_axis = t, m, 2
        for k in range(m):
            # ray in box frame (rotate by -yaw about z, centred)
            px, py, pz = o[0] - centres[k, 0], o[1] - centres[k, 1], o[2] - centres[k, 2]
            c, s = cos_y[k], sin_y[k]
            lo = (c * px + s * py, -s * px + c * py, pz)
            ld = (c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2])
            t_near, t_far, axis = -np.inf, np.inf, 0
            hit = True
            for a in range(3):
                h = halves[k, a]
                if abs(ld[a]) < 1e-12:
                    if abs(lo[a]) > h:
                        hit = False
                        break
                    continue
                t1 = (-h - lo[a]) / ld[a]
                t2 = (h - lo[a]) / ld[a]
                if t1 > t2:
                    t1, t2 = t2, t1
                if t1 > t_near:
                    t_near, axis = t1, a
                t_far = min(t_far, t2)
                if t_near > t_far:
                    hit = False
                    break
            if hit and 1e-6 < t_near < best:
                best, best_obj, best_axis = t_near, k, axis
        if best_obj != NO_HIT:
            t_out[r] = best
            obj_out[r] = best_obj
            axis_out[r] = best_axis
    return t_out, obj_out, axis_out
