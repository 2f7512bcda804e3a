"""Fault cases of stored shards: deleted, truncated, bit-flipped or hand-edited files and index
rows that point elsewhere raise `ShardError` naming the file when read, make `stats` fail and
`verify` exit 1 naming the problem; a unit whose data did not reach the disk intact is never
marked complete.

Cases are marked `fault(outcome, harm)` as described in tests/faults/README.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.driver import build
from preprocess.sources.kitti360 import Kitti360Source
from shards import ShardError, ShardStore, UnitWriter
from shards.layout import INDEX_DIR, manifest_path

from .conftest import TINY

SEQ = "2013_05_28_drive_0000_sync"
named_error = pytest.mark.fault("named_error", "silent_wrong_output")
no_data_loss = pytest.mark.fault("named_error", "data_loss")


@pytest.fixture(scope="module")
def built(tiny_scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built")
    build(Kitti360Source(tiny_scene.root, TINY, seqs="0000"), out, progress=False)
    return out


@pytest.fixture
def out(built, tmp_path) -> Path:
    """A private copy of the built output root, to damage."""
    return Path(shutil.copytree(built, tmp_path / "out"))


def shard_file(out: Path, array: str) -> Path:
    (path,) = [p for p in (out / "shards").rglob("*") if p.is_file() and f"/{array}/c/" in p.as_posix()]
    return path


def first_frame(out: Path) -> int:
    return int(ShardStore(out).index["frame"].iloc[0])


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, " ".join(result.output.split())


def assert_caught(out: Path, name: str) -> None:
    """Reading, `stats` or `verify` (whichever applies) name the damaged file."""
    result, text = cli("verify", str(out))
    assert result.exit_code == 1 and name in text, text


def test_clean_output_verifies(built):
    result, text = cli("verify", str(built))
    assert result.exit_code == 0, text
    assert "every chunk read" in text


@named_error
@pytest.mark.parametrize("array", ["depth", "cam_from_world", "image"])
def test_deleted_shard_file_raises_never_zeros(out, array):
    path = shard_file(out, array)
    path.unlink()
    with pytest.raises(ShardError, match=f"{array}.*missing"):
        ShardStore(out).read(SEQ, first_frame(out))
    result, text = cli("stats", str(out))
    assert result.exit_code == 2 and "missing" in text
    assert_caught(out, path.name)


@pytest.mark.fault("intact", "data_loss")
def test_rerun_rebuilds_a_unit_whose_data_is_missing(out, built, tiny_scene):
    shard_file(out, "depth").unlink()
    build(Kitti360Source(tiny_scene.root, TINY, seqs="0000"), out, progress=False)
    frame = first_frame(out)
    rebuilt, clean = ShardStore(out).read(SEQ, frame), ShardStore(built).read(SEQ, frame)
    np.testing.assert_array_equal(rebuilt["depth"], clean["depth"])


@named_error
def test_changed_pose_bytes_raise(out):
    path = shard_file(out, "cam_from_world")
    data = bytearray(path.read_bytes())
    data[20:28] = np.float64(123.0).tobytes()  # a plausible number in the first frame's pose
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="checksum"):
        ShardStore(out).read(SEQ, first_frame(out))
    with pytest.raises(ShardError, match="checksum"):
        ShardStore(out).cam_from_world("kitti360", SEQ)
    assert_caught(out, "cam_from_world")


@named_error
@pytest.mark.parametrize("array", ["depth", "intrinsics"])
def test_every_single_bit_flip_raises(out, array):
    path = shard_file(out, array)
    clean = path.read_bytes()
    positions = np.random.default_rng(0).choice(len(clean) * 8, size=45, replace=False)
    frames = list(ShardStore(out).index["frame"])
    for bit in positions:
        data = bytearray(clean)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        store = ShardStore(out)
        with pytest.raises(ShardError):
            for frame in frames:
                store.read(SEQ, frame)
    path.write_bytes(clean)


@named_error
@pytest.mark.parametrize("cut", [1, 9, 100])
def test_truncated_shard_file_raises(out, cut):
    path = shard_file(out, "world_points")
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(ShardError):
        ShardStore(out).read(SEQ, first_frame(out))
    assert_caught(out, "world_points")


@named_error
def test_deleted_array_metadata_raises(out):
    (path,) = (out / "shards").rglob("semantic/zarr.json")
    path.unlink()
    with pytest.raises(ShardError, match="unreadable unit"):
        ShardStore(out).read(SEQ, first_frame(out))
    result, text = cli("stats", str(out))
    assert result.exit_code == 2 and "unreadable unit" in text


def rewrite_index(out: Path, edit) -> Path:
    (path,) = (out / INDEX_DIR).glob("*.parquet")
    table = pq.read_table(path)
    frame = edit(table.to_pandas())
    pq.write_table(type(table).from_pandas(frame, schema=table.schema, preserve_index=False), path)
    return path


@named_error
@pytest.mark.parametrize("shard", ["../../outside.zarr", "/etc", "shards/../index"])
def test_index_shard_path_outside_the_root_is_refused(out, shard):
    rewrite_index(out, lambda rows: rows.assign(shard=shard))
    with pytest.raises(ShardError, match="leaves"):
        ShardStore(out).read(SEQ, first_frame(out))
    result, text = cli("verify", str(out))
    assert result.exit_code == 1 and "name another unit" in text


@named_error
def test_index_row_unlike_its_frame_is_named(out):
    rewrite_index(out, lambda rows: rows.assign(valid_points=rows["valid_points"] + 1))
    result, text = cli("verify", str(out))
    assert result.exit_code == 1 and "pixels with depth, the index says" in text


@named_error
def test_manifest_unlike_the_index_is_named(out):
    manifest = json.loads(manifest_path(out).read_text())
    manifest["sequences"][f"kitti360/{SEQ}"]["frames_written"] += 1
    manifest_path(out).write_text(json.dumps(manifest))
    result, text = cli("verify", str(out))
    assert result.exit_code == 1 and "its index has" in text
    (index,) = (out / INDEX_DIR).glob("*.parquet")
    index.unlink()
    result, text = cli("verify", str(out))
    assert result.exit_code == 1 and "without an index file" in text


@no_data_loss
@pytest.mark.parametrize("loss", ["file_lost", "bytes_differ"])
def test_unit_is_complete_only_after_its_data_is_verified(tmp_path, monkeypatch, loss):
    """A write that did not land (a lost shard file, or bytes that read back different) fails
    the commit: no index file, so the unit is rebuilt, never marked complete."""
    h, w = 4, 6
    writer = UnitWriter(tmp_path, "kitti360", "seq", "0000000000", h, w, capacity=3, frames_per_shard=2)
    real_write = writer._write

    def faulty_write(blocks, start, stop):
        real_write(blocks, start, stop)
        if stop == 3:  # the last shard
            if loss == "file_lost":
                (writer.tmp_dir / "depth" / "c" / "1" / "0" / "0").unlink()
            else:
                writer._arrays["depth"][2] = np.full((h, w), 7.0, np.float32)

    monkeypatch.setattr(writer, "_write", faulty_write)
    for frame in range(3):
        arrays = {
            "image": np.zeros((h, w, 3), np.uint8), "depth": np.full((h, w), frame + 1.0, np.float32),
            "semantic": np.zeros((h, w), np.uint8), "building_mask": np.zeros((h, w), bool),
            "world_points": np.zeros((h, w, 3), np.float32), "intrinsics": np.eye(3),
            "cam_from_world": np.eye(4),
        }  # fmt: skip
        row = {
            "dataset": "kitti360", "sequence": "seq", "frame": frame, "split": "train",
            "has_semantics": False, "building_ratio": None, "depth_coverage": 1.0, "valid_points": h * w,
            "building_valid_points": None, "stratum": "unlabelled", "sweeps": 1, "depth_source": "lidar",
        }  # fmt: skip
        writer.add(arrays, row)
    with pytest.raises(ShardError, match="not written|reads back unlike"):
        writer.commit("hash")
    assert not list(tmp_path.glob(f"{INDEX_DIR}/*.parquet"))
    assert not writer.final_dir.exists()
