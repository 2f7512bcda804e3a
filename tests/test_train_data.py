"""Window sampling from shards: deterministic per sample id, stratum weights respected (and
renormalised over non-empty strata), GT normalised to the first camera with unit mean point
distance, the leakage buffer around val frames, sequence selection, the shared window rules
(gaps, stationary windows) and non-finite depth masked and counted."""

from __future__ import annotations

import collections
import json
import logging
import shutil

import numpy as np
import pytest
import torch
import yaml
import zarr
from torch.utils.data import DataLoader

from preprocess.driver import build
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from shards import ShardStore
from shards.windows import camera_centres, path_length
from train.config import ConfigError, load_config
from train.data import RankSampler, WindowDataset, step_sampler
from train.run_dir import METRICS_FILE, read_run_record
from train.trainer import Trainer

from .conftest import clone_tree, replace_file
from .test_train import CPU, DEMO, shards  # noqa: F401 - shared fixture

DRIVE = "2013_05_28_drive_0000_sync"
VAL_BLOCK = (10, 11, 12)  # frames of the train drive listed as val in the `val_block` shards


def _dataset(shards, *overrides, total=200):  # noqa: F811
    cfg = load_config(DEMO, [f"data.shards={shards}", *overrides])
    return WindowDataset(str(shards), cfg.data, seed=0, total_samples=total, augment=cfg.augment)


@pytest.fixture(scope="module")
def val_block(synthetic, tmp_path_factory):
    """Shards of the train drive with frames 10-12 moved to the val split (as KITTI-360's val
    frames lie between train frames of the same drive)."""
    tree = clone_tree(synthetic.root, tmp_path_factory.mktemp("kitti") / "KITTI-360")
    lists = tree / "data_2d_semantics" / "train"
    train_file, val_file = (lists / f"2013_05_28_drive_{s}_frames.txt" for s in ("train", "val"))
    moved = [f"{DRIVE}/image_00/data_rect/{f:010d}.png" for f in VAL_BLOCK]
    train_lines = train_file.read_text().splitlines()
    val_lines = [line for line in train_lines if any(m in line for m in moved)]
    replace_file(train_file, "".join(line + "\n" for line in train_lines if line not in val_lines).encode())
    replace_file(val_file, "".join(line + "\n" for line in val_lines).encode())
    out = tmp_path_factory.mktemp("val_block_shards")
    config = Kitti360Config(depth=DepthSettings(accumulate=1), chunk_frames=32)
    build(Kitti360Source(tree, config, seqs="0000"), out, progress=False)
    return out


def test_samples_are_deterministic_and_normalised(shards):  # noqa: F811
    jittered = _dataset(shards)
    a, b = jittered[7], jittered[7]
    for key, value in a.items():
        if torch.is_tensor(value):
            assert torch.equal(value, b[key]), key
    assert a["images"].shape[-2:] == (112, 224) and a["images"].shape[0] == 4
    a = _dataset(shards, "augment.crop.height=null", "augment.crop.width=null", "augment.crop.zoom=false")[7]
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
    counts = collections.Counter(
        ds._pick(np.random.default_rng([0, g]), g / ds.total)[0].stratum for g in range(600)
    )
    assert counts["building_rich"] / 600 == pytest.approx(0.6, abs=0.06)
    assert set(counts) == {"building_rich", "mixed", "road"}


def test_rank_sampler_partitions_the_global_batch():
    single = [g for batch in RankSampler(steps=3, batch_size=4, rank=0, world_size=1) for g in batch]
    ranks = [
        [g for b in RankSampler(steps=3, batch_size=2, rank=r, world_size=2) for g in b] for r in range(2)
    ]
    for step in range(3):
        assert (
            sorted(ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2])
            == single[4 * step : 4 * step + 4]
        )
    resumed = [g for b in RankSampler(steps=3, batch_size=4, rank=0, world_size=1, start_step=2) for g in b]
    assert resumed == single[8:]


# ---- which frames may be trained on ---------------------------------------------------------


def test_val_buffer_removes_exactly_the_frames_within_the_radius(val_block):
    store = ShardStore(val_block)
    index = store.index
    assert sorted(index.loc[index["split"] == "val", "frame"]) == list(VAL_BLOCK)
    frames, poses = store.cam_from_world("kitti360", DRIVE)
    centres = camera_centres(poses)
    val = centres[np.isin(frames, VAL_BLOCK)]
    radius = 2.5
    distance = np.linalg.norm(centres[:, None] - val[None], axis=-1).min(axis=1)
    expected = set(frames[(distance <= radius) & ~np.isin(frames, VAL_BLOCK)].tolist())
    assert 2 <= len(expected) < len(frames) - 3  # the buffer bites, but not everything

    ds = _dataset(val_block, f"data.val_buffer_m={radius}", "data.max_gap=30", "data.min_baseline_m=0")
    kept = {int(f) for run in ds.windows.runs for f in run.frames}
    train = set(index.loc[index["split"] == "train", "frame"].tolist())
    assert kept == train - expected
    assert ds.report.buffer_removed == len(expected)
    assert ds.report.buffer_removed_by_sequence == {f"kitti360/{DRIVE}": len(expected)}
    assert f"{len(expected)} train frames removed" in " ".join(ds.report.lines())
    drawn = {int(f) for g in range(100) for f in ds[g]["frames"]}
    assert drawn <= kept and not drawn & (expected | set(VAL_BLOCK))

    off = _dataset(val_block, "data.val_buffer_m=0", "data.max_gap=30", "data.min_baseline_m=0")
    assert off.report.buffer_removed == 0
    assert {int(f) for run in off.windows.runs for f in run.frames} == train


