"""`vggt-eval` end to end on synthetic shards with the tiny model and two fake checkpoints:
outputs, resumability, broken adapters and `compare`. The oracle checks (GT under a random
similarity scores perfectly) live in test_eval_metrics.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from eval import pipeline
from eval.cli import app
from eval.predict import Predictor
from eval.results import load_results
from preprocess.driver import build
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from preprocess.synthetic import generate_synthetic_kitti360
from train.model import LoraSpec, apply_lora, build_base_model, save_adapter

ARGS = ["--model-size", "tiny", "--device", "cpu", "--seq-len", "4", "--seq-stride", "4", "--pointmap", "on"]
PLOTS = (
    "depth_vs_epoch.png", "pose_vs_epoch.png", "geometry_vs_epoch.png", "pointmap_vs_epoch.png",
    "building_vs_non_building.png", "error_vs_depth_bin.png", "summary_radar.png", "qualitative.png",
)  # fmt: skip


def fake_checkpoint(path: Path, scale: float, seed: int) -> Path:
    """A depth-head LoRA adapter on the same seeded base the evaluator builds, B weights perturbed."""
    model = apply_lora(build_base_model(size="tiny", seed=0, bf16=False), LoraSpec(rank=4, alpha=8))
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=gen) * scale
    return save_adapter(model, path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("eval")
    scene = generate_synthetic_kitti360(work / "scene", frames=10, seed=0, sequences=2)
    shards = work / "shards"
    config = Kitti360Config(depth=DepthSettings(accumulate=0), chunk_frames=16)
    build(Kitti360Source(scene.root, config, split="val"), shards, progress=False)
    run = work / "run"
    for epoch, scale in ((1, 0.02), (2, 0.1)):
        fake_checkpoint(run / "checkpoints" / f"epoch_{epoch:04d}", scale, seed=epoch)
    out = work / "eval"
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--shards", str(shards), "--out", str(out), *ARGS]
    )
    assert result.exit_code == 0, result.output
    return shards, run, out


def run_eval(run: Path, shards: Path, out: Path):
    return CliRunner().invoke(app, ["evaluate", str(run), "--shards", str(shards), "--out", str(out), *ARGS])


def test_outputs(setup):
    _, _, out = setup
    for name in ("windows.parquet", "metrics_overall.csv", "paired_vs_baseline.csv", "report.md", *PLOTS):
        assert (out / name).stat().st_size > 0, name
    overall = pd.read_csv(out / "metrics_overall.csv")
    assert list(overall["checkpoint"]) == ["baseline", "epoch_0001", "epoch_0002"]
    rows = pd.read_parquet(out / "windows.parquet")
    windows = rows.groupby("checkpoint")["window"].apply(lambda w: sorted(set(w)))
    assert windows["baseline"] == windows["epoch_0001"] == windows["epoch_0002"]
    assert set(rows["metric_group"]) == {"depth", "pose", "pointcloud", "geometry", "pointmap"}
    # the adapters touch only the depth head: depth and the geometry made from depth and cameras
    # move; poses and the point head's geometry do not
    for metric in (
        "depth/all/abs_rel", "geometry/normals/normal_median", "geometry/normals_all/normal_median",
        "geometry/planarity/planarity_mean", "pointcloud/all/chamfer",
    ):  # fmt: skip
        assert overall[metric].nunique() == 3, metric
    for metric in (
        "pose/pose/ate_rmse", "pointmap/normals/normal_median", "pointmap/planarity/planarity_mean",
        "pointmap/all/chamfer",
    ):  # fmt: skip
        assert overall[metric].nunique() == 1, metric
    paired = pd.read_csv(out / "paired_vs_baseline.csv")
    assert set(paired["checkpoint"]) == {"epoch_0001", "epoch_0002"}
    assert {"p_value", "p_adjusted", "adjustment", "verdict"} <= set(paired.columns)
    assert (paired["p_adjusted"] >= paired["p_value"]).all()
    summary = json.loads((out / "epoch_0001_metrics.json").read_text())
    assert summary["alignment"]["depth"] == "window"
    assert summary["alignment"]["geometry"] == "sim3_depth_cameras"
    assert set(summary["inputs"]) == {"code", "shards", "adapter"}
    report = (out / "report.md").read_text()
    assert "alignment" in report and "Holm-Bonferroni" in report
    assert "random init (seed 0)" in report and "None" not in report
    assert "no run config saved with the adapter" in report


def test_adapters_swap_without_touching_the_base(setup):
    _, run, _ = setup
    predictor = Predictor("tiny", None, "cpu", bf16=False)
    frames = np.random.default_rng(0).integers(0, 255, (2, 28, 56, 3), dtype=np.uint8)
    base = predictor.predict(frames).depth
    predictor.use_adapter(run / "checkpoints" / "epoch_0002")
    adapted = predictor.predict(frames).depth
    predictor.use_adapter(run / "checkpoints" / "epoch_0001")
    predictor.use_adapter(None)
    assert not np.allclose(adapted, base)
    np.testing.assert_array_equal(predictor.predict(frames).depth, base)


def test_resume_skips_finished_and_redoes_partial(setup, tmp_path):
    shards, run, finished_out = setup
    out = tmp_path / "eval"
    shutil.copytree(finished_out, out)
    done = {tag: (out / f"{tag}_metrics.json").stat().st_mtime_ns for tag in ("baseline", "epoch_0001")}
    # epoch_0002 crashed while writing its JSON: parquet and a temporary JSON are left behind
    stale_parquet = (out / "epoch_0002_windows.parquet").stat().st_mtime_ns
    (out / "epoch_0002_metrics.json").rename(out / "epoch_0002_metrics.json.tmp-99")
    assert [s["checkpoint"] for s in load_results(out)[1]] == ["baseline", "epoch_0001"]

    result = run_eval(run, shards, out)
    assert result.exit_code == 0, result.output
    assert {tag: (out / f"{tag}_metrics.json").stat().st_mtime_ns for tag in done} == done
    assert (out / "epoch_0002_metrics.json").is_file()
    assert (out / "epoch_0002_windows.parquet").stat().st_mtime_ns > stale_parquet
    assert not list(out.glob("*.tmp-*"))
    assert len(pd.read_csv(out / "metrics_overall.csv")) == 3


def test_broken_adapter_is_named(setup, tmp_path):
    shards, run, _ = setup
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    weights = broken / "checkpoints" / "epoch_0002" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    predictor = Predictor("tiny", None, "cpu", bf16=False)
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        predictor.use_adapter(weights.parent)
    result = run_eval(broken, shards, tmp_path / "eval")
    assert result.exit_code == 2
    assert "adapter_model.safetensors" in result.output.replace("\n", "")


def test_compare(setup, tmp_path):
    _, _, out = setup
    other = tmp_path / "other" / "eval"
    shutil.copytree(out, other)
    result = CliRunner().invoke(app, ["compare", str(out), str(other), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert len(table) == 2 and table["best_checkpoint"].nunique() == 1
    paired = pd.read_csv(tmp_path / "cmp" / "paired.csv")
    assert np.allclose(paired["diff_a_minus_b"], 0.0)
    assert (tmp_path / "cmp" / "comparison_curves.png").stat().st_size > 0


def test_results_made_with_other_settings_are_evaluated_again(setup, tmp_path):
    shards, run, finished_out = setup
    out = tmp_path / "eval"
    shutil.copytree(finished_out, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_metrics.json")}
    args = ["evaluate", str(run), "--shards", str(shards), "--out", str(out), *ARGS]
    args += ["--align", "frame_median"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name, mtime in before.items():
        summary = json.loads((out / name).read_text())
        assert (out / name).stat().st_mtime_ns > mtime, name
        assert summary["settings"]["align"] == summary["alignment"]["depth"] == "frame_median"


def test_changed_inputs_are_evaluated_again(setup, tmp_path, monkeypatch):
    """A retrained adapter under the same name, rebuilt shards or new metric code make stored
    results stale; nothing else is recomputed."""
    shards, run, finished_out = setup
    out, changed_run = tmp_path / "eval", tmp_path / "run"
    shutil.copytree(finished_out, out)
    shutil.copytree(run, changed_run)
    fake_checkpoint(changed_run / "checkpoints" / "epoch_0002", 0.05, seed=9)  # retrained
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_metrics.json")}
    result = run_eval(changed_run, shards, out)
    assert result.exit_code == 0, result.output
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*_metrics.json")}
    assert [n for n in before if after[n] != before[n]] == ["epoch_0002_metrics.json"]

    code = pipeline.code_version()
    monkeypatch.setattr(pipeline, "code_version", lambda: code + "-edited")
    result = run_eval(changed_run, shards, out)
    assert result.exit_code == 0, result.output
    assert all(p.stat().st_mtime_ns > after[p.name] for p in out.glob("*_metrics.json"))
    assert json.loads((out / "baseline_metrics.json").read_text())["inputs"]["code"] == code + "-edited"


def test_base_model_comes_from_the_run_config(tmp_path):
    from eval.base_model import resolve_base

    adapter = fake_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0001", 0.01, seed=1)
    (adapter / "config.yaml").write_text("model:\n  size: tiny\n  weights: null\nrun:\n  seed: 7\n")
    assert resolve_base([adapter], None, None, None) == ("tiny", None, 7)
    assert resolve_base([adapter], None, "/models/vggt", 3) == ("tiny", "/models/vggt", 3)
    assert resolve_base([], None, None, None) == ("1b", None, 0)
