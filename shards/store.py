"""Read-only access to a prepared output root: the index table and per-frame arrays."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from .index import read_index
from .layout import ARRAY_NAMES


class ShardStore:
    """`ShardStore(OUT).index` is the frame table; `read(sequence, frame)` one frame's arrays."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"shard root {self.root} does not exist")
        self._groups: dict[str, zarr.Group] = {}

    @cached_property
    def index(self) -> pd.DataFrame:
        return read_index(self.root)

    @cached_property
    def _locations(self) -> dict[tuple[str, int], list[tuple[str, str, int]]]:
        """(sequence, frame) -> [(dataset, shard, row)]; a list because datasets may share names."""
        idx = self.index
        table: dict[tuple[str, int], list[tuple[str, str, int]]] = {}
        for d, s, f, shard, r in zip(
            idx["dataset"], idx["sequence"], idx["frame"], idx["shard"], idx["row"], strict=True
        ):
            table.setdefault((s, int(f)), []).append((d, shard, int(r)))
        return table

    def _group(self, relpath: str) -> zarr.Group:
        group = self._groups.get(relpath)
        if group is None:
            group = zarr.open_group(self.root / relpath, mode="r", zarr_format=3)
            self._groups[relpath] = group
        return group

    def _locate(self, sequence: str, frame: int, dataset: str | None) -> tuple[str, int]:
        hits = [
            (shard, row)
            for d, shard, row in self._locations.get((sequence, frame), [])
            if dataset is None or d == dataset
        ]
        if not hits:
            raise KeyError(f"frame {frame} of sequence {sequence!r} is not in {self.root}/index")
        if len(hits) > 1:
            raise KeyError(f"sequence {sequence!r} exists in several datasets; pass dataset=")
        return hits[0]

    def read(self, sequence: str, frame: int, dataset: str | None = None) -> dict[str, np.ndarray]:
        """Arrays of one frame, plus `valid_mask` (depth > 0)."""
        relpath, row = self._locate(sequence, int(frame), dataset)
        group = self._group(relpath)
        sample = {name: np.asarray(group[name][row]) for name in ARRAY_NAMES}
        sample["valid_mask"] = sample["depth"] > 0
        return sample
