"""Numba's cache follows the sources: a kernel whose callee in another file changed is
compiled again, never run from stale machine code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba

import preprocess
from preprocess import kernel_cache
from preprocess.kernel_cache import KEPT_VERSIONS, source_hash, use_source_keyed_cache

REPO = Path(__file__).resolve().parents[1]


def _write_kernels(package: Path, step: int) -> None:
    """outer() in one file calls inner() of another, both cached, inner inlined into outer."""
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        textwrap.dedent(f"""
        import numba as nb
        @nb.njit(cache=True, inline="always")
        def inner(x):
            return x + {step}
    """)
    )
    (package / "b.py").write_text(
        textwrap.dedent("""
        import numba as nb
        from .a import inner
        @nb.njit(cache=True)
        def outer(x):
            return inner(x) * 10
    """)
    )


def _outer_of_one(package: Path, cache_home: Path) -> int:
    """outer(1) in a fresh interpreter whose Numba cache is keyed by `package`'s sources."""
    script = (
        "import sys; from preprocess.kernel_cache import use_source_keyed_cache; "
        f"use_source_keyed_cache(__import__('pathlib').Path({str(package)!r})); "
        f"sys.path.insert(0, {str(package.parent)!r}); from kernels.b import outer; print(outer(1))"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(REPO)}
    env.pop("NUMBA_CACHE_DIR", None)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return int(run.stdout.strip())


def test_a_changed_callee_in_another_file_is_compiled_again(tmp_path):
    package = tmp_path / "kernels"
    _write_kernels(package, 1)
    assert _outer_of_one(package, tmp_path / "cache") == 20
    assert _outer_of_one(package, tmp_path / "cache") == 20  # from the cache
    _write_kernels(package, 2)  # only a.py changes; Numba alone would reuse outer's old code
    assert _outer_of_one(package, tmp_path / "cache") == 30


def test_the_hash_follows_names_and_contents(tmp_path):
    _write_kernels(tmp_path, 1)
    first = source_hash(tmp_path)
    assert source_hash(tmp_path) == first
    (tmp_path / "a.py").write_text((tmp_path / "a.py").read_text() + "\n")
    assert source_hash(tmp_path) != first
    changed = source_hash(tmp_path)
    (tmp_path / "a.py").rename(tmp_path / "c.py")
    assert source_hash(tmp_path) != changed


def test_the_build_kernels_cache_in_their_version_s_folder():
    folder = Path(numba.config.CACHE_DIR)
    assert folder.name == source_hash(Path(preprocess.__file__).parent)
    from preprocess.surfels import splat_surfels

    assert Path(splat_surfels._cache._cache_path).is_relative_to(folder)


def test_old_versions_beyond_the_newest_few_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)  # restored after
    root = kernel_cache.cache_root()
    for age in range(KEPT_VERSIONS + 3):
        old = root / f"old{age}"
        old.mkdir(parents=True)
        os.utime(old, (1_000_000 + age, 1_000_000 + age))
    folder = use_source_keyed_cache()
    kept = sorted(p.name for p in root.iterdir())
    assert folder.name in kept and len(kept) == KEPT_VERSIONS + 1
    assert "old0" not in kept and f"old{KEPT_VERSIONS + 2}" in kept
