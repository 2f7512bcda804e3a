"""Evaluation windows: fixed runs of consecutive frames of a split, chosen the same way for
every checkpoint so results pair up window by window.

The rules for which frames may form a window are the ones training uses (shards.windows): a
window never spans a gap in the original frame numbering larger than ``max_gap`` frames, and a
window whose GT camera path is shorter than ``min_baseline_m`` carries no pose signal, so it is
scored on depth and geometry but left out of the pose metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shards import ShardStore
from shards.windows import camera_centres, path_length, sequence_matches, split_at_gaps

DEFAULT_MAX_GAP = 3
DEFAULT_MIN_BASELINE_M = 1.0


@dataclass(frozen=True)
class EvalWindow:
    dataset: str
    sequence: str
    frames: tuple[int, ...]
    path_m: float = math.nan  # length of the GT camera path through the window's frames

    @property
    def window_id(self) -> str:
        return f"{self.dataset}/{self.sequence}/{self.frames[0]:06d}-{self.frames[-1]:06d}"


@dataclass(frozen=True)
class WindowSelection:
    """The windows to evaluate and what the window rules left out, for the report."""

    windows: list[EvalWindow]
    max_gap: int
    min_baseline_m: float
    sequences: list[str] = field(default_factory=list)  # dataset/sequence evaluated
    splits: dict[str, list[str]] = field(default_factory=dict)  # splits each of them has in the shards
    gaps: int = 0  # places where consecutive stored frames are more than max_gap apart
    short_runs: int = 0  # gap-free runs with fewer frames than a window
    frames_in_no_window: int = 0

    def pose_window(self, window: EvalWindow) -> bool:
        """Whether the window moves enough for pose metrics."""
        return not window.path_m < self.min_baseline_m

    @property
    def pose_skipped(self) -> int:
        return sum(not self.pose_window(w) for w in self.windows)

    def summary(self) -> dict[str, object]:
        return {
            "sequences": self.sequences,
            "splits": self.splits,
            "max_gap": self.max_gap,
            "min_baseline_m": self.min_baseline_m,
            "gaps": self.gaps,
            "short_runs": self.short_runs,
            "frames_in_no_window": self.frames_in_no_window,
            "windows": len(self.windows),
            "pose_skipped": self.pose_skipped,
        }


def filter_sequences(rows: pd.DataFrame, wanted: Sequence[str]) -> pd.DataFrame:
    """Rows of the named sequences (see `sequence_matches`). A name that matches no sequence of
    the shards is an error that lists the known ones."""
    names = sorted(set(rows["sequence"]))
    chosen: set[str] = set()
    for token in wanted:
        hits = {n for n in names if sequence_matches(n, token)}
        if not hits:
            raise ValueError(f"--sequences: no sequence {token!r} in the shards (known: {', '.join(names)})")
        chosen |= hits
    return rows[rows["sequence"].isin(chosen)]


def select_windows(
    store: ShardStore,
    split: str,
    seq_len: int,
    seq_stride: int,
    max_seqs: int | None = None,
    sequences: Sequence[str] | None = None,
    max_gap: int = DEFAULT_MAX_GAP,
    min_baseline_m: float = DEFAULT_MIN_BASELINE_M,
) -> WindowSelection:
    """Windows of `seq_len` consecutive stored frames of `split` (optionally only `sequences`),
    one starting every `seq_stride` frames within each gap-free run of a sequence."""
    index = store.index
    rows = index if split == "all" else index[index["split"] == split]
    if sequences:
        named = filter_sequences(index, sequences)
        missing = sorted(set(named["sequence"]) - set(rows["sequence"]))
        if missing:
            raise ValueError(
                f"--sequences: {', '.join(missing)} has no frames of split {split!r}; "
                "use --split all to score a whole held-out drive"
            )
        rows = rows[rows["sequence"].isin(set(named["sequence"]))]
    if rows.empty:
        raise ValueError(
            f"no frames with split {split!r} in the shards (splits: {sorted(set(index['split']))})"
        )
    groups = list(rows.groupby(["dataset", "sequence"], sort=True))
    groups = groups[:max_seqs] if max_seqs else groups
    windows: list[EvalWindow] = []
    gaps = short_runs = covered = 0
    for (dataset, sequence), group in groups:
        runs = split_at_gaps(group["frame"].to_numpy(), max_gap)
        gaps += len(runs) - 1
        stored, poses = store.cam_from_world(dataset, sequence)
        centres = camera_centres(poses)
        for run in runs:
            starts = range(0, len(run) - seq_len + 1, seq_stride)
            short_runs += not starts
            used = np.zeros(len(run), dtype=bool)
            for start in starts:
                frames = run[start : start + seq_len]
                used[start : start + seq_len] = True
                path = path_length(centres[np.searchsorted(stored, frames)])
                windows.append(EvalWindow(dataset, sequence, tuple(int(f) for f in frames), path))
            covered += int(used.sum())
    if not windows:
        raise ValueError(
            f"no sequence of split {split!r} has {seq_len} frames without a gap of more than "
            f"{max_gap} frames (--max-gap) for a window"
        )
    return WindowSelection(
        windows,
        max_gap,
        min_baseline_m,
        sequences=[f"{d}/{s}" for (d, s), _ in groups],
        splits={
            f"{d}/{s}": sorted(set(index.loc[(index["dataset"] == d) & (index["sequence"] == s), "split"]))
            for (d, s), _ in groups
        },
        gaps=gaps,
        short_runs=short_runs,
        frames_in_no_window=sum(len(g) for _, g in groups) - covered,
    )


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
