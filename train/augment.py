"""Augmentation of a normalised training window (config section `augment`), after upstream
VGGT's recipe: per-frame colour jitter of the images only; a random zoom crop of the same region
in every frame, resized to the step's output size, with intrinsics moved exactly, depth resampled
nearest and the point map recomputed from that depth; per-step aspect ratio and frame count.

Pixel (row i, column j) is centred at (x=j, y=i) (DESIGN.md). A region whose left edge lies at
x = e (e = -0.5 is the frame's edge) and spans `rw` stored pixels, resized to `w` output pixels,
maps output x' to stored x = s x' + e + s/2 with s = rw / w; so fx' = fx / s and
cx' = (cx - e) / s - 1/2.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from shards import PATCH_SIZE

from .config import AugmentConfig, ColourJitterConfig, ConfigError, CropConfig

STEP_STREAM = 0x5EED  # tags the per-step random stream apart from the per-sample ones


class StepShape(NamedTuple):
    """What every window of one step's batch shares: frame count and output size."""

    frames: int
    height: int
    width: int


def _patch_floor(value: float) -> int:
    return int(value) // PATCH_SIZE * PATCH_SIZE


def output_size(crop: CropConfig, stored_h: int, stored_w: int, aspect: float | None) -> tuple[int, int]:
    """(height, width) of the network input, multiples of 14: `crop.width` (or the stored width)
    wide; `aspect` x width high when the aspect varies, else `crop.height` (or the stored height)."""
    width = _patch_floor(crop.width or stored_w)
    if aspect is not None:
        height = max(PATCH_SIZE, int(round(width * aspect / PATCH_SIZE)) * PATCH_SIZE)
    else:
        height = _patch_floor(crop.height or stored_h)
    if height < PATCH_SIZE or width < PATCH_SIZE:
        raise ConfigError(f"augment.crop: output {height}x{width} is smaller than one {PATCH_SIZE}-px patch")
    return height, width


def step_shape(aug: AugmentConfig, seq_len: int, stored: tuple[int, int], seed: int, step: int) -> StepShape:
    """The frame count and output size of micro-step `step`: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step, STEP_STREAM])
    frames = (
        int(rng.integers(aug.frames.min_frames, aug.frames.max_frames + 1)) if aug.frames.enabled else seq_len
    )
    aspect = float(rng.uniform(aug.crop.min_aspect, aug.crop.max_aspect)) if aug.crop.aspect else None
    return StepShape(frames, *output_size(aug.crop, stored[0], stored[1], aspect))


def zoom_crop(
    sample: dict[str, np.ndarray], crop: CropConfig, height: int, width: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The same random region of every frame resized to height x width. The region has the
    output's aspect ratio; at zoom 0 it is the output size itself when that fits (a plain crop,
    no resampling), else the largest such region in the frame; zoom z shrinks it by 1 + z."""
    stored_h, stored_w = sample["depth"].shape[1:3]
    fit = min(1.0, stored_h / height, stored_w / width)
    zoom = float(rng.uniform(0.0, crop.max_zoom)) if crop.zoom and crop.max_zoom > 0 else 0.0
    region_h, region_w = height * fit / (1 + zoom), width * fit / (1 + zoom)
    if zoom == 0.0 and fit == 1.0:  # a plain crop on whole pixels
        y0 = int(rng.integers(0, stored_h - height + 1))
        x0 = int(rng.integers(0, stored_w - width + 1))
        return _cut(sample, y0, x0, height, width)
    left = float(rng.uniform(-0.5, stored_w - 0.5 - region_w))
    top = float(rng.uniform(-0.5, stored_h - 0.5 - region_h))
    return _resample(sample, left, top, region_w / width, height, width)


def _cut(sample: dict[str, np.ndarray], y0: int, x0: int, height: int, width: int) -> dict[str, np.ndarray]:
    out = dict(sample)
    for key in ("image", "depth", "valid_mask", "world_points", "semantic", "building_mask"):
        out[key] = sample[key][:, y0 : y0 + height, x0 : x0 + width]
    intrinsics = sample["intrinsics"].copy()
    intrinsics[:, 0, 2] -= x0
    intrinsics[:, 1, 2] -= y0
    out["intrinsics"] = intrinsics
    return out


