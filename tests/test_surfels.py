"""Surfel rendering of static clouds: the culling (cells, blocks, discs) and the lazy fitting
only skip work, never change a pixel; pinned against drawing every disc on a scene with
occlusion, and the radius bound the lazy fit relies on holds. Planar patches are off here."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from preprocess.sources.kitti360.static_depth import (
    StaticSettings,
    fit_settings,
    prepare_window,
    render_clouds,
)
from preprocess.sources.kitti360.static_ply import Window, static_vertex_dtype, write_static_ply
from preprocess.surfels import UNFITTED, fit_surfels, group_by_key, occupied_cells, point_bounds

from .support.surfel_scene import SHAPE, K, scene_window, views

# every cell drawn from all its points, and all as discs (planar patches: test_planar_patches.py)
SETTINGS = replace(StaticSettings(), lod_pixels=1e-6, plane_tolerance=0.0)


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    return scene_window(tmp_path_factory.mktemp("surfels"))


def _every_disc(prepared, cam_from_world, min_depth, max_depth):
    """Depth from drawing every fitted disc of the window, no culling: the kernel's footprint
    and ray/disc rules, in NumPy."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    depth = np.full(SHAPE, np.inf)
    for n in np.flatnonzero(prepared.radii > 0):
        r = float(prepared.radii[n])
        x, y, z = R @ prepared.disc_points[n].astype(np.float64) + t
        if z - r <= min_depth or z - r > max_depth:
            continue
        normal = prepared.normals[n].astype(np.float64)
        normal = np.array([x, y, z]) / np.linalg.norm([x, y, z]) if not normal.any() else R @ normal
        u, v = fx * x / z + cx, fy * y / z + cy
        reach = min(r / (z - r), SETTINGS.max_footprint_px / fx)
        i0, i1 = max(0, int(np.ceil(v - fy * reach))), min(SHAPE[0] - 1, int(np.floor(v + fy * reach)))
        j0, j1 = max(0, int(np.ceil(u - fx * reach))), min(SHAPE[1] - 1, int(np.floor(u + fx * reach)))
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                ray = np.array([(j - cx) / fx, (i - cy) / fy, 1.0])
                facing = normal @ ray
                if facing**2 < SETTINGS.min_cos**2 * (ray @ ray):
                    continue
                zt = (normal @ (x, y, z)) / facing
                if min_depth < zt <= max_depth and np.sum((zt * ray - (x, y, z)) ** 2) <= r * r:
                    depth[i, j] = min(depth[i, j], zt)
    depth[np.isinf(depth)] = 0.0
    return depth


def _fit_all(prepared):
    everything = np.arange(len(prepared.disc_ids))
    fit_surfels(
        everything,
        prepared.disc_ids,
        prepared.fine,
        fit_settings(SETTINGS),
        prepared.normals,
        prepared.radii,
    )


def test_culling_and_lazy_fitting_change_no_pixel(window):
    lazy = prepare_window(window, SETTINGS)
    reference = prepare_window(window, SETTINGS)
    _fit_all(reference)
    drawn = 0
    for pose in views():
        cam_from_world = np.linalg.inv(pose)
        cloud = render_clouds([lazy], cam_from_world, K, SHAPE, 0.5, 50.0, SETTINGS)
        expected = _every_disc(reference, cam_from_world, 0.5, 50.0)
        assert (cloud.depth > 0).mean() > 0.3
        np.testing.assert_allclose(cloud.depth, expected, rtol=1e-5, atol=0)
        drawn += (cloud.depth > 0).sum()
    assert drawn > 0
    # the front wall hides part of the back wall: some discs were never fitted
    fitted = lazy.radii != UNFITTED
    assert 0 < fitted.sum() < len(lazy.radii)
    np.testing.assert_array_equal(lazy.radii[fitted], reference.radii[fitted])


def test_no_fitted_radius_exceeds_the_bound_the_lazy_fit_uses(window):
    prepared = prepare_window(window, SETTINGS)
    _fit_all(prepared)
    bound = prepared.blocks[5]
    assert 0 < prepared.radii.max() <= bound <= SETTINGS.max_radius


