"""Where things live under an output root, and what each per-frame array looks like.

This module is the single source of truth for the on-disk contract in DESIGN.md; the
writer, the reader and every stage that lists outputs go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

SHARDS_DIR = "shards"
INDEX_DIR = "index"
MANIFEST_NAME = "manifest.json"
TMP_MARK = ".tmp-"  # in the name of anything still being written (see shards.atomic)
# Stored image sides are multiples of VGGT's patch size, so frames feed the model uncropped.
PATCH_SIZE = 14
UNIT_SEPARATOR = "__"
# Version of the stored layout, in the manifest and every unit's config hash (so units of an
# older format are rebuilt). 2: a crc32c checksum after every chunk's compression.
SHARD_FORMAT = 2


class ImageSize(NamedTuple):
    """Pixel size of an image, in array order (height first, as in shapes and the index).
    OpenCV wants (width, height): pass `size.wh`."""

    height: int
    width: int

    @property
    def wh(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class ArraySpec:
    """dtype and per-frame shape (as a function of image height/width) of one stored array."""

    name: str
    dtype: np.dtype
    trailing: tuple[str | int, ...]

    def frame_shape(self, height: int, width: int) -> tuple[int, ...]:
        sizes = {"H": height, "W": width}
        return tuple(sizes.get(d, d) for d in self.trailing)  # type: ignore[arg-type]

    def frame_bytes(self, height: int, width: int) -> int:
        return int(np.prod(self.frame_shape(height, width))) * self.dtype.itemsize


ARRAY_SPECS: tuple[ArraySpec, ...] = (
    ArraySpec("image", np.dtype(np.uint8), ("H", "W", 3)),
    ArraySpec("depth", np.dtype(np.float32), ("H", "W")),
    ArraySpec("semantic", np.dtype(np.uint8), ("H", "W")),
    ArraySpec("building_mask", np.dtype(bool), ("H", "W")),
    ArraySpec("world_points", np.dtype(np.float32), ("H", "W", 3)),
    ArraySpec("intrinsics", np.dtype(np.float64), (3, 3)),
    ArraySpec("cam_from_world", np.dtype(np.float64), (4, 4)),
)
ARRAY_NAMES: tuple[str, ...] = tuple(s.name for s in ARRAY_SPECS)


def frame_bytes(height: int, width: int) -> int:
    """Uncompressed bytes of one stored frame (all arrays)."""
    return sum(spec.frame_bytes(height, width) for spec in ARRAY_SPECS)


# Label value written where a frame has no semantic annotation.
UNLABELLED = 255


def unit_name(dataset: str, sequence: str, unit: str) -> str:
    """File-system-safe identifier of one written unit (used for the index file name)."""
    return UNIT_SEPARATOR.join((dataset, sequence, unit))


def parse_unit_name(name: str) -> tuple[str, str, str]:
    """(dataset, sequence, unit) of a `unit_name` (an index file's stem)."""
    dataset, _, rest = name.partition(UNIT_SEPARATOR)
    sequence, _, unit = rest.rpartition(UNIT_SEPARATOR)
    if not (dataset and sequence and unit):
        raise ValueError(f"{name!r} is not a unit name (dataset{UNIT_SEPARATOR}sequence{UNIT_SEPARATOR}unit)")
    return dataset, sequence, unit


def shard_relpath(dataset: str, sequence: str, unit: str) -> str:
    """Path of a unit's Zarr group relative to the output root (stored in the index)."""
    return f"{SHARDS_DIR}/{dataset}/{sequence}/{unit}.zarr"


def index_path(out: Path, dataset: str, sequence: str, unit: str) -> Path:
    return out / INDEX_DIR / f"{unit_name(dataset, sequence, unit)}.parquet"


def manifest_path(out: Path) -> Path:
    return out / MANIFEST_NAME
