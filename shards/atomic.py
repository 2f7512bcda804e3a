"""Write-then-rename, the one way anything under an output or run root is written.

A reader sees a file or a folder complete or not at all. Temporary names carry `TMP_MARK` and
the writer's pid, so the debris of a killed writer is recognisable, never mistaken for a
finished result, and removable by whoever runs next.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .layout import TMP_MARK


def staging_path(final: Path) -> Path:
    """The temporary name `final` is written under before it is renamed into place."""
    final = Path(final)
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")


def is_staging(path: Path) -> bool:
    return TMP_MARK in Path(path).name


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to produce the file, then rename it to `path`; on failure nothing of
    it is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def fresh_staging_dir(final: Path) -> Path:
    """An empty temporary folder beside `final`, to be filled and then `publish_dir`-ed."""
    tmp = staging_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a completely written folder into place, replacing an older one of that name."""
    if Path(final).exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def discard_staging(folder: Path, recursive: bool = True) -> int:
    """Remove temporary files and folders left by killed writers; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = folder.rglob(f"*{TMP_MARK}*") if recursive else folder.glob(f"*{TMP_MARK}*")
    removed = 0
    for path in list(found):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed
