"""Depth from KITTI-360's fused static clouds, merged with the LiDAR depth.

A window is prepared once per worker process (kept in a small cache, so the units that share
it reuse it): its points are sorted into a coarse grid, each coarse cell holding a fine grid
(for neighbour search). A cell's largest planes become planar patches (cell_planes.py,
planar_patches.py), rasterised the first time a frame draws the cell (about half a street's
cells, the backs and roofs of buildings, are hidden in every frame): most of a street lies
on them. Its other points get nested levels of detail (for drawing), and each becomes a
surfel (normal and radius from its k nearest neighbours) the first time a frame may show it.
A frame's cloud depth renders the patches and surfels of every window that covers the frame
(surfels.py), keeps a pixel only where the winning point's 3D label agrees with the frame's
2D label (so ground never shows through a facade missing from the cloud, nor static road
through a car that is there now), then merges with the LiDAR depth under one rule
(`merge_depth`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numba as nb
import numpy as np

from ...cell_planes import continuations, extract_planes, patch_reach
from ...errors import InputError
from ...planar_patches import patch_grids
from ...surfels import (
    BLOCK_POINTS,
    UNFITTED,
    detail_levels,
    gather_points,
    group_by_key,
    nested_grid_keys,
    occupied_cells,
    point_bounds,
    sort_within_cells,
    splat_surfels,
)
from .static_ply import Window, read_static_ply

log = logging.getLogger(__name__)
# label groups whose members may stand for each other (flat ground: the 2D and 3D annotators
# disagree at road/sidewalk/parking/terrain borders); any other label must match exactly
GROUND_LABELS = (6, 7, 8, 9, 10, 22)
COUNTING_SORT_KEYS = 1 << 22  # grid keys sorted by counting (8 bytes per possible key) below this range
DENSE_COUNT_CELLS = 1 << 28  # 1 m voxels counted in a byte array up to this many (256 MB)
MAX_PER_CELL = 256  # fine cells along a coarse cell's side (its row index: 4 bytes per row)
CACHED_WINDOWS = 3  # a frame needs at most two; one more spares a reload at window changes
MAX_WINDOW_POINTS = 2**31 - 1  # points are indexed by int32 (orders, planes, patch texels)


@dataclass(frozen=True)
class StaticSettings:
    """How static clouds become depth; part of the build config hash."""

    neighbours: int = 6  # k nearest for each point's plane
    spacing_neighbours: int = 4  # the disc radius follows the mean distance to this many nearest
    radius_scale: float = 0.9  # disc radius / that spacing: neighbouring discs overlap, edges barely grow
    edge_radius_scale: float = 0.5  # shrinks discs of points with no plane (edges, corners)
    max_radius: float = 0.5  # metres
    plane_ratio: float = 0.1  # smallest/middle eigenvalue above this: no plane, disc faces the camera
    min_cos: float = 0.02  # discs seen more edge-on than this (about 89 degrees) are skipped
    grid_cell: float = 2.0  # metres; frustum and occlusion culling granularity
    max_footprint_px: float = 48.0  # a disc covers at most this many pixels either side
    lod_pixels: float = 1.0  # far cells drawn from a subset whose spacing is at most this many pixels
    plane_tolerance: float = 0.01  # metres from a cell's plane to be drawn as its patch (0: no patches)
    plane_min_points: int = 64  # a patch needs this many points; fewer stay surfels
    merge_rel_tol: float = 0.05  # LiDAR and cloud depth agree within this relative difference
    ground_labels: tuple[int, ...] = GROUND_LABELS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SurfelWindow:
    """A window's points in the fine grid's order, their planar patches, and the points on no
    patch as surfels (discs), fitted as far as frames have needed them (in place, by
    render_clouds: a worker renders on one thread, so the cache needs no lock). A point's
    index in `points` is its id: the winner of the pixels it gives depth."""

    name: str
    points: np.ndarray  # (N, 3) float32 world, by coarse cell, then fine cell within it
    labels: np.ndarray  # (N,) uint8 KITTI-360 label ids
    fine: tuple  # the fine grid over `points`: see fit_surfels
    patches: tuple  # each cell's planar patches, built as frames draw it: see planar_patches
    disc_points: np.ndarray  # (D, 3) float32: the points on no patch, in drawing order (cell, level)
    disc_ids: np.ndarray  # (D,) int64: their ids (indices into points)
    normals: np.ndarray  # (D, 3) float32 (zero: no plane); valid where fitted
    radii: np.ndarray  # (D,) float32 metres (0: isolated, never drawn; UNFITTED until fitted)
    cells: tuple  # (disc_starts, level_ends, level_sizes, cell_lo, cell_hi), see splat_surfels
    blocks: tuple  # (block_first, block_lo, block_hi, block_rmax, block_unfitted, radius_bound)
    nonfinite_dropped: int

    def __len__(self) -> int:
        return len(self.points)


def _spacing_estimate(points: np.ndarray, bounds: tuple) -> float:
    """Typical point spacing: points per occupied 1 m voxel are about points per square metre
    of surface, whose inverse square root is the spacing (bounds: point_bounds)."""
    per_voxel = len(points) / max(1, occupied_cells(points, bounds, 1.0, DENSE_COUNT_CELLS))
    return float(1.0 / np.sqrt(max(per_voxel, 1.0)))


def detail_sizes(spacing: float, max_radius: float) -> np.ndarray:
    """Cube sides of the detail levels: 0 (every point), then 2, 4, 8 ... times the cloud's
    spacing while at most max_radius (the level's discs are that wide)."""
    sizes = [0.0]
    while 2.0 * max(sizes[-1], spacing) <= max_radius:
        sizes.append(2.0 * max(sizes[-1], spacing))
    return np.array(sizes)


def prepare_window(window: Window, settings: StaticSettings) -> SurfelWindow:
    """Read a window, sort its points into the coarse and fine grids, find each cell's planar
    patches and order the other points for drawing as discs; no disc is fitted yet."""
    cloud = read_static_ply(window.path)
    points, labels = cloud.points, cloud.semantic
    nonfinite = cloud.nonfinite_dropped
    del cloud  # its rows go once sorted (del points below)
    if len(points) > MAX_WINDOW_POINTS:
        raise InputError(
            window.path, f"{len(points)} points, more than a window may hold ({MAX_WINDOW_POINTS})"
        )
    if len(points) == 0:
        points, none = np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
        starts, box = np.zeros(1, np.int64), np.zeros((0, 3))
        cells = (starts, np.zeros((0, 1), np.int64), np.zeros(1), box, box)
        blocks = (starts, points, points, np.zeros(0, np.float32), none, 0.0)
        dims, lo = np.ones(3, np.int64), np.zeros(3)
        fine = (points, none.astype(np.int32), starts, np.zeros((0, 2), np.int32), none, dims, lo, 1.0, 1)
        patches = planar_patches(fine, none.astype(np.int32), np.zeros((0, 4)), none, settings)
        return SurfelWindow(
            window.path.name, points, labels, fine, patches, points, none, points.copy(),
            np.zeros(0, np.float32), cells, blocks, nonfinite,
        )  # fmt: skip
    # neighbour search in cells about two spacings wide (about four points each on a surface:
    # the k nearest of a point lie within the 3x3x3 cells around it), nested in the coarse
    # cells that drawing culls by, so that a coarse cell's neighbour lookups stay within it
    bounds = point_bounds(points)
    spacing = max(_spacing_estimate(points, bounds), 5e-4)
    per_cell = int(min(MAX_PER_CELL, max(1, round(settings.grid_cell / (2.0 * spacing)))))
    side = settings.grid_cell / per_cell
    # the k nearest lie within two cells along each axis, so no disc radius exceeds this
    radius_bound = min(settings.max_radius, 1.01 * settings.radius_scale * 2.0 * np.sqrt(3.0) * side)
    # the sorted points' array holds their grid keys until then: fresh memory costs a page
    # fault per 4 KiB (a third of the preparation's time), so the keys take none of their own
    sorted_points = np.empty((len(points), 3), np.float32)
    key_bytes = sorted_points.reshape(-1).view(np.uint8)
    coarse, local = key_bytes[: 8 * len(points)].view(np.int64), key_bytes[8 * len(points) :].view(np.int32)
    coarse_dims, lo = nested_grid_keys(points, bounds, side, per_cell, coarse, local)
    order, coarse_keys, cell_starts = group_by_key(coarse, int(np.prod(coarse_dims)), COUNTING_SORT_KEYS)
    fine_keys, fine_starts, rows = sort_within_cells(local, order, cell_starts, per_cell)
    del coarse, local, key_bytes
    labels = gather_points(points, labels, order, sorted_points)
    points = sorted_points
    del sorted_points
    fine = (points, fine_keys, fine_starts, rows, coarse_keys, coarse_dims, lo, side, per_cell)
    plane_of = order  # the order's memory, read for the last time by the gather, holds each point's plane
    del order
    planes, plane_cell = find_planes(points, cell_starts, settings, plane_of)
    patches = planar_patches(fine, plane_of, planes, plane_cell, settings)  # keeps plane_of
    sizes = detail_sizes(spacing, settings.max_radius)
    disc_ids, disc_starts, level_ends = detail_levels(points, cell_starts, sizes, plane_of >= 0)
    del plane_of
    disc_points = points[disc_ids]
    normals, radii = np.zeros(disc_points.shape, np.float32), np.full(len(disc_ids), UNFITTED, np.float32)
    blocks = draw_blocks(disc_points, disc_starts, radius_bound)
    # a cell's box: its points', grown by the widest a disc or a patch's cover reaches past them
    cell_lo = np.minimum.reduceat(points, cell_starts[:-1], axis=0).astype(np.float64) - settings.max_radius
    cell_hi = np.maximum.reduceat(points, cell_starts[:-1], axis=0).astype(np.float64) + settings.max_radius
    cells = (disc_starts, level_ends, sizes, cell_lo, cell_hi)
    return SurfelWindow(
        window.path.name, points, labels, fine, patches, disc_points, disc_ids, normals, radii, cells,
        blocks, nonfinite,
    )  # fmt: skip


def find_planes(
    points: np.ndarray, cell_starts: np.ndarray, settings: StaticSettings, plane_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The planes (n, d) and their cells (extract_planes), or none where patches are off;
    each point's plane (-1: none) into plane_of (int32)."""
    if settings.plane_tolerance <= 0.0:
        plane_of[:] = -1
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    return extract_planes(points, cell_starts, settings.plane_tolerance, settings.plane_min_points, plane_of)


def planar_patches(
    fine: tuple, plane_of: np.ndarray, planes: np.ndarray, plane_cell: np.ndarray, settings: StaticSettings
) -> tuple:
    """The planes of the points in the fine grid `fine` as patches, for draw_patches: each
    covers what its points' discs would (patch_reach, build_cell_patches). Only their grids
    are laid out here: a cell's are filled the first time a frame draws it, from what this
    tuple keeps (each point's plane among it)."""
    reach = patch_reach(fine, plane_of, plane_cell, settings.spacing_neighbours, settings.radius_scale)
    box_lo, box_hi = cell_boxes(fine, plane_cell)
    runs_on = continuations(planes, plane_cell, fine[4], fine[5], settings.plane_tolerance)
    grids = patch_grids(fine[0], plane_of, planes, reach)
    cell_first = np.searchsorted(plane_cell, np.arange(len(fine[4]) + 1)).astype(np.int64)
    built = cell_first[1:] == cell_first[:-1]  # a cell without planes has nothing to build
    return (cell_first, *grids, built, plane_of, reach, box_lo, box_hi, runs_on, settings.edge_radius_scale)


def cell_boxes(fine: tuple, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World boxes (lo, hi) of the given coarse cells (the grid of nested_grid_keys in `fine`)."""
    keys, dims, lo, side, per_cell = fine[4][cells], fine[5], fine[6], fine[7], fine[8]
    corner = np.column_stack([keys // (dims[1] * dims[2]), keys // dims[2] % dims[1], keys % dims[2]])
    box_lo = lo + corner * (side * per_cell)
    return box_lo, box_lo + side * per_cell


def draw_blocks(points: np.ndarray, cell_starts: np.ndarray, radius_bound: float) -> tuple:
    """The disc points of each cell (cell c's are cell_starts[c]:cell_starts[c + 1]) cut into
    runs of BLOCK_POINTS, as splat_surfels takes them: (first block of each cell (C + 1,),
    boxes lo and hi (B, 3), largest fitted disc radius (B,), discs not fitted yet (B,),
    radius_bound)."""
    per_cell = (np.diff(cell_starts) + BLOCK_POINTS - 1) // BLOCK_POINTS
    block_first = np.r_[0, np.cumsum(per_cell)].astype(np.int64)
    cell_of_block = np.repeat(np.arange(len(per_cell)), per_cell)
    within = np.arange(block_first[-1]) - block_first[cell_of_block]
    starts = cell_starts[cell_of_block] + within * BLOCK_POINTS
    sizes = np.minimum(starts + BLOCK_POINTS, cell_starts[cell_of_block + 1]) - starts
    lo = np.minimum.reduceat(points, starts, axis=0) if len(starts) else np.zeros((0, 3), points.dtype)
    hi = np.maximum.reduceat(points, starts, axis=0) if len(starts) else np.zeros((0, 3), points.dtype)
    return block_first, lo, hi, np.zeros(len(starts), np.float32), sizes.astype(np.int64), float(radius_bound)


def fit_settings(settings: StaticSettings) -> tuple:
    """The surfel fit's parameters as fit_surfels takes them."""
    return (
        settings.neighbours, settings.spacing_neighbours, settings.radius_scale,
        settings.edge_radius_scale, settings.max_radius, settings.plane_ratio,
    )  # fmt: skip


class WindowCache:
    """Prepared windows of this process, least recently used dropped first."""

    def __init__(self, capacity: int = CACHED_WINDOWS) -> None:
        self.capacity = capacity
        self._windows: OrderedDict[tuple, SurfelWindow] = OrderedDict()

    def get(self, window: Window, settings: StaticSettings) -> SurfelWindow:
        stat = window.path.stat()
        key = (str(window.path), stat.st_size, stat.st_mtime_ns, settings)
        if key in self._windows:
            self._windows.move_to_end(key)
            return self._windows[key]
        while len(self._windows) >= self.capacity:
            self._windows.popitem(last=False)
        prepared = prepare_window(window, settings)
        log.debug("prepared static window %s: %d points", window.path.name, len(prepared))
        self._windows[key] = prepared
        return prepared


WINDOW_CACHE = WindowCache()


@dataclass
class CloudDepth:
    """A frame's depth from the static clouds at the stored size."""

    depth: np.ndarray  # (H, W) float32, 0 = none
    winner: np.ndarray  # (H, W) int64: which surfel gave the depth (over the windows' concatenation)


def render_clouds(
    windows: list[SurfelWindow],
    cam_from_world: np.ndarray,
    K: np.ndarray,
    shape: tuple[int, int],
    min_depth: float,
    max_depth: float,
    settings: StaticSettings,
) -> CloudDepth:
    """Nearest surfel of any window at each pixel centre."""
    depth = np.zeros(shape, np.float32)
    winner = np.full(shape, -1, np.int64)
    offset = 0
    for window in windows:
        splat_surfels(
            window.disc_points, window.normals, window.radii, window.disc_ids, window.fine,
            fit_settings(settings), window.cells, window.blocks, window.patches,
            np.asarray(cam_from_world, np.float64),
            np.asarray(K, np.float64),
            depth, winner, offset, min_depth, max_depth, settings.min_cos, settings.max_footprint_px,
            settings.lod_pixels,
        )  # fmt: skip
        offset += len(window)
    return CloudDepth(depth, winner)


def label_agreement(settings: StaticSettings) -> np.ndarray:
    """Label group of every uint8 id: a 3D and a 2D label agree when their groups are equal."""
    group = np.arange(256, dtype=np.int32)
    group[list(settings.ground_labels)] = settings.ground_labels[0]
    return group


def check_labels(
    cloud: CloudDepth,
    windows: list[SurfelWindow],
    semantic: np.ndarray | None,
    settings: StaticSettings,
    dynamic: np.ndarray,
) -> None:
    """Drop, in place, cloud pixels whose surfel's 3D label disagrees with the 2D label there,
    and those the 2D labels call a possibly moving object (lookup table `dynamic`): a static
    cloud cannot tell a parked car from one passing in front of it. Without 2D labels nothing
    can be checked."""
    if semantic is None:
        return
    group = label_agreement(settings)
    offset = 0
    for window in windows:  # winners index the windows' concatenation
        drop_disagreeing(cloud.depth, cloud.winner, semantic, offset, window.labels, group, dynamic)
        offset += len(window)


@nb.njit(cache=True, nogil=True)
def drop_disagreeing(
    depth: np.ndarray,
    winner: np.ndarray,
    semantic: np.ndarray,
    offset: int,
    labels: np.ndarray,
    group: np.ndarray,
    dynamic: np.ndarray,
) -> None:
    """check_labels for the pixels won by one window's points (winners offset..offset +
    len(labels) - 1), in one pass over the image."""
    for i in range(depth.shape[0]):
        for j in range(depth.shape[1]):
            won = winner[i, j] - offset
            if 0 <= won < labels.shape[0]:
                seen = semantic[i, j]
                if group[labels[won]] != group[seen] or dynamic[seen]:
                    depth[i, j] = 0.0
                    winner[i, j] = -1


def merge_depth(lidar: np.ndarray, cloud: CloudDepth, rel_tol: float) -> tuple[np.ndarray, int]:
    """The one merge rule: a pixel takes the cloud's depth where only the cloud has one or
    where LiDAR agrees with it within rel_tol (the cloud's is the surface at the pixel centre,
    LiDAR's that of a point somewhere in the pixel); LiDAR's where only LiDAR has one; none
    where both have one and they disagree (one of them sees a surface the other does not:
    a car that moved, a see-through). Returns the depth and the number of cloud points used."""
    return _merge(lidar, cloud.depth, cloud.winner, np.float32(rel_tol))


@nb.njit(cache=True, nogil=True)
def _merge(lidar: np.ndarray, cloud: np.ndarray, winner: np.ndarray, rel_tol: np.float32) -> tuple:
    """merge_depth in one pass (float32 arithmetic throughout). The cloud points used are
    counted in an open-addressing hash set of the winners: sorting them took longer than
    the merge."""
    merged = np.empty(lidar.shape, dtype=np.float32)
    rendered_pixels = 0
    for i in range(cloud.shape[0]):
        for j in range(cloud.shape[1]):
            rendered_pixels += cloud[i, j] > 0.0
    bits = 4  # a table at most half full
    while (1 << bits) < 2 * rendered_pixels:
        bits += 1
    keys = np.empty(1 << bits, dtype=np.int64)
    taken = np.zeros(1 << bits, dtype=np.bool_)
    shift, mask = np.uint64(64 - bits), np.int64((1 << bits) - 1)
    used, previous = 0, np.int64(-1)
    for i in range(lidar.shape[0]):
        for j in range(lidar.shape[1]):
            measured, rendered = lidar[i, j], cloud[i, j]
            if rendered <= 0.0:
                merged[i, j] = measured
                continue
            if measured > 0.0 and abs(rendered - measured) > rel_tol * min(rendered, measured):
                merged[i, j] = 0.0
                continue
            merged[i, j] = rendered
            point = winner[i, j]
            if point == previous and used > 0:  # neighbouring pixels often share their point
                continue
            previous = point
            # Fibonacci hashing: the top bits of the id times 2^64 / golden ratio
            slot = np.int64((np.uint64(point) * np.uint64(0x9E3779B97F4A7C15)) >> shift)
            while taken[slot] and keys[slot] != point:
                slot = (slot + 1) & mask
            if not taken[slot]:
                taken[slot], keys[slot] = True, point
                used += 1
    return merged, used
