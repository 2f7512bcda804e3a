"""The on-disk contract shared by all stages (DESIGN.md): Zarr shards + Parquet index."""

from .index import INDEX_COLUMNS, INDEX_SCHEMA, STRATA, STRATUM_MIN_RATIO, read_index, stratum_of
from .integrity import ShardError
from .layout import ARRAY_NAMES, ARRAY_SPECS, PATCH_SIZE, TMP_MARK, UNLABELLED, ImageSize
from .store import ShardStore
from .writer import UnitWriter, discard_debris, remove_unit

__all__ = [
    "ARRAY_NAMES",
    "ARRAY_SPECS",
    "INDEX_COLUMNS",
    "INDEX_SCHEMA",
    "ImageSize",
    "PATCH_SIZE",
    "STRATA",
    "STRATUM_MIN_RATIO",
    "TMP_MARK",
    "UNLABELLED",
    "ShardError",
    "ShardStore",
    "UnitWriter",
    "discard_debris",
    "read_index",
    "remove_unit",
    "stratum_of",
]
