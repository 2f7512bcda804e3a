"""Evaluation windows follow the shared window rules: no window spans a gap in the frame numbering
larger than max_gap, windows without camera motion are kept for depth but left out of pose
metrics, and both are counted for the report; held-out sequences are chosen by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval.report import describe_selection, describe_training
from eval.windows import select_windows


class PoseStore:
    """The two things select_windows reads from a ShardStore: the index and per-sequence poses."""

    def __init__(self, sequences: dict[str, tuple[np.ndarray, np.ndarray, str]]):
        self.poses = {}
        rows = []
        for name, (frames, centres, split) in sequences.items():
            cfw = np.tile(np.eye(4), (len(frames), 1, 1))
            cfw[:, :3, 3] = -centres  # identity rotations: C = -t
            self.poses[name] = (np.asarray(frames), cfw)
            rows += [
                {"dataset": "kitti360", "sequence": name, "frame": int(f), "split": split} for f in frames
            ]
        self.index = pd.DataFrame(rows)

    def cam_from_world(self, dataset: str, sequence: str):
        return self.poses[sequence]


def driving(frames: np.ndarray, speed: float = 1.0) -> np.ndarray:
    return np.stack([np.zeros(len(frames)), np.zeros(len(frames)), speed * np.asarray(frames, float)], 1)


def test_windows_never_span_a_gap_and_stationary_ones_skip_pose():
    # frames 0-11, a gap of 10 frames (a block of another split), 22-33 of which 22-25 stand still
    frames = np.concatenate([np.arange(12), np.arange(22, 34)])
    centres = driving(frames)
    centres[12:16] = centres[12]  # the car waits at frame 22 for four frames
    store = PoseStore({"2013_05_28_drive_0002_sync": (frames, centres, "val")})
    selection = select_windows(store, "val", seq_len=4, seq_stride=4, max_gap=3, min_baseline_m=1.0)
    spans = [w.frames for w in selection.windows]
    assert spans == [
        (0, 1, 2, 3),
        (4, 5, 6, 7),
        (8, 9, 10, 11),
        (22, 23, 24, 25),
        (26, 27, 28, 29),
        (30, 31, 32, 33),
    ]
    assert all(np.diff(f).max() <= 3 for f in spans)
    assert [w.path_m for w in selection.windows] == pytest.approx([3, 3, 3, 0, 3, 3])
    assert [selection.pose_window(w) for w in selection.windows] == [True, True, True, False, True, True]
    summary = selection.summary()
    assert (summary["gaps"], summary["pose_skipped"], summary["frames_in_no_window"]) == (1, 1, 0)
    text = describe_selection(summary)
    assert "gaps found: 1" in text and "1 of 6 windows move less than 1 m" in text

    # stored-frame runs of old: with a large max_gap a window bridges the gap
    bridged = select_windows(store, "val", seq_len=8, seq_stride=8, max_gap=20)
    assert (8, 9, 10, 11, 22, 23, 24, 25) in [w.frames for w in bridged.windows]
    short = select_windows(store, "val", seq_len=8, seq_stride=8, max_gap=3)
    assert [w.frames[0] for w in short.windows] == [0, 22]
    assert short.summary()["frames_in_no_window"] == 8  # frames 8-11 and 30-33 fill no window
    with pytest.raises(ValueError, match="--max-gap"):
        select_windows(store, "val", seq_len=13, seq_stride=1, max_gap=3)


def test_held_out_sequences_by_name_or_drive_number():
    store = PoseStore(
        {
            f"2013_05_28_drive_{n:04d}_sync": (np.arange(8), driving(np.arange(8)), split)
            for n, split in ((0, "train"), (3, "train"), (7, "val"))
        }
    )
    chosen = select_windows(store, "all", 4, 4, sequences=["3", "2013_05_28_drive_0007_sync"])
    assert sorted({w.sequence for w in chosen.windows}) == [
        "2013_05_28_drive_0003_sync",
        "2013_05_28_drive_0007_sync",
    ]
    assert chosen.summary()["sequences"] == [
        "kitti360/2013_05_28_drive_0003_sync",
        "kitti360/2013_05_28_drive_0007_sync",
    ]
    assert chosen.summary()["splits"] == {
        "kitti360/2013_05_28_drive_0003_sync": ["train"], "kitti360/2013_05_28_drive_0007_sync": ["val"]
    }  # fmt: skip
    with pytest.raises(ValueError, match="no sequence '0009'.*known: 2013_05_28_drive_0000_sync"):
        select_windows(store, "all", 4, 4, sequences=["0009"])
    with pytest.raises(ValueError, match="has no frames of split 'val'; use --split all"):
        select_windows(store, "val", 4, 4, sequences=["0003"])


def test_report_states_the_leakage_buffer_and_held_out_sequences():
    evaluated = {"kitti360/2013_05_28_drive_0007_sync": ["train", "val"]}
    record = {"config": "run/config.yaml", "recorded": True, "split": "train", "sequences": None}
    buffered = describe_training(record | {"exclude_sequences": None, "val_buffer_m": 50.0}, evaluated)
    assert "val buffer 50 m" in buffered and "beyond the buffer: 2013_05_28_drive_0007_sync" in buffered
    held_out = describe_training(record | {"exclude_sequences": ["0007"], "val_buffer_m": 50.0}, evaluated)
    assert "no evaluated sequence was trained on (held out)" in held_out
    unbuffered = describe_training(record | {"exclude_sequences": None, "val_buffer_m": 0.0}, evaluated)
    assert "without a buffer" in unbuffered and "leakage" in unbuffered
    old_run = describe_training(record | {"exclude_sequences": None, "val_buffer_m": None}, evaluated)
    assert "val buffer not recorded" in old_run
    assert "not recorded" in describe_training({"config": "c.yaml", "recorded": False}, evaluated)
    assert "not recorded" in describe_training(None, evaluated)
    # a drive with no frames of the training split was never trained on, buffer or not
    val_only = {"kitti360/2013_05_28_drive_0007_sync": ["val"]}
    unbuffered_val = describe_training(record | {"exclude_sequences": None, "val_buffer_m": 0.0}, val_only)
    assert "no evaluated sequence was trained on" in unbuffered_val
