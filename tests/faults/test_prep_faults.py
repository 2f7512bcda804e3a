"""Fault cases of `kitti360-prep build`: malformed sweeps, poses, calibration, split lists,
sequences and arguments end in an error naming the file, line or key (before anything is
written), or in a skip or drop counted with its reason in the manifest; never in a shard
that silently holds wrong data.

Cases are marked `fault(outcome, harm)` as described in tests/faults/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.driver import build
from preprocess.errors import InputError
from preprocess.sources.kitti360 import Kitti360Source
from shards import ShardStore
from tests.conftest import replace_file

from .conftest import TINY

SEQ = "2013_05_28_drive_0000_sync"
named_error = pytest.mark.fault("named_error", "unnamed_error")
counted_skip = pytest.mark.fault("counted_skip", "silent_wrong_output")


def run(root: Path, out: Path, **options) -> dict:
    return build(Kitti360Source(root, TINY, **options), out, progress=False)


def sweep(root: Path, frame: int, seq: str = SEQ) -> Path:
    return root / "data_3d_raw" / seq / "velodyne_points" / "data" / f"{frame:010d}.bin"


def edit_lines(path: Path, edit) -> None:
    """Replace a (symlinked) text file by edit(lines)."""
    replace_file(path, "\n".join(edit(path.read_text().splitlines())).encode() + b"\n")


def poses_file(root: Path, seq: str = SEQ) -> Path:
    return root / "data_poses" / seq / "poses.txt"


def set_pose(root: Path, lineno: int, values: list[float]) -> None:
    def edit(lines):
        frame = lines[lineno - 1].split()[0]
        lines[lineno - 1] = " ".join([frame, *(f"{v:.12e}" for v in values)])
        return lines

    edit_lines(poses_file(root), edit)


def pose_values(rotation: np.ndarray) -> list[float]:
    return [*np.hstack([rotation, np.ones((3, 1))]).ravel()]


@pytest.fixture(scope="module")
def clean(tiny_scene, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clean")
    return out, run(tiny_scene.root, out, seqs="0000")


def frame_sweeps(out: Path) -> dict[int, int]:
    return dict(ShardStore(out).index.set_index("frame")["sweeps"].items())


# ---- sweeps ---------------------------------------------------------------------------


@counted_skip
@pytest.mark.parametrize("extra", [1, 4, 15])
def test_partial_sweep_record_is_named_and_the_frame_skipped(scene_copy, clean, tmp_path, extra):
    path = sweep(scene_copy, 3)
    replace_file(path, path.read_bytes() + b"\0" * extra)
    summary = run(scene_copy, tmp_path / "out", seqs="0000")
    reason = summary["skipped"][f"kitti360/{SEQ}/3"]
    assert path.name in reason and "not a multiple of 16" in reason
    # the neighbours lose that sweep and say so
    assert frame_sweeps(tmp_path / "out")[2] == frame_sweeps(clean[0])[2] - 1


@counted_skip
def test_empty_sweep_is_not_counted_as_a_sweep(scene_copy, clean, tmp_path):
    replace_file(sweep(scene_copy, 3), b"")
    summary = run(scene_copy, tmp_path / "out", seqs="0000")
    assert "empty LiDAR sweep" in summary["skipped"][f"kitti360/{SEQ}/3"]
    built, reference = frame_sweeps(tmp_path / "out"), frame_sweeps(clean[0])
    assert built[2] == reference[2] - 1 and built[4] == reference[4] - 1


@counted_skip
def test_non_finite_points_are_dropped_and_counted(scene_copy, clean, tmp_path):
    path = sweep(scene_copy, 3)
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    points[[5, 9], 0] = np.nan
    points[11, 2] = np.inf
    replace_file(path, points.tobytes())
    summary = run(scene_copy, tmp_path / "out", seqs="0000")
    entry = summary["sequences"][f"kitti360/{SEQ}"]
    assert entry["dropped"] == {"non-finite LiDAR points": {"3": 3}}
    assert summary["frames_written"] == clean[1]["frames_written"]  # the frame is kept
    assert frame_sweeps(tmp_path / "out") == frame_sweeps(clean[0])
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["sequences"][f"kitti360/{SEQ}"]["dropped"]["non-finite LiDAR points"] == {"3": 3}
    stored = ShardStore(tmp_path / "out").read(SEQ, 3)["depth"]
    assert np.isfinite(stored).all()
    args = ["build", "--root", str(scene_copy), "--out", str(tmp_path / "cli"), "--seqs", "0000"]
    result = CliRunner().invoke(app, [*args, "--width", "140", "--accumulate", "1", "--chunk-frames", "16"])
    assert result.exit_code == 0 and "3 non-finite points dropped" in " ".join(result.output.split())


# ---- poses ----------------------------------------------------------------------------


@named_error
def test_repeated_frame_in_poses_is_named(scene_copy, tmp_path):
    lines = poses_file(scene_copy).read_text().splitlines()
    frame = lines[1].split()[0]
    edit_lines(poses_file(scene_copy), lambda lines: [*lines, lines[1]])
    with pytest.raises(InputError, match=rf"poses\.txt: line {len(lines) + 1}: frame {frame} repeats line 2"):
        run(scene_copy, tmp_path / "out")


@named_error
@pytest.mark.parametrize(
    "rotation, problem",
    [(1.01 * np.eye(3), "scaled"), (np.zeros((3, 3)), "singular"), (np.diag([1.0, 1.0, -1.0]), "mirrored")],
)
def test_non_rigid_pose_is_named(scene_copy, tmp_path, rotation, problem):
    set_pose(scene_copy, 3, pose_values(rotation))
    with pytest.raises(InputError, match=r"poses\.txt: line 3 \(frame \d+\): rotation is not rigid"):
        run(scene_copy, tmp_path / "out")


@named_error
def test_malformed_sequence_under_all_fails_naming_it(scene_copy, tmp_path):
    edit_lines(poses_file(scene_copy), lambda lines: [*lines, "7 1 2 3"])
    with pytest.raises(InputError, match=r"0000_sync.*poses\.txt: line \d+: expected 12 numbers"):
        run(scene_copy, tmp_path / "out", seqs="all")
    assert not (tmp_path / "out" / "index").exists()


@counted_skip
def test_malformed_sequence_skipped_only_when_asked_and_counted(scene_copy, tmp_path):
    edit_lines(poses_file(scene_copy), lambda lines: [*lines, "7 1 2 3"])
    summary = run(scene_copy, tmp_path / "out", seqs="all", skip_bad_sequences=True)
    assert "expected 12 numbers" in summary["sequences"][f"kitti360/{SEQ}"]["error"]
    assert summary["frames_written"] > 0  # the good sequence is built
    result = CliRunner().invoke(
        app, ["build", "--root", str(scene_copy), "--out", str(tmp_path / "cli"), "--width", "140",
              "--accumulate", "0", "--skip-bad-sequences"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 sequences skipped" in " ".join(result.output.split())


# ---- calibration ----------------------------------------------------------------------


def set_calibration(root: Path, key: str, values: str) -> None:
    path = root / "calibration" / "perspective.txt"
    new = f"{key}: {values}"
    edit_lines(path, lambda lines: [new if line.startswith(f"{key}:") else line for line in lines])


@named_error
@pytest.mark.parametrize("size", ["0 376", "1408 0", "-1408 376", "1408.5 376"])
def test_bad_rectified_size_is_named(scene_copy, tmp_path, size):
    set_calibration(scene_copy, "S_rect_00", size)
    with pytest.raises(InputError, match=r"perspective\.txt: S_rect_00: width and height must be positive"):
        run(scene_copy, tmp_path / "out")


@named_error
@pytest.mark.parametrize("matrix", ["0 0 0 0 1 0 0 0 1", "2 0 0 0 2 0 0 0 2"])
def test_singular_or_scaled_rectifying_rotation_is_named(scene_copy, tmp_path, matrix):
    set_calibration(scene_copy, "R_rect_00", matrix)
    with pytest.raises(InputError, match=r"perspective\.txt: R_rect_00: rotation is not rigid"):
        run(scene_copy, tmp_path / "out")


@named_error
def test_non_rigid_lidar_extrinsic_is_named(scene_copy, tmp_path):
    path = scene_copy / "calibration" / "calib_cam_to_velo.txt"
    values = [float(v) for v in path.read_text().split()]
    values[0] *= 3.0
    replace_file(path, " ".join(map(str, values)).encode())
    with pytest.raises(InputError, match=r"calib_cam_to_velo\.txt: cam_to_velo: rotation is not rigid"):
        run(scene_copy, tmp_path / "out")


# ---- split lists ----------------------------------------------------------------------


def split_list(root: Path, split: str) -> Path:
    return root / "data_2d_semantics" / "train" / f"2013_05_28_drive_{split}_frames.txt"


@named_error
@pytest.mark.parametrize("split", ["all", "train", "val"])
def test_missing_split_list_is_named_never_all_train(scene_copy, tmp_path, split):
    split_list(scene_copy, "val").unlink()
    with pytest.raises(InputError, match=r"drive_val_frames\.txt: val split list not found"):
        run(scene_copy, tmp_path / "out", split=split)


@named_error
def test_split_with_no_frames_is_an_error_not_an_empty_build(scene_copy, tmp_path):
    with pytest.raises(InputError, match=r"no frame of the selected sequences is in the 'val' split"):
        run(scene_copy, tmp_path / "out", seqs="0000", split="val")


@named_error
def test_sequence_missing_from_split_lists_is_named(scene_copy, tmp_path):
    replace_file(split_list(scene_copy, "val"), b"")
    with pytest.raises(InputError, match=r"0002_sync has no frame in the train/val split lists"):
        run(scene_copy, tmp_path / "out", seqs="0002")


@named_error
def test_frame_in_both_split_lists_is_named(scene_copy, tmp_path):
    first = split_list(scene_copy, "train").read_text().splitlines()[0]
    edit_lines(split_list(scene_copy, "val"), lambda lines: [*lines, first])
    message = r"drive_val_frames\.txt: line \d+: .*0000_sync frame 0 already listed"
    with pytest.raises(InputError, match=message):
        run(scene_copy, tmp_path / "out")


@named_error
def test_garbled_split_list_line_is_named(scene_copy, tmp_path):
    edit_lines(split_list(scene_copy, "train"), lambda lines: [*lines[:2], "garbage", *lines[2:]])
    with pytest.raises(InputError, match=r"drive_train_frames\.txt: line 3: no data_2d_raw"):
        run(scene_copy, tmp_path / "out")


# ---- arguments ------------------------------------------------------------------------


@named_error
@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "0"], "--width must be 'native' or a positive multiple of 14"),
        (["--width", "-14"], "--width must be 'native' or a positive multiple of 14"),
        (["--width", "100"], "--width must be 'native' or a positive multiple of 14"),
        (["--width", "wide"], "--width must be 'native' or a positive multiple of 14"),
        (["--chunk-frames", "0"], "--chunk-frames must be >= 1"),
        (["--accumulate", "-1"], "--accumulate must be >= 0"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--split", "test"], "--split must be one of"),
    ],
)
def test_bad_build_arguments_are_named(tiny_scene, tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", "--root", str(tiny_scene.root), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


@named_error
@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "0"], "--width must be 'native' or a positive multiple of 14"),
        (["--chunk-frames", "0"], "--chunk-frames must be >= 1"),
        (["--depth-scale", "0"], "--depth-scale must be > 0"),
    ],
)
def test_bad_colmap_arguments_are_named(tmp_path, args, message):
    (tmp_path / "model").mkdir()
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(
        app, ["colmap", "--model", str(tmp_path / "model"), "--images", str(tmp_path / "images"),
              "--name", "scene", "--out", str(tmp_path / "out"), *args],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
