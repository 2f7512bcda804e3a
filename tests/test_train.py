"""Training on synthetic shards with the tiny model: learning, frozen base, exact resume,
DDP equivalence, and config validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from preprocess.driver import build
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from shards import read_index
from train.config import ConfigError, load_config
from train.distributed import DistInfo
from train.model import build_base_model
from train.run_dir import METRICS_FILE
from train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "train" / "demo.yaml"
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def shards(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    build(
        Kitti360Source(synthetic.root, Kitti360Config(depth=DepthSettings(accumulate=2), chunk_frames=16)),
        out,
        progress=False,
    )
    return out


def _config(shards, *overrides):
    base = [f"data.shards={shards}", "data.num_workers=0", "data.color_jitter=0.0", "run.log_every=1"]
    return load_config(DEMO, [*base, *overrides])


def _losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in _rows(run_dir) if "loss" in row]


def _rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows of training steps (not the data-report header)."""
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return [row for row in map(json.loads, lines) if "data" not in row]


def test_demo_config_overfits_one_window(shards, tmp_path):
    cfg = _config(
        shards, "data.overfit=true", "data.crop_height=null", "data.crop_width=null", "run.steps=50",
        "run.steps_per_epoch=50", "optim.warmup=0.0",
    )  # fmt: skip
    Trainer(cfg, tmp_path, CPU).run()
    losses = _losses(tmp_path)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, f"loss {first:.3f} -> {last:.3f}"


def test_only_lora_parameters_change(shards, tmp_path):
    cfg = _config(shards, "run.steps=4", "run.steps_per_epoch=4")
    before = {
        k: v.clone()
        for k, v in build_base_model(
            size=cfg.model.size, weights=cfg.model.weights, seed=cfg.run.seed, bf16=False
        )
        .state_dict()
        .items()
    }
    trainer = Trainer(cfg, tmp_path, CPU)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.run()
    base_after = trainer.model.get_base_model().state_dict()
    for key, value in before.items():
        after = base_after.get(key, base_after.get(key.replace(".weight", ".base_layer.weight")))
        if after is None:
            after = base_after[key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]]
        assert torch.equal(value, after), key
    changed = [
        n
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and not torch.equal(p, lora_before[n])
    ]
    assert changed and all("lora_" in n for n in changed)
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)


class _Crash(RuntimeError):
    pass


def test_resume_reproduces_uninterrupted_losses(shards, tmp_path, monkeypatch):
    overrides = ("run.steps=12", "run.steps_per_epoch=4", "lora.dropout=0.1")
    Trainer(_config(shards, *overrides), tmp_path / "full", CPU).run()

    original = Trainer._save

    def crash_after_second(self):
        path = original(self)
        if self.step == 8:
            raise _Crash
        return path

    monkeypatch.setattr(Trainer, "_save", crash_after_second)
    with pytest.raises(_Crash):
        Trainer(_config(shards, *overrides), tmp_path / "cut", CPU).run()
    monkeypatch.setattr(Trainer, "_save", original)
    (tmp_path / "cut" / "checkpoints" / "epoch_0003.tmp-999").mkdir()  # debris of a half-written one
    Trainer(_config(shards, *overrides), tmp_path / "cut", CPU, resume=True).run()
    full, cut = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert len(full) == len(cut) == 12
    assert max(abs(a - b) for a, b in zip(full, cut, strict=True)) < 1e-6


def test_ddp_two_processes_match_single_process(shards, tmp_path):
    common = [
        "run.steps=3",
        "run.steps_per_epoch=3",
        "optim.warmup=0.0",
        "data.num_workers=0",
        "run.log_every=1",
    ]
    single = tmp_path / "single"
    Trainer(_config(shards, *common, "data.batch_size=2"), single, CPU).run()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        "-m", "train", "run", "--config", str(DEMO), "--shards", str(shards), "--out", str(tmp_path / "ddp"),
        *common, "data.batch_size=1", "data.color_jitter=0.0",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO, env=env, timeout=300)
    ddp = tmp_path / "ddp"
    log_single, log_ddp = (_rows(run) for run in (single, ddp))
    for a, b in zip(log_single, log_ddp, strict=True):  # same global-batch loss and gradients
        for key in ("loss", "grad_norm/heads", "grad_norm/aggregator"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    a = load_file(str(single / "checkpoints" / "epoch_0001" / "adapter_model.safetensors"))
    b = load_file(str(ddp / "checkpoints" / "epoch_0001" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    # Adam turns float noise in near-zero gradients into updates of up to lr per step
    assert diffs.median() < 1e-6 and diffs.max() < 2 * 3 * 3e-3


def test_bad_configs_fail_fast(shards, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): optim.learning_rate"):
        load_config(DEMO, ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="augment.crop.width"):
        load_config(DEMO, ["data.crop_width=100"])
    with pytest.raises(ConfigError, match="lora.rank: expected int"):
        load_config(DEMO, ["lora.rank=abc"])
    # a shard root whose frames are all road-like: only weighting empty strata is an error
    roads = tmp_path / "roads"
    (roads / "index").mkdir(parents=True)
    (roads / "shards").symlink_to(shards / "shards")
    index = read_index(shards)
    index[index["stratum"] == "road"].to_parquet(roads / "index" / "roads.parquet", index=False)
    only_buildings = ["data.strata_weights={building_rich: 1.0}", "data.strata_schedule=[]"]
    with pytest.raises(ConfigError, match="every weighted stratum .building_rich. has no window anchors"):
        Trainer(_config(roads, *only_buildings), tmp_path / "run", CPU)
    result = subprocess.run(
        [sys.executable, "-m", "train", "run", "--config", str(DEMO), "--shards", str(tmp_path / "missing")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "no index/ folder" in " ".join((result.stdout + result.stderr).split())


def test_batches_without_supervision_are_skipped_and_counted(shards, tmp_path):
    cfg = _config(shards, "run.steps=2", "run.steps_per_epoch=2", "loss.min_valid_pixels=100000000")
    trainer = Trainer(cfg, tmp_path, CPU)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.run()
    records = _rows(tmp_path)
    assert records[-1]["skipped_batches"] == 2 and "loss" not in records[-1]
    for name, param in trainer.model.named_parameters():
        if param.requires_grad:
            assert torch.isfinite(param).all() and torch.equal(param, before[name]), name
