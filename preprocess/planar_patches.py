"""Planar patches: the planes of a static cloud's cells (cell_planes.py) drawn as planes
instead of as the discs of their points.

Drawn as surfels, a plane costs a fitted disc per point and a footprint test per disc and
frame. Drawn as a patch, it costs one ray/plane intersection per pixel it may cover, and no
fit. A patch covers what its points' discs would cover, rasterised into a grid of sub-texels
in the plane, one bit each, the first time a frame draws its cell (build_cell_patches); each
texel names a point there, for the winner and its label. A pixel takes the plane's depth
where its centre ray meets the plane in a covered sub-texel (draw_patches): exact on planar
surfaces, as a disc is. Points on no plane (edges, clutter, small objects) stay surfels.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .surface_kernels import cross, ray_plane_depth

SUBTEXELS = 3  # a texel (as wide as the patch's disc radius) holds 3 x 3 sub-texels, one bit each
MIN_TEXEL = 1e-4  # metres: the texel of a patch whose points are all isolated (reach 0)
CLIP_CORNERS = 8  # a quad clipped by one plane has at most five corners
OUTLINE_MARGIN = 1e-3  # pixels; an outline's rows and columns are widened by this against rounding


@nb.njit(cache=True, nogil=True)
def _plane_axes(nx: float, ny: float, nz: float) -> tuple:
    """Two unit axes (a, b) spanning the plane of unit normal n: a lies across the world axis
    n is least aligned with (horizontal on a facade), b = n x a."""
    if abs(nx) <= abs(ny) and abs(nx) <= abs(nz):
        e = (1.0, 0.0, 0.0)
    elif abs(ny) <= abs(nz):
        e = (0.0, 1.0, 0.0)
    else:
        e = (0.0, 0.0, 1.0)
    ax, ay, az = cross((nx, ny, nz), e)
    norm = np.sqrt(ax * ax + ay * ay + az * az)
    ax, ay, az = ax / norm, ay / norm, az / norm
    bx, by, bz = cross((nx, ny, nz), (ax, ay, az))
    return ax, ay, az, bx, by, bz


@nb.njit(cache=True, nogil=True)
def patch_grids(points: np.ndarray, plane_of: np.ndarray, planes: np.ndarray, reach: np.ndarray) -> tuple:
    """Each plane's grid of texels reach[p] wide (see build_cell_patches), laid out once per
    window; the grids' bits and texel owners are allocated but not filled, as
    build_cell_patches fills a cell's the first time a frame draws the cell: pages of cells
    that no frame draws (the backs and roofs of buildings, hidden in every frame) are never
    touched, so never take memory.

    Returns frames (P, 4, 3): grid origin, axis a, axis b and normal (world); dims (P, 3):
    texels along a and b, 64-bit words per row of sub-texels; texel offsets (P + 1,) into
    owner (int32); word offsets (P + 1,) into bits (uint64, a patch's rows one after another:
    sub-texel (su, sv) is bit sv % 64 of word su * dims[p, 2] + sv // 64); texel sides (P,);
    the cover's box in the plane (P, 4): a from, a to, b from, b to (metres from the origin),
    set when the cell is built."""
    frames = _plane_frames(planes)
    dims, texel_offsets, word_offsets, sides = _grid_layout(points, plane_of, frames, reach)
    owner = np.empty(texel_offsets[-1], dtype=np.int32)  # allocated here, not by NumPy: no huge
    bits = np.empty(word_offsets[-1], dtype=np.uint64)  # pages, so an untouched 4 KiB stays free
    return frames, dims, texel_offsets, owner, word_offsets, bits, sides, np.zeros((planes.shape[0], 4))


@nb.njit(cache=True, nogil=True)
def build_cell_patches(cell: int, fine: tuple, patches: tuple) -> None:
    """Rasterise the covers of coarse cell `cell`'s planes, once (marking it built): where
    their points' discs of radius reach[p] (projected onto the plane) would cover them, as
    their surfels would. A texel is reach[p] wide and holds SUBTEXELS x SUBTEXELS sub-texels,
    each one bit; a sub-texel is covered when its centre lies within reach of the centre of a
    sub-texel holding a point. Where the surface ends, the cover is then pulled back to
    edge_scale * reach past its last points (_trim_edges), as a surfel at an edge shrinks;
    near a face of its cell (box_lo[p]..box_hi[p]) across which it runs on (runs_on, see
    continuations), it is left whole, so the two cells' covers overlap as their discs would.
    A texel holding points names the first (draw_patches looks next to a covered texel that
    holds none). A plane's points all lie in its cell, so a cell's covers need only its own
    points: those of the fine grid `fine` (see surfels.fit_surfels) in its rows.

    `patches` = (cell_first, then patch_grids' eight arrays, then built (C,) bool, each
    point's plane plane_of (int32, -1: none), reach (P,), box_lo and box_hi (P, 3), runs_on
    (P, 6), edge_scale)."""
    points, cell_starts, rows, per_cell = fine[0], fine[2], fine[3], fine[8]
    cell_first, frames, dims, texel_offsets = patches[0], patches[1], patches[2], patches[3]
    owner, word_offsets, bits, sides, boxes = patches[4], patches[5], patches[6], patches[7], patches[8]
    built, plane_of, reach, box_lo, box_hi = patches[9], patches[10], patches[11], patches[12], patches[13]
    runs_on, edge_scale = patches[14], patches[15]
    first, last = cell_first[cell], cell_first[cell + 1]
    owner[texel_offsets[first] : texel_offsets[last]] = -1
    bits[word_offsets[first] : word_offsets[last]] = 0
    # each point seeds its sub-texel and names its texel first
    for m in range(cell_starts[rows[cell, 0]], cell_starts[rows[cell, per_cell]]):
        p = plane_of[m]
        if p < 0:
            continue
        u, v = _in_plane(points, m, frames, p)
        su, sv = int(u * SUBTEXELS / sides[p]), int(v * SUBTEXELS / sides[p])
        bits[word_offsets[p] + su * dims[p, 2] + sv // 64] |= np.uint64(1) << np.uint64(sv % 64)
        at = texel_offsets[p] + (su // SUBTEXELS) * dims[p, 1] + sv // SUBTEXELS
        if owner[at] < 0:
            owner[at] = m
    largest = 0
    for p in range(first, last):
        largest = max(largest, 4 * SUBTEXELS * dims[p, 0] * dims[p, 2])
    scratch = np.empty(largest, dtype=np.uint64)
    for p in range(first, last):
        rows_p, words = SUBTEXELS * dims[p, 0], dims[p, 2]
        grid = bits[word_offsets[p] : word_offsets[p + 1]].reshape(rows_p, words)
        work = scratch[: 4 * rows_p * words].reshape(4, rows_p, words)  # seeds, two for _dilate, erosion
        work[0] = grid
        r, columns = reach[p] * SUBTEXELS / sides[p], SUBTEXELS * dims[p, 1]
        _dilate(work[0], grid, r, columns, work[1:3])
        _trim_edges(grid, columns, frames[p], sides[p] / SUBTEXELS, (1.0 - edge_scale) * r, box_lo[p],
                    box_hi[p], runs_on[p], reach[p], work)  # fmt: skip
        boxes[p] = _cover_box(grid) * (sides[p] / SUBTEXELS)
    built[cell] = True


@nb.njit(cache=True, nogil=True)
def _plane_frames(planes: np.ndarray) -> np.ndarray:
    """(P, 4, 3): each plane's point nearest the origin, its axes a and b, and its normal."""
    frames = np.empty((planes.shape[0], 4, 3))
    for p in range(planes.shape[0]):
        nx, ny, nz, d = planes[p, 0], planes[p, 1], planes[p, 2], planes[p, 3]
        ax, ay, az, bx, by, bz = _plane_axes(nx, ny, nz)
        frames[p, 0, 0], frames[p, 0, 1], frames[p, 0, 2] = nx * d, ny * d, nz * d
        frames[p, 1, 0], frames[p, 1, 1], frames[p, 1, 2] = ax, ay, az
        frames[p, 2, 0], frames[p, 2, 1], frames[p, 2, 2] = bx, by, bz
        frames[p, 3, 0], frames[p, 3, 1], frames[p, 3, 2] = nx, ny, nz
    return frames


@nb.njit(cache=True, nogil=True)
def _grid_layout(points: np.ndarray, plane_of: np.ndarray, frames: np.ndarray, reach: np.ndarray) -> tuple:
    """Each patch's grid: texels reach[p] wide (at least MIN_TEXEL) covering its points and a
    margin of reach plus a texel, so that the cover's every edge lies inside; moves each
    frame's origin to its grid's corner. Returns dims, texel offsets, word offsets, sides
    (see patch_grids)."""
    n_planes = frames.shape[0]
    lo = np.full((n_planes, 2), np.inf)
    hi = np.full((n_planes, 2), -np.inf)
    for m in range(points.shape[0]):
        p = plane_of[m]
        if p >= 0:
            u, v = _in_plane(points, m, frames, p)
            lo[p, 0], hi[p, 0] = min(lo[p, 0], u), max(hi[p, 0], u)
            lo[p, 1], hi[p, 1] = min(lo[p, 1], v), max(hi[p, 1], v)
    dims = np.zeros((n_planes, 3), dtype=np.int64)
    texel_offsets = np.zeros(n_planes + 1, dtype=np.int64)
    word_offsets = np.zeros(n_planes + 1, dtype=np.int64)
    sides = np.maximum(reach, MIN_TEXEL)
    for p in range(n_planes):
        margin = reach[p] + sides[p]
        for axis in range(2):
            lo[p, axis] -= margin
            dims[p, axis] = int(np.ceil((hi[p, axis] + margin - lo[p, axis]) / sides[p])) + 1
        dims[p, 2] = (SUBTEXELS * dims[p, 1] + 63) // 64
        for a in range(3):
            frames[p, 0, a] += lo[p, 0] * frames[p, 1, a] + lo[p, 1] * frames[p, 2, a]
        texel_offsets[p + 1] = texel_offsets[p] + dims[p, 0] * dims[p, 1]
        word_offsets[p + 1] = word_offsets[p] + SUBTEXELS * dims[p, 0] * dims[p, 2]
    return dims, texel_offsets, word_offsets, sides


@nb.njit(cache=True, nogil=True)
def _cover_box(grid: np.ndarray) -> np.ndarray:
    """(first row, last row + 1, first column, last column + 1) of a grid's set bits, in
    sub-texels (all 0 when none is set)."""
    rows, words = grid.shape
    box = np.zeros(4)
    seen = np.zeros(words, dtype=np.uint64)
    first, last = -1, -1
    for su in range(rows):
        row_any = np.uint64(0)
        for w in range(words):
            seen[w] |= grid[su, w]
            row_any |= grid[su, w]
        if row_any:
            first = su if first < 0 else first
            last = su
    if first < 0:
        return box
    low, high = 64 * words, -1
    for w in range(words):
        for bit in range(64):
            if (seen[w] >> np.uint64(bit)) & np.uint64(1):
                low, high = min(low, 64 * w + bit), max(high, 64 * w + bit)
    box[0], box[1], box[2], box[3] = first, last + 1, low, high + 1
    return box


@nb.njit(cache=True, nogil=True, inline="always")
def _shift_word(before: np.uint64, word: np.uint64, after: np.uint64, k: int) -> np.uint64:
    """A word of a bit row moved k columns (k > 0: towards higher columns, 0 < |k| < 64), given
    the words before and after it (0 past the row's ends). Words, not the row: an array
    handed to an inlined helper cost reference-count updates per word in _dilate."""
    if k > 0:
        return (word << np.uint64(k)) | (before >> np.uint64(64 - k))
    return (word >> np.uint64(-k)) | (after << np.uint64(64 + k))


@nb.njit(cache=True, nogil=True)
def _dilate(seeds: np.ndarray, out: np.ndarray, r: float, columns: int, work: np.ndarray) -> None:
    """out = every bit whose (row, column) lies within r of a set bit of seeds (the grid's
    columns..64 * words padding kept clear): each row offset's chord of the disc is a run of
    columns, so rows are widened once per run length and OR-ed over the offsets."""
    rows, words = seeds.shape
    reach = int(np.floor(r))
    out[:] = 0
    # work[now]: the seeds widened by `half` columns either way; work[1 - now] takes the next
    # width (indexed, not swapped as two views: swapping cost reference-count updates per word)
    now, half = 0, 0
    work[now] = seeds
    keep = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64((64 - columns % 64) % 64)  # the last word's columns
    for du in range(reach, -1, -1):  # chords grow towards the centre row
        chord = int(np.floor(np.sqrt(max(0.0, r * r - du * du))))
        while half < chord:
            half += 1
            for su in range(rows):
                for w in range(words):
                    before = seeds[su, w - 1] if w > 0 else np.uint64(0)
                    after = seeds[su, w + 1] if w + 1 < words else np.uint64(0)
                    word = seeds[su, w]
                    wider = _shift_word(before, word, after, half) | _shift_word(before, word, after, -half)
                    work[1 - now, su, w] = work[now, su, w] | wider
                work[1 - now, su, words - 1] &= keep
            now = 1 - now
        for su in range(rows):
            for source in (su - du, su + du):  # the centre row (du 0) twice: OR is idempotent
                if 0 <= source < rows:
                    for w in range(words):
                        out[su, w] |= work[now, source, w]


@nb.njit(cache=True, nogil=True)
def _trim_edges(
    grid: np.ndarray, columns: int, frame: np.ndarray, step: float, erode: float, box_lo: np.ndarray,
    box_hi: np.ndarray, runs_on: np.ndarray, reach: float, work: np.ndarray,
) -> None:  # fmt: skip
    """Erode a patch's cover (grid, in place) by `erode` sub-texels from its edge: the uncovered
    sub-texels next to it (8-neighbours), except those within reach (in the plane) of a face
    of its cell's box that the surface runs on across, or beyond it (they are the next
    cell's cover's to judge). `work`: four scratch grids of grid's shape."""
    rows, words = grid.shape
    edges, eroded = work[0], work[3]
    _dilate(grid, edges, 1.5, columns, work[1:3])  # the cover and its 8-neighbours
    lo, hi = np.empty(3), np.empty(3)
    for a in range(3):
        margin = reach * np.sqrt(max(0.0, 1.0 - frame[3, a] ** 2))
        lo[a] = box_lo[a] + margin if runs_on[2 * a] else -np.inf
        hi[a] = box_hi[a] - margin if runs_on[2 * a + 1] else np.inf
    for su in range(rows):
        any_edge = False
        for w in range(words):
            edges[su, w] &= ~grid[su, w]
            any_edge = any_edge or edges[su, w] != 0
        if any_edge:
            first, last = _inside_run(frame, step, su, columns, lo, hi)
            for w in range(words):
                edges[su, w] &= _run_mask(first - 64 * w, last - 64 * w)
    _dilate(edges, eroded, erode, columns, work[1:3])
    for su in range(rows):
        for w in range(words):
            grid[su, w] &= ~eroded[su, w]


@nb.njit(cache=True, nogil=True, inline="always")
def _run_mask(low: int, high: int) -> np.uint64:
    """The bits low..high-1 of a word (clipped to 0..64)."""
    low, high = max(low, 0), min(high, 64)
    if low >= high:
        return np.uint64(0)
    run = (
        np.uint64(0xFFFFFFFFFFFFFFFF)
        if high - low == 64
        else (np.uint64(1) << np.uint64(high - low)) - np.uint64(1)
    )
    return run << np.uint64(low)


@nb.njit(cache=True, nogil=True)
def _inside_run(
    frame: np.ndarray, step: float, su: int, columns: int, lo: np.ndarray, hi: np.ndarray
) -> tuple:
    """The columns first..last-1 of sub-texel row su whose centres lie strictly inside the box
    lo..hi (world): along a row each coordinate is linear in the column, so they are a run."""
    sv0, sv1 = 0.0, float(columns)
    for a in range(3):
        base = frame[0, a] + (su + 0.5) * step * frame[1, a]
        slope = step * frame[2, a]  # coordinate a at column sv: base + (sv + 0.5) * slope
        for bound, above in ((lo[a], True), (hi[a], False)):
            if not np.isfinite(bound):
                continue
            if slope == 0.0:
                if (base > bound) != above:
                    sv0, sv1 = 0.0, 0.0
                continue
            edge = (bound - base) / slope - 0.5  # the column where coordinate a meets the bound
            if (slope > 0.0) == above:
                sv0 = max(sv0, np.floor(edge) + 1.0)
            else:
                sv1 = min(sv1, np.ceil(edge))
    return int(max(0.0, sv0)), int(min(float(columns), sv1))


@nb.njit(cache=True, nogil=True, inline="always")
def _in_plane(points: np.ndarray, m: int, frames: np.ndarray, p: int) -> tuple[float, float]:
    """Point m's coordinates along the axes of patch p's frame (origin, a, b, normal); the
    frame by index, not as a view (a view costs two reference-count updates, per point here)."""
    dx = np.float64(points[m, 0]) - frames[p, 0, 0]
    dy = np.float64(points[m, 1]) - frames[p, 0, 1]
    dz = np.float64(points[m, 2]) - frames[p, 0, 2]
    along_a = dx * frames[p, 1, 0] + dy * frames[p, 1, 1] + dz * frames[p, 1, 2]
    along_b = dx * frames[p, 2, 0] + dy * frames[p, 2, 1] + dz * frames[p, 2, 2]
    return along_a, along_b


@nb.njit(cache=True, nogil=True, inline="always")
def _nearby_owner(owner: np.ndarray, base: int, nu: int, nv: int, tu: int, tv: int) -> int:
    """The point texel (tu, tv) of an nu x nv grid names, or if it holds none, the first named
    among the 8 around it in the grid (a covered texel lies within a texel of a point's: its
    disc reaches one texel)."""
    named = owner[base + tu * nv + tv]
    for du in range(-1, 2):
        for dv in range(-1, 2):
            if named < 0 and 0 <= tu + du < nu and 0 <= tv + dv < nv:
                named = owner[base + (tu + du) * nv + tv + dv]
    return named


@nb.njit(cache=True, nogil=True)
def _clipped_outline(
    corners: np.ndarray, K: np.ndarray, min_depth: float, outline: np.ndarray
) -> tuple[int, float]:
    """The quad `corners` (4, 3, camera frame) cut to depths beyond min_depth, projected: its
    corners' pixel coordinates (u, v) into outline, their count (0: wholly nearer) and the
    nearest depth of what is left."""
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    kept, zmin = 0, np.inf
    for c in range(4):
        d = (c + 1) % 4  # corners indexed, not viewed: a view costs two reference-count updates
        for end in range(2):
            if end == 0 and corners[c, 2] >= min_depth:
                x, y, z = corners[c, 0], corners[c, 1], corners[c, 2]
            elif end == 1 and (corners[c, 2] >= min_depth) != (corners[d, 2] >= min_depth):
                s = (min_depth - corners[c, 2]) / (corners[d, 2] - corners[c, 2])
                x = corners[c, 0] + s * (corners[d, 0] - corners[c, 0])
                y, z = corners[c, 1] + s * (corners[d, 1] - corners[c, 1]), min_depth
            else:
                continue
            outline[kept, 0], outline[kept, 1] = (fx * x + skew * y) / z + cx, fy * y / z + cy
            zmin = min(zmin, z)
            kept += 1
    return kept, zmin


@nb.njit(cache=True, nogil=True, inline="always")
def _row_span(outline: np.ndarray, kept: int, row: float, width: int) -> tuple[int, int]:
    """Columns j0..j1 of the pixel centres on image row `row` inside the convex outline."""
    lo, hi = np.inf, -np.inf
    for c in range(kept):
        u0, v0 = outline[c, 0], outline[c, 1]
        u1, v1 = outline[(c + 1) % kept, 0], outline[(c + 1) % kept, 1]
        if min(v0, v1) - OUTLINE_MARGIN <= row <= max(v0, v1) + OUTLINE_MARGIN:
            if abs(v1 - v0) < 1e-12:
                lo, hi = min(lo, u0, u1), max(hi, u0, u1)
            else:
                s = min(1.0, max(0.0, (row - v0) / (v1 - v0)))
                u = u0 + s * (u1 - u0)
                lo, hi = min(lo, u), max(hi, u)
    if lo > hi:
        return 1, 0
    return max(0, int(np.ceil(lo - OUTLINE_MARGIN))), min(width - 1, int(np.floor(hi + OUTLINE_MARGIN)))


@nb.njit(cache=True, nogil=True)
def _row_spans(outline: np.ndarray, kept: int, i0: int, i1: int, width: int, spans: np.ndarray) -> None:
    """_row_span of every image row i0..i1 into spans[i - i0]: one call per patch, as one per
    row, inlined in draw_patches, cost two reference-count updates of the outline each."""
    for i in range(i0, i1 + 1):
        spans[i - i0, 0], spans[i - i0, 1] = _row_span(outline, kept, float(i), width)


@nb.njit(cache=True, nogil=True)
def draw_scratch(height: int) -> tuple:
    """draw_patches' working arrays for images `height` rows high: a cover's corners, its
    clipped outline, its column span on each row, a patch's axes."""
    return np.empty((4, 3)), np.empty((CLIP_CORNERS, 2)), np.empty((height, 2), np.int64), np.empty((3, 3))


@nb.njit(cache=True, nogil=True, inline="always")
def draw_patches(
    first: int,
    last: int,
    patches: tuple,
    R: np.ndarray,
    t: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray,
    winner: np.ndarray,
    winner_offset: int,
    min_depth: float,
    max_depth: float,
    min_cos: float,
    scratch: tuple,
) -> None:
    """Draw patches first..last-1 into the z-buffer: a pixel whose centre ray meets a patch's
    plane in a covered sub-texel, nearer than what the pixel holds, takes that depth and the
    texel's point as winner. Rays meeting the plane more edge-on than min_cos are skipped, as
    for discs. Only the pixels inside the outline of the patch's cover are tried, row by row.
    `patches`: see build_cell_patches; patches first..last-1 are built. `scratch`:
    draw_scratch(), made once per frame (this runs for every cell a frame draws)."""
    frames, dims, offsets, owner = patches[1], patches[2], patches[3], patches[4]
    word_offsets, bits, sides, boxes = patches[5], patches[6], patches[7], patches[8]
    height, width = depth.shape
    fx, skew, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    corners, outline, spans, axes = scratch  # axes: a, b and the normal in the camera frame
    for p in range(first, last):  # frames indexed, not viewed: a view costs two reference-count updates
        o0, o1, o2 = frames[p, 0, 0], frames[p, 0, 1], frames[p, 0, 2]
        ox = R[0, 0] * o0 + R[0, 1] * o1 + R[0, 2] * o2 + t[0]
        oy = R[1, 0] * o0 + R[1, 1] * o1 + R[1, 2] * o2 + t[1]
        oz = R[2, 0] * o0 + R[2, 1] * o1 + R[2, 2] * o2 + t[2]
        for k in range(3):
            for a in range(3):
                f0, f1, f2 = frames[p, k + 1, 0], frames[p, k + 1, 1], frames[p, k + 1, 2]
                axes[k, a] = R[a, 0] * f0 + R[a, 1] * f1 + R[a, 2] * f2
        for c in range(4):  # the cover's box in the plane, corner by corner round it
            su = boxes[p, 1] if c == 1 or c == 2 else boxes[p, 0]
            sv = boxes[p, 3] if c >= 2 else boxes[p, 2]
            corners[c, 0] = ox + su * axes[0, 0] + sv * axes[1, 0]
            corners[c, 1] = oy + su * axes[0, 1] + sv * axes[1, 1]
            corners[c, 2] = oz + su * axes[0, 2] + sv * axes[1, 2]
        kept, zmin = _clipped_outline(corners, K, min_depth, outline)
        if kept == 0 or zmin > max_depth:
            continue
        vmin, vmax = np.inf, -np.inf
        for c in range(kept):
            vmin, vmax = min(vmin, outline[c, 1]), max(vmax, outline[c, 1])
        i0, i1 = (
            max(0, int(np.ceil(vmin - OUTLINE_MARGIN))),
            min(height - 1, int(np.floor(vmax + OUTLINE_MARGIN))),
        )
        ax, ay, az = axes[0, 0], axes[0, 1], axes[0, 2]
        bx, by, bz = axes[1, 0], axes[1, 1], axes[1, 2]
        nx, ny, nz = axes[2, 0], axes[2, 1], axes[2, 2]
        plane = nx * ox + ny * oy + nz * oz
        nu, nv, scale = dims[p, 0], dims[p, 1], SUBTEXELS / sides[p]  # sub-texels per metre
        a_origin, b_origin = (ax * ox + ay * oy + az * oz) * scale, (bx * ox + by * oy + bz * oz) * scale
        base, word_base, words = offsets[p], word_offsets[p], dims[p, 2]
        _row_spans(outline, kept, i0, i1, width, spans)
        for i in range(i0, i1 + 1):
            j0, j1 = spans[i - i0, 0], spans[i - i0, 1]
            dy = (i - cy) / fy
            a_row, b_row = ay * dy + az, by * dy + bz
            for j in range(j0, j1 + 1):
                current = depth[i, j]
                if current != 0.0 and current < zmin:  # nearer than all of the cover: hidden
                    continue
                dx = (j - cx - skew * dy) / fx
                zt = ray_plane_depth(nx, ny, nz, plane, dx, dy, min_cos, min_depth, max_depth)
                if zt == 0.0 or (current != 0.0 and zt >= current):
                    continue
                u = zt * scale * (ax * dx + a_row) - a_origin
                v = zt * scale * (bx * dx + b_row) - b_origin
                if u < 0.0 or v < 0.0 or u >= SUBTEXELS * nu or v >= SUBTEXELS * nv:
                    continue
                su, sv = int(u), int(v)
                if (bits[word_base + su * words + (sv >> 6)] >> np.uint64(sv & 63)) & np.uint64(1):
                    depth[i, j] = zt
                    winner[i, j] = winner_offset + _nearby_owner(
                        owner, base, nu, nv, su // SUBTEXELS, sv // SUBTEXELS
                    )
