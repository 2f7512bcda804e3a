"""Resume bookkeeping shared by every build: which planned units still need work, and which
frames finished units skipped. A unit is finished when its index file carries the config
hash it was planned with (shards.index)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from shards import remove_unit
from shards.index import index_config_hash, index_skipped
from shards.layout import INDEX_DIR, index_path, unit_name


def pending_units(
    out: Path, dataset: str, sequence: str, planned: Mapping[str, str], force: bool
) -> list[str]:
    """Delete units of this sequence that the plan no longer has (or all with force) and
    return the planned units (name -> config hash) not yet finished with that hash."""
    keep = {unit_name(dataset, sequence, u) for u in planned}
    for path in (out / INDEX_DIR).glob(f"{unit_name(dataset, sequence, '')}*.parquet"):
        if force or path.stem not in keep:
            remove_unit(out, dataset, sequence, path.stem.rsplit("__", 1)[-1])
    return [
        unit for unit, digest in planned.items()
        if index_config_hash(index_path(out, dataset, sequence, unit)) != digest
    ]  # fmt: skip


def units_skipped(out: Path, dataset: str, sequence: str, units: Iterable[str]) -> dict[int, str]:
    """Frames (with reasons) that the finished units of a sequence skipped while building."""
    skipped: dict[int, str] = {}
    for unit in units:
        skipped.update(index_skipped(index_path(out, dataset, sequence, unit)))
    return skipped
