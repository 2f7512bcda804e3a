"""Accuracy and building coverage of built depth against the synthetic scene's exact depth,
ray-cast at the stored size and intrinsics (so width 518 is judged as exactly as native).

Shared by the tests (which assert the thresholds) and `scripts/depth_accuracy.py` (which
prints the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from preprocess.synthetic import SEQUENCE_IDS
from preprocess.synthetic.raycast import cast_rays
from preprocess.synthetic.render import MAX_T, _visible_boxes
from preprocess.synthetic.scene import Street
from shards import ShardStore

OUTLIER_REL = 0.05


@lru_cache(maxsize=4)
def _street(seed: int, frames: int) -> Street:
    """The scene exactly as the generator built it: Street is the first user of its rng."""
    return Street(frames, np.random.default_rng(seed))


def sequence_seed(sequence: str, seed: int = 0) -> int:
    """The generator seeds sequence k (in SEQUENCE_IDS order) with seed + k."""
    return seed + SEQUENCE_IDS.index(int(sequence.split("_")[-2]))


def exact_depth(street: Street, frame: int, K: np.ndarray, cam_from_world: np.ndarray, shape) -> np.ndarray:
    """z-depth (0 = sky) through the pixel centres of a camera with intrinsics K."""
    height, width = shape
    world_from_cam = np.linalg.inv(cam_from_world)
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    y = (ii - K[1, 2]) / K[1, 1]
    x = (jj - K[0, 2] - K[0, 1] * y) / K[0, 0]
    dirs = np.stack([x, y, np.ones_like(x)], axis=-1).reshape(-1, 3) @ world_from_cam[:3, :3].T
    boxes, _ = street.at(frame)
    keep = _visible_boxes(world_from_cam, boxes)
    t, obj, _ = cast_rays(
        world_from_cam[None, :3, 3], dirs, boxes.centres[keep], boxes.yaws[keep], boxes.halves[keep], MAX_T
    )
    return np.where(obj >= 0, t, 0.0).reshape(shape).astype(np.float32)


@dataclass(frozen=True)
class BuiltAccuracy:
    frames: int
    outlier_share: float  # depth pixels > 5% off exact depth (or on sky), over all depth pixels
    coverage: float  # pixels with depth, over all pixels
    building_coverage: float  # building pixels with depth / building pixels, over all frames
    top_building_coverage: float  # the same in the image's top third

    def line(self) -> str:
        return (
            f"frames {self.frames:3d}  > 5% off {self.outlier_share:7.3%}  coverage {self.coverage:6.1%}  "
            f"building {self.building_coverage:6.1%}  top-third building {self.top_building_coverage:6.1%}"
        )


def built_accuracy(out: Path, frames: int, seed: int = 0) -> BuiltAccuracy:
    """Judge every frame of a build of the synthetic scene (`frames` per sequence, `seed`)."""
    store = ShardStore(out)
    outliers = valid_total = pixels = building = building_valid = top = top_valid = 0
    for sequence, frame in zip(store.index["sequence"], store.index["frame"], strict=True):
        data = store.read(sequence, int(frame))
        street = _street(sequence_seed(sequence, seed), frames)
        gt = exact_depth(street, int(frame), data["intrinsics"], data["cam_from_world"], data["depth"].shape)
        valid, depth, mask = data["valid_mask"], data["depth"], data["building_mask"]
        err = np.abs(depth[valid] - gt[valid])
        outliers += int(((err > OUTLIER_REL * gt[valid]) | (gt[valid] == 0)).sum())
        valid_total += int(valid.sum())
        pixels += valid.size
        third = len(valid) // 3
        building += int(mask.sum())
        building_valid += int((mask & valid).sum())
        top += int(mask[:third].sum())
        top_valid += int((mask[:third] & valid[:third]).sum())
    return BuiltAccuracy(
        frames=len(store.index),
        outlier_share=outliers / max(valid_total, 1),
        coverage=valid_total / max(pixels, 1),
        building_coverage=building_valid / max(building, 1),
        top_building_coverage=top_valid / max(top, 1),
    )
