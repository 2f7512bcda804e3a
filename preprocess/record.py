"""The one frame type every source yields, and how it becomes stored arrays and index columns.

Sources differ in where depth, labels and the building mask come from; from a FrameRecord on,
KITTI-360 and COLMAP frames obey one shard contract (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shards import UNLABELLED, stratum_of

from .kernels import depth_to_world


@dataclass
class FrameRecord:
    """One frame at the stored size, ready to be written."""

    frame: int
    split: str
    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 z-depth in metres, 0 = none
    semantic: np.ndarray | None  # (H, W) uint8 label ids; None when the frame is not annotated
    building_mask: np.ndarray  # (H, W) bool
    # False when the mask is a placeholder (no labels, no mask file): building statistics are
    # then null rather than computed from a mask that knows nothing
    building_known: bool
    K: np.ndarray  # 3x3 intrinsics of the stored size
    cam_from_world: np.ndarray  # 4x4
    depth_source: str  # lidar | lidar+static | colmap_sparse | gt_dense
    sweeps: int  # LiDAR sweeps that contributed; 0 without LiDAR
    static_points: int = 0  # static-cloud points that gave depth

    def stored(self) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """The arrays for the shard and the index columns the frame itself determines (all but
        dataset, sequence and the writer's shard/row/height/width)."""
        has_semantics = self.semantic is not None
        labels = self.semantic if has_semantics else np.full(self.depth.shape, UNLABELLED, dtype=np.uint8)
        valid = self.depth > 0
        world_from_cam = np.linalg.inv(self.cam_from_world)
        arrays = {
            "image": self.image,
            "depth": self.depth.astype(np.float32),
            "semantic": labels.astype(np.uint8),
            "building_mask": self.building_mask.astype(bool),
            "world_points": depth_to_world(self.depth, self.K, world_from_cam),
            "intrinsics": np.asarray(self.K, dtype=np.float64),
            "cam_from_world": np.asarray(self.cam_from_world, dtype=np.float64),
        }
        known = self.building_known
        ratio = float(self.building_mask.mean()) if known else None
        columns = {
            "frame": self.frame,
            "split": self.split,
            "has_semantics": has_semantics,
            "building_ratio": ratio,
            "depth_coverage": float(valid.mean()),
            "valid_points": int(valid.sum()),
            "building_valid_points": int((valid & self.building_mask).sum()) if known else None,
            "stratum": stratum_of(ratio),
            "sweeps": self.sweeps,
            "depth_source": self.depth_source,
            "building_depth_coverage": _share(valid, self.building_mask) if known else None,
            "top_building_depth_coverage": _share(
                valid[: len(valid) // 3], self.building_mask[: len(valid) // 3]
            )
            if known
            else None,
            "static_points": self.static_points,
        }
        return arrays, columns


def _share(valid: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the mask's pixels with depth; None when the mask is empty."""
    total = int(mask.sum())
    return int((valid & mask).sum()) / total if total else None


@dataclass(frozen=True)
class Skip:
    """A planned frame that could not be built (corrupt or missing input), and why: the
    reason goes to the manifest and the build goes on."""

    frame: int
    reason: str
    name: str | None = None  # what the dataset calls the frame (COLMAP: its image name), for the log


@dataclass(frozen=True)
class Dropped:
    """Input elements of one frame's files left out because they were unusable (e.g. a
    sweep's non-finite points), and how many: counted in the manifest, the frame is kept."""

    frame: int
    what: str  # what was dropped, the manifest's key
    count: int
