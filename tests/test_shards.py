"""The shard contract: writer/reader round trip, atomic commit, debris cleanup."""

from __future__ import annotations

import numpy as np
import pytest

from shards import INDEX_COLUMNS, ShardStore, UnitWriter, discard_debris, stratum_of
from shards.index import index_config_hash, index_skipped
from shards.layout import index_path
from shards.windows import camera_centres, path_length, split_at_gaps, within_radius

H, W = 6, 8


def _frame(value: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(value)
    depth = rng.uniform(1, 50, (H, W)).astype(np.float32)
    depth[0] = 0
    return {
        "image": rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
        "depth": depth,
        "semantic": np.full((H, W), 11, np.uint8),
        "building_mask": np.ones((H, W), bool),
        "world_points": rng.normal(size=(H, W, 3)).astype(np.float32),
        "intrinsics": np.eye(3) * value,
        "cam_from_world": np.eye(4),
    }


def _row(frame: int) -> dict[str, object]:
    return {
        "dataset": "kitti360", "sequence": "seq", "frame": frame, "split": "train",
        "has_semantics": True, "building_ratio": 1.0, "depth_coverage": 0.8, "valid_points": 40,
        "building_valid_points": 40, "stratum": "building_rich", "sweeps": 9, "depth_source": "lidar",
        "building_depth_coverage": 0.8, "top_building_depth_coverage": None, "static_points": 0,
    }  # fmt: skip


def test_round_trip_across_shard_boundaries(tmp_path):
    writer = UnitWriter(tmp_path, "kitti360", "seq", "0000000000", H, W, capacity=9, frames_per_shard=4)
    frames = [3, 4, 5, 7, 8, 10, 11]  # fewer than capacity: arrays are trimmed on commit
    for f in frames:
        writer.add(_frame(f), _row(f))
    writer.commit("hash1", skipped={6: "corrupt image"})
    store = ShardStore(tmp_path)
    assert list(store.index["frame"]) == frames
    assert set(INDEX_COLUMNS) <= set(store.index.columns)
    for f in frames:
        got = store.read("seq", f)
        for key, value in _frame(f).items():
            np.testing.assert_array_equal(got[key], value)
        np.testing.assert_array_equal(got["valid_mask"], got["depth"] > 0)
    path = index_path(tmp_path, "kitti360", "seq", "0000000000")
    assert index_config_hash(path) == "hash1"
    assert index_skipped(path) == {6: "corrupt image"}


def test_uncommitted_unit_is_invisible_and_cleaned(tmp_path):
    writer = UnitWriter(tmp_path, "kitti360", "seq", "0000000000", H, W, capacity=4, frames_per_shard=2)
    for f in range(3):
        writer.add(_frame(f), _row(f))
    writer.wait()  # the first shard is on disk in the temporary group
    # simulated kill: no commit
    assert ShardStore(tmp_path).index.empty
    assert discard_debris(tmp_path) >= 1
    assert not any(".tmp-" in p.name for p in tmp_path.rglob("*"))


def test_failed_commit_discards_the_unit(tmp_path, monkeypatch):
    writer = UnitWriter(tmp_path, "kitti360", "seq", "0000000000", H, W, capacity=4, frames_per_shard=4)
    for f in range(3):
        writer.add(_frame(f), _row(f))  # fewer than a shard: written by commit

    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_write", disk_full)
    with pytest.raises(OSError, match="disk full"):
        writer.commit("hash")
    assert not writer.tmp_dir.exists() and not writer.final_dir.exists()
    assert ShardStore(tmp_path).index.empty


def test_wrong_array_shape_is_named(tmp_path):
    writer = UnitWriter(tmp_path, "kitti360", "seq", "0000000000", H, W, capacity=2)
    bad = _frame(1)
    bad["depth"] = np.zeros((H + 1, W), np.float32)
    with pytest.raises(ValueError, match="depth"):
        writer.add(bad, _row(1))
    writer.abort()


def test_unknown_frame_raises_keyerror(tmp_path):
    writer = UnitWriter(tmp_path, "kitti360", "seq", "0000000000", H, W, capacity=1)
    writer.add(_frame(1), _row(1))
    writer.commit("h")
    with pytest.raises(KeyError, match="frame 2"):
        ShardStore(tmp_path).read("seq", 2)


@pytest.mark.parametrize(
    ("ratio", "stratum"),
    [(None, "unlabelled"), (0.0, "road"), (0.0999, "road"), (0.10, "mixed"), (0.30, "building_rich")],
)
def test_strata_thresholds(ratio, stratum):
    assert stratum_of(ratio) == stratum


def test_poses_of_a_sequence_are_read_per_unit_in_frame_order(tmp_path):
    for unit, frames in (("0000000004", [5, 4]), ("0000000000", [1, 0, 3])):
        writer = UnitWriter(tmp_path, "kitti360", "seq", unit, H, W, capacity=len(frames), frames_per_shard=2)
        for f in frames:
            arrays = _frame(f)
            arrays["cam_from_world"] = np.diag([1.0, 1.0, 1.0, 1.0]) + np.eye(4, k=3) * f
            writer.add(arrays, _row(f))
        writer.commit("hash")
    frames, poses = ShardStore(tmp_path).cam_from_world("kitti360", "seq")
    assert list(frames) == [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(poses[:, 0, 3], frames)


def test_window_rules():
    runs = split_at_gaps(np.array([7, 1, 2, 4, 9, 10, 30]), max_gap=2)
    assert [list(r) for r in runs] == [[1, 2, 4], [7, 9, 10], [30]]
    with pytest.raises(ValueError, match="max_gap"):
        split_at_gaps(np.arange(3), 0)
    cam_from_world = np.tile(np.eye(4), (3, 1, 1))
    cam_from_world[:, :3, 3] = [[0, 0, 0], [-3, 0, 0], [-3, -4, 0]]  # t = -R C with R = I
    centres = camera_centres(cam_from_world)
    np.testing.assert_allclose(centres, [[0, 0, 0], [3, 0, 0], [3, 4, 0]])
    assert path_length(centres) == pytest.approx(7.0) and path_length(centres[:1]) == 0.0
    np.testing.assert_array_equal(
        within_radius(centres, np.array([[3.0, 2.0, 0.0]]), 2.0), [False, True, True]
    )
