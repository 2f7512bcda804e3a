"""Fault cases of `vggt-eval`: bad arguments and missing inputs end in errors that name the
option or file (before anything is written), and stored results that are damaged, stale or
crafted are never taken for finished results or read outside the eval folder; repeated
launches give identical numbers.

Cases are marked `fault(outcome, harm)` as described in tests/faults/README.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from eval.cli import app
from eval.results import load_results
from train.model import LoraSpec, apply_lora, build_base_model, save_adapter

FAST = ["--model-size", "tiny", "--device", "cpu", "--split", "all", "--seq-len", "3", "--seq-stride", "3"]
named_error = pytest.mark.fault("named_error", "unnamed_error")


def adapter(path: Path, fill: float | None = None) -> Path:
    """A depth-head adapter on the tiny seed-0 base; `fill` sets every LoRA B weight (NaN breaks it)."""
    model = apply_lora(build_base_model(size="tiny", seed=0, bf16=False), LoraSpec(rank=2, alpha=4))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.full_like(param, 0.01 if fill is None else fill)
    return save_adapter(model, path)


def evaluate(ckpt_dir: Path, shards: Path, out: Path, *args: str):
    command = ["evaluate", str(ckpt_dir), "--shards", str(shards), "--out", str(out), *FAST, *args]
    result = CliRunner().invoke(app, command)
    return result, " ".join(result.output.split())


@pytest.fixture(scope="module")
def baseline_run(shards, tmp_path_factory) -> tuple[Path, Path]:
    """An evaluated folder of adapters (baseline + one checkpoint)."""
    work = tmp_path_factory.mktemp("evaluated")
    run = work / "adapters"
    adapter(run / "epoch_0001")
    result, text = evaluate(run, shards, work / "eval")
    assert result.exit_code == 0, text
    return run, work / "eval"


# --- arguments: named before anything is loaded or written ---------------------------------


@named_error
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seq-len", "0"], "--seq-len: need at least 2 frames per window, got 0"),
        (["--seq-len", "1"], "--seq-len"),
        (["--seq-stride", "0"], "--seq-stride"),
        (["--max-seqs", "0"], "--max-seqs"),
        (["--max-gap", "0"], "--max-gap"),
        (["--min-baseline", "-1"], "--min-baseline"),
        (["--min-baseline", "nan"], "--min-baseline"),
        (["--top-k", "0"], "--top-k"),
        (
            ["--align", "median"],
            "--align: need one of window, window_median, frame_median, scale_shift, none",
        ),
        (["--adjust", "bonferroni"], "--adjust: need one of holm, bh"),
        (["--pointmap", "yes"], "--pointmap: need auto, on or off"),
        (["--composite", "{depth/all/abs_rel: 1"], "--composite: not valid JSON"),
        (["--composite", '{"depth/all/absrel": 1}'], "--composite: need a JSON object of headline metric"),
        (["--composite", '{"depth/all/abs_rel": -1}'], "--composite"),
        (["--sequences", ","], "--sequences"),
    ],
)
def test_bad_arguments_are_named(args, named, tmp_path):
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    result, text = evaluate(ckpt, tmp_path / "no_shards", tmp_path / "eval", *args)
    assert result.exit_code == 2 and named in text, text
    assert not (tmp_path / "eval").exists()


@named_error
def test_missing_checkpoint_folder_is_refused_not_created(shards, tmp_path):
    """It used to be created and a random-init 1B baseline evaluated into it."""
    missing = tmp_path / "no_such_run"
    result, text = evaluate(missing, shards, missing / "eval")
    assert result.exit_code == 2 and f"checkpoint folder {missing} does not exist" in text, text
    assert not missing.exists()


@named_error
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["--sequences", "0009"],
            "--sequences: no sequence '0009' in the shards (known: 2013_05_28_drive_0000_sync)",
        ),
        (["--split", "test"], "no frames with split 'test'"),
        (["--seq-len", "50"], "has 50 frames without a gap of more than 3 frames (--max-gap)"),
    ],
)
def test_windows_that_cannot_be_formed_are_named(shards, tmp_path, args, named):
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    result, text = evaluate(ckpt, shards, tmp_path / "eval", *args)
    assert result.exit_code == 2 and named in text, text
    assert not (tmp_path / "eval").exists()


@named_error
def test_missing_shards_are_named(tmp_path):
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    result, text = evaluate(ckpt, tmp_path / "prepared", tmp_path / "eval")
    assert result.exit_code == 2 and f"shard root {tmp_path / 'prepared'} does not exist" in text, text


@named_error
def test_unreadable_run_config_is_named(shards, tmp_path):
    config = adapter(tmp_path / "run" / "epoch_0001") / "config.yaml"
    config.write_text("model: {size: [tiny\n")
    result, text = evaluate(tmp_path / "run", shards, tmp_path / "eval")
    assert result.exit_code == 2 and f"{config}: not a readable run config" in text, text


@named_error
def test_a_checkpoint_that_predicts_nan_is_named(shards, tmp_path):
    broken = adapter(tmp_path / "run" / "epoch_0001", fill=float("nan"))
    result, text = evaluate(tmp_path / "run", shards, tmp_path / "eval")
    assert result.exit_code == 2, text
    assert f"checkpoint epoch_0001 ({broken})" in text and "non-finite predicted" in text, text
    assert not (tmp_path / "eval" / "epoch_0001_metrics.json").exists()


@named_error
def test_compare_arguments_are_named(baseline_run, tmp_path):
    _, out = baseline_run
    runner = CliRunner()
    result = runner.invoke(
        app, ["compare", str(out), str(out), "--out", str(tmp_path / "c"), "--adjust", "x"]
    )
    assert result.exit_code == 2 and "--adjust" in result.output
    result = runner.invoke(app, ["compare", str(out), str(tmp_path / "none"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and f"{tmp_path / 'none' / 'metrics_overall.csv'} not found" in result.output


# --- stored results: never taken for what they are not -------------------------------------


@pytest.mark.fault("intact", "silent_wrong_output")
def test_a_stored_tag_cannot_lead_outside_the_eval_folder(baseline_run, tmp_path):
    """A crafted `<x>_metrics.json` naming checkpoint `../outside` would have made the loader read
    `../outside_windows.parquet`; only the tag in the file's own name is used."""
    _, finished = baseline_run
    out = tmp_path / "eval"
    shutil.copytree(finished, out)
    summary = json.loads((out / "epoch_0001_metrics.json").read_text())
    outside = tmp_path / "outside_windows.parquet"
    pd.DataFrame({"checkpoint": ["../outside"], "metric_group": ["depth"]}).to_parquet(outside)
    (out / "evil_metrics.json").write_text(json.dumps(summary | {"checkpoint": "../outside"}))
    (out / "evil_windows.parquet").write_bytes((out / "epoch_0001_windows.parquet").read_bytes())
    rows, summaries = load_results(out)
    assert [s["checkpoint"] for s in summaries] == ["baseline", "epoch_0001"]
    assert "../outside" not in set(rows["checkpoint"])


