"""Shared fixtures: the synthetic KITTI-360 scene (exact GT depth), generated once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from preprocess.synthetic import generate_synthetic_kitti360


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    return generate_synthetic_kitti360(tmp_path_factory.mktemp("synthetic"), frames=30, seed=0, sequences=2)


def clone_tree(src: Path, dst: Path) -> Path:
    """A copy of a dataset tree made of symlinks, so tests can break single files cheaply."""
    shutil.copytree(src, dst, copy_function=os.symlink)
    return dst


def replace_file(path: Path, data: bytes) -> None:
    """Swap a symlinked file for a real one with the given bytes."""
    path.unlink()
    path.write_bytes(data)