def _resample(
    sample: dict[str, np.ndarray], left: float, top: float, s: float, height: int, width: int
) -> dict[str, np.ndarray]:
    """Output pixel (y', x') reads stored (s y' + top + s/2, s x' + left + s/2): bilinear for
    images, nearest for depth and labels; the point map is depth unprojected through the new
    intrinsics, in the window's (normalised) world frame."""
    stored_h, stored_w = sample["depth"].shape[1:3]
    bx, by = left + s / 2, top + s / 2
    affine = np.array([[s, 0.0, bx], [0.0, s, by]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    images = np.stack(
        [
            cv2.warpAffine(f, affine, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            for f in sample["image"]
        ]
    )
    rows = np.clip(np.rint(s * np.arange(height) + by), 0, stored_h - 1).astype(np.intp)
    cols = np.clip(np.rint(s * np.arange(width) + bx), 0, stored_w - 1).astype(np.intp)

    def nearest(a: np.ndarray) -> np.ndarray:
        return a[:, rows[:, None], cols[None, :]]

    intrinsics = sample["intrinsics"].astype(np.float64).copy()
    intrinsics[:, :2, :2] /= s
    intrinsics[:, 0, 2] = (intrinsics[:, 0, 2] - left) / s - 0.5
    intrinsics[:, 1, 2] = (intrinsics[:, 1, 2] - top) / s - 0.5
    depth = nearest(sample["depth"])
    valid = nearest(sample["valid_mask"]) & (depth > 0)
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    out = dict(sample)
    out.update(
        image=images,
        depth=depth,
        valid_mask=valid,
        semantic=nearest(sample["semantic"]),
        building_mask=nearest(sample["building_mask"]),
        intrinsics=intrinsics.astype(np.float32),
        world_points=unproject(depth, valid, intrinsics, sample["cam_from_world"].astype(np.float64)),
    )
    return out


def unproject(
    depth: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray
) -> np.ndarray:
    """World points [S,H,W,3] (float32, 0 where invalid) of z-depth [S,H,W] at pixel centres."""
    frames, height, width = depth.shape
    K = intrinsics.astype(np.float64)
    x = ((np.arange(width) - K[:, 0, 2, None]) / K[:, 0, 0, None]).astype(np.float32)[:, None, :]
    y = ((np.arange(height) - K[:, 1, 2, None]) / K[:, 1, 1, None]).astype(np.float32)[:, :, None]
    R = cam_from_world[:, :3, :3].astype(np.float32)[:, None, None]  # [S,1,1,3,3]
    t = cam_from_world[:, :3, 3].astype(np.float32)[:, None, None]  # [S,1,1,3]
    z = np.where(valid, depth, 0).astype(np.float32)
    cam = (x * z - t[..., 0], y * z - t[..., 1], z - t[..., 2])  # p - t
    world = np.empty((frames, height, width, 3), np.float32)
    for i in range(3):  # R^T (p - t), elementwise: far faster than a batched 3x3 matmul
        world[..., i] = R[..., 0, i] * cam[0] + R[..., 1, i] * cam[1] + R[..., 2, i] * cam[2]
    world *= valid[..., None]
    return world


def colour_jitter(images: np.ndarray, cfg: ColourJitterConfig, rng: np.random.Generator) -> np.ndarray:
    """Each frame [S,H,W,3] in 0..1, with probability p, gets brightness, contrast, saturation
    and hue changes in a random order (factors in [1 - x, 1 + x], hue shift in [-hue, hue]
    turns), as torchvision's ColorJitter; the frames of a window are jittered independently."""
    out = images.copy()
    for k in range(len(images)):
        if rng.random() >= cfg.p:
            continue
        frame = out[k]
        for op in rng.permutation(4):
            if op == 0 and cfg.brightness > 0:
                frame = frame * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
            elif op == 1 and cfg.contrast > 0:
                mean = _grey(frame).mean()
                frame = (frame - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
            elif op == 2 and cfg.saturation > 0:
                grey = _grey(frame)[..., None]
                frame = (frame - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + grey
            elif op == 3 and cfg.hue > 0:
                hsv = cv2.cvtColor(np.clip(frame, 0.0, 1.0).astype(np.float32), cv2.COLOR_RGB2HSV)
                hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-cfg.hue, cfg.hue)) % 360.0
                frame = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
            frame = np.clip(frame, 0.0, 1.0)
        out[k] = frame
    return out.astype(np.float32)


def _grey(frame: np.ndarray) -> np.ndarray:
    return frame @ np.array([0.299, 0.587, 0.114], dtype=frame.dtype)
