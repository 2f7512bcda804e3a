"""Fault cases of `vggt-train`: damaged or crafted checkpoints, interrupted runs and bad
configs. A checkpoint that does not load is named and the next older one used (never a
traceback, never code run from a file); logs never repeat a step; bad values are named before
anything starts.

Cases are marked `fault(outcome, harm)` as described in tests/faults/README.md.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from train.cli import app
from train.run_dir import ADAPTER_WEIGHTS, METRICS_FILE, STATE_FILE
from train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "train" / "demo.yaml"
# one window over and over, at the stored size: a step takes well under a second
FAST = [
    "data.overfit=true", "data.split=all", "data.num_workers=0", "data.color_jitter=0.0",
    "data.crop_height=56", "data.crop_width=112", "run.log_every=1", "run.steps_per_epoch=1",
]  # fmt: skip
named_error = pytest.mark.fault("named_error", "unnamed_error")


def train(shards: Path, out: Path, *args: str):
    command = ["run", "--config", str(DEMO), "--shards", str(shards), "--out", str(out), *FAST, *args]
    result = CliRunner().invoke(app, command)
    return result, " ".join(result.output.split())


def rows(run: Path) -> list[dict]:
    """metrics.jsonl rows of training steps (not the data-report header, step 0)."""
    lines = (run / METRICS_FILE).read_text().splitlines()
    return [row for row in map(json.loads, lines) if "data" not in row]


def headers(run: Path) -> list[dict]:
    lines = (run / METRICS_FILE).read_text().splitlines()
    return [row for row in map(json.loads, lines) if "data" in row]


@pytest.fixture(scope="module")
def finished(shards, tmp_path_factory) -> Path:
    """An uninterrupted 3-step run with a checkpoint after every step."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result, text = train(shards, run, "run.steps=3")
    assert result.exit_code == 0, text
    return run


