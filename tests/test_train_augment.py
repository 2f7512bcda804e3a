"""Augmentation keeps geometry exact: after any zoom crop a frame's point map reprojects onto its
own depth through the new intrinsics, and the intrinsics follow the pixel-centre convention (the
resampled image and the reprojected original points agree on where each stored pixel went).
Colour jitter touches the images only."""

from __future__ import annotations

import numpy as np
import pytest

from train.augment import colour_jitter, output_size, step_shape, unproject, zoom_crop
from train.config import AugmentConfig, ColourJitterConfig, CropConfig

STORED_H, STORED_W = 140, 256


def synthetic_window(frames: int = 2) -> dict[str, np.ndarray]:
    """Frames of a slanted plane seen by cameras with exact GT: depth at pixel centres, the point
    map unprojected from it, and an image whose channels encode each pixel's column and row."""
    ys, xs = np.mgrid[0:STORED_H, 0:STORED_W].astype(np.float64)
    depth = (4.0 + 0.01 * xs + 0.02 * ys)[None].repeat(frames, 0)
    depth[:, :10, :20] = 0.0  # no measurement
    valid = depth > 0
    intrinsics = np.array([[200.0, 0, 127.3], [0, 190.0, 69.8], [0, 0, 1]])[None].repeat(frames, 0)
    cam_from_world = np.tile(np.eye(4)[:3], (frames, 1, 1))
    cam_from_world[1, :, 3] = [0.3, -0.1, 0.2]  # second camera shifted
    image = np.zeros((frames, STORED_H, STORED_W, 3), np.uint8)
    image[..., 0] = np.clip(xs, 0, 255).astype(np.uint8)
    image[..., 1] = ys.astype(np.uint8)
    return {
        "image": image,
        "depth": depth.astype(np.float32),
        "valid_mask": valid,
        "world_points": unproject(depth, valid, intrinsics, cam_from_world),
        "cam_from_world": cam_from_world.astype(np.float32),
        "intrinsics": intrinsics.astype(np.float32),
        "semantic": np.full((frames, STORED_H, STORED_W), 11, np.int64),
        "building_mask": np.ones((frames, STORED_H, STORED_W), bool),
    }


