"""Read-only access to a prepared output root: the index table and per-frame arrays."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from .index import read_index
from .integrity import check_unit, open_arrays, read_rows, read_whole, unit_dir
from .layout import ARRAY_NAMES

FrameKey = tuple[str, str, int]  # (dataset, sequence, frame): a sequence name alone is not unique


class ShardStore:
    """`ShardStore(OUT).index` is the frame table; `read(sequence, frame)` one frame's arrays,
    `read_window(dataset, sequence, frames)` several frames stacked. A missing or damaged
    shard, or a shard path leaving the root, raises `shards.ShardError` naming the file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"shard root {self.root} does not exist")
        self._units: dict[str, tuple[Path, dict[str, zarr.Array]]] = {}

    @cached_property
    def index(self) -> pd.DataFrame:
        return read_index(self.root)

    @cached_property
    def _locations(self) -> dict[FrameKey, tuple[str, int]]:
        """(dataset, sequence, frame) -> (shard, row)."""
        idx = self.index
        columns = (idx["dataset"], idx["sequence"], idx["frame"], idx["shard"], idx["row"])
        return {(d, s, int(f)): (shard, int(r)) for d, s, f, shard, r in zip(*columns, strict=True)}

    @cached_property
    def _datasets_of(self) -> dict[str, list[str]]:
        """sequence -> datasets holding a sequence of that name."""
        table: dict[str, list[str]] = {}
        pairs = self.index[["dataset", "sequence"]].drop_duplicates()
        for dataset, sequence in pairs.itertuples(index=False):
            table.setdefault(sequence, []).append(dataset)
        return table

    def _unit(self, relpath: str) -> tuple[Path, dict[str, zarr.Array]]:
        """(folder, arrays) of the unit an index row names."""
        unit = self._units.get(relpath)
        if unit is None:
            folder = unit_dir(self.root, relpath)
            unit = self._units[relpath] = (folder, open_arrays(folder))
        return unit

    def check(self) -> None:
        """Every unit the index lists is there: arrays with the shapes its rows expect and all
        shard files present (cheap: nothing is decoded). Raises ShardError naming the file."""
        for relpath, rows in self.index.groupby("shard", sort=True):
            check_unit(unit_dir(self.root, str(relpath)), rows)

    def _dataset_of(self, sequence: str, dataset: str | None) -> str:
        if dataset is not None:
            return dataset
        datasets = self._datasets_of.get(sequence, [])
        if len(datasets) > 1:
            raise KeyError(f"sequence {sequence!r} exists in several datasets {datasets}; pass dataset=")
        return datasets[0] if datasets else ""

    def _locate(self, dataset: str, sequence: str, frame: int) -> tuple[str, int]:
        location = self._locations.get((dataset, sequence, frame))
        if location is None:
            raise KeyError(f"frame {frame} of {dataset}/{sequence} is not in {self.root}/index")
        return location

    def read(self, sequence: str, frame: int, dataset: str | None = None) -> dict[str, np.ndarray]:
        """Arrays of one frame, plus `valid_mask` (depth > 0). `dataset` may be left out when
        no other dataset has a sequence of that name."""
        relpath, row = self._locate(self._dataset_of(sequence, dataset), sequence, int(frame))
        folder, arrays = self._unit(relpath)
        sample = {name: read_rows(folder, arrays[name], row) for name in ARRAY_NAMES}
        sample["valid_mask"] = sample["depth"] > 0
        return sample

    def cam_from_world(self, dataset: str, sequence: str) -> tuple[np.ndarray, np.ndarray]:
        """(frames [N] sorted, cam_from_world [N,4,4]) of every stored frame of a sequence,
        read a unit at a time (poses are tiny; reading them frame by frame is not)."""
        rows = self.index[(self.index["dataset"] == dataset) & (self.index["sequence"] == sequence)]
        frames = rows["frame"].to_numpy(dtype=np.int64)
        poses = np.empty((len(rows), 4, 4))
        for shard, group in rows.groupby("shard", sort=False):
            folder, arrays = self._unit(str(shard))
            stored = read_whole(folder, arrays["cam_from_world"])
            poses[np.flatnonzero(rows["shard"].to_numpy() == shard)] = stored[group["row"].to_numpy()]
        order = np.argsort(frames, kind="stable")
        return frames[order], poses[order]

    def read_window(self, dataset: str, sequence: str, frames: Sequence[int]) -> dict[str, np.ndarray]:
        """Arrays of several frames of one sequence, stacked along a new first axis, under the
        same names as `read` (frames of a window share one stored size)."""
        samples = [self.read(sequence, int(f), dataset=dataset) for f in frames]
        return {name: np.stack([s[name] for s in samples]) for name in samples[0]}
