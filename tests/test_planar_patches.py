"""Planar patches: each cell's planes are found, drawn with their exact depth, cover what the
discs of their points would cover, leave no crack where a plane crosses from cell to cell and
stop about where their points stop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from preprocess.planar_patches import _nearby_owner
from preprocess.sources.kitti360.static_depth import StaticSettings, prepare_window, render_clouds

from .support.surfel_scene import (
    BACK_Z,
    FRONT_Z,
    GROUND_Y,
    SHAPE,
    K,
    build_every_patch,
    jittered_plane,
    scene_window,
    views,
    write_window,
)

PATCHES = replace(StaticSettings(), lod_pixels=1e-6)
DISCS = replace(PATCHES, plane_tolerance=0.0)


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    return scene_window(tmp_path_factory.mktemp("patches"))


def _on_patches(prepared) -> np.ndarray:
    """Which points (by id) lie on a patch: those that are no disc."""
    aside = np.ones(len(prepared), bool)
    aside[prepared.disc_ids] = False
    return aside


def _plane_depth(cam_from_world, K, shape, normal, offset) -> np.ndarray:
    """z-depth at every pixel centre of the plane normal . x = offset (world)."""
    world_from_cam = np.linalg.inv(cam_from_world)
    jj, ii = np.meshgrid(np.arange(shape[1], dtype=float), np.arange(shape[0], dtype=float))
    rays = np.stack([(jj - K[0, 2]) / K[0, 0], (ii - K[1, 2]) / K[1, 1], np.ones_like(jj)], axis=-1)
    centre = world_from_cam[:3, 3]
    return (offset - normal @ centre) / (rays @ (world_from_cam[:3, :3].T @ normal))


def test_each_cell_finds_its_planes(window):
    prepared = prepare_window(window, PATCHES)
    normals = prepared.patches[1][:, 3]
    assert len(normals) >= 3
    # the walls face z, the ground y: every fitted normal is one of them to float precision
    assert np.allclose(np.abs(normals).max(axis=1), 1.0, atol=1e-5)
    aside = _on_patches(prepared)
    assert aside.mean() > 0.8


def test_patch_pixels_have_their_plane_s_exact_depth(window):
    prepared = prepare_window(window, PATCHES)
    aside = _on_patches(prepared)
    drawn = 0
    for pose in views():
        cam_from_world = np.linalg.inv(pose)
        cloud = render_clouds([prepared], cam_from_world, K, SHAPE, 0.5, 50.0, PATCHES)
        won = cloud.winner >= 0
        by_patch = won.copy()
        by_patch[won] = aside[cloud.winner[won]]
        points = prepared.points[cloud.winner[by_patch]]
        expected = np.zeros(int(by_patch.sum()))
        for value, axis in ((FRONT_Z, 2), (BACK_Z, 2), (GROUND_Y, 1)):
            normal = np.eye(3)[axis]
            on = np.isclose(points[:, axis], value, atol=1e-4)
            expected[on] = _plane_depth(cam_from_world, K, SHAPE, normal, value)[by_patch][on]
        assert (expected > 0).all()
        np.testing.assert_allclose(cloud.depth[by_patch], expected, rtol=1e-5)
        drawn += by_patch.sum()
    assert drawn > 0.3 * 3 * SHAPE[0] * SHAPE[1]


def test_patches_cover_what_the_discs_cover(window):
    patches, discs = prepare_window(window, PATCHES), prepare_window(window, DISCS)
    for pose in views():
        cam_from_world = np.linalg.inv(pose)
        a = render_clouds([patches], cam_from_world, K, SHAPE, 0.5, 50.0, PATCHES).depth
        b = render_clouds([discs], cam_from_world, K, SHAPE, 0.5, 50.0, DISCS).depth
        both, either = (a > 0) & (b > 0), (a > 0) | (b > 0)
        assert both.sum() > 0.97 * either.sum()
        assert (np.abs(a[both] - b[both]) < 1e-3 * b[both]).mean() > 0.95  # at edges either may win


def test_a_plane_across_cells_has_no_crack_and_ends_where_its_points_end(tmp_path):
    """A 6 m x 4 m wall at 12 m, sampled every 5 cm, crosses several 2 m cells: every pixel
    whose ray meets it well inside has its exact depth, and none whose ray meets its plane
    more than 0.75 spacings beyond its outermost points has any (a surfel at an edge reaches
    about half a spacing past its point)."""
    spacing, depth, corner = 0.05, 12.0, np.array([-3.0, -2.0])
    points = jittered_plane(
        np.random.default_rng(5), (*corner, depth), (1, 0, 0), (0, 1, 0), 120, 80, spacing
    )
    prepared = prepare_window(write_window(tmp_path, points), PATCHES)
    assert len(prepared.patches[1]) >= 6 and _on_patches(prepared).mean() > 0.95
    K_fine, shape = np.array([[200.0, 0.0, 63.5], [0.0, 200.0, 47.5], [0.0, 0.0, 1.0]]), (96, 128)
    cloud = render_clouds([prepared], np.eye(4), K_fine, shape, 0.5, 50.0, PATCHES)
    jj, ii = np.meshgrid(np.arange(shape[1], dtype=float), np.arange(shape[0], dtype=float))
    hit = np.stack([(jj - K_fine[0, 2]) / 200.0 * depth, (ii - K_fine[1, 2]) / 200.0 * depth], axis=-1)
    first, last = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    inside = ((hit > first + 2 * spacing) & (hit < last - 2 * spacing)).all(axis=-1)
    near = ((hit > first - 0.75 * spacing) & (hit < last + 0.75 * spacing)).all(axis=-1)
    assert inside.sum() > 0.4 * inside.size and (~near).sum() > 0.1 * near.size
    np.testing.assert_allclose(cloud.depth[inside], depth, rtol=1e-6)
    assert not cloud.depth[~near].any()


def test_points_along_a_line_make_no_patch(tmp_path):
    """A pole 2 m tall and 4 mm thick fits any plane through its axis to 1 cm: none is kept,
    and its points stay discs."""
    rng = np.random.default_rng(7)
    pole = np.column_stack([rng.normal(0, 0.002, 400), rng.uniform(-1, 1, 400), rng.normal(5, 0.002, 400)])
    prepared = prepare_window(write_window(tmp_path, pole), PATCHES)
    assert len(prepared.patches[1]) == 0 and not _on_patches(prepared).any()


def test_a_cell_is_built_when_a_frame_first_draws_it_and_a_hidden_one_never(tmp_path):
    """A wall 2 m behind a wider one that hides it from the camera: the hidden wall's cell is
    culled in every frame, so its patch is never built (nor its grid's pages touched), and
    the depth and winners are those of a window whose every cell was built up front."""
    rng = np.random.default_rng(9)
    front = jittered_plane(rng, (-2.0, -1.5, 4.0), (1, 0, 0), (0, 1, 0), 80, 60, 0.05)
    hidden = jittered_plane(rng, (-0.5, -0.5, 6.0), (1, 0, 0), (0, 1, 0), 20, 20, 0.05)
    window = write_window(tmp_path, np.concatenate([front, hidden]))
    lazy, eager = prepare_window(window, PATCHES), prepare_window(window, PATCHES)
    build_every_patch(eager)
    K_fine, shape = np.array([[200.0, 0.0, 63.5], [0.0, 200.0, 47.5], [0.0, 0.0, 1.0]]), (96, 128)
    drawn = render_clouds([lazy], np.eye(4), K_fine, shape, 0.5, 50.0, PATCHES)
    every = render_clouds([eager], np.eye(4), K_fine, shape, 0.5, 50.0, PATCHES)
    np.testing.assert_array_equal(drawn.depth, every.depth)
    np.testing.assert_array_equal(drawn.winner, every.winner)
    assert (drawn.depth == 4.0).all()
    built, with_planes = lazy.patches[9], np.diff(lazy.patches[0]) > 0
    behind = lazy.cells[3][:, 2] > 5.0  # cell boxes start at their points less max_radius
    assert (with_planes & behind).any() and not built[behind].any()
    assert built[with_planes & ~behind].any()


def test_an_empty_texel_takes_its_point_from_its_own_grid_only():
    """A covered texel holding no point takes the first point named around it, in its own
    grid: at the grid's first row, the texels 'above' are the last row of the grid laid out
    before, another plane's, and never looked at."""
    owner = np.full(2 * 3 * 3, -1, np.int32)  # two planes' 3 x 3 grids, one after the other
    owner[8] = 7  # the first grid's texel (2, 2)
    owner[9 + 1 * 3 + 2] = 42  # the second grid's texel (1, 2)
    assert _nearby_owner(owner, 9, 3, 3, 0, 1) == 42
