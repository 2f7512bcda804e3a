"""The benchmark and measurement scripts stay importable and print their usage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_help(script):
    command = [sys.executable, str(script), "--help"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_bench_gpu_runs_on_cpu_with_the_tiny_model(tmp_path):
    """`make bench-gpu` measures on a GPU; --tiny checks every section end to end on CPU."""
    script = next(s for s in SCRIPTS if s.stem == "bench_gpu")
    figures = tmp_path / "figures.json"
    command = [
        sys.executable, str(script), "--tiny", "--scene-frames", "6", "--frames", "1", "--window", "2",
        "--batch", "1", "--repeats", "1", "--loader-windows", "2", "--json", str(figures),
        "--set", "data.overfit=true", "--set", "data.split=all",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(figures.read_text())
    assert [(r["size"], r["frames"]) for r in report["forward"]] == [("518x140", 1), ("518x518", 1)]
    steps = {(r["config"], r["activation_checkpointing"], r["heads"]) for r in report["step"]}
    assert steps == {
        ("strategy_a", False, "camera,depth"), ("strategy_a", True, "camera,depth"),
        ("strategy_b", False, "camera,depth"), ("strategy_b", True, "camera,depth"),
        ("strategy_b", True, "camera,depth,point"),
    }  # fmt: skip
    assert all(r["seconds"] > 0 for r in report["step"]) and report["loader"][0]["frames_per_s"] > 0
