"""Stored image size and resampling, shared by every source so that images, labels, depth and
intrinsics all keep pixel centres where DESIGN.md puts them: x' = (x + 0.5) * s - 0.5.

Sizes are `shards.ImageSize` (height first, as in array shapes); OpenCV gets `size.wh`.
"""

from __future__ import annotations

import cv2
import numpy as np

from shards import PATCH_SIZE, ImageSize


def check_width(width: int | None) -> None:
    """A stored width (--width) is None (native) or a positive multiple of the patch size."""
    if width is not None and (width < PATCH_SIZE or width % PATCH_SIZE):
        raise ValueError(
            f"--width must be 'native' or a positive multiple of {PATCH_SIZE} (VGGT patch size), got {width}"
        )


def check_chunk_frames(chunk_frames: int) -> None:
    if chunk_frames < 1:
        raise ValueError(f"--chunk-frames must be >= 1 (frames per unit), got {chunk_frames}")


def target_size(width: int | None, native: ImageSize) -> ImageSize:
    """Size of the stored images: `None` keeps the native size, otherwise the height keeps
    the aspect ratio rounded to a multiple of VGGT's patch size, so frames feed the model
    uncropped."""
    if width is None:
        return native
    check_width(width)
    height = max(PATCH_SIZE, round(native.height * width / native.width / PATCH_SIZE) * PATCH_SIZE)
    return ImageSize(height, width)


def resized_intrinsics(K: np.ndarray, native: ImageSize, target: ImageSize) -> np.ndarray:
    """Intrinsics for a resized image under x' = (x + 0.5) * s - 0.5 (pixel centres kept)."""
    sx = target.width / native.width
    sy = target.height / native.height
    out = np.asarray(K, dtype=np.float64).copy()
    out[0, 0] *= sx
    out[0, 1] *= sx
    out[1, 1] *= sy
    out[0, 2] = (out[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (out[1, 2] + 0.5) * sy - 0.5
    return out


def resize_image(rgb: np.ndarray, size: ImageSize) -> np.ndarray:
    """Anti-aliased resample of an RGB image to `size`; a no-op at native size.

    A downscale of 2x or more first halves even-sized images with OpenCV's exact 2x2 box (its
    fast integer path); a remaining factor below 2 is resampled bilinearly, which at such
    factors still gives every source pixel weight. Both keep the pixel-centre geometry
    x' = (x + 0.5) * s - 0.5. For KITTI-360 to width 518 this costs 0.4 ms against 2.9 ms for
    one fractional area resample, and differs from it by 0.8 grey levels on average.
    What halving cannot reach (odd sizes) below 2x is area-resampled.
    """
    if rgb.shape[:2] == size:
        return rgb
    while (
        rgb.shape[0] >= 2 * size.height
        and rgb.shape[1] >= 2 * size.width
        and not (rgb.shape[0] | rgb.shape[1]) & 1
    ):
        half = ImageSize(rgb.shape[0] // 2, rgb.shape[1] // 2)
        rgb = cv2.resize(rgb, half.wh, interpolation=cv2.INTER_AREA)
    below_2x = rgb.shape[0] < 2 * size.height and rgb.shape[1] < 2 * size.width
    return cv2.resize(rgb, size.wh, interpolation=cv2.INTER_LINEAR if below_2x else cv2.INTER_AREA)


def resize_labels(labels: np.ndarray, size: ImageSize) -> np.ndarray:
    """Nearest-label resampling consistent with x' = (x + 0.5) * s - 0.5 (also used for depth
    and masks, so no value is invented between two surfaces)."""
    if labels.shape == size:
        return labels
    height, width = labels.shape
    rows = np.rint((np.arange(size.height) + 0.5) * height / size.height - 0.5)
    cols = np.rint((np.arange(size.width) + 0.5) * width / size.width - 0.5)
    rows = np.clip(rows, 0, height - 1).astype(int)
    cols = np.clip(cols, 0, width - 1).astype(int)
    return labels[rows][:, cols]  # rows first, then columns: 6x faster than one 2-D gather
