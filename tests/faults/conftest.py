"""Synthetic data shared by the fault cases: a tiny KITTI-360 scene for the prep cases (two
sequences of five frames: 0000 listed as train, 0002 as val) with a cheap build config, and
one built sequence of eight frames for the training and eval cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.driver import build
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
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


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """One short synthetic sequence (frames 0-7, a few without a pose) built once; read only."""
    work = tmp_path_factory.mktemp("fault_shards")
    scene = generate_synthetic_kitti360(work / "scene", frames=8, seed=0, sequences=1)
    out = work / "shards"
    config = Kitti360Config(depth=DepthSettings(accumulate=0), chunk_frames=16)
    build(Kitti360Source(scene.root, config, split="all"), out, progress=False)
    return out
