"""Training on synthetic shards with the tiny model: learning, frozen base, exact resume,
DDP equivalence, and config validation."""

from __future__ import annotations

import json
import os
import re
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
from train.data import validation_windows
from train.distributed import DistInfo
from train.model import build_base_model
from train.run_dir import METRICS_FILE, find_adapters, read_best
from train.trainer import Trainer, TrainingDiverged
from train.validation import Validator

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


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_demo_config_overfits_one_window(shards, tmp_path, precision):
    """fp16: the aggregator under float16 autocast (CPU autocast too) with a dynamic loss scale."""
    cfg = _config(
        shards, "data.overfit=true", "data.crop_height=null", "data.crop_width=null", "run.steps=50",
        "run.steps_per_epoch=50", "optim.warmup=0.0", f"optim.precision={precision}",
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path, CPU)
    trainer.run()
    losses = _losses(tmp_path)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, f"loss {first:.3f} -> {last:.3f}"
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    assert trainer.nonfinite_steps <= (16 if precision == "fp16" else 0)  # the loss scale settling


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
        "run.steps=6",  # by step 6 both ranks have drawn windows again
        "run.steps_per_epoch=3",
        "optim.warmup=0.0",
        "data.num_workers=0",
        "run.log_every=1",
        "data.min_baseline_m=4.0",  # some windows move too little and are drawn again
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
        # the data counts are the global batch's, summed over the ranks
        assert (a["redrawn_windows"], a["nonfinite_depth"]) == (b["redrawn_windows"], b["nonfinite_depth"])
    assert log_single[-1]["redrawn_windows"] > 0
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


def _poison_gradients(trainer: Trainer, monkeypatch, steps: set[int]) -> list[torch.nn.Parameter]:
    """Make the gradients of optimizer steps `steps` (0-based) NaN, as a bad batch would."""
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    micro_step = trainer._micro_step

    def poisoned(batch, progress):
        terms = micro_step(batch, progress)
        if trainer.step in steps:
            next(p for p in params if p.grad is not None).grad.fill_(float("nan"))
        return terms

    monkeypatch.setattr(trainer, "_micro_step", poisoned)
    return params


def test_a_step_with_nonfinite_gradients_is_skipped_and_counted(shards, tmp_path, monkeypatch):
    cfg = _config(shards, "run.steps=3", "run.steps_per_epoch=3", "optim.warmup=0.0")
    trainer = Trainer(cfg, tmp_path, CPU)
    params = _poison_gradients(trainer, monkeypatch, {1})
    optimizer_step, moved = trainer._optimizer_step, {}

    def recorded(finite: bool) -> None:
        before = [p.detach().clone() for p in params]
        optimizer_step(finite)
        moved[trainer.step] = (
            finite,
            any(not torch.equal(a, p) for a, p in zip(before, params, strict=True)),
        )

    monkeypatch.setattr(trainer, "_optimizer_step", recorded)
    trainer.run()
    assert moved == {0: (True, True), 1: (False, False), 2: (True, True)}
    assert [r["nonfinite_steps"] for r in _rows(tmp_path)] == [0, 1, 1]
    adapter = load_file(str(tmp_path / "checkpoints" / "epoch_0001" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in adapter.values())


def test_too_many_nonfinite_steps_in_a_row_stop_the_run(shards, tmp_path, monkeypatch):
    cfg = _config(shards, "run.steps=4", "run.steps_per_epoch=1", "optim.max_bad_steps=2")
    trainer = Trainer(cfg, tmp_path, CPU)
    _poison_gradients(trainer, monkeypatch, {1, 2, 3})
    with pytest.raises(TrainingDiverged, match=r"2 optimizer steps in a row \(up to step 3\) had non-finite"):
        trainer.run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002"]


def test_precision_and_renamed_keys(tmp_path):
    assert load_config(DEMO, ["optim.precision=fp16"]).optim.precision == "fp16"
    legacy = tmp_path / "legacy.yaml"  # written before optim.precision replaced optim.bf16
    for bf16, precision in (("true", "bf16"), ("false", "fp32")):
        legacy.write_text(DEMO.read_text().replace("precision: fp32", f"bf16: {bf16}"))
        assert load_config(legacy).optim.precision == precision
    with pytest.raises(
        ConfigError, match=re.escape("optim.precision: expected one of bf16|fp16|fp32, got 'fp8'")
    ):
        load_config(DEMO, ["optim.precision=fp8"])
    with pytest.raises(ConfigError, match="give only optim.precision"):
        load_config(DEMO, ["optim.bf16=true"])
    with pytest.raises(ConfigError, match=re.escape("lora.heads: ['camera'] adapted but loss weight 0")):
        load_config(DEMO, ["loss.camera_weight=0"])


def test_heads_without_loss_weight_are_not_run(shards, tmp_path):
    trainer = Trainer(_config(shards, "run.steps=1"), tmp_path, CPU)
    assert trainer.heads == ("camera", "depth")  # the demo's point weight is 0
    images = torch.rand(1, 2, 3, 28, 56)
    assert set(trainer.model(images, heads=trainer.heads)) == {
        "pose_enc",
        "pose_enc_list",
        "depth",
        "depth_conf",
    }
    assert "world_points" in trainer.model(images)


VALIDATED = (
    "run.steps=4",
    "run.steps_per_epoch=2",
    "run.val_every=1",
    "run.val_windows=3",
    "run.image_every=2",
)


def test_validation_rows_best_checkpoint_and_pictures(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _config(shards, *VALIDATED)
    first = validation_windows(str(shards), cfg.data, "val", 3)
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(first, validation_windows(
        str(shards), cfg.data, "val", 3), strict=True))  # fmt: skip
    Trainer(cfg, tmp_path, CPU).run()
    rows = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    val = [r for r in rows if "val/loss" in r]
    assert [r["step"] for r in val] == [1, 2, 3, 4] and all(r["val/windows"] == 3 for r in val)
    assert all(0 < r["val/abs_rel"] < 10 and r["val/loss"] == r["val/loss"] for r in val)
    best = read_best(tmp_path)
    scores = {r["step"]: r["val/abs_rel"] for r in val if r["step"] % 2 == 0}
    best_step = min(scores, key=scores.get)
    assert best == {"checkpoint": f"epoch_000{best_step // 2}", "step": best_step, "metric": "val/abs_rel",
                    "value": scores[best_step]}  # fmt: skip
    assert [a.tag for a in find_adapters(tmp_path)] == ["epoch_0001", "epoch_0002"]  # `best` is no epoch
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"val/depth_pred", "val/depth_gt"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Scalars("val/abs_rel")] == [1, 2, 3, 4]


