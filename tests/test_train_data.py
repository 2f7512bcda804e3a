"""Window sampling from shards: deterministic per sample id, stratum weights respected,
GT normalised to the first camera with unit mean point distance, crops on the 14-px grid."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from train.config import load_config
from train.data import RankSampler, WindowDataset

from .test_train import DEMO, shards  # noqa: F401 - shared fixture


def _dataset(shards, *overrides, total=200):  # noqa: F811
    cfg = load_config(DEMO, [f"data.shards={shards}", *overrides])
    return WindowDataset(str(shards), cfg.data, seed=0, total_samples=total)


def test_samples_are_deterministic_and_normalised(shards):  # noqa: F811
    cropped = _dataset(shards, "data.color_jitter=0.2")
    a, b = cropped[7], cropped[7]
    for key, value in a.items():
        if torch.is_tensor(value):
            assert torch.equal(value, b[key]), key
    assert a["images"].shape[-2:] == (112, 224) and a["images"].shape[0] == 4
    a = _dataset(shards, "data.crop_height=null", "data.crop_width=null")[7]
    ext = a["cam_from_world"].double()
    assert torch.allclose(ext[0], torch.eye(4, dtype=torch.float64)[:3], atol=1e-6)
    points = a["world_points"][a["valid_mask"]].double()
    assert points.norm(dim=-1).mean() == pytest.approx(1.0, rel=1e-5)
    # depth equals the z of the points in their own (normalised) camera
    cam = torch.einsum("sij,shwj->shwi", ext[:, :, :3], a["world_points"].double()) + ext[:, None, None, :, 3]
    valid = a["valid_mask"]
    torch.testing.assert_close(cam[..., 2][valid], a["depth"].double()[valid], rtol=1e-4, atol=1e-5)


def test_stratum_weights_are_respected(shards):  # noqa: F811
    ds = _dataset(shards, "data.strata_weights={building_rich: 0.6, mixed: 0.2, road: 0.2}", total=600)
    counts = collections.Counter(ds._pick(np.random.default_rng([0, g]), g)[0].stratum for g in range(600))
    assert counts["building_rich"] / 600 == pytest.approx(0.6, abs=0.06)
    assert set(counts) == {"building_rich", "mixed", "road"}


def test_rank_sampler_partitions_the_global_batch():
    single = list(RankSampler(steps=3, batch_size=4, rank=0, world_size=1))
    ranks = [list(RankSampler(steps=3, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    for step in range(3):
        assert (
            sorted(ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2])
            == single[4 * step : 4 * step + 4]
        )
    assert list(RankSampler(steps=3, batch_size=4, rank=0, world_size=1, start_step=2)) == single[8:]
