"""Parquet index: one row per frame, one file per written unit, read together.

A unit's index file is written last and atomically, so its presence (with a matching
config hash in its metadata) is what marks the unit complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import is_staging, write_atomic
from .layout import INDEX_DIR

STRATA = ("building_rich", "mixed", "road", "unlabelled")
# building_ratio lower bounds of the first two strata (DESIGN.md)
STRATUM_MIN_RATIO = {"building_rich": 0.30, "mixed": 0.10}

INDEX_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("sequence", pa.string()),
        ("frame", pa.int64()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("row", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("has_semantics", pa.bool_()),
        ("building_ratio", pa.float64()),
        ("depth_coverage", pa.float64()),
        ("valid_points", pa.int64()),
        ("building_valid_points", pa.int64()),
        ("stratum", pa.string()),
        ("sweeps", pa.int32()),
        ("depth_source", pa.string()),
        ("building_depth_coverage", pa.float64()),
        ("top_building_depth_coverage", pa.float64()),
        ("static_points", pa.int64()),
    ]
)
INDEX_COLUMNS: tuple[str, ...] = tuple(INDEX_SCHEMA.names)
CONFIG_HASH_KEY = b"config_hash"
SKIPPED_KEY = b"skipped"
DROPPED_KEY = b"dropped"


def stratum_of(building_ratio: float | None) -> str:
    """Bucket a frame by how much of it is building (DESIGN.md thresholds)."""
    if building_ratio is None:
        return "unlabelled"
    for stratum, lowest in STRATUM_MIN_RATIO.items():
        if building_ratio >= lowest:
            return stratum
    return "road"


def write_index_file(
    path: Path,
    rows: Iterable[Mapping[str, object]],
    config_hash: str,
    skipped: Mapping[int, str] | None = None,
    dropped: Mapping[str, Mapping[int, int]] | None = None,
) -> None:
    """Write one unit's rows atomically (temp file + rename) with the unit's config hash, the
    frames it skipped (frame -> reason) and the input elements it dropped (what -> frame ->
    count). An empty unit still gets a file: it is done."""
    rows = list(rows)
    missing = [c for c in INDEX_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"index rows for {path.name} lack columns {missing}")
    table = pa.Table.from_pylist([{c: r[c] for c in INDEX_COLUMNS} for r in rows], schema=INDEX_SCHEMA)
    skipped_json = json.dumps({str(k): v for k, v in (skipped or {}).items()})
    dropped_json = json.dumps({w: {str(f): n for f, n in c.items()} for w, c in (dropped or {}).items()})
    table = table.replace_schema_metadata(
        {
            CONFIG_HASH_KEY: config_hash.encode(),
            SKIPPED_KEY: skipped_json.encode(),
            DROPPED_KEY: dropped_json.encode(),
        }
    )
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def index_config_hash(path: Path) -> str | None:
    """Config hash a finished unit was built with; None when the file is absent or unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = meta.get(CONFIG_HASH_KEY)
    return value.decode() if value is not None else None


def index_skipped(path: Path) -> dict[int, str]:
    """Frames a finished unit skipped, with reasons."""
    meta = pq.read_schema(path).metadata or {}
    return {int(k): v for k, v in json.loads(meta.get(SKIPPED_KEY, b"{}")).items()}


def index_dropped(path: Path) -> dict[str, dict[int, int]]:
    """Input elements a finished unit dropped: what -> frame -> count."""
    meta = pq.read_schema(path).metadata or {}
    counts = json.loads(meta.get(DROPPED_KEY, b"{}"))
    return {what: {int(f): int(n) for f, n in by_frame.items()} for what, by_frame in counts.items()}


def read_index_file(path: Path) -> pd.DataFrame:
    """One unit's rows."""
    return pq.read_table(path, schema=INDEX_SCHEMA).to_pandas()


def read_index(out: Path) -> pd.DataFrame:
    """All finished units' rows under OUT/index as one DataFrame (empty with the schema if none)."""
    files = sorted(p for p in (out / INDEX_DIR).glob("*.parquet") if not is_staging(p))
    tables = [pq.read_table(f, schema=INDEX_SCHEMA) for f in files]
    df = (pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()).to_pandas()
    # null where the building mask is unknown; one dtype whichever units hold nulls
    df["building_valid_points"] = df["building_valid_points"].astype("Int64")
    return df.sort_values(["dataset", "sequence", "frame"], kind="stable").reset_index(drop=True)
