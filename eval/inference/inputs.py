"""The frames `vggt-infer` runs on: an image folder in name order, or one sequence of a shard root.

Sizes are read up front (image headers, or the shard index), so a folder the model cannot take
is refused before the model is loaded; pixels are decoded one window at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shards import ShardStore

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """The input cannot be used as given; the message names the file or option at fault."""


@dataclass(frozen=True)
class InputFrame:
    """One input image: `name` names its output files, `image_name` is its COLMAP image name."""

    name: str
    image_name: str
    size_hw: tuple[int, int]
    read: Callable[[], np.ndarray]  # -> uint8 HxWx3 RGB


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    return height, width


def read_image(path: Path) -> np.ndarray:
    """uint8 HxWx3 RGB pixels as stored (EXIF orientation is not applied: sizes match the headers)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot be decoded ({exc})") from None


def folder_frames(folder: Path) -> list[InputFrame]:
    """Image files directly in `folder` (by suffix, hidden files skipped), sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist")
    paths = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name[0] != "."
    )
    if not paths:
        raise InputError(f"{folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    by_stem: dict[str, list[str]] = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path.name)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:
        raise InputError(
            f"{folder}: images whose outputs would share a name: "
            + "; ".join(", ".join(names) for names in clashes)
        )
    return [InputFrame(p.stem, p.name, _image_size(p), lambda p=p: read_image(p)) for p in paths]


def shard_sequences(store: ShardStore, split: str, sequences: list[str] | None) -> list[tuple[str, str]]:
    """(dataset, sequence) pairs of `split` ("all" for every split), restricted to `sequences`
    (names or dataset/name), in index order."""
    index = store.index
    rows = index if split == "all" else index[index["split"] == split]
    if rows.empty:
        raise InputError(
            f"no frames with split {split!r} in {store.root} (splits: {sorted(set(index['split']))})"
        )
    pairs = [tuple(p) for p in rows[["dataset", "sequence"]].drop_duplicates().itertuples(index=False)]
    if not sequences:
        return sorted(pairs)
    chosen, unknown = [], []
    for wanted in sequences:
        found = [p for p in pairs if wanted in (p[1], f"{p[0]}/{p[1]}")]
        if found:
            chosen += found
        else:
            unknown.append(wanted)
    if unknown:
        available = ", ".join(f"{d}/{s}" for d, s in sorted(pairs))
        raise InputError(f"no sequence {unknown} in split {split!r} of {store.root}; available: {available}")
    return list(dict.fromkeys(chosen))


def shard_frames(store: ShardStore, dataset: str, sequence: str, split: str) -> list[InputFrame]:
    """The stored frames of one sequence (in frame order) as inputs named by frame number."""
    index = store.index
    rows = index[(index["dataset"] == dataset) & (index["sequence"] == sequence)]
    if split != "all":
        rows = rows[rows["split"] == split]
    rows = rows.sort_values("frame")
    frames = []
    for frame, height, width in rows[["frame", "height", "width"]].itertuples(index=False):
        name = f"{int(frame):010d}"

        def read(frame: int = int(frame)) -> np.ndarray:
            return store.read(sequence, frame, dataset=dataset)["image"]

        frames.append(InputFrame(name, f"{name}.png", (int(height), int(width)), read))
    return frames
