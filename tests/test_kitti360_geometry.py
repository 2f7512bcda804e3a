"""Projection and accumulation against the synthetic scene's exact ground-truth depth."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.imaging import resize_image, resized_intrinsics, target_size
from preprocess.kernels import NO_LABELS, label_lut, register_sweep
from preprocess.sources.kitti360.reader import Sequence, list_sequences, read_calibration
from preprocess.sources.kitti360.sweeps import DepthSettings, SweepAccumulator
from shards import ImageSize

from .support.accuracy import depth_accuracy, depth_pairs
from .support.reference_depth import reference_depth


def _sequence(synthetic, index: int = 0) -> Sequence:
    name = list_sequences(synthetic.root)[index]
    return Sequence(synthetic.root, name, read_calibration(synthetic.root))


def _native(seq: Sequence) -> tuple[np.ndarray, ImageSize]:
    return seq.calib.K, seq.calib.size


def _centres(seq: Sequence) -> list[int]:
    """Frames with both a sweep and a pose."""
    return sorted(set(seq.frames) & set(seq.world_from_rect))


def _depths(seq: Sequence, accumulate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return depth_pairs(seq, seq.root.parent / "ground_truth", accumulate)


def test_registration_chain_matches_cam0_to_world(synthetic):
    seq = _sequence(synthetic)
    reference = seq.read_cam0_to_world()
    assert set(reference) == set(seq.world_from_rect)
    for frame, pose in seq.world_from_rect.items():
        np.testing.assert_allclose(pose, reference[frame], atol=1e-6)


def test_single_sweep_projection_error(synthetic):
    single = depth_accuracy(_depths(_sequence(synthetic), accumulate=0))
    assert single.median_rel_error < 0.005, f"median relative error {single.median_rel_error:.4%}"


@pytest.mark.parametrize("index", [0, 1])
def test_accumulation_coverage_and_outliers(synthetic, index):
    seq = _sequence(synthetic, index)
    single = depth_accuracy(_depths(seq, accumulate=0))
    multi = depth_accuracy(_depths(seq, accumulate=4))
    assert multi.coverage >= 3 * single.coverage, (single.coverage, multi.coverage)
    assert multi.outlier_share < 0.01, f"{multi.outlier_share:.3%} of depth pixels off by > 5% (or on sky)"


@pytest.mark.parametrize("width", [None, 518])
def test_numba_pipeline_equals_numpy_reference(synthetic, width):
    seq = _sequence(synthetic, 1)
    settings = DepthSettings(accumulate=4)
    size = target_size(width, seq.calib.size)
    K = resized_intrinsics(seq.calib.K, seq.calib.size, size)
    window = SweepAccumulator(seq, settings)
    centres = _centres(seq)[:6]
    for centre, result in window.run(centres, K, size):
        np.testing.assert_array_equal(result.depth, reference_depth(seq, centre, K, size, settings))


def test_each_sweep_is_read_once(synthetic):
    seq = _sequence(synthetic)
    window = SweepAccumulator(seq, DepthSettings(accumulate=4))
    K, size = _native(seq)
    centres = _centres(seq)
    for _ in window.run(centres, K, size):
        pass
    needed = {f for c in centres for f in range(c - 4, c + 5) if f in seq.world_from_rect}
    assert window.sweeps_read == len(needed)


def test_resized_intrinsics_keep_pixel_centres():
    K = np.array([[552.5, 0, 682.0], [0, 552.5, 238.7], [0, 0, 1]])
    scaled = resized_intrinsics(K, ImageSize(height=376, width=1408), ImageSize(height=140, width=518))
    point = np.array([3.0, -1.0, 12.0])
    u, v = (K @ point)[:2] / point[2]
    u2, v2 = (scaled @ point)[:2] / point[2]
    np.testing.assert_allclose(u2, (u + 0.5) * 518 / 1408 - 0.5)
    np.testing.assert_allclose(v2, (v + 0.5) * 140 / 376 - 0.5)
    assert target_size(518, ImageSize(height=376, width=1408)).wh == (518, 140)


def test_image_resize_keeps_pixel_centre_geometry():
    """A horizontal ramp resized to width 518 reads x' = (x + 0.5) * s - 0.5 back (within 0.1 px)."""
    ramp = np.tile(np.arange(1408, dtype=np.float32), (376, 1))
    resized = resize_image(np.repeat(ramp[..., None], 3, axis=2), ImageSize(height=140, width=518))
    assert resized.shape == (140, 518, 3)
    expected = (np.arange(518) + 0.5) * 1408 / 518 - 0.5
    error_px = (resized[70, 2:-2, 0] - expected[2:-2]) * 518 / 1408  # in output pixels (borders clamp)
    assert np.abs(error_px).max() < 0.1 and abs(error_px.mean()) < 1e-3


def test_register_sweep_keeps_what_its_camera_sees():
    """A sweep keeps (in world coordinates) every point its own camera sees and trusts those
    inside its label image that are not dynamic; without labels it keeps and trusts all."""
    rng = np.random.default_rng(0)
    K = np.array([[300.0, 0.0, 50.0], [0.0, 300.0, 20.0], [0.0, 0.0, 1.0]])
    labels = rng.choice(np.array([7, 11, 26], np.uint8), size=(40, 100))
    reject = label_lut(DepthSettings().dynamic_labels)
    cam_from_points = np.eye(4)
    cam_from_points[:3, 3] = [0.5, -0.2, 0.1]
    world_from_points = np.eye(4)
    world_from_points[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    world_from_points[:3, 3] = [10.0, 20.0, 1.0]
    points = rng.uniform([-30, -12, -30], [30, 12, 30], size=(20000, 3)).astype(np.float32)

    world, trusted = register_sweep(points, world_from_points, cam_from_points, K, labels, reject, 1)

    cam = points.astype(np.float64) + cam_from_points[:3, 3]
    z = np.where(cam[:, 2] > 0, cam[:, 2], np.nan)
    cols = np.floor(K[0, 0] * cam[:, 0] / z + K[0, 2] + 0.5)
    rows = np.floor(K[1, 1] * cam[:, 1] / z + K[1, 2] + 0.5)
    kept = (rows >= -1) & (rows <= 40) & (cols >= -1) & (cols <= 100)
    inside = (rows >= 0) & (rows < 40) & (cols >= 0) & (cols < 100)
    label = np.zeros(len(points), np.uint8)
    label[inside] = labels[rows[inside].astype(int), cols[inside].astype(int)]
    expected_world = points[kept].astype(np.float64) @ world_from_points[:3, :3].T + world_from_points[:3, 3]
    np.testing.assert_allclose(world, expected_world, atol=1e-9)
    np.testing.assert_array_equal(trusted, (inside & ~reject[label])[kept])
    assert 0 < len(world) < len(points) and 0 < trusted.sum() < len(world)

    world_all, trusted_all = register_sweep(
        points, world_from_points, cam_from_points, K, NO_LABELS, reject, 1
    )
    assert len(world_all) == len(points) and trusted_all.all()
