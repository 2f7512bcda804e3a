"""Evaluation windows: fixed runs of consecutive frames of a split, chosen the same way for
every checkpoint so results pair up window by window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shards import ShardStore


@dataclass(frozen=True)
class EvalWindow:
    dataset: str
    sequence: str
    frames: tuple[int, ...]

    @property
    def window_id(self) -> str:
        return f"{self.dataset}/{self.sequence}/{self.frames[0]:06d}-{self.frames[-1]:06d}"


def select_windows(
    index: pd.DataFrame, split: str, seq_len: int, seq_stride: int, max_seqs: int | None = None
) -> list[EvalWindow]:
    """Windows of `seq_len` consecutive stored frames, one starting every `seq_stride` frames."""
    rows = index if split == "all" else index[index["split"] == split]
    if rows.empty:
        raise ValueError(
            f"no frames with split {split!r} in the shards (splits: {sorted(set(index['split']))})"
        )
    windows: list[EvalWindow] = []
    groups = list(rows.groupby(["dataset", "sequence"], sort=True))
    for (dataset, sequence), group in groups[:max_seqs] if max_seqs else groups:
        frames = np.sort(group["frame"].to_numpy())
        for start in range(0, len(frames) - seq_len + 1, seq_stride):
            windows.append(
                EvalWindow(dataset, sequence, tuple(int(f) for f in frames[start : start + seq_len]))
            )
    if not windows:
        raise ValueError(f"no sequence of split {split!r} has {seq_len} frames for a window")
    return windows


@dataclass
class WindowData:
    """Ground truth of one window, stacked."""

    window_id: str
    images: np.ndarray  # [S,H,W,3] uint8
    depth: np.ndarray  # [S,H,W] (0 = none)
    valid: np.ndarray
    building: np.ndarray
    has_building_labels: bool
    world_points: np.ndarray  # [S,H,W,3]
    cam_from_world: np.ndarray  # [S,4,4]
    intrinsics: np.ndarray  # [S,3,3]


def load_window(store: ShardStore, window: EvalWindow) -> WindowData:
    frames = [store.read(window.sequence, f, dataset=window.dataset) for f in window.frames]
    rows = store.index[
        (store.index["sequence"] == window.sequence) & store.index["frame"].isin(window.frames)
    ]
    return WindowData(
        window_id=window.window_id,
        images=np.stack([f["image"] for f in frames]),
        depth=np.stack([f["depth"] for f in frames]).astype(np.float64),
        valid=np.stack([f["valid_mask"] for f in frames]),
        building=np.stack([f["building_mask"] for f in frames]),
        has_building_labels=bool(rows["building_ratio"].notna().all()),
        world_points=np.stack([f["world_points"] for f in frames]).astype(np.float64),
        cam_from_world=np.stack([f["cam_from_world"] for f in frames]),
        intrinsics=np.stack([f["intrinsics"] for f in frames]),
    )
