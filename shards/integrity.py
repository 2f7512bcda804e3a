"""Checks that stored frames are what was written: every chunk carries a crc32c checksum
(zarr v3's crc32c codec, after compression), shard files are required to exist (zarr reads a
missing one as all fill values), and shard paths from the index must stay under the root.

Readers call `read_rows` / `read_whole`; `check_unit` is the cheap structural check (files
present, shapes consistent with the index rows) and `verify_unit` reads every chunk.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import zarr

from .layout import ARRAY_SPECS, SHARDS_DIR


class ShardError(Exception):
    """A stored unit is missing, damaged or inconsistent with its index; names file and problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def unit_dir(root: Path, relpath: str) -> Path:
    """The unit folder an index row's `shard` names, required to stay under `root/shards`:
    relative, below `shards/`, no '..' (checked on the name, so symlinks the owner of the root
    placed there keep working)."""
    name = PurePosixPath(relpath)
    if name.is_absolute() or ".." in name.parts or len(name.parts) < 2 or name.parts[0] != SHARDS_DIR:
        raise ShardError(Path(root) / "index", f"shard path {relpath!r} leaves {Path(root) / SHARDS_DIR}")
    return Path(root) / name


def shard_file(folder: Path, array: zarr.Array, shard: int) -> Path:
    """File holding shard number `shard` (along the frame axis) of one array of a unit."""
    key = array.metadata.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))
    return folder / array.basename / key


def frames_per_shard(array: zarr.Array) -> int:
    return int((array.shards or array.chunks)[0])


def shard_files(folder: Path, array: zarr.Array) -> list[Path]:
    """Every shard file the array's frames need."""
    count = -(-array.shape[0] // frames_per_shard(array))
    return [shard_file(folder, array, k) for k in range(count)]


def _require_files(files: list[Path], what: str) -> None:
    for path in files:
        if not path.is_file() or path.stat().st_size == 0:
            state = "missing" if not path.exists() else "empty"
            raise ShardError(path, f"shard file of {what} is {state}")


def read_rows(folder: Path, array: zarr.Array, rows: np.ndarray | int) -> np.ndarray:
    """Frames `rows` of an array; a missing shard file or a failed checksum raises ShardError."""
    fps = frames_per_shard(array)
    shards = np.unique(np.atleast_1d(rows) // fps)
    _require_files([shard_file(folder, array, int(k)) for k in shards], array.basename)
    try:
        return np.asarray(array[rows])
    except ValueError as exc:  # the crc32c codec's checksum mismatch, or undecodable bytes
        raise ShardError(folder / array.basename, f"corrupt chunk ({exc})") from None


def read_whole(folder: Path, array: zarr.Array) -> np.ndarray:
    """All frames of an array, every shard file required."""
    _require_files(shard_files(folder, array), array.basename)
    try:
        return np.asarray(array[:])
    except ValueError as exc:
        raise ShardError(folder / array.basename, f"corrupt chunk ({exc})") from None


def open_arrays(folder: Path) -> dict[str, zarr.Array]:
    """The unit's arrays; a missing group or array raises ShardError."""
    if not (folder / "zarr.json").is_file():
        raise ShardError(folder, "unit folder or its zarr.json is missing")
    try:
        group = zarr.open_group(folder, mode="r", zarr_format=3)
        return {spec.name: group[spec.name] for spec in ARRAY_SPECS}
    except (KeyError, ValueError, OSError) as exc:
        raise ShardError(folder, f"unreadable unit ({type(exc).__name__}: {exc})") from None


def check_unit(folder: Path, rows: pd.DataFrame) -> dict[str, zarr.Array]:
    """Cheap structural check of one unit against its index rows: arrays present with the
    right dtype and shape, every shard file present and non-empty. Returns the arrays."""
    arrays = open_arrays(folder)
    height, width = int(rows["height"].iloc[0]), int(rows["width"].iloc[0])
    stored_rows = sorted(rows["row"].astype(int))
    if stored_rows != list(range(len(rows))):
        raise ShardError(folder, f"index rows {stored_rows[:8]}... are not 0..{len(rows) - 1}")
    for spec in ARRAY_SPECS:
        array = arrays[spec.name]
        expected = (len(rows), *spec.frame_shape(height, width))
        if array.shape != expected or array.dtype != spec.dtype:
            raise ShardError(
                folder / spec.name,
                f"holds {array.dtype} {array.shape}, the index expects {spec.dtype} {expected}",
            )
        _require_files(shard_files(folder, array), spec.name)
    return arrays


def verify_unit(folder: Path, rows: pd.DataFrame) -> list[str]:
    """Read every chunk of a unit (checksums verified) and compare each frame with its index
    row; returns the problems found (empty when the unit is sound)."""
    try:
        arrays = check_unit(folder, rows)
        data = {name: read_whole(folder, array) for name, array in arrays.items()}
    except ShardError as exc:
        return [str(exc)]
    problems = []
    depth = data["depth"]
    valid = (depth > 0).reshape(len(depth), -1).sum(axis=1)
    for row in rows.itertuples(index=False):
        where = f"{folder}: frame {row.frame} (row {row.row})"
        if int(valid[row.row]) != int(row.valid_points):
            problems.append(f"{where}: {valid[row.row]} pixels with depth, the index says {row.valid_points}")
        for name in ("depth", "world_points", "intrinsics", "cam_from_world"):
            if not np.isfinite(data[name][row.row]).all():
                problems.append(f"{where}: non-finite values in {name}")
    return problems