@pytest.mark.fault("intact", "silent_wrong_output")
def test_damaged_and_orphaned_results_are_not_reported(shards, baseline_run, tmp_path):
    """A truncated summary is evaluated again; results of a checkpoint no longer in CKPT_DIR stay
    out of the report instead of being compared with the current ones."""
    run, finished = baseline_run
    out = tmp_path / "eval"
    shutil.copytree(finished, out)
    metrics = out / "epoch_0001_metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    for suffix in ("_metrics.json", "_windows.parquet"):  # an old checkpoint, since deleted
        shutil.copy(finished / f"epoch_0001{suffix}", out / f"epoch_0009{suffix}")
    payload = json.loads((out / "epoch_0009_metrics.json").read_text()) | {"checkpoint": "epoch_0009"}
    (out / "epoch_0009_metrics.json").write_text(json.dumps(payload))
    result, text = evaluate(run, shards, out)
    assert result.exit_code == 0, text
    assert json.loads(metrics.read_text())["checkpoint"] == "epoch_0001"
    assert list(pd.read_csv(out / "metrics_overall.csv")["checkpoint"]) == ["baseline", "epoch_0001"]
    assert "epoch_0009" not in (out / "report.md").read_text()


@pytest.mark.fault("intact", "silent_wrong_output")
def test_changed_shards_make_stored_results_stale(shards, baseline_run, tmp_path):
    """Rebuilt units (another config hash in their index file) are evaluated again."""
    import pyarrow.parquet as pq

    run, finished = baseline_run
    out, rebuilt = tmp_path / "eval", tmp_path / "shards"
    shutil.copytree(finished, out)
    shutil.copytree(shards, rebuilt)
    index_file = sorted((rebuilt / "index").glob("*.parquet"))[0]
    table = pq.read_table(index_file)
    pq.write_table(
        table.replace_schema_metadata(table.schema.metadata | {b"config_hash": b"rebuilt"}), index_file
    )
    before = (out / "baseline_metrics.json").stat().st_mtime_ns
    result, text = evaluate(run, rebuilt, out)
    assert result.exit_code == 0, text
    assert (out / "baseline_metrics.json").stat().st_mtime_ns > before


@pytest.mark.fault("intact", "silent_wrong_output")
def test_repeated_launches_give_identical_numbers(shards, baseline_run, tmp_path):
    """Every random step (subsamples, RANSAC, bootstrap, permutations) is seeded: a second launch
    into a fresh folder reproduces every window's numbers and every paired test."""
    run, first = baseline_run
    result, text = evaluate(run, shards, tmp_path / "eval")
    assert result.exit_code == 0, text
    for name in ("windows.parquet", "paired_vs_baseline.csv"):
        read = pd.read_parquet if name.endswith("parquet") else pd.read_csv
        pd.testing.assert_frame_equal(read(first / name), read(tmp_path / "eval" / name))
    overall = [
        pd.read_csv(d / "metrics_overall.csv").filter(regex="^(?!runtime)")
        for d in (first, tmp_path / "eval")
    ]
    pd.testing.assert_frame_equal(*overall)


@pytest.mark.fault("intact", "silent_wrong_output")
def test_window_rules_are_counted_in_the_report(baseline_run):
    _, out = baseline_run
    summary = json.loads((out / "baseline_metrics.json").read_text())["window_selection"]
    rows = pd.read_parquet(out / "windows.parquet")
    windows = rows[rows["checkpoint"] == "baseline"].groupby("window")
    posed = sum("pose" in set(g["metric_group"]) for _, g in windows)
    assert posed == summary["windows"] - summary["pose_skipped"]
    assert np.isfinite(rows["path_m"]).all()
    report = " ".join((out / "report.md").read_text().split())
    assert f"{summary['pose_skipped']} of {summary['windows']} windows move less than 1 m" in report
    assert "no window spans a gap of more than 3 frames" in report
