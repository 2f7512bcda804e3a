"""A tiny synthetic KITTI-360 scene shared by the prep fault cases (two sequences of five
frames: 0000 listed as train, 0002 as val), and a cheap build config for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.sources.kitti360 import DepthSettings, Kitti360Config
from preprocess.synthetic import SynthDataset, generate_synthetic_kitti360

TINY = Kitti360Config(depth=DepthSettings(accumulate=1), width=140, chunk_frames=16)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> SynthDataset:
    return generate_synthetic_kitti360(tmp_path_factory.mktemp("tiny_scene"), frames=5, seed=1, sequences=2)


@pytest.fixture
def scene_copy(tiny_scene, tmp_path) -> Path:
    """A symlinked copy of the tiny scene's root whose files a test may replace."""
    from tests.conftest import clone_tree

    return clone_tree(tiny_scene.root, tmp_path / "root")