def test_early_stop_and_resume_after_it(shards, tmp_path, monkeypatch):
    scores = iter([0.5, 0.4, 0.6, 0.7, 0.8, 0.9])

    def scripted(self, model):
        return {"val/loss": 1.0, "val/abs_rel": next(scores), "val/windows": 1}

    monkeypatch.setattr(Validator, "run", scripted)
    overrides = ("run.steps=6", "run.steps_per_epoch=2", "run.val_every=1", "run.early_stop_patience=1")
    Trainer(_config(shards, *overrides), tmp_path, CPU).run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best",
        "epoch_0001",
        "epoch_0002",
    ]
    assert read_best(tmp_path)["checkpoint"] == "epoch_0001"
    rows = (tmp_path / METRICS_FILE).read_text()
    assert max(json.loads(line)["step"] for line in rows.splitlines()) == 3
    Trainer(_config(shards, *overrides), tmp_path, CPU, resume=True).run()  # nothing left to do
    assert (tmp_path / METRICS_FILE).read_text() == rows


def test_validation_needs_val_frames_and_a_divisor_of_the_epoch(shards, tmp_path):
    with pytest.raises(ConfigError, match="run.val_every: 3 does not divide run.steps_per_epoch=4"):
        _config(shards, "run.steps_per_epoch=4", "run.val_every=3")
    with pytest.raises(ConfigError, match="run.early_stop_patience: needs validation"):
        _config(shards, "run.early_stop_patience=2")
    with pytest.raises(ConfigError, match="run.val_split: data.split: no frames with split 'test'"):
        Trainer(_config(shards, "run.val_every=1", "run.val_split=test"), tmp_path, CPU)


def test_seed_parity_config_differs_from_strategy_b_only_as_documented():
    configs = REPO / "configs" / "train"
    seed, ours = load_config(configs / "strategy_b_seed.yaml"), load_config(configs / "strategy_b.yaml")
    assert (seed.loss.semantic_weights, seed.loss.facade_boost, seed.loss.facade_boost_floor) == (
        {},
        1.0,
        1.0,
    )
    assert seed.lora.dropout == 0.1 and seed.optim.weight_decay == 0.0
    assert (seed.optim.warmup, seed.optim.min_lr_ratio) == (0.15, 0.01)
    assert seed.data.batch_size * seed.optim.grad_accum == 8
    documented = {
        ("loss", "semantic_weights"), ("loss", "facade_boost"), ("lora", "dropout"),
        ("optim", "weight_decay"), ("optim", "warmup"), ("optim", "min_lr_ratio"), ("optim", "grad_accum"),
        ("name",),
    }  # fmt: skip
    a, b = seed.to_dict(), ours.to_dict()
    differing = {(k,) for k in a if not isinstance(a[k], dict) and a[k] != b[k]} | {
        (k, sub) for k in a if isinstance(a[k], dict) for sub in a[k] if a[k][sub] != b[k][sub]
    }
    assert differing == documented