def _project(points: np.ndarray, cam_from_world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """[S,H,W,3] world points -> [S,H,W,3] (u, v, z) in each frame's camera."""
    cam = np.einsum("sij,shwj->shwi", cam_from_world[:, :, :3], points) + cam_from_world[:, None, None, :, 3]
    uv = np.einsum("sij,shwj->shwi", intrinsics, cam)
    with np.errstate(divide="ignore", invalid="ignore"):  # unmeasured pixels: points at 0
        return np.concatenate([uv[..., :2] / uv[..., 2:], cam[..., 2:]], axis=-1)


@pytest.mark.parametrize(
    "height, width, zoom",
    [(112, 224, 0.3), (140, 252, 0.3), (126, 252, 0.0), (252, 252, 0.0), (70, 140, 0.1), (140, 518, 0.3)],
)
def test_point_maps_reproject_onto_their_own_depth_after_any_crop(height, width, zoom):
    window = synthetic_window()
    original = _project(
        window["world_points"].astype(np.float64), window["cam_from_world"], window["intrinsics"]
    )
    for seed in range(8):
        crop = CropConfig(height=height, width=width, zoom=zoom > 0, max_zoom=zoom)
        out = zoom_crop(window, crop, height, width, np.random.default_rng(seed))
        assert out["depth"].shape == (2, height, width) and out["image"].shape == (2, height, width, 3)
        K, ext = out["intrinsics"].astype(np.float64), out["cam_from_world"].astype(np.float64)
        valid = out["valid_mask"]
        assert valid.mean() > 0.5 and (out["depth"][valid] > 0).all() and (out["depth"][~valid] == 0).all()
        uvz = _project(out["world_points"].astype(np.float64), ext, K)
        ys, xs = np.mgrid[0:height, 0:width]
        for s in range(2):
            v = valid[s]
            np.testing.assert_allclose(uvz[s][..., 2][v], out["depth"][s][v], rtol=1e-4)
            np.testing.assert_allclose(uvz[s][..., 0][v], xs[v], atol=1e-4 * width)
            np.testing.assert_allclose(uvz[s][..., 1][v], ys[v], atol=1e-4 * height)
        # pixel-centre convention: where the resampled image says an output pixel reads the stored
        # image, the original points of that stored pixel land through the new intrinsics
        src_x = out["image"][0][..., 0].astype(np.float64)  # bilinear: stored column read, +-0.5 (uint8)
        src_y = out["image"][0][..., 1].astype(np.float64)
        scale = K[0, 0, 0] / window["intrinsics"][0, 0, 0]  # output px per stored px
        inner = (src_x > 1) & (src_x < 254) & (src_y > 1) & (src_y < STORED_H - 2)
        j, i = np.rint(src_x[inner]).astype(int), np.rint(src_y[inner]).astype(int)
        measured = window["valid_mask"][0][i, j]
        j, i = j[measured], i[measured]
        landed = original[0][i, j]  # (u, v, z) of the point of stored pixel (i, j), stored camera
        assert np.allclose(landed[:, 0], j, atol=1e-3) and np.allclose(landed[:, 1], i, atol=1e-3)
        # the same points through the new intrinsics
        cam = landed[:, 2:] * np.stack(
            [(j - window["intrinsics"][0, 0, 2]) / window["intrinsics"][0, 0, 0],
             (i - window["intrinsics"][0, 1, 2]) / window["intrinsics"][0, 1, 1], np.ones(len(j))], axis=1
        )  # fmt: skip
        u = K[0, 0, 0] * cam[:, 0] / cam[:, 2] + K[0, 0, 2]
        v = K[0, 1, 1] * cam[:, 1] / cam[:, 2] + K[0, 1, 2]
        x_out, y_out = xs[inner][measured], ys[inner][measured]
        # the image says pixel (y', x') read stored (src_y, src_x), +-0.5 of uint8 rounding, and
        # OpenCV may weigh a uint8 bilinear read on a grid of 1/32 pixel (INTER_BITS; OpenCV
        # 5.1 does): the read position is then off by up to 1/64 more
        bound = (0.5 + 1 / 64) * scale + 1e-3
        assert np.abs(u - x_out).max() <= bound and np.abs(v - y_out).max() <= bound
        assert abs(np.mean(u - x_out)) < 0.1 * scale  # unbiased: a half-pixel shift would show


def test_plain_crops_keep_stored_pixels_exactly():
    window = synthetic_window()
    out = zoom_crop(window, CropConfig(height=112, width=224, zoom=False), 112, 224, np.random.default_rng(3))
    x0 = int(out["image"][0, 0, 0, 0])
    y0 = int(out["image"][0, 0, 0, 1])
    np.testing.assert_array_equal(out["depth"], window["depth"][:, y0 : y0 + 112, x0 : x0 + 224])
    np.testing.assert_array_equal(
        out["world_points"], window["world_points"][:, y0 : y0 + 112, x0 : x0 + 224]
    )
    assert out["intrinsics"][0, 0, 2] == pytest.approx(window["intrinsics"][0, 0, 2] - x0)


def test_colour_jitter_changes_each_frame_and_nothing_else():
    window = synthetic_window(frames=4)
    images = window["image"].astype(np.float32) / 255.0
    cfg = ColourJitterConfig()  # upstream: 0.5 / 0.5 / 0.5 / hue 0.1, p 0.9
    out = colour_jitter(images, cfg, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    changed = [not np.allclose(out[k], images[k]) for k in range(4)]
    assert sum(changed) >= 3
    deltas = [float(np.abs(out[k] - images[k]).mean()) for k in range(4) if changed[k]]
    assert len(set(np.round(deltas, 6))) == len(deltas)  # frames jittered independently
    never = colour_jitter(images, ColourJitterConfig(p=0.0), np.random.default_rng(0))
    np.testing.assert_array_equal(never, images)


def test_step_shape_is_a_pure_function_of_seed_and_step():
    aug = AugmentConfig()
    aug.frames.enabled, aug.crop.aspect, aug.crop.width = True, True, 518
    shapes = [step_shape(aug, 8, (140, 518), seed=0, step=k) for k in range(20)]
    assert shapes == [step_shape(aug, 8, (140, 518), seed=0, step=k) for k in range(20)]
    assert shapes != [step_shape(aug, 8, (140, 518), seed=1, step=k) for k in range(20)]
    assert all(2 <= s.frames <= 24 and s.width == 518 and s.height % 14 == 0 for s in shapes)
    assert all(0.33 * 518 - 7 <= s.height <= 518 + 7 for s in shapes)
    assert output_size(CropConfig(), 140, 518, None) == (140, 518)