def assert_same_as_uninterrupted(run: Path, finished: Path) -> None:
    assert [r["step"] for r in rows(run)] == [1, 2, 3]
    assert [h["step"] for h in headers(run)] == [0]  # the data report, once
    for a, b in zip(rows(run), rows(finished), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


class _Payload:
    """Unpickling this touches a file: what a crafted checkpoint could do with `weights_only=False`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _not_a_state(path: Path) -> None:
    torch.save({"step": "three"}, path)


@pytest.mark.fault("intact", "unnamed_error")
@pytest.mark.parametrize(
    ("name", "damage", "reason"),
    [
        (STATE_FILE, _truncate, "PytorchStreamReader"),
        (STATE_FILE, _empty, "is empty"),
        (STATE_FILE, _not_a_state, "not a trainer state"),
        (ADAPTER_WEIGHTS, _truncate, "epoch_0003"),
        (ADAPTER_WEIGHTS, _empty, "epoch_0003"),
    ],
)
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(
    shards, finished, tmp_path, caplog, name, damage, reason
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run / "checkpoints" / "epoch_0003" / name)
    caplog.set_level(logging.INFO)
    result, text = train(shards, run, "run.steps=3", "--resume")
    assert result.exit_code == 0, text
    assert reason in caplog.text and "epoch_0003 cannot be loaded" in caplog.text
    assert "resuming from" in caplog.text and "epoch_0002, the newest checkpoint that loads" in caplog.text
    assert_same_as_uninterrupted(run, finished)


@pytest.mark.fault("intact", "code_execution")
def test_a_crafted_trainer_state_runs_no_code(shards, finished, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    torch.save({"step": _Payload(marker)}, crafted)
    shutil.copy(crafted, run / "checkpoints" / "epoch_0003" / STATE_FILE)
    result, text = train(shards, run, "run.steps=3", "--resume")
    assert result.exit_code == 0, text
    assert not marker.exists()
    assert "epoch_0003 cannot be loaded" in caplog.text
    assert_same_as_uninterrupted(run, finished)
    torch.load(crafted, weights_only=False)  # the file is potent: a pickle-trusting loader runs it
    assert marker.exists()


@named_error
def test_no_loadable_checkpoint_is_named(shards, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for epoch in (1, 2, 3):
        _empty(run / "checkpoints" / f"epoch_000{epoch}" / STATE_FILE)
    result, text = train(shards, run, "run.steps=3", "--resume")
    assert result.exit_code == 1 and "cannot resume: none of the 3 checkpoints" in text, text
    assert "epoch_0001:" in text and "is empty" in text and "Aborted" not in text


class _Killed(RuntimeError):
    pass


@pytest.mark.fault("intact", "silent_wrong_output")
@pytest.mark.parametrize("resume", [True, False])
def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(
    shards, finished, tmp_path, monkeypatch, resume
):
    run = tmp_path / "run"
    original = Trainer._log

    def killed_after_second_row(self, record, writer):
        original(self, record, writer)
        if record["step"] == 2:
            raise _Killed

    monkeypatch.setattr(Trainer, "_log", killed_after_second_row)
    result, _ = train(shards, run, "run.steps=3", "run.steps_per_epoch=3")
    assert isinstance(result.exception, _Killed)
    with open(run / METRICS_FILE, "a") as fh:
        fh.write('{"step": 3, "lo')  # and a row cut short by the kill
    monkeypatch.setattr(Trainer, "_log", original)
    result, text = train(shards, run, "run.steps=3", "run.steps_per_epoch=3", *(["--resume"] * resume))
    assert result.exit_code == 0, text
    assert [r["step"] for r in rows(run)] == [1, 2, 3]
    assert [h["step"] for h in headers(run)] == [0]  # the data report, once


@pytest.mark.fault("intact", "silent_wrong_output")
def test_resume_cuts_the_log_back_to_the_checkpoint(shards, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "checkpoints" / "epoch_0003")  # killed after logging step 3, before saving it
    result, text = train(shards, run, "run.steps=3", "--resume")
    assert result.exit_code == 0, text
    assert_same_as_uninterrupted(run, finished)


@pytest.mark.fault("named_error", "data_loss")
def test_a_fresh_run_does_not_mix_with_an_earlier_one(shards, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    result, text = train(shards, run, "run.steps=2")
    assert result.exit_code == 2 and "already holds checkpoints (epoch_0001 .. epoch_0003)" in text, text
    assert "--resume" in text and (run / "checkpoints" / "epoch_0003").is_dir()
    result, text = train(shards, run, "run.steps=2", "--overwrite")
    assert result.exit_code == 0, text
    assert [r["step"] for r in rows(run)] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002"]


@named_error
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optim.lr=-1", "optim.lr: must be > 0, got -1.0"),
        ("optim.lr=.nan", "optim.lr: must be > 0, got nan"),
        ("optim.lr=abc", "optim.lr: expected float, got 'abc'"),
        ("optim.warmup=1.5", "optim.warmup: must be a fraction of the steps in [0, 1)"),
        ("optim.min_lr_ratio=2", "optim.min_lr_ratio: must be in [0, 1]"),
        ("optim.weight_decay=-0.1", "optim.weight_decay: must be >= 0"),
        ("optim.clip_heads=0", "optim.clip_heads: must be > 0"),
        ("optim.grad_accum=-1", "optim.grad_accum: must be >= 1"),
        ("run.steps=0", "run.steps: must be >= 1"),
        ("run.log_every=0", "run.log_every: must be >= 1"),
        ("run.seed=-1", "run.seed: must be >= 0"),
        ("run.device=gpu", "run.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("loss.depth_weight=-1", "loss.depth_weight: must be >= 0"),
        ("loss.depth_quantile=0", "loss.depth_quantile: must be in (0, 1]"),
        ("loss.semantic_weights={11: -2}", "loss.semantic_weights.11: must be >= 0"),
        ("optim.lr=[1", "override 'optim.lr=[1': value is not valid YAML"),
        ("optim", "override 'optim' must look like key.sub=value"),
    ],
)
def test_bad_config_values_are_named(tmp_path, override, named):
    result, text = train(tmp_path / "no_shards", tmp_path / "run", override)
    assert result.exit_code == 2 and f"config error: {named}" in text, text
    assert not (tmp_path / "run").exists()


@named_error
def test_a_yaml_syntax_error_names_the_file(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("name: demo\noptim: {lr: 1e-4\nrun: {steps: 3}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--shards", str(tmp_path)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and f"config error: {config}: not valid YAML" in text, text
    assert "line 3" in text


@named_error
def test_nonfinite_gradients_never_reach_the_adapters(shards, tmp_path, monkeypatch):
    """Every step's gradients NaN (as a NaN in the data would make them): steps are skipped,
    the run stops after optim.max_bad_steps in a row, and its checkpoints stay finite."""
    from safetensors.torch import load_file

    micro_step = Trainer._micro_step

    def poisoned(self, batch, progress):
        terms = micro_step(self, batch, progress)
        for param in self.model.parameters():
            if param.grad is not None:
                param.grad.fill_(float("nan"))
        return terms

    monkeypatch.setattr(Trainer, "_micro_step", poisoned)
    run = tmp_path / "run"
    result, text = train(shards, run, "run.steps=4", "optim.max_bad_steps=2")
    assert result.exit_code == 1, text
    assert "training stopped: 2 optimizer steps in a row (up to step 2) had non-finite gradients" in text
    assert [r["nonfinite_steps"] for r in rows(run)] == [1]
    adapter = load_file(str(run / "checkpoints" / "epoch_0001" / ADAPTER_WEIGHTS))
    assert all(torch.isfinite(t).all() for t in adapter.values())
