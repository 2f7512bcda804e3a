"""Where Numba keeps the build kernels' machine code between runs: a folder named by a hash
of this package's sources.

Numba drops a cached kernel when the file that defines it changes, not when a kernel it
calls from another file does, and a caller compiles its callees into itself
(surfels.splat_surfels holds planar_patches.draw_patches): after an edit or a pull that
touches only the callee, the caller's old code would run, silently. A folder per version of
the sources cannot hold stale code; the most recent few are kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numba

PACKAGE = Path(__file__).resolve().parent
KEPT_VERSIONS = 4  # cache folders of other source versions kept (other checkouts, branches)


def source_hash(package: Path = PACKAGE) -> str:
    """A short hash of every .py file under `package`, names and contents."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """NUMBA_CACHE_DIR where the user set one, else the user's cache folder."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        return Path(chosen) / "kitti360-vggt"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kitti360-vggt" / "numba"


def use_source_keyed_cache(package: Path = PACKAGE) -> Path:
    """Point Numba's cache at the folder of this version of `package`'s sources (before any
    kernel is defined: the folder is chosen when a kernel is decorated) and remove all but the
    newest few other versions' folders."""
    root = cache_root()
    folder = root / source_hash(package)
    numba.config.CACHE_DIR = str(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)  # newest first when pruning
        others = [p for p in root.iterdir() if p.is_dir() and p != folder]
        others.sort(key=lambda p: p.stat().st_mtime)
        for old in others[: max(0, len(others) - KEPT_VERSIONS)]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass  # an unwritable cache only costs compile time: Numba then compiles in memory
    return folder
