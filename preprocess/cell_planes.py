"""The planes of a static cloud's cells: found once per window, they become planar patches
(planar_patches.py), drawn instead of the discs of their points.

Most of a street's static cloud lies on a few planes per 2 m cell: facades, road, roofs. Each
cell's largest planes are found by RANSAC over its points and refined by least squares on
their inliers; each gets the disc radius its points' surfels would have (patch_reach), and
learns across which faces of its cell the same plane runs on (continuations), so that its
cover is trimmed only where the surface really ends.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .surface_kernels import normal_about
from .surfels import search_from

MAX_PLANES_PER_CELL = 5  # a street cell holds a few planes at most (ground, facades and roofs at corners)
HYPOTHESES = 24  # RANSAC triplets per plane: all on a plane holding a quarter of the pool, p > 0.999
CLEAR_SHARE = 0.8  # a hypothesis holding this share of the pool ends the search
POOL = 256  # points scored per hypothesis, taken at an even stride through the cell
REACH_SAMPLES, REACH_RANK = 8, 5  # see patch_reach
REACH_WINDOW = 3  # fine cells; a point farther off in y or z lies beyond patch_reach's two-cell bound
LINE_RATIO = 0.1  # inliers whose spread off a plane is this share of their narrower one in it: a line
COPLANAR_DEGREES = 2.0  # planes of neighbouring cells this close in direction may be one surface


@nb.njit(cache=True, nogil=True, inline="always")
def _next_random(state: int) -> int:
    """One step of a 31-bit linear congruential generator: hypotheses depend only on the cell,
    so the patches are the same on every run and in every process."""
    return (state * 1103515245 + 12345) & 0x7FFFFFFF


@nb.njit(cache=True, nogil=True)
def _plane_fit(points: np.ndarray, members: np.ndarray, count: int) -> tuple:
    """Least-squares plane through points[members[:count]]: unit normal and offset (n . p = d),
    and the smallest/middle eigenvalue ratio."""
    mx = my = mz = 0.0
    for c in range(count):
        m = members[c]
        mx += points[m, 0]
        my += points[m, 1]
        mz += points[m, 2]
    mx, my, mz = mx / count, my / count, mz / count
    nx, ny, nz, ratio = normal_about(points, members, count, mx, my, mz)
    return nx, ny, nz, nx * mx + ny * my + nz * mz, ratio


@nb.njit(cache=True, nogil=True)
def _inliers(points, candidates, n_candidates, nx, ny, nz, d, tolerance, out) -> int:
    """The points of candidates[:n_candidates] within tolerance of plane n . p = d, into out."""
    count = 0
    for c in range(n_candidates):
        m = candidates[c]
        if abs(nx * points[m, 0] + ny * points[m, 1] + nz * points[m, 2] - d) <= tolerance:
            out[count] = m
            count += 1
    return count


@nb.njit(cache=True, nogil=True)
def extract_planes(
    points: np.ndarray, cell_starts: np.ndarray, tolerance: float, min_points: int, plane_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Up to MAX_PLANES_PER_CELL planes per cell (cell c holds points cell_starts[c]:
    cell_starts[c+1]), each with at least min_points points within `tolerance` metres, found
    largest first by RANSAC and refined by least squares on their inliers. Writes each point's
    plane into plane_of (int32, -1: none); returns each plane's (nx, ny, nz, d) and its cell."""
    plane_of[:] = -1
    planes = np.empty((0, 4))
    plane_cell = np.empty(0, dtype=np.int64)
    found = 0
    pool = np.empty(POOL, dtype=np.int64)
    pool_xyz = np.empty((3, POOL))
    members = np.empty(0, dtype=np.int64)
    left_ids = np.empty(0, dtype=np.int64)
    for cell in range(cell_starts.shape[0] - 1):
        first, last = cell_starts[cell], cell_starts[cell + 1]
        if last - first < min_points:
            continue
        if members.shape[0] < last - first:
            members = np.empty(last - first, dtype=np.int64)
            left_ids = np.empty(last - first, dtype=np.int64)
        state = _next_random(cell + 1)
        left = last - first  # the cell's points on no plane yet: left_ids[:left], in order
        for c in range(left):
            left_ids[c] = first + c
        for _ in range(MAX_PLANES_PER_CELL):
            pooled = 0
            stride = max(1, left // POOL)
            for c in range(0, left, stride):
                if pooled == POOL:
                    break
                pool[pooled] = left_ids[c]
                pooled += 1
            if pooled < 3:
                break
            for p in range(pooled):  # contiguous, so that scoring a hypothesis vectorises
                for a in range(3):
                    pool_xyz[a, p] = points[pool[p], a]
            best, bx, by, bz, bd = 0, 0.0, 0.0, 0.0, 0.0
            for _ in range(HYPOTHESES):
                state = _next_random(state)
                a = pool[state % pooled]
                state = _next_random(state)
                b = pool[state % pooled]
                state = _next_random(state)
                c = pool[state % pooled]
                ux, uy, uz = (
                    points[b, 0] - points[a, 0],
                    points[b, 1] - points[a, 1],
                    points[b, 2] - points[a, 2],
                )
                vx, vy, vz = (
                    points[c, 0] - points[a, 0],
                    points[c, 1] - points[a, 1],
                    points[c, 2] - points[a, 2],
                )
                nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
                norm = np.sqrt(nx * nx + ny * ny + nz * nz)
                if norm <= 1e-12:
                    continue
                nx, ny, nz = nx / norm, ny / norm, nz / norm
                d = nx * points[a, 0] + ny * points[a, 1] + nz * points[a, 2]
                score = 0
                for p in range(pooled):
                    score += (
                        abs(nx * pool_xyz[0, p] + ny * pool_xyz[1, p] + nz * pool_xyz[2, p] - d) <= tolerance
                    )
                if score > best:
                    best, bx, by, bz, bd = score, nx, ny, nz, d
                if best >= CLEAR_SHARE * pooled:  # one plane holds nearly the whole pool
                    break
            if best < 3:
                break
            count = _inliers(points, left_ids, left, bx, by, bz, bd, tolerance, members)
            if count < min_points:
                break
            nx, ny, nz, d, ratio = _plane_fit(points, members, count)
            if ratio > LINE_RATIO or (nx == 0.0 and ny == 0.0 and nz == 0.0):
                break  # the inliers lie along a line (a pole, a wire): no plane to speak of
            count = _inliers(points, left_ids, left, nx, ny, nz, d, tolerance, members)
            if count < min_points:
                break
            if found == planes.shape[0]:
                grown = np.empty((max(16, 2 * found), 4))
                grown[:found] = planes[:found]
                planes = grown
                grown_cell = np.empty(grown.shape[0], dtype=np.int64)
                grown_cell[:found] = plane_cell[:found]
                plane_cell = grown_cell
            planes[found, 0], planes[found, 1], planes[found, 2], planes[found, 3] = nx, ny, nz, d
            plane_cell[found] = cell
            for c in range(count):
                plane_of[members[c]] = found
            found += 1
            kept = 0
            for c in range(left):
                if plane_of[left_ids[c]] < 0:
                    left_ids[kept] = left_ids[c]
                    kept += 1
            left = kept
    return planes[:found].copy(), plane_cell[:found].copy()


@nb.njit(cache=True, nogil=True)
def continuations(
    planes: np.ndarray, plane_cell: np.ndarray, cell_keys: np.ndarray, dims: np.ndarray, tolerance: float
) -> np.ndarray:
    """For each plane and each face of its cell (axis a, low then high side: column 2a + side),
    whether the cell across that face holds the same plane (normals within COPLANAR_DEGREES,
    offsets within 2 tolerance): there the surface runs on, and its cover must reach over
    the face to meet the next cell's. Cells have linear keys cell_keys in a grid of dims;
    plane_cell[p] indexes cell_keys and is sorted."""
    n_planes = planes.shape[0]
    runs_on = np.zeros((n_planes, 6), dtype=np.bool_)
    first = np.searchsorted(plane_cell, np.arange(cell_keys.shape[0] + 1))
    strides = (dims[1] * dims[2], dims[2], 1)
    cos_limit = np.cos(np.deg2rad(COPLANAR_DEGREES))
    for p in range(n_planes):
        key = cell_keys[plane_cell[p]]
        coords = (key // strides[0], key // strides[1] % dims[1], key % dims[2])
        for a in range(3):
            for side in range(2):
                step = 1 if side else -1
                if not 0 <= coords[a] + step < dims[a]:
                    continue
                wanted = key + step * strides[a]
                cell = np.searchsorted(cell_keys, wanted)
                if cell == cell_keys.shape[0] or cell_keys[cell] != wanted:
                    continue
                for q in range(first[cell], first[cell + 1]):
                    cos = (
                        planes[p, 0] * planes[q, 0]
                        + planes[p, 1] * planes[q, 1]
                        + planes[p, 2] * planes[q, 2]
                    )
                    # the distance from q's point nearest the origin to plane p
                    gap = cos * planes[q, 3] - planes[p, 3]
                    if abs(cos) >= cos_limit and abs(gap) <= 2.0 * tolerance:
                        runs_on[p, 2 * a + side] = True
    return runs_on


@nb.njit(cache=True, nogil=True)
def _ranked(values: np.ndarray, rank: int) -> float:
    """The rank-th smallest of a few values (sorted in place by insertion): np.sort's
    quicksort, called once per plane, spent more on reference counts than on sorting."""
    for k in range(1, values.shape[0]):
        value, at = values[k], k
        while at > 0 and values[at - 1] > value:
            values[at] = values[at - 1]
            at -= 1
        values[at] = value
    return values[rank]


@nb.njit(cache=True, nogil=True)
def patch_reach(
    fine: tuple, plane_of: np.ndarray, plane_cell: np.ndarray, neighbours: int, scale: float
) -> np.ndarray:
    """The disc radius of each plane's cover: scale times the mean distance from a point to
    its `neighbours` nearest on the same plane (a surfel's radius, without the points of
    other surfaces nearby), at the REACH_RANK-th smallest of REACH_SAMPLES points spread
    through the plane: wide enough to close the plane where its points are sparser, not set
    by the few at its edges, whose neighbours lie on one side. `fine` is the fine grid the
    points are ordered by (see surfels.fit_surfels; plane_cell indexes its coarse cells). A
    point's neighbours are sought among those within one fine cell in x, and no distance
    counts beyond two fine cells, so only the fine cells within REACH_WINDOW in y and z are
    read."""
    points, cell_keys, cell_starts, rows = fine[0], fine[1], fine[2], fine[3]
    side, per_cell = fine[7], fine[8]
    n_planes = plane_cell.shape[0]
    reach = np.zeros(n_planes)
    near = np.empty(neighbours)
    found = np.empty(REACH_SAMPLES)
    # sized once for the largest cell: arrays reassigned in the loop cost reference-count
    # updates on every pass of the loops inside it
    largest = 0
    for p in range(n_planes):
        cell = plane_cell[p]
        largest = max(largest, cell_starts[rows[cell, per_cell]] - cell_starts[rows[cell, 0]])
    members = np.empty(largest, dtype=np.int64)  # the cell's plane points, grouped by plane
    keys = np.empty(largest, dtype=np.int64)  # their fine cells' keys within the coarse cell
    bounds = np.zeros(MAX_PLANES_PER_CELL + 1, dtype=np.int64)  # each plane's run in members
    cursor = np.empty(MAX_PLANES_PER_CELL, dtype=np.int64)
    cell_first = 0  # the cell's first plane
    cap = (2.0 * side) ** 2  # a neighbour counts at most two fine cells away
    for p in range(n_planes):
        if p == 0 or plane_cell[p] != plane_cell[p - 1]:  # a new cell: one pass over its points
            cell_first, first_cell, last_cell = p, rows[plane_cell[p], 0], rows[plane_cell[p], per_cell]
            first, last = cell_starts[first_cell], cell_starts[last_cell]
            bounds[:] = 0
            for m in range(first, last):
                if plane_of[m] >= 0:
                    bounds[plane_of[m] - cell_first + 1] += 1
            for q in range(MAX_PLANES_PER_CELL):
                bounds[q + 1] += bounds[q]
            cursor[:] = bounds[:-1]
            for f in range(first_cell, last_cell):
                for m in range(cell_starts[f], cell_starts[f + 1]):
                    if plane_of[m] >= 0:
                        at = cursor[plane_of[m] - cell_first]
                        members[at], keys[at] = m, cell_keys[f]
                        cursor[plane_of[m] - cell_first] += 1
        start = bounds[p - cell_first]
        count = bounds[p - cell_first + 1] - start
        use = min(neighbours, count - 1)
        if use < 1:
            continue
        end = start + count  # keys[start:end], the plane's, are sorted: the fine grid's order
        for s in range(REACH_SAMPLES):
            sample = start + (2 * s + 1) * count // (2 * REACH_SAMPLES)
            n, key = members[sample], keys[sample]
            lx, ly, lz = key // (per_cell * per_cell), key // per_cell % per_cell, key % per_cell
            near[:] = cap  # a point farther off counts as at the cap, as does none (see below)
            at = start  # the rows below are searched in increasing key order
            for jx in range(max(lx - 1, 0), min(lx + 1, per_cell - 1) + 1):
                for jy in range(max(ly - REACH_WINDOW, 0), min(ly + REACH_WINDOW, per_cell - 1) + 1):
                    row = (jx * per_cell + jy) * per_cell
                    low = search_from(keys, row + max(lz - REACH_WINDOW, 0), at, end, False)
                    at = search_from(keys, row + min(lz + REACH_WINDOW, per_cell - 1), low, end, True)
                    for c in range(low, at):
                        m = members[c]
                        if m == n:
                            continue
                        dx, dy, dz = (
                            points[m, 0] - points[n, 0],
                            points[m, 1] - points[n, 1],
                            points[m, 2] - points[n, 2],
                        )
                        d = np.float64(dx * dx + dy * dy + dz * dz)
                        if d >= near[use - 1]:  # no nearer than the farthest kept (most are not)
                            continue
                        for slot in range(use):  # sink d into the sorted nearest
                            if d < near[slot]:
                                d, near[slot] = near[slot], d
            total = 0.0
            for slot in range(use):
                total += np.sqrt(near[slot])
            found[s] = scale * total / use
        reach[p] = _ranked(found, REACH_RANK)
    return reach
