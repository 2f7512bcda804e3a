"""Fault cases of build processes: a second build on a locked output root is refused naming
the holder's pid; a kill -9 of a `--workers 2` build leaves no process behind and a rerun
resumes to arrays identical to a clean build.

Cases are marked `fault(outcome, harm)` as described in tests/faults/README.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.driver import build
from preprocess.lifetime import LOCK_NAME, build_lock
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from shards import ARRAY_NAMES, ShardStore
from shards.layout import INDEX_DIR

# one frame per unit and full-width, 9-sweep depth: slow enough to be killed mid-build
KILLABLE = Kitti360Config(depth=DepthSettings(accumulate=4), width=518, chunk_frames=1)
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.fault("named_error", "data_loss")
def test_second_build_is_refused_naming_the_holder(tiny_scene, tmp_path):
    out = tmp_path / "out"
    with build_lock(out):
        args = ["build", "--root", str(tiny_scene.root), "--out", str(out), "--width", "140"]
        result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert f"another build (pid {os.getpid()})" in text
    assert not (out / INDEX_DIR).exists()  # nothing was written by the refused build


@pytest.mark.fault("named_error", "data_loss")
def test_two_builds_on_one_root_one_refused_the_other_complete(tiny_scene, tmp_path):
    """The probe's case: a second build started while another writes to the same --out."""
    out = tmp_path / "out"
    args = ["build", "--root", str(tiny_scene.root), "--out", str(out), "--seqs", "0000"]
    args += ["--chunk-frames", "1"]
    first = subprocess.Popen(
        [sys.executable, "-m", "preprocess.cli", *args], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lock, deadline = out / LOCK_NAME, time.time() + 120
    while time.time() < deadline and first.poll() is None and not (lock.is_file() and lock.read_text()):
        time.sleep(0.01)
    second = CliRunner().invoke(app, args)  # in this process: no start-up delay
    assert first.wait(timeout=300) == 0
    text = " ".join(second.output.split())
    assert second.exit_code == 2 and f"another build (pid {first.pid})" in text, text
    verified = CliRunner().invoke(app, ["verify", str(out)])
    assert verified.exit_code == 0, verified.output


@pytest.mark.fault("intact", "data_loss")
def test_stale_lock_file_of_a_dead_build_does_not_block(tiny_scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("999999\n")  # left by a killed build: no one holds the lock
    summary = build(Kitti360Source(tiny_scene.root, KILLABLE, seqs="0000", split="all"), out, progress=False)
    assert summary["frames_written"] > 0


def descendants(pid: int) -> set[int]:
    """Live processes below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def snapshot(out: Path) -> tuple[pd.DataFrame, dict]:
    store = ShardStore(out)
    index = store.index.drop(columns=["shard", "row"])
    keys = zip(store.index["sequence"], store.index["frame"], strict=True)
    arrays = {int(f): store.read(s, int(f)) for s, f in keys}
    return index, arrays


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.fault("intact", "data_loss")
def test_kill_9_of_a_two_worker_build_leaves_no_process_and_resumes(tiny_scene, tmp_path):
    out = tmp_path / "killed"
    command = [
        sys.executable, "-m", "preprocess.cli", "build", "--root", str(tiny_scene.root), "--out", str(out),
        "--seqs", "0000", "--workers", "2", "--chunk-frames", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: set[int] = set()
    while time.time() < deadline and not list((out / INDEX_DIR).glob("*.parquet")):
        workers |= descendants(proc.pid)
        time.sleep(0.02)
    workers |= descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(workers) >= 3, "expected a forkserver and two workers"  # (and a resource tracker)
    deadline = time.time() + 20
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)], "processes of the killed build still run"
    finished = len(list((out / INDEX_DIR).glob("*.parquet")))
    build(Kitti360Source(tiny_scene.root, KILLABLE, seqs="0000"), out, workers=2, progress=False)
    assert finished < len(list((out / INDEX_DIR).glob("*.parquet"))), "the kill should land mid-build"
    clean = tmp_path / "clean"
    build(Kitti360Source(tiny_scene.root, KILLABLE, seqs="0000"), clean, progress=False)
    index_a, arrays_a = snapshot(clean)
    index_b, arrays_b = snapshot(out)
    pd.testing.assert_frame_equal(index_a, index_b)
    for frame, sample in arrays_a.items():
        for name in ARRAY_NAMES:
            np.testing.assert_array_equal(sample[name], arrays_b[frame][name], err_msg=f"{frame} {name}")
