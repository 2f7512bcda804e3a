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
    """Ground truth of one window: the shard contract's arrays, stacked over its frames."""

    window_id: str
    image: np.ndarray  # [S,H,W,3] uint8
    depth: np.ndarray  # [S,H,W] float64 (0 = none)
    valid_mask: np.ndarray
    building_mask: np.ndarray
    has_building_labels: bool
    world_points: np.ndarray  # [S,H,W,3] float64
    cam_from_world: np.ndarray  # [S,4,4]
    intrinsics: np.ndarray  # [S,3,3]


def load_window(store: ShardStore, window: EvalWindow) -> WindowData:
    arrays = store.read_window(window.dataset, window.sequence, window.frames)
    index = store.index
    rows = index[
        (index["dataset"] == window.dataset)
        & (index["sequence"] == window.sequence)
        & index["frame"].isin(window.frames)
    ]
    return WindowData(
        window_id=window.window_id,
        image=arrays["image"],
        depth=arrays["depth"].astype(np.float64),
        valid_mask=arrays["valid_mask"],
        building_mask=arrays["building_mask"],
        has_building_labels=bool(rows["building_ratio"].notna().all()),
        world_points=arrays["world_points"].astype(np.float64),
        cam_from_world=arrays["cam_from_world"],
        intrinsics=arrays["intrinsics"],
    )
