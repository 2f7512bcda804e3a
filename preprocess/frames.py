"""Turn one frame's image, depth and labels into the stored arrays and index statistics.

Shared by every dataset reader so KITTI-360 and COLMAP frames obey one contract.
"""

from __future__ import annotations

import cv2
import numpy as np

from shards import UNLABELLED, stratum_of

from .projection import depth_to_world, label_lut


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resample of an RGB image to (W, H); a no-op at native size.

    A downscale of 2x or more first halves even-sized images with OpenCV's exact 2x2 box (its
    fast integer path); a remaining factor below 2 is resampled bilinearly, which at such
    factors still gives every source pixel weight. Both keep the pixel-centre geometry
    x' = (x + 0.5) * s - 0.5. For KITTI-360 to width 518 this costs 0.4 ms against 2.9 ms for
    one fractional area resample, and differs from it by 0.8 grey levels on average.
    What halving cannot reach (odd sizes) below 2x is area-resampled.
    """
    width, height = size
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    while rgb.shape[1] >= 2 * width and rgb.shape[0] >= 2 * height and not (rgb.shape[0] | rgb.shape[1]) & 1:
        rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    below_2x = rgb.shape[1] < 2 * width and rgb.shape[0] < 2 * height
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR if below_2x else cv2.INTER_AREA)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-label resampling consistent with x' = (x + 0.5) * s - 0.5."""
    height, width = labels.shape
    if (width, height) == size:
        return labels
    cols = np.clip(np.rint((np.arange(size[0]) + 0.5) * width / size[0] - 0.5), 0, width - 1).astype(int)
    rows = np.clip(np.rint((np.arange(size[1]) + 0.5) * height / size[1] - 0.5), 0, height - 1).astype(int)
    return labels[rows][:, cols]  # rows first, then columns: 6x faster than one 2-D gather


def frame_record(
    image: np.ndarray,
    depth: np.ndarray,
    semantic: np.ndarray | None,
    K: np.ndarray,
    cam_from_world: np.ndarray,
    building_labels: tuple[int, ...],
    building_mask: np.ndarray | None = None,
    building_known: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Arrays for the shard and the statistics columns of the index row.

    `building_mask` overrides the label-derived mask (COLMAP scenes with mask folders);
    `building_known=False` marks such a mask as a placeholder (a COLMAP scene without
    building masks stores all-true), so `building_ratio` is null: null whenever neither
    semantics nor a real mask say what is building (and so is `building_valid_points`).
    """
    height, width = depth.shape
    has_semantics = semantic is not None
    labels = semantic if has_semantics else np.full((height, width), UNLABELLED, dtype=np.uint8)
    if building_mask is None:
        building_mask = label_lut(building_labels)[labels] if has_semantics else np.zeros_like(depth, bool)
        known = has_semantics
    else:
        known = building_known
    valid = depth > 0
    world_from_cam = np.linalg.inv(cam_from_world)
    arrays = {
        "image": image,
        "depth": depth.astype(np.float32),
        "semantic": labels.astype(np.uint8),
        "building_mask": building_mask.astype(bool),
        "world_points": depth_to_world(depth, K, world_from_cam),
        "intrinsics": np.asarray(K, dtype=np.float64),
        "cam_from_world": np.asarray(cam_from_world, dtype=np.float64),
    }
    ratio = float(building_mask.mean()) if known else None
    stats = {
        "has_semantics": has_semantics,
        "building_ratio": ratio,
        "depth_coverage": float(valid.mean()),
        "valid_points": int(valid.sum()),
        "building_valid_points": int((valid & building_mask).sum()) if known else None,
        "stratum": stratum_of(ratio),
    }
    return arrays, stats
