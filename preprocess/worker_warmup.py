"""Imported once by the forkserver that starts build workers.

A spawned worker pays about 2 s before its first frame: 1 s of imports and 0.9 s of Numba
runtime start-up on the first jitted call. Here both happen once, in the server, and every
worker forked from it starts warm. The import itself runs the kernels on tiny inputs; it
starts no threads, so forking afterwards stays safe.
"""

from __future__ import annotations

import numpy as np

from . import driver  # noqa: F401  (the workers' own imports)
from .cell_planes import continuations, extract_planes, patch_reach
from .kernels import NO_LABELS, depth_to_world, register_sweep, remove_occluded, zbuffer_points
from .planar_patches import patch_grids
from .sources import kitti360  # noqa: F401  (the source `kitti360-prep build` runs in workers)
from .sources.kitti360.static_depth import CloudDepth, drop_disagreeing, merge_depth
from .sources.kitti360.static_ply import (
    clipped_labels,
    count_nonfinite,
    mapped_points,
    static_vertex_dtype,
    unpack_finite_rows,
)
from .surfels import (
    detail_levels,
    gather_points,
    group_by_key,
    nested_grid_keys,
    occupied_cells,
    point_bounds,
    sort_within_cells,
    splat_surfels,
)


def _run_kernels_once() -> None:
    points, pose, K = np.ones((1, 3)), np.eye(4), np.eye(3)
    depth, labels, lut = np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), np.zeros(256, np.bool_)
    # the (x, y, z) view of a raw sweep's rows; two, as one row's view would be contiguous
    sweep = np.ones((2, 4), np.float32)[:, :3]
    for image_labels in (NO_LABELS, labels):
        register_sweep(sweep, pose, pose, K, image_labels, lut, 1)
        zbuffer_points(points, np.ones(1, np.bool_), pose, K, depth, 0.1, image_labels, K, lut)
    remove_occluded(depth, 1, 0.05)
    depth_to_world(depth, K, pose)
    vertices = np.zeros(2, static_vertex_dtype())  # a mapped window's rows: read-only strided fields
    vertices.flags.writeable = False
    unpack_finite_rows(vertices["x"], vertices["y"], vertices["z"], vertices["semantic"])
    mapped = mapped_points(vertices)
    count_nonfinite(mapped)
    clipped_labels(vertices["semantic"])
    cloud, one = np.ones((1, 3), np.float32), np.zeros(1, np.int64)
    box, starts, sizes = np.zeros((1, 3)), np.array([0, 1]), np.array([0.0, 1.0])
    _, _, ends = detail_levels(cloud, starts, sizes, np.zeros(1, np.bool_))
    for points in (cloud, mapped):  # unpacked, and mapped from the file (strided: two rows)
        gather_points(points, np.zeros(1, np.uint8), np.zeros(1, np.int32), cloud.copy())
        bounds = point_bounds(points)
        occupied_cells(points, bounds, 1.0, 1)
        coarse, local = np.zeros(len(points), np.int64), np.zeros(len(points), np.int32)
        dims, lo = nested_grid_keys(points, bounds, 1.0, 1, coarse, local)
    group_by_key(coarse, 1, 1)
    fine_keys, fine_starts, rows = sort_within_cells(local, np.zeros(1, np.int32), starts, 1)
    fine = (cloud, fine_keys, fine_starts, rows, coarse, dims, lo, 1.0, 1)
    fit = (6, 4, 0.9, 0.5, 0.5, 0.1)
    cells = (starts, ends, sizes, box, box)
    blocks = (starts, cloud, cloud, np.zeros(1, np.float32), np.ones(1, np.int64), 0.5)
    plane_of = np.zeros(1, np.int32)
    planes, _ = extract_planes(cloud, starts, 0.01, 1, plane_of)
    runs_on, unbuilt = np.zeros((0, 6), np.bool_), np.zeros(1, np.bool_)
    grids = patch_grids(cloud, plane_of, planes, np.zeros(0))
    patches = (np.zeros(2, np.int64), *grids, unbuilt, plane_of, np.zeros(0), box, box, runs_on, 0.5)
    continuations(planes, np.zeros(0, np.int64), one, np.ones(3, np.int64), 0.01)
    patch_reach(fine, np.zeros(1, np.int32), one, 4, 0.9)
    splat_surfels(
        cloud, cloud.copy(), np.full(1, -1.0, np.float32), one, fine, fit, cells, blocks, patches, pose, K,
        depth, np.zeros((2, 2), np.int64), 0, 0.1, 10.0, 0.02, 8.0, 1.0,
    )  # fmt: skip
    group = np.arange(256, dtype=np.int32)
    for frame_labels in (labels, np.asfortranarray(labels)):  # as read, and as resize_labels returns them
        drop_disagreeing(
            depth, np.zeros((2, 2), np.int64), frame_labels, 0, np.zeros(1, np.uint8), group, lut
        )
    merge_depth(depth, CloudDepth(depth, np.zeros((2, 2), np.int64)), 0.05)


_run_kernels_once()