def _brute_force_radii(points: np.ndarray, queries: np.ndarray, settings: StaticSettings) -> tuple:
    """The disc radius of each query point from its true `spacing_neighbours` nearest, and its
    distance to its `neighbours`-th nearest (a few hundred rows of distances at a time)."""
    radii, kth = [], []
    for chunk in np.array_split(queries, max(1, len(queries) // 256)):
        d = np.linalg.norm(points[chunk, None, :] - points[None, :, :], axis=-1)
        d[np.arange(len(chunk)), chunk] = np.inf
        nearest = np.sort(d, axis=1)[:, : settings.neighbours]
        spacing = nearest[:, : settings.spacing_neighbours].mean(axis=1)
        radii.append(np.minimum(settings.max_radius, settings.radius_scale * spacing))
        kth.append(nearest[:, -1])
    return np.concatenate(radii), np.concatenate(kth)


@pytest.mark.parametrize("grid_cell", [2.0, 0.25])
def test_fit_finds_the_true_nearest_neighbours(window, grid_cell):
    """Wherever the k nearest lie within one fine cell (so the 27 cells around a point hold
    them), the fitted radius is that of the true k nearest, also when coarse cells only one
    or two fine cells wide put most neighbours in another coarse cell."""
    settings = replace(SETTINGS, grid_cell=grid_cell)
    prepared = prepare_window(window, settings)
    side, per_cell = prepared.fine[7], prepared.fine[8]
    assert np.isclose(side * per_cell, grid_cell)
    assert (per_cell <= 2) == (grid_cell < 1.0)
    _fit_all(prepared)
    assert len(prepared.disc_points) == len(prepared)  # no patches: every point is a disc
    queries = np.arange(0, len(prepared), 5)
    expected, kth = _brute_force_radii(prepared.disc_points.astype(np.float64), queries, settings)
    planar = np.linalg.norm(prepared.normals[queries], axis=1) > 0
    complete = (kth < side) & planar  # an edge point's disc is shrunk on purpose
    assert complete.mean() > 0.8
    np.testing.assert_allclose(prepared.radii[queries][complete], expected[complete], rtol=1e-5)


@pytest.mark.parametrize("count, coordinate", [(0, 0.0), (3, np.nan)])
def test_window_without_finite_points_renders_nothing(tmp_path, count, coordinate):
    """A window with no vertices, or only non-finite ones, prepares and renders (no depth),
    counting what it dropped."""
    vertices = np.zeros(count, static_vertex_dtype())
    vertices["x"] = coordinate
    path = tmp_path / "0000000000_0000000009.ply"
    write_static_ply(path, vertices)
    prepared = prepare_window(Window(path, 0, 9), SETTINGS)
    assert len(prepared) == 0 and prepared.nonfinite_dropped == count
    cloud = render_clouds([prepared, prepared], np.eye(4), K, SHAPE, 0.5, 50.0, SETTINGS)
    assert not cloud.depth.any() and (cloud.winner == -1).all()


@pytest.mark.parametrize("dense_limit", [1 << 20, 1])
def test_occupied_cells_match_numpy(dense_limit):
    """Counted in a byte array or among sorted keys, the occupied cells are NumPy's."""
    points = np.random.default_rng(0).uniform(-3.0, 7.0, (5000, 3)).astype(np.float32)
    cells = np.floor((points.astype(np.float64) - points.min(axis=0)) / 0.5).astype(np.int64)
    assert occupied_cells(points, point_bounds(points), 0.5, dense_limit) == len(np.unique(cells, axis=0))


@pytest.mark.parametrize("counting_limit", [1 << 20, 1])
def test_group_by_key_matches_numpy(counting_limit):
    """By counting sort or merge sort: NumPy's stable order, distinct keys and run starts."""
    keys = np.random.default_rng(1).integers(0, 1000, 5000)
    order, distinct, starts = group_by_key(keys, 1000, counting_limit)
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    expected = np.unique(keys)
    np.testing.assert_array_equal(distinct, expected)
    np.testing.assert_array_equal(starts, np.r_[np.searchsorted(keys[order], expected), len(keys)])
