"""Numba kernels that turn a dense static point cloud into depth: surfels (oriented discs)
rendered per frame, each fitted once, the first time a frame may show it.

Each point becomes a disc: its normal from the plane through its k nearest neighbours, its
radius from their spacing, so neighbouring discs close the surface without reaching far
past its edges. A frame's depth at a pixel is where the pixel-centre ray meets the nearest
disc (a ray/plane intersection, exact on planar surfaces), never the depth of the nearest
point that happens to land in the pixel: on surfaces seen at grazing angles that minimum is
biased toward the camera. Discs close the surfaces, so what lies behind them is hidden.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .planar_patches import build_cell_patches, draw_patches, draw_scratch
from .surface_kernels import covered, normal_about, ray_plane_depth

NO_NORMAL = 0.0  # a zero normal: no reliable plane (edges, clutter); the disc then faces the camera
BLOCK_POINTS = 64  # culling granularity below the coarse cell: enough points to amortise a box test
UNFITTED = -1.0  # the radius of a disc not fitted yet
PRETEST_PIXELS = 16  # see _fit_visible
RECT_MARGIN = 1e-3  # pixels; a box's pixel bounds are widened by this against rounding
RADIX_BITS, RADIX_MASK = 8, 255  # sort_within_cells: key digits of 8 bits, 256 buckets
DENSE_CUBES = 1 << 24  # detail_levels marks a cell's occupied cubes in a byte array up to this many


@nb.njit(cache=True, nogil=True, inline="always")
def grid_coords(points: np.ndarray, n: int, lo: np.ndarray, cell: float) -> tuple[int, int, int]:
    """Integer coordinates of point n's cell in a grid of side `cell` from `lo`: the one
    formula both a grid's keys and the lookups into it use."""
    ix = int((np.float64(points[n, 0]) - lo[0]) / cell)
    iy = int((np.float64(points[n, 1]) - lo[1]) / cell)
    iz = int((np.float64(points[n, 2]) - lo[2]) / cell)
    return ix, iy, iz


@nb.njit(cache=True, nogil=True)
def point_bounds(points: np.ndarray) -> tuple:
    """The points' lowest corner lo (3,) and highest corner hi (1, 3), float64, in one pass: a
    window's grids (occupied_cells, nested_grid_keys) all start from them."""
    lo, hi = np.full(3, np.inf), np.full((1, 3), -np.inf)
    for n in range(points.shape[0]):
        for a in range(3):
            lo[a] = min(lo[a], np.float64(points[n, a]))
            hi[0, a] = max(hi[0, a], np.float64(points[n, a]))
    return lo, hi


@nb.njit(cache=True, nogil=True, inline="always")
def _grid_top(bounds: tuple, cell: float) -> tuple:
    """The cell coordinates of the highest corner in a grid of side `cell` from the lowest
    (bounds: point_bounds): cell coordinates grow with the coordinates, so no point's exceed
    them. (0, 0, 0) for no points."""
    lo, hi = bounds
    return grid_coords(hi, 0, lo, cell) if hi[0, 0] >= lo[0] else (0, 0, 0)


@nb.njit(cache=True, nogil=True)
def occupied_cells(points: np.ndarray, bounds: tuple, cell: float, dense_limit: int) -> int:
    """Number of cells of side `cell` (a grid from the points' lowest corner; bounds:
    point_bounds) holding a point: marked in a byte array when the grid has at most
    dense_limit cells, else counted among the sorted keys ((ix * dims[1] + iy) * dims[2] + iz)."""
    lo, top = bounds[0], _grid_top(bounds, cell)
    dims = np.array([top[0] + 1, top[1] + 1, top[2] + 1])
    dense = dims[0] * dims[1] * dims[2] <= dense_limit
    seen = np.zeros(dims[0] * dims[1] * dims[2] if dense else 0, dtype=np.bool_)
    keys = np.empty(0 if dense else points.shape[0], dtype=np.int64)
    occupied = 0
    for n in range(points.shape[0]):
        ix, iy, iz = grid_coords(points, n, lo, cell)
        key = (ix * dims[1] + iy) * dims[2] + iz
        if not dense:
            keys[n] = key
        elif not seen[key]:
            seen[key] = True
            occupied += 1
    if not dense:
        keys.sort()
        for n in range(keys.shape[0]):
            occupied += n == 0 or keys[n] != keys[n - 1]
    return occupied