def test_the_buffer_is_recorded_with_the_run(tmp_path):
    cfg = load_config(DEMO, ["data.val_buffer_m=75", "data.exclude_sequences=[3]"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    record = read_run_record(path).data
    assert (record.val_buffer_m, record.exclude_sequences, record.split) == (75.0, ("3",), "train")
    old = {k: v for k, v in cfg.to_dict()["data"].items() if k not in ("val_buffer_m", "exclude_sequences")}
    path.write_text(yaml.safe_dump({**cfg.to_dict(), "data": old}))
    assert read_run_record(path).data.val_buffer_m is None  # an older run: not recorded
    with pytest.raises(ConfigError, match="data.val_buffer_m"):
        load_config(DEMO, ["data.val_buffer_m=-1"])


def test_sequences_select_and_exclude_drives(shards):  # noqa: F811
    both = _dataset(shards, "data.split=all")
    assert both.report.sequences == [f"kitti360/{DRIVE}", "kitti360/2013_05_28_drive_0002_sync"]
    only = _dataset(shards, "data.split=all", "data.sequences=['2']")
    assert only.report.sequences == ["kitti360/2013_05_28_drive_0002_sync"]
    held_out = _dataset(shards, "data.split=all", f"data.exclude_sequences=[{DRIVE}]")
    assert {run.sequence for run in held_out.windows.runs} == {"2013_05_28_drive_0002_sync"}
    with pytest.raises(ConfigError, match="data.sequences: no sequence '9'.*known"):
        _dataset(shards, "data.sequences=['9']")
    with pytest.raises(ConfigError, match="data.split: no frames with split 'train'"):
        _dataset(shards, "data.sequences=['2']")  # drive 2 holds only val frames


# ---- window rules ---------------------------------------------------------------------------


def test_windows_never_span_a_gap_and_reach_seed_like_strides(shards):  # noqa: F811
    # the stored train frames are 1-16 and 20-29 (poses of 17-19 are missing)
    ds = _dataset(shards, "data.max_stride=50", "data.min_baseline_m=0", "data.max_gap=3")
    assert [(r.frames[0], r.frames[-1]) for r in ds.windows.runs] == [(1, 16), (20, 29)]
    assert ds.report.gaps == 1
    windows = [ds._pick(np.random.default_rng([0, g]), g / ds.total)[1] for g in range(300)]
    assert all(w[-1] <= 16 or w[0] >= 20 for w in windows)  # never across the gap
    assert max(np.diff(w).max() for w in windows) == 5  # the widest stride the 16-frame run allows
    bridged = _dataset(shards, "data.max_gap=10", "data.min_baseline_m=0")
    assert len(bridged.windows.runs) == 1 and bridged.report.gaps == 0


def test_stationary_windows_are_redrawn_and_counted(shards):  # noqa: F811
    # cameras move about 1 m per frame: 4 frames at stride 1 span ~3 m, at stride 2 ~6 m
    ds = _dataset(shards, "data.min_baseline_m=5", "data.max_stride=2")
    redrawn = 0
    for g in range(60):
        anchor, frames, count = ds._pick(np.random.default_rng([0, g]), g / ds.total)
        run = ds.windows.runs[anchor.run]
        assert path_length(run.centres[np.searchsorted(run.frames, frames)]) >= 5
        redrawn += count
    assert redrawn > 0
    assert int(ds[3]["redrawn_windows"]) >= 0
    with pytest.raises(ConfigError, match="data.min_baseline_m"):
        _dataset(shards, "data.min_baseline_m=1000")[0]


# ---- strata ---------------------------------------------------------------------------------


@pytest.fixture()
def building_rich_only(shards, monkeypatch):  # noqa: F811
    """The shards as a subset of KITTI-360 whose frames are all building-rich would look."""
    index = ShardStore(shards).index.assign(stratum="building_rich")
    monkeypatch.setattr(ShardStore, "index", property(lambda self: index))
    return shards


def test_empty_strata_renormalise_with_one_warning(building_rich_only, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="train.data"):
        ds = _dataset(building_rich_only)
    warnings = [r.message for r in caplog.records if "renormalised" in r.message]
    assert len(warnings) == 1 and "mixed, road" in warnings[0]
    assert ds.report.empty_strata == ["mixed", "road"]
    assert ds.report.strata_weights == {"building_rich": 1.0}
    assert {ds._pick(np.random.default_rng([0, g]), g / ds.total)[0].stratum for g in range(50)} == {
        "building_rich"
    }
    with pytest.raises(ConfigError, match="every weighted stratum"):
        _dataset(building_rich_only, "data.strata_weights={mixed: 0.5, road: 0.5}", "data.strata_schedule=[]")

    cfg = load_config(
        DEMO,
        [f"data.shards={building_rich_only}", "data.num_workers=0", "run.steps=1", "run.steps_per_epoch=1"],
    )
    Trainer(cfg, tmp_path, CPU).run()
    header = json.loads((tmp_path / METRICS_FILE).read_text().splitlines()[0])
    assert header["step"] == 0 and header["data"]["empty_strata"] == ["mixed", "road"]


# ---- non-finite depth -----------------------------------------------------------------------


@pytest.fixture()
def nan_shards(shards, tmp_path):  # noqa: F811
    """A copy of the shards whose frames 1-4 of the train drive hold NaN and inf depth."""
    out = shutil.copytree(shards, tmp_path / "nan_shards")
    store = ShardStore(out)
    rows = store.index[(store.index["sequence"] == DRIVE) & store.index["frame"].isin([1, 2, 3, 4])]
    for shard, row in zip(rows["shard"], rows["row"], strict=True):
        depth = zarr.open_group(out / shard, mode="r+", zarr_format=3)["depth"]
        frame = np.asarray(depth[int(row)])
        frame[60:70, 100:200] = np.nan
        frame[80, 10:20] = np.inf
        depth[int(row)] = frame
    return out


def test_nonfinite_depth_is_masked_and_counted(nan_shards, tmp_path):
    ds = _dataset(nan_shards, "data.overfit=true", "augment.crop.zoom=false", "augment.crop.height=null",
                  "augment.crop.width=null")  # fmt: skip
    sample = ds[0]
    assert int(sample["nonfinite_depth"]) == 4 * (10 * 100 + 10)
    for key in ("depth", "world_points", "images"):
        assert torch.isfinite(sample[key]).all(), key
    assert not sample["valid_mask"][:, 60:70, 100:200].any()
    assert np.isfinite(float(sample["scale"]))

    cfg = load_config(
        DEMO,
        [f"data.shards={nan_shards}", "data.num_workers=0", "data.overfit=true", "run.steps=3",
         "run.steps_per_epoch=3", "run.log_every=1"],
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path, CPU)
    trainer.run()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters() if p.requires_grad)
    rows = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert rows[-1]["nonfinite_depth"] > 0 and np.isfinite(rows[-1]["loss"])


def test_nonfinite_cameras_name_the_frames(shards, tmp_path):  # noqa: F811
    out = shutil.copytree(shards, tmp_path / "bad_pose")
    store = ShardStore(out)
    row = store.index[(store.index["sequence"] == DRIVE) & (store.index["frame"] == 1)].iloc[0]
    poses = zarr.open_group(out / row["shard"], mode="r+", zarr_format=3)["cam_from_world"]
    pose = np.asarray(poses[int(row["row"])])
    pose[0, 3] = np.nan
    poses[int(row["row"])] = pose
    ds = _dataset(out, "data.overfit=true", "data.val_buffer_m=0", "data.min_baseline_m=0")
    with pytest.raises(ValueError, match=rf"{DRIVE} frames \[1, .*non-finite cam_from_world"):
        ds[0]


# ---- determinism with varying shapes --------------------------------------------------------


def test_varying_shapes_are_deterministic_across_workers_and_resume(shards):  # noqa: F811
    ds = _dataset(
        shards,
        "augment.frames.enabled=true",
        "augment.frames.min_frames=2",
        "augment.frames.max_frames=6",
        "augment.frames.frames_per_gpu=12",
        "augment.crop.aspect=true",
        "augment.crop.min_aspect=0.25",
        "augment.crop.max_aspect=0.5",
        total=10**6,
    )

    def batches(workers: int, start: int = 0) -> list[dict]:
        sampler = step_sampler(ds, steps=6, batch_size=1, rank=0, world_size=1, start_step=start)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers)
        return list(loader)

    serial, parallel, resumed = batches(0), batches(2), batches(0, start=4)
    shapes = {tuple(b["images"].shape) for b in serial}
    assert len(shapes) > 1
    for b in serial:
        n, s, _, h, w = b["images"].shape
        assert n * s <= 12 and 2 <= s <= 6 and h % 14 == 0 and w == 224 and 0.25 * w - 7 <= h <= 0.5 * w + 7
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["depth"], b["depth"])
    for a, b in zip(serial[4:], resumed, strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["frames"], b["frames"])


def test_old_crop_and_jitter_keys_still_load():
    cfg = load_config(DEMO, ["data.crop_height=56", "data.crop_width=112", "data.color_jitter=0.2"])
    crop, colour = cfg.augment.crop, cfg.augment.colour
    assert (crop.height, crop.width, crop.zoom) == (56, 112, False)
    assert (colour.enabled, colour.brightness, colour.hue, colour.p) == (True, 0.2, 0.0, 1.0)
    assert not load_config(DEMO, ["data.color_jitter=0.0"]).augment.colour.enabled
