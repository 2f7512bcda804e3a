"""Windows over a long input, and how their predictions become one reconstruction.

VGGT sees `seq_len` frames at a time and predicts them in the frame of the window's first
camera, at a scale of its own. Rules (README, `vggt-infer`):
- windows of `seq_len` consecutive frames (name order) start every `stride` frames; the last
  one is moved back to end on the last frame, so every frame is covered;
- consecutive windows must share a frame: window k is brought into the world of window 0
  (first camera = origin, window 0's scale) by the Sim(3) that best maps its depth-unprojected
  points of the shared frames onto window k-1's (already in that world), confident pixels only;
- each frame's depth, confidence and camera come from the window where it sits most centrally
  (ties: the earlier window); predictions are never averaged across windows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from train.model import unproject_depth

from ..align import Sim3, align_points
from .inputs import InputError

MIN_SHARED_PIXELS = 100  # confident pixels two windows must share to be chained


def unproject(depth: np.ndarray, cam_from_world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """NumPy face of `train.model.unproject_depth`: depth [...,H,W] -> world points [...,H,W,3]."""
    tensors = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (depth, cam_from_world, intrinsics))
    return unproject_depth(*tensors).numpy()


def default_stride(seq_len: int) -> int:
    """Consecutive windows share a quarter of their frames (at least one)."""
    return max(seq_len - max(1, seq_len // 4), 1)


def plan_windows(n_frames: int, seq_len: int, stride: int) -> list[range]:
    """Frame index ranges of the windows (see the module rules)."""
    if seq_len < 1 or stride < 1:
        raise InputError(f"--seq-len and --stride must be positive (got {seq_len} and {stride})")
    if n_frames <= seq_len:
        return [range(n_frames)]
    if stride >= seq_len:
        raise InputError(
            f"windows of {seq_len} frames every {stride} frames share no frame, so their cameras "
            f"cannot be put in one world; use --stride below --seq-len (e.g. {default_stride(seq_len)})"
        )
    starts = list(range(0, n_frames - seq_len + 1, stride))
    if starts[-1] + seq_len < n_frames:
        starts.append(n_frames - seq_len)
    return [range(s, s + seq_len) for s in starts]


def central_windows(windows: list[range], n_frames: int) -> list[int]:
    """For each frame, the window it is taken from: the one where it sits most centrally."""
    owner = []
    for i in range(n_frames):
        offsets = [(abs(i - (w.start + w.stop - 1) / 2), k) for k, w in enumerate(windows) if i in w]
        owner.append(min(offsets)[1])
    return owner


@dataclass
class WindowPrediction:
    """One window's predictions on the model grid: frames (input indices), depth and
    confidence [S,H',W'], cam_from_world [S,4,4] and grid intrinsics [S,3,3]."""

    frames: list[int]
    depth: np.ndarray
    confidence: np.ndarray
    cam_from_world: np.ndarray
    intrinsics: np.ndarray

    def world_points(self, rows: list[int]) -> np.ndarray:
        """[len(rows),H',W',3] points of the given rows, unprojected with their cameras."""
        return unproject(self.depth[rows], self.cam_from_world[rows], self.intrinsics[rows])

    def in_world(self, sim: Sim3) -> WindowPrediction:
        """The same prediction after moving its world by x -> s R x + t: depth scales by s,
        cameras become cam_from_world' = [R_c R^T | s t_c - R_c R^T t]."""
        rot = self.cam_from_world[:, :3, :3] @ sim.R.T
        cam_from_world = np.zeros_like(self.cam_from_world)
        cam_from_world[:, :3, :3] = rot
        cam_from_world[:, :3, 3] = sim.s * self.cam_from_world[:, :3, 3] - rot @ sim.t
        cam_from_world[:, 3, 3] = 1.0
        return replace(self, depth=self.depth * sim.s, cam_from_world=cam_from_world)


IDENTITY = Sim3(1.0, np.eye(3), np.zeros(3))


def chain_to(
    previous: WindowPrediction, current: WindowPrediction, content: dict[int, np.ndarray]
) -> tuple[Sim3, float]:
    """Sim(3) taking `current`'s world onto `previous`'s, fitted on the frames they share, and
    the fit's RMS residual relative to the RMS spread of the target points. `content` gives
    each shared frame's grid mask of real image pixels."""
    shared = [f for f in current.frames if f in previous.frames]
    if not shared:
        raise InputError(
            f"windows ending at frames {previous.frames[-1]} and {current.frames[-1]} share no frame"
        )
    rows_prev = [previous.frames.index(f) for f in shared]
    rows_cur = [current.frames.index(f) for f in shared]
    keep = np.stack([content[f] for f in shared])
    for preds, rows in ((previous, rows_prev), (current, rows_cur)):
        conf = preds.confidence[rows]
        keep &= conf >= np.median(conf.reshape(len(rows), -1), axis=1)[:, None, None]
        keep &= preds.depth[rows] > 0
    if keep.sum() < MIN_SHARED_PIXELS:
        raise InputError(
            f"windows ending at frames {previous.frames[-1]} and {current.frames[-1]} share only "
            f"{int(keep.sum())} confident pixels; cannot chain them (try a smaller --stride)"
        )
    target = previous.world_points(rows_prev)[keep]
    source = current.world_points(rows_cur)[keep]
    sim = align_points(source, target, max_points=50_000)
    residual = np.sqrt(np.mean(np.sum((sim.apply(source) - target) ** 2, axis=1)))
    spread = np.sqrt(np.mean(np.sum((target - target.mean(0)) ** 2, axis=1)))
    return sim, float(residual / max(spread, 1e-12))