@nb.njit(cache=True, nogil=True)
def nested_grid_keys(
    points: np.ndarray, bounds: tuple, side: float, per_cell: int, coarse: np.ndarray, local: np.ndarray
) -> tuple:
    """Cells of side `side` from the points' lowest corner lo (bounds: point_bounds), nested
    per_cell to a side in coarse cells: writes each point's coarse key ((cx * dims[1] + cy) *
    dims[2] + cz, into `coarse`, int64) and its fine cell's key within that coarse cell
    ((lx * per_cell + ly) * per_cell + lz, into `local`, int32). Returns the coarse grid's
    dims and lo."""
    lo, top = bounds[0], _grid_top(bounds, side)
    dims = np.array([top[0] // per_cell + 1, top[1] // per_cell + 1, top[2] // per_cell + 1])
    # each fine coordinate's coarse and local parts, looked up: integer division is slow
    parts = np.empty((3, 2, max(top[0], top[1], top[2]) + 1), dtype=np.int64)
    for i in range(parts.shape[2]):
        parts[:, 0, i], parts[:, 1, i] = i // per_cell, i % per_cell
    parts[0, 0] *= dims[1] * dims[2]
    parts[1, 0] *= dims[2]
    parts[0, 1] *= per_cell * per_cell
    parts[1, 1] *= per_cell
    for n in range(points.shape[0]):
        ix, iy, iz = grid_coords(points, n, lo, side)
        coarse[n] = parts[0, 0, ix] + parts[1, 0, iy] + parts[2, 0, iz]
        local[n] = parts[0, 1, ix] + parts[1, 1, iy] + parts[2, 1, iz]
    return dims, lo


@nb.njit(cache=True, nogil=True)
def sort_within_cells(
    local: np.ndarray, by_cell: np.ndarray, cell_starts: np.ndarray, per_cell: int
) -> tuple:
    """Order each coarse cell's points (by_cell, grouped by cell_starts) by their local fine
    key (nested_grid_keys), stably, in place: by_cell becomes the points' new order. Returns
    the sorted unique local key of every fine cell, where each fine cell's points start (one
    past the end appended) and, for each coarse cell and each of its per_cell rows lx of fine
    cells, the first fine cell of that row or after it ((C, per_cell + 1): the last column is
    the next coarse cell's first). Sorting a few thousand points per coarse cell stays in
    cache, unlike one sort of the whole window; a radix sort, as the keys are dense and short.
    The keys and starts returned are the used heads of arrays sized for one fine cell per
    point: pages of the unused tails are never touched, so never take memory."""
    n_points, row = by_cell.shape[0], per_cell**2
    passes = 1
    while 1 << (RADIX_BITS * passes) < per_cell**3:
        passes += 1
    keys = np.empty(n_points, dtype=np.int32)
    starts = np.empty(n_points + 1, dtype=np.int64)
    rows = np.empty((cell_starts.shape[0] - 1, per_cell + 1), dtype=np.int32)
    counts = np.empty((1 << RADIX_BITS) + 1, dtype=np.int64)
    largest = np.max(np.diff(cell_starts)) if cell_starts.shape[0] > 1 else 0
    work = np.empty((2, largest), dtype=np.int64)  # (points, their keys) of the pass being read
    spare = np.empty((2, largest), dtype=np.int64)
    n_fine = 0
    for cell in range(cell_starts.shape[0] - 1):
        first, last = cell_starts[cell], cell_starts[cell + 1]
        size = last - first
        for c in range(size):
            work[0, c] = by_cell[first + c]
            work[1, c] = local[by_cell[first + c]]
        for p in range(passes):  # stable LSD radix sort of the cell's points by local key
            shift = RADIX_BITS * p
            counts[:] = 0
            for c in range(size):
                counts[((work[1, c] >> shift) & RADIX_MASK) + 1] += 1
            for digit in range(1 << RADIX_BITS):
                counts[digit + 1] += counts[digit]
            for c in range(size):
                digit = (work[1, c] >> shift) & RADIX_MASK
                spare[0, counts[digit]], spare[1, counts[digit]] = work[0, c], work[1, c]
                counts[digit] += 1
            work, spare = spare, work
        by_cell[first:last] = work[0, :size]
        lx = 0
        for at in range(first, last):
            key = work[1, at - first]
            if at == first or key != keys[n_fine - 1]:
                while lx <= key // row:
                    rows[cell, lx] = n_fine
                    lx += 1
                keys[n_fine] = key
                starts[n_fine] = at
                n_fine += 1
        rows[cell, lx:] = n_fine
    starts[n_fine] = n_points
    return keys[:n_fine], starts[: n_fine + 1], rows


@nb.njit(cache=True, nogil=True)
def gather_points(
    points: np.ndarray, labels: np.ndarray, index: np.ndarray, out_points: np.ndarray
) -> np.ndarray:
    """out_points[:] = points[index] and labels[index] returned, in one pass: NumPy's row
    gather of a window's millions of (x, y, z) rows is a third of its preparation."""
    out_labels = np.empty(index.shape[0], dtype=labels.dtype)
    for m in range(index.shape[0]):
        n = index[m]
        out_points[m, 0], out_points[m, 1], out_points[m, 2] = points[n, 0], points[n, 1], points[n, 2]
        out_labels[m] = labels[n]
    return out_labels


@nb.njit(cache=True, nogil=True)
def group_by_key(keys: np.ndarray, bound: int, counting_limit: int) -> tuple:
    """The stable order that sorts keys (all in 0..bound-1; int32: fewer than 2^31 keys), the
    distinct keys in that order and where each one's run starts (one past the end appended).
    By counting sort when bound is at most counting_limit and 4 * len(keys) (linear time for
    the few hundred thousand cells of a window's coarse grid), else by merge sort."""
    n_keys = keys.shape[0]
    if bound <= min(counting_limit, 4 * n_keys):
        counts = np.zeros(bound + 1, dtype=np.int64)
        for key in keys:
            counts[key + 1] += 1
        n_distinct = 0
        for key in range(bound):
            n_distinct += counts[key + 1] > 0
            counts[key + 1] += counts[key]
        order = np.empty(n_keys, dtype=np.int32)
        distinct = np.empty(n_distinct, dtype=np.int64)
        starts = np.empty(n_distinct + 1, dtype=np.int64)
        d = 0
        for key in range(bound):
            if counts[key + 1] > counts[key]:
                distinct[d], starts[d] = key, counts[key]
                d += 1
        for m in range(n_keys):
            order[counts[keys[m]]] = m
            counts[keys[m]] += 1
    else:
        order = np.argsort(keys, kind="mergesort").astype(np.int32)
        n_distinct = 0
        for m in range(n_keys):
            n_distinct += m == 0 or keys[order[m]] != keys[order[m - 1]]
        distinct = np.empty(n_distinct, dtype=np.int64)
        starts = np.empty(n_distinct + 1, dtype=np.int64)
        d = 0
        for m in range(n_keys):
            if m == 0 or keys[order[m]] != keys[order[m - 1]]:
                distinct[d], starts[d] = keys[order[m]], m
                d += 1
    starts[n_distinct] = n_keys
    return order, distinct, starts


@nb.njit(cache=True, nogil=True)
def search_from(keys: np.ndarray, value: int, lo: int, hi: int, right: bool) -> int:
    """np.searchsorted(keys[lo:hi], value, side) + lo, galloping forward from lo before
    bisecting: the wanted cell is usually a few places on, where the previous search ended.
    Not inlined by Numba (LLVM inlines it): Numba's inlining cost reference-count updates of
    `keys` per call in large callers."""
    step, end = 1, lo
    while end < hi and (keys[end] <= value if right else keys[end] < value):
        lo, end = end + 1, end + 1 + step
        step *= 2
    end = min(end, hi)
    while lo < end:
        mid = (lo + end) // 2
        if keys[mid] <= value if right else keys[mid] < value:
            lo = mid + 1
        else:
            end = mid
    return lo


@nb.njit(cache=True, nogil=True)
def _neighbour_runs(
    fine: tuple, ix: int, iy: int, iz: int, run_lo: np.ndarray, run_hi: np.ndarray, memo: np.ndarray
) -> tuple[int, int]:
    """Point ranges of the 27 fine cells around fine cell (ix, iy, iz) (see fit_surfels), as
    runs into run_lo, run_hi: for each (dx, dy) the cells dz = -1..1 are contiguous within a
    coarse cell, so a run breaks only where the column crosses into the next coarse cell (18
    runs at most). `memo` (2, S) caches coarse key -> coarse cell (-1: empty) in slot
    key % S across calls: the 27 coarse cells around a point are few. Returns the number of
    runs and the index of cell (ix, iy, iz) itself."""
    _, cell_keys, cell_starts, rows, coarse_keys, dims, _, _, per_cell = fine
    runs, own, last_key, last_jx, coarse, at, last = 0, -1, -1, -1, -1, 0, 0
    z0, z1 = max(iz - 1, 0), min(iz + 1, dims[2] * per_cell - 1)
    for jx in range(max(ix - 1, 0), min(ix + 2, dims[0] * per_cell)):
        lx = jx % per_cell
        for jy in range(max(iy - 1, 0), min(iy + 2, dims[1] * per_cell)):
            column = ((jx // per_cell) * dims[1] + jy // per_cell) * dims[2]
            local = (lx * per_cell + jy % per_cell) * per_cell
            for cz in range(z0 // per_cell, z1 // per_cell + 1):
                if column + cz != last_key:  # neighbouring columns mostly share a coarse cell
                    last_key, last_jx = column + cz, -1
                    slot = last_key % memo.shape[1]
                    if memo[0, slot] == last_key:
                        coarse = memo[1, slot]
                    else:
                        coarse = search_from(coarse_keys, last_key, 0, coarse_keys.shape[0], False)
                        if coarse == coarse_keys.shape[0] or coarse_keys[coarse] != last_key:
                            coarse = -1
                        memo[0, slot], memo[1, slot] = last_key, coarse
                if coarse < 0:
                    continue
                if jx != last_jx:  # searches within a row of fine cells, in increasing key order
                    last_jx, at, last = jx, rows[coarse, lx], rows[coarse, lx + 1]
                bottom = cz * per_cell
                lowest = local + max(z0, bottom) - bottom
                highest = local + min(z1, bottom + per_cell - 1) - bottom
                start = search_from(cell_keys, lowest, at, last, False)
                at = search_from(cell_keys, highest, start, last, True)
                if at > start:
                    run_lo[runs], run_hi[runs] = cell_starts[start], cell_starts[at]
                    runs += 1
                if jx == ix and jy == iy and cz == iz // per_cell:
                    own = search_from(cell_keys, local + iz - bottom, start, at, False)
    return runs, own


@nb.njit(cache=True, nogil=True)
def fit_surfels(
    targets: np.ndarray,
    fine_index: np.ndarray,
    fine: tuple,
    fit: tuple,
    normals: np.ndarray,
    radii: np.ndarray,
) -> None:
    """Fit, in place, the normal and disc radius of the points at drawing positions `targets`
    (fine_index maps them into the fine grid). Called by splat_surfels the first time a
    frame may show a disc, so points no frame can see (backs of buildings, facades behind
    facades, the detail of far cells) are never fitted.

    `fine` = (points, cell_keys, cell_starts, rows, coarse_keys, dims, lo, side, per_cell):
    the cloud in the fine cells of nested_grid_keys (side `side` from `lo`, per_cell to a
    coarse cell's side), ordered by coarse cell (sorted unique keys coarse_keys, in a coarse
    grid of `dims`), then by fine cell within it: row lx of coarse cell c holds fine cells
    rows[c, lx]:rows[c, lx+1], fine cell f has local key cell_keys[f] and points
    cell_starts[f]:cell_starts[f+1]. The k nearest neighbours come from the 27 fine cells
    around a point's cell. `fit` = (k, spacing_k, radius_scale, edge_radius_scale,
    max_radius, max_ratio). Radius: radius_scale times the mean distance to the `spacing_k`
    nearest, at most max_radius; a point with fewer than 2 neighbours there is isolated and
    gets radius 0 (never drawn). Normal: the plane through the point and its k nearest; zero
    when the smallest/middle eigenvalue ratio exceeds max_ratio (no single plane: an edge, a
    corner or clutter), and then the radius shrinks by edge_radius_scale, since a disc there
    would reach past the edge over whatever lies behind it."""
    points, cell_starts, lo, side = fine[0], fine[2], fine[6], fine[7]
    k, spacing_k, radius_scale, edge_radius_scale, max_radius, max_ratio = fit
    near_d = np.empty(k, dtype=np.float64)
    near_i = np.empty(k + 1, dtype=np.int64)
    run_lo = np.empty(18, dtype=np.int64)
    run_hi = np.empty(18, dtype=np.int64)
    memo = np.full((2, 64), -1, dtype=np.int64)
    cell, runs = -1, 0
    for out in targets:
        n = fine_index[out]
        if cell < 0 or not cell_starts[cell] <= n < cell_starts[cell + 1]:
            # not the previous point's fine cell (where the neighbour runs would be the same)
            ix, iy, iz = grid_coords(points, n, lo, side)
            runs, cell = _neighbour_runs(fine, ix, iy, iz, run_lo, run_hi, memo)
        px, py, pz = points[n, 0], points[n, 1], points[n, 2]
        candidates = 0
        near_d[:] = np.inf
        for run in range(runs):
            candidates += run_hi[run] - run_lo[run]
            for m in range(run_lo[run], run_hi[run]):
                dx, dy, dz = points[m, 0] - px, points[m, 1] - py, points[m, 2] - pz
                d = np.float64(dx * dx + dy * dy + dz * dz) if m != n else np.inf
                # insert into the sorted k nearest without branches (a mispredicted branch per
                # candidate cost more than the comparisons): d and m sink to their place, the
                # k-th drops out; an equal distance stays behind the ones found before it
                for slot in range(k):
                    closer = d < near_d[slot]
                    kept_d, kept_i = near_d[slot], near_i[slot]
                    near_d[slot] = d if closer else kept_d
                    near_i[slot] = m if closer else kept_i
                    d = kept_d if closer else d
                    m = kept_i if closer else m
        found = min(k, candidates - 1)
        radii[out] = 0.0
        normals[out, 0] = normals[out, 1] = normals[out, 2] = NO_NORMAL
        if found < 2:
            continue
        use = min(found, spacing_k)
        spacing = 0.0
        for a in range(use):
            spacing += np.sqrt(near_d[a])
        radii[out] = min(max_radius, radius_scale * spacing / use)
        if found < 3:
            continue
        mx, my, mz = px, py, pz
        for a in range(found):
            m = near_i[a]
            mx += points[m, 0]
            my += points[m, 1]
            mz += points[m, 2]
        mx, my, mz = mx / (found + 1), my / (found + 1), mz / (found + 1)
        near_i[found] = n  # the plane through the point and its nearest
        nx, ny, nz, ratio = normal_about(points, near_i, found + 1, mx, my, mz)
        if ratio <= max_ratio:
            normals[out, 0], normals[out, 1], normals[out, 2] = nx, ny, nz
        else:
            radii[out] *= edge_radius_scale


@nb.njit(cache=True, nogil=True)
def detail_levels(
    points: np.ndarray, cell_starts: np.ndarray, sizes: np.ndarray, aside: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points each coarse cell draws as discs (those not `aside`: drawn by a planar
    patch), coarsest level first. Returns their indices in that order, where each cell's
    start (one past the end appended), and per cell where each level's prefix ends ((C, L)
    int64, column 0: the cell's end).

    Level l >= 1 keeps one point per cube of side sizes[l] in the cell (cubes from the lowest
    corner of all its points), chosen among level l - 1's, so the levels nest and level l is
    a prefix of the cell's reordered points. Far cells are drawn from a coarse prefix
    (splat_surfels): a pixel there covers many points, and drawing them all costs time
    without changing the depth. Points set aside are in no level, so that no cube of a level
    is stood for by a point its discs do not draw."""
    n_cells = cell_starts.shape[0] - 1
    n_levels = sizes.shape[0]
    drawn_starts = np.zeros(n_cells + 1, dtype=np.int64)
    for cell in range(n_cells):
        drawn_starts[cell + 1] = drawn_starts[cell]
        for n in range(cell_starts[cell], cell_starts[cell + 1]):
            drawn_starts[cell + 1] += not aside[n]
    order = np.empty(drawn_starts[n_cells], dtype=np.int64)
    ends = np.empty((n_cells, n_levels), dtype=np.int64)
    seen = np.zeros(0, dtype=np.bool_)
    for cell in range(n_cells):
        first, last = cell_starts[cell], cell_starts[cell + 1]
        lo, extent = np.empty(3), 0.0
        for a in range(3):
            lo[a] = np.min(points[first:last, a])
            extent = max(extent, np.max(points[first:last, a]) - lo[a])
        drawn = np.empty(drawn_starts[cell + 1] - drawn_starts[cell], dtype=np.int64)
        c = 0
        for n in range(first, last):
            if not aside[n]:
                drawn[c] = n
                c += 1
        candidates = drawn  # read only: each level below rebinds it to the points it keeps
        level = np.zeros(last - first, dtype=np.int64)
        for lvl in range(1, n_levels):
            if candidates.shape[0] == 0:
                break
            side = sizes[lvl]
            span = int(extent / side) + 2  # keys stay unique across the cell
            keys = np.empty(candidates.shape[0], dtype=np.int64)
            for c in range(candidates.shape[0]):
                n = candidates[c]
                ix = int((points[n, 0] - lo[0]) / side)
                iy = int((points[n, 1] - lo[1]) / side)
                iz = int((points[n, 2] - lo[2]) / side)
                keys[c] = (ix * span + iy) * span + iz
            kept = np.empty(candidates.shape[0], dtype=np.int64)
            n_kept = 0
            if span**3 <= DENSE_CUBES:  # the first candidate of each cube, marked in a byte array
                if seen.shape[0] < span**3:
                    seen = np.zeros(span**3, dtype=np.bool_)
                for c in range(candidates.shape[0]):
                    if not seen[keys[c]]:
                        seen[keys[c]] = True
                        kept[n_kept] = candidates[c]
                        n_kept += 1
                for c in range(candidates.shape[0]):
                    seen[keys[c]] = False
            else:  # the same, by a stable sort of the cube keys
                previous = -1
                for c in np.argsort(keys, kind="mergesort"):
                    if n_kept == 0 or keys[c] != previous:
                        kept[n_kept] = candidates[c]
                        n_kept += 1
                        previous = keys[c]
            candidates = np.sort(kept[:n_kept])
            for c in range(n_kept):
                level[candidates[c] - first] = lvl
        # counting sort by level, coarsest first
        counts = np.zeros(n_levels, dtype=np.int64)
        for n in drawn:
            counts[level[n - first]] += 1
        slot = np.empty(n_levels, dtype=np.int64)
        at = drawn_starts[cell]
        for lvl in range(n_levels - 1, -1, -1):
            slot[lvl] = at
            at += counts[lvl]
            ends[cell, lvl] = at
        for n in drawn:
            order[slot[level[n - first]]] = n
            slot[level[n - first]] += 1
    return order, drawn_starts, ends


@nb.njit(cache=True, nogil=True)
def _frustum_planes(K: np.ndarray, shape: tuple) -> np.ndarray:
    """Unit normals (camera frame) of the four side planes of the frustum, through the camera
    centre and the outer pixel edges (-0.5, size - 0.5), pointing inwards."""
    height, width = shape
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    planes = np.array(
        [
            [fx, skew, cx + 0.5],
            [-fx, -skew, width - 0.5 - cx],
            [0.0, fy, cy + 0.5],
            [0.0, -fy, height - 0.5 - cy],
        ]
    )
    for k in range(4):
        planes[k] /= np.sqrt(planes[k, 0] ** 2 + planes[k, 1] ** 2 + planes[k, 2] ** 2)
    return planes


@nb.njit(cache=True, nogil=True, inline="always")
def _sphere_in_view(
    lo: np.ndarray, hi: np.ndarray, box: int, R: np.ndarray, t: np.ndarray, planes: np.ndarray,
    min_depth: float, max_depth: float,
) -> bool:  # fmt: skip
    """False when the sphere around box lo[box]..hi[box] lies wholly outside a frustum plane or
    the depth range: a cheap test that spares most cells of a window the exact one (_box_in_view)."""
    cx, cy = (lo[box, 0] + hi[box, 0]) / 2.0, (lo[box, 1] + hi[box, 1]) / 2.0
    cz = (lo[box, 2] + hi[box, 2]) / 2.0
    dx, dy, dz = hi[box, 0] - lo[box, 0], hi[box, 1] - lo[box, 1], hi[box, 2] - lo[box, 2]
    radius = np.sqrt(dx**2 + dy**2 + dz**2) / 2.0
    x = R[0, 0] * cx + R[0, 1] * cy + R[0, 2] * cz + t[0]
    y = R[1, 0] * cx + R[1, 1] * cy + R[1, 2] * cz + t[1]
    z = R[2, 0] * cx + R[2, 1] * cy + R[2, 2] * cz + t[2]
    if z + radius < min_depth or z - radius > max_depth:
        return False
    for k in range(4):
        if planes[k, 0] * x + planes[k, 1] * y + planes[k, 2] * z < -radius:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _box_in_view(
    lo: np.ndarray,
    hi: np.ndarray,
    box: int,
    grow: float,
    R: np.ndarray,
    t: np.ndarray,
    K: np.ndarray,
    shape: tuple,
    min_depth: float,
    max_depth: float,
) -> tuple[float, int, int, int, int]:
    """Nearest corner depth of the box lo[box]..hi[box] grown by `grow`, or inf when the box
    lies wholly outside the camera's frustum or depth range, then the box's pixel bounds (i0,
    i1, j0, j1), or -1s when a corner is nearer than min_depth (the projection does not bound
    it). This runs for every cell and block of every frame, so it takes no array it writes
    and no row views: each cost reference-count updates per call."""
    height, width = shape
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    # frustum planes through the camera centre, with pixel edges at -0.5 and size - 0.5
    out_left = out_right = out_top = out_bottom = out_near = out_far = True
    zmin, umin, umax, vmin, vmax = np.inf, np.inf, -np.inf, np.inf, -np.inf
    for c in range(8):
        px = np.float64(hi[box, 0]) + grow if c & 1 else np.float64(lo[box, 0]) - grow
        py = np.float64(hi[box, 1]) + grow if (c >> 1) & 1 else np.float64(lo[box, 1]) - grow
        pz = np.float64(hi[box, 2]) + grow if (c >> 2) & 1 else np.float64(lo[box, 2]) - grow
        x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + t[0]
        y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + t[1]
        z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + t[2]
        out_left &= fx * x + skew * y + (cx + 0.5) * z < 0.0
        out_right &= (width - 0.5 - cx) * z - fx * x - skew * y < 0.0
        out_top &= fy * y + (cy + 0.5) * z < 0.0
        out_bottom &= (height - 0.5 - cy) * z - fy * y < 0.0
        out_near &= z < min_depth
        out_far &= z > max_depth
        zmin = min(zmin, z)
        if z > 0.0:
            u, v = (fx * x + skew * y) / z + cx, fy * y / z + cy
            umin, umax, vmin, vmax = min(umin, u), max(umax, u), min(vmin, v), max(vmax, v)
    if out_left or out_right or out_top or out_bottom or out_near or out_far:
        return np.inf, -1, -1, -1, -1
    i0 = i1 = j0 = j1 = -1
    if zmin > min_depth:  # every corner in front: the projected corners bound the box
        # pixel centres (integer coordinates) inside those bounds, with a hair of margin
        i0, i1 = max(0, int(np.ceil(vmin - RECT_MARGIN))), min(height - 1, int(np.floor(vmax + RECT_MARGIN)))
        j0, j1 = max(0, int(np.ceil(umin - RECT_MARGIN))), min(width - 1, int(np.floor(umax + RECT_MARGIN)))
        if i0 > i1 or j0 > j1:
            return np.inf, i0, i1, j0, j1  # between pixel centres: no ray meets it
    return zmin, i0, i1, j0, j1


@nb.njit(cache=True, nogil=True, inline="always")
def _footprint(
    n: int, r: float, points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray, shape: tuple,
    min_depth: float, max_depth: float, max_footprint: float,
) -> tuple:  # fmt: skip
    """Camera coordinates of point n and the pixel bounds (i0, i1, j0, j1) of an image of
    `shape` whose centres a disc of radius r there may cover; i0 > i1 when it can win no pixel:
    its nearest point (z - r) lies beyond max_depth or no pixel centre falls in its footprint.
    Discs reaching nearer than min_depth are not judged (i0 = -1). Callers test the pixels
    themselves (covered): given the z-buffer, this function's several returns cost a
    reference-count update of it per disc, an eighth of the rendering time."""
    height, width = shape
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    px, py, pz = np.float64(points[n, 0]), np.float64(points[n, 1]), np.float64(points[n, 2])
    x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + t[0]
    y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + t[1]
    z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + t[2]
    nearest = z - r
    if nearest <= min_depth:
        return x, y, z, -1, -1, -1, -1
    if nearest > max_depth:
        return x, y, z, 1, 0, 1, 0
    yn = y / z
    u = fx * x / z + skew * yn + cx
    v = fy * yn + cy
    reach = min(r / nearest, max_footprint / fx)  # the disc's angular half-extent, bounded
    ru, rv = fx * reach + abs(skew) * reach, fy * reach
    i0, i1 = max(0, int(np.ceil(v - rv))), min(height - 1, int(np.floor(v + rv)))
    j0, j1 = max(0, int(np.ceil(u - ru))), min(width - 1, int(np.floor(u + ru)))
    if i0 > i1 or j0 > j1:
        return x, y, z, 1, 0, 1, 0
    return x, y, z, i0, i1, j0, j1


@nb.njit(cache=True, nogil=True, inline="always")
def _disc_rect(
    x: float, y: float, z: float, nx: float, ny: float, nz: float, r: float, K: np.ndarray,
    i0: int, i1: int, j0: int, j1: int,
) -> tuple:  # fmt: skip
    """The pixel bounds i0..i1, j0..j1 narrowed to the projection of the disc's own box (a
    disc of radius r and unit normal n at camera point (x, y, z) reaches r * sqrt(1 - n_a^2)
    along axis a): a disc seen at a grazing angle, as facades along a street are, covers a thin
    ellipse, a small part of the square that bounds its sphere. The disc lies in front of the
    camera (_footprint), so over the box x / z is monotonic in x and in z: its bounds are at
    corners."""
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    ex = r * np.sqrt(max(0.0, 1.0 - nx * nx))
    ey = r * np.sqrt(max(0.0, 1.0 - ny * ny))
    ez = r * np.sqrt(max(0.0, 1.0 - nz * nz))
    near, far = z - ez, z + ez
    # bounds of u - cx and v - cy times depth over the box: fx * x + skew * y and fy * y
    u_mid, u_reach = fx * x + skew * y, fx * ex + abs(skew) * ey
    u_lo, u_hi = u_mid - u_reach, u_mid + u_reach
    v_lo, v_hi = fy * (y - ey), fy * (y + ey)
    u_min = (u_lo / far if u_lo >= 0.0 else u_lo / near) + cx
    u_max = (u_hi / near if u_hi >= 0.0 else u_hi / far) + cx
    v_min = (v_lo / far if v_lo >= 0.0 else v_lo / near) + cy
    v_max = (v_hi / near if v_hi >= 0.0 else v_hi / far) + cy
    i0 = max(i0, int(np.ceil(v_min - RECT_MARGIN)))
    i1 = min(i1, int(np.floor(v_max + RECT_MARGIN)))
    j0 = max(j0, int(np.ceil(u_min - RECT_MARGIN)))
    j1 = min(j1, int(np.floor(u_max + RECT_MARGIN)))
    return i0, i1, j0, j1


@nb.njit(cache=True, nogil=True)
def _fit_visible(
    first: int,
    last: int,
    radius_bound: float,
    targets: np.ndarray,
    fine_index: np.ndarray,
    fine: tuple,
    fit: tuple,
    points: np.ndarray,
    normals: np.ndarray,
    radii: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray,
    min_depth: float,
    max_depth: float,
    max_footprint: float,
) -> tuple[int, float]:
    """Fit the not yet fitted discs among first..last-1 that this frame may show, judged with
    radius_bound (no fitted radius exceeds it), so the test never drops a disc that could
    win a pixel. A disc whose footprint at that radius spans more than PRETEST_PIXELS pixels
    is fitted untested: judging it reads them all, every frame it stays unfitted, which soon
    costs more than the fit. Returns how many were fitted and their largest radius."""
    count, largest = 0, 0.0
    for n in range(first, last):
        if radii[n] != UNFITTED:
            continue
        x, y, z, i0, i1, j0, j1 = _footprint(
            n, radius_bound, points, R, t, K, depth.shape, min_depth, max_depth, max_footprint
        )
        if i0 > i1:
            continue
        if i0 >= 0 and (i1 - i0 + 1) * (j1 - j0 + 1) <= PRETEST_PIXELS:
            if covered(depth, i0, i1, j0, j1, z - radius_bound):
                continue
        targets[count] = n
        count += 1
    if count:
        fit_surfels(targets[:count], fine_index, fine, fit, normals, radii)
        for c in range(count):
            largest = max(largest, np.float64(radii[targets[c]]))
    return count, largest


@nb.njit(cache=True, nogil=True, inline="always")
def _draw_discs(
    first: int,
    last: int,
    level_size: float,
    points: np.ndarray,
    normals: np.ndarray,
    radii: np.ndarray,
    ids: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray,
    winner: np.ndarray,
    winner_offset: int,
    min_depth: float,
    max_depth: float,
    min_cos: float,
    max_footprint: float,
) -> None:
    """Draw the fitted discs among first..last-1 into the z-buffer: each pixel whose centre
    ray meets a disc nearer than what the pixel holds takes that depth, and its winner
    winner_offset + the disc's id. A disc that can win no pixel (_footprint) is dropped
    before its normal is read."""
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    shape = depth.shape
    for n in range(first, last):
        if radii[n] <= 0.0:  # isolated, or not fitted (no frame has shown it yet)
            continue
        r = max(np.float64(radii[n]), level_size)
        x, y, z, i0, i1, j0, j1 = _footprint(
            n, r, points, R, t, K, shape, min_depth, max_depth, max_footprint
        )
        if i0 < 0 or i0 > i1 or covered(depth, i0, i1, j0, j1, z - r):  # too near, or wins no pixel
            continue
        qx, qy, qz = np.float64(normals[n, 0]), np.float64(normals[n, 1]), np.float64(normals[n, 2])
        if qx == NO_NORMAL and qy == NO_NORMAL and qz == NO_NORMAL:
            norm = np.sqrt(x * x + y * y + z * z)
            nx, ny, nz = x / norm, y / norm, z / norm
        else:
            nx = R[0, 0] * qx + R[0, 1] * qy + R[0, 2] * qz
            ny = R[1, 0] * qx + R[1, 1] * qy + R[1, 2] * qz
            nz = R[2, 0] * qx + R[2, 1] * qy + R[2, 2] * qz
        i0, i1, j0, j1 = _disc_rect(x, y, z, nx, ny, nz, r, K, i0, i1, j0, j1)
        plane = nx * x + ny * y + nz * z
        r2 = r * r
        for i in range(i0, i1 + 1):
            dy = (i - cy) / fy
            for j in range(j0, j1 + 1):
                dx = (j - cx - skew * dy) / fx
                zt = ray_plane_depth(nx, ny, nz, plane, dx, dy, min_cos, min_depth, max_depth)
                if zt == 0.0:
                    continue
                ex, ey, ez = zt * dx - x, zt * dy - y, zt - z
                if ex * ex + ey * ey + ez * ez > r2:
                    continue
                current = depth[i, j]
                if current == 0.0 or zt < current:
                    depth[i, j] = zt
                    winner[i, j] = winner_offset + ids[n]


@nb.njit(cache=True, nogil=True)
def splat_surfels(
    points: np.ndarray,
    normals: np.ndarray,
    radii: np.ndarray,
    ids: np.ndarray,
    fine: tuple,
    fit: tuple,
    cells: tuple,
    blocks: tuple,
    patches: tuple,
    cam_from_world: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray,
    winner: np.ndarray,
    winner_offset: int,
    min_depth: float,
    max_depth: float,
    min_cos: float,
    max_footprint: float,
    lod_pixels: float,
) -> None:
    """Render the window's planar patches and discs into `depth` (z-buffer, 0 = empty) in
    place; `winner` gets winner_offset + the id of the point that gave each pixel its depth:
    its index in the fine grid's points (fine[0], see fit_surfels).

    `points`, `normals`, `radii` and `ids` are the discs, the window's points on no planar
    patch, in drawing order. `cells` = (cell_starts, level_ends, level_sizes, cell_lo,
    cell_hi): the window is cut into the cells of a coarse grid; cell c's discs are
    cell_starts[c]:cell_starts[c+1], and all its points and covers lie inside the box
    cell_lo[c]..cell_hi[c] grown by its largest disc radius. A cell entirely outside the
    camera's frustum or depth range is never touched, and cells are drawn nearest first so
    that one whose whole image rectangle is already covered by nearer depth (a building's
    back, the row behind a facade, ground under objects) is skipped unread. A cell's planar
    patches (`patches`, cell c's are patches[0][c]:patches[0][c+1], see
    planar_patches.build_cell_patches) are drawn before its discs, built (in place) the first
    time a frame draws the cell. Its discs are drawn from its
    coarsest level (detail_levels) whose cube side is at most lod_pixels pixels at the cell's
    nearest depth, each disc then at least as wide as that side, so the level's one point per
    cube closes the surface.

    `blocks` = (block_first, block_lo, block_hi, block_rmax, block_unfitted, radius_bound):
    each cell's discs in runs of at most BLOCK_POINTS (cell c's are blocks
    block_first[c]:block_first[c+1]), each with its points' bounding box, its largest fitted
    disc radius and how many of its discs are not fitted yet; no disc radius exceeds
    radius_bound. A block is culled like a cell (its box grown by its largest disc, or by
    radius_bound while some are not fitted). Discs are fitted (fit_surfels, arguments ids,
    fine, fit; radii UNFITTED until then) the first time a frame may show them, judged with
    radius_bound, so hidden ones are never fitted. A disc seen more edge-on than min_cos
    (cosine between ray and normal) is skipped. Culling only drops what could not change a
    pixel: the depth and winner are those of drawing every disc.
    """
    cell_starts, level_ends, level_sizes, cell_lo, cell_hi = cells
    patch_first = patches[0]
    block_first, block_lo, block_hi, block_rmax, block_unfitted, radius_bound = blocks
    R = np.ascontiguousarray(cam_from_world[:3, :3])
    t = np.ascontiguousarray(cam_from_world[:3, 3])
    shape = depth.shape
    n_cells = cell_starts.shape[0] - 1
    # the cells in view, their nearest corner depths and pixel bounds (i0, i1, j0, j1; -1: unbounded)
    in_view = np.empty(n_cells, dtype=np.int64)
    near = np.empty(n_cells)
    rect = np.empty((n_cells, 4), dtype=np.int64)
    planes = _frustum_planes(K, shape)
    seen = 0
    for cell in range(n_cells):
        if _sphere_in_view(cell_lo, cell_hi, cell, R, t, planes, min_depth, max_depth):
            near[seen], rect[seen, 0], rect[seen, 1], rect[seen, 2], rect[seen, 3] = _box_in_view(
                cell_lo, cell_hi, cell, 0.0, R, t, K, shape, min_depth, max_depth
            )
            if near[seen] < np.inf:
                in_view[seen] = cell
                seen += 1
    patch_scratch = draw_scratch(shape[0])
    targets = np.empty(BLOCK_POINTS, dtype=np.int64)
    # nearest cells first, so nearer surfaces are drawn before the cells they may hide entirely
    pixel = max(K[0, 0], K[1, 1])
    for at in np.argsort(near[:seen]):
        cell = in_view[at]
        i0, i1, j0, j1 = rect[at, 0], rect[at, 1], rect[at, 2], rect[at, 3]
        if i0 >= 0 and covered(depth, i0, i1, j0, j1, near[at]):
            continue
        level = 0
        while level + 1 < level_sizes.shape[0] and level_sizes[level + 1] * pixel <= lod_pixels * near[at]:
            level += 1
        if patch_first[cell] < patch_first[cell + 1]:  # a call costs a dozen reference-count updates
            if not patches[9][cell]:
                build_cell_patches(cell, fine, patches)
            draw_patches(
                patch_first[cell], patch_first[cell + 1], patches, R, t, K, depth, winner, winner_offset,
                min_depth, max_depth, min_cos, patch_scratch,
            )  # fmt: skip
        first, end = cell_starts[cell], level_ends[cell, level]
        for block in range(block_first[cell], block_first[cell + 1]):
            b0 = first + (block - block_first[cell]) * BLOCK_POINTS
            if b0 >= end:
                break
            b1 = min(end, b0 + BLOCK_POINTS)
            grow = max(np.float64(block_rmax[block]), level_sizes[level])
            if block_unfitted[block]:
                grow = max(grow, radius_bound)
            zmin, i0, i1, j0, j1 = _box_in_view(
                block_lo, block_hi, block, grow, R, t, K, shape, min_depth, max_depth
            )
            if zmin == np.inf or (i0 >= 0 and covered(depth, i0, i1, j0, j1, zmin)):
                continue
            if block_unfitted[block]:
                count, largest = _fit_visible(
                    b0, b1, max(radius_bound, level_sizes[level]), targets, ids, fine, fit, points,
                    normals, radii, R, t, K, depth, min_depth, max_depth, max_footprint,
                )  # fmt: skip
                block_unfitted[block] -= count
                block_rmax[block] = max(np.float64(block_rmax[block]), largest)
            _draw_discs(
                b0, b1, level_sizes[level], points, normals, radii, ids, R, t, K, depth, winner,
                winner_offset, min_depth, max_depth, min_cos, max_footprint,
            )  # fmt: skip
