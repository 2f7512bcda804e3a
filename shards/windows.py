"""Which stored frames may form a window (the frames fed to the model together).

Training and evaluation draw windows by the same rules, so what one learns from and the
other scores are alike:
- a window never spans a gap in the original frame numbering larger than `max_gap` (skipped
  frames, a block of another split, a missing pose): frames across a gap are not neighbours;
- a window whose camera path is shorter than `min_baseline_m` (a stationary car) carries no
  pose signal;
- frames whose camera centre lies within a radius of another split's frames can be held
  out (a leakage buffer between training and validation frames of the same drive).
"""

from __future__ import annotations

import re

import numpy as np
from scipy.spatial import cKDTree


def split_at_gaps(frames: np.ndarray, max_gap: int) -> list[np.ndarray]:
    """Sorted frame numbers cut into runs whose consecutive frames differ by at most `max_gap`."""
    frames = np.sort(np.asarray(frames))
    if max_gap < 1:
        raise ValueError(f"max_gap must be >= 1, got {max_gap}")
    if frames.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(frames) > max_gap) + 1
    return np.split(frames, cuts)


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    """World camera centres [N,3] of cam_from_world poses [N,4,4] (or [N,3,4]): C = -R^T t."""
    R, t = cam_from_world[:, :3, :3], cam_from_world[:, :3, 3]
    return -np.einsum("nji,nj->ni", R, t)


def path_length(centres: np.ndarray) -> float:
    """Length of the camera path through `centres` [N,3] in order (metres)."""
    centres = np.asarray(centres, dtype=np.float64)
    return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()) if len(centres) > 1 else 0.0


def within_radius(points: np.ndarray, others: np.ndarray, radius: float) -> np.ndarray:
    """bool [N]: which `points` [N,3] lie within `radius` (inclusive) of any of `others` [M,3]."""
    points, others = np.asarray(points, np.float64), np.asarray(others, np.float64)
    if len(points) == 0 or len(others) == 0 or radius < 0:
        return np.zeros(len(points), dtype=bool)
    distance, _ = cKDTree(others).query(points, k=1, distance_upper_bound=radius * (1 + 1e-12))
    return np.isfinite(distance)


def _drive_number(name: str) -> str | None:
    """KITTI-360's drive number of a sequence name (`2013_05_28_drive_0003_sync` -> `0003`)."""
    match = re.search(r"_drive_(\d+)_", name)
    return match.group(1) if match else None


def sequence_matches(name: str, token: str) -> bool:
    """Whether `token` names sequence `name`: the full name, or a KITTI-360 drive number (`3`, `0003`)."""
    return name == token or (token.isdigit() and _drive_number(name) == f"{int(token):04d}")
