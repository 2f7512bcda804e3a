"""`build` end to end: contract, splits, skips with reasons, bad inputs, resume after kill."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from preprocess.driver import build, unit_runs
from preprocess.errors import InputError
from preprocess.sources import UnitPlan
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from shards import ARRAY_NAMES, ImageSize, ShardStore
from shards.layout import INDEX_DIR

from .conftest import clone_tree, replace_file

FAST = Kitti360Config(depth=DepthSettings(accumulate=2), chunk_frames=16, static_clouds=False)


@pytest.fixture(scope="module")
def built(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    summary = build(Kitti360Source(synthetic.root, FAST), out, workers=1, progress=False)
    return out, summary


def test_contract_and_geometry(built):
    out, _ = built
    store = ShardStore(out)
    index = store.index
    assert set(index["dataset"]) == {"kitti360"}
    assert (index["height"] == 140).all() and (index["width"] == 518).all()
    assert index.duplicated(["sequence", "frame"]).sum() == 0
    row = index.iloc[len(index) // 2]
    frame = store.read(row["sequence"], int(row["frame"]))
    assert set(ARRAY_NAMES) | {"valid_mask"} == set(frame)
    assert frame["image"].shape == (140, 518, 3) and frame["image"].dtype == np.uint8
    # world points reproject to their own pixel centres at their stored depth
    valid = frame["valid_mask"]
    pts = frame["world_points"][valid].astype(np.float64)
    cam = pts @ frame["cam_from_world"][:3, :3].T + frame["cam_from_world"][:3, 3]
    uv = cam @ frame["intrinsics"].T
    rows, cols = np.nonzero(valid)
    np.testing.assert_allclose(uv[:, 0] / uv[:, 2], cols, atol=2e-3)
    np.testing.assert_allclose(uv[:, 1] / uv[:, 2], rows, atol=2e-3)
    np.testing.assert_allclose(cam[:, 2], frame["depth"][valid], rtol=1e-5)
    assert row["valid_points"] == valid.sum()
    if row["has_semantics"]:
        np.testing.assert_array_equal(frame["building_mask"], frame["semantic"] == 11)
        assert row["building_ratio"] == pytest.approx(frame["building_mask"].mean())


def test_splits_and_skips_are_recorded(built, synthetic):
    out, summary = built
    index = ShardStore(out).index
    names = sorted(index["sequence"].unique())
    assert set(index.loc[index["sequence"] == names[0], "split"]) == {"train"}
    assert set(index.loc[index["sequence"] == names[1], "split"]) == {"val"}
    assert (~index["has_semantics"]).any() and index.loc[
        ~index["has_semantics"], "building_ratio"
    ].isna().all()
    assert set(index.loc[~index["has_semantics"], "stratum"]) == {"unlabelled"}
    manifest = json.loads((out / "manifest.json").read_text())
    for name in names:
        entry = manifest["sequences"][f"kitti360/{name}"]
        reasons = set(entry["skipped"].values())
        assert "no pose in poses.txt" in reasons  # the synthetic scene leaves pose gaps
        assert entry["frames_written"] == (index["sequence"] == name).sum()
    assert manifest["configs"]["kitti360"]["depth"]["accumulate"] == 2


def test_rerun_skips_finished_units(built, synthetic):
    out, _ = built
    stamps = {p: p.stat().st_mtime_ns for p in (out / INDEX_DIR).glob("*.parquet")}
    build(Kitti360Source(synthetic.root, FAST), out, workers=1, progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / INDEX_DIR).glob("*.parquet")}


def _snapshot(out) -> tuple[pd.DataFrame, dict]:
    store = ShardStore(out)
    arrays = {
        (s, int(f)): store.read(s, int(f))
        for s, f in zip(store.index["sequence"], store.index["frame"], strict=True)
    }
    return store.index, arrays


def test_resume_after_kill_matches_clean_build(built, synthetic, tmp_path):
    clean_out, _ = built
    out = tmp_path / "killed"
    script = (
        "import sys; from preprocess.driver import build;"
        "from preprocess.sources.kitti360 import Kitti360Source; from tests.test_kitti360_build import FAST;"
        "build(Kitti360Source(sys.argv[1], FAST), sys.argv[2], progress=False)"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script, str(synthetic.root), str(out)], cwd=repo)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / INDEX_DIR).glob("*.parquet")):
        time.sleep(0.05)
    time.sleep(0.3)  # let it get into the middle of the next unit
    proc.kill()
    proc.wait()
    finished = len(list((out / INDEX_DIR).glob("*.parquet")))
    total = len(list((clean_out / INDEX_DIR).glob("*.parquet")))
    assert 0 < finished < total, "the kill should land between units"
    build(Kitti360Source(synthetic.root, FAST), out, workers=2, progress=False)
    index_a, arrays_a = _snapshot(clean_out)
    index_b, arrays_b = _snapshot(out)
    pd.testing.assert_frame_equal(index_a, index_b)
    for key, frame in arrays_a.items():
        for name, value in frame.items():
            np.testing.assert_array_equal(value, arrays_b[key][name], err_msg=f"{key} {name}")


def test_changed_config_rebuilds_and_force(built, synthetic, tmp_path):
    out = tmp_path / "out"
    build(Kitti360Source(synthetic.root, FAST, seqs="0000"), out, progress=False)
    first = ShardStore(out).index
    changed = Kitti360Config(depth=DepthSettings(accumulate=0), chunk_frames=16, static_clouds=False)
    build(Kitti360Source(synthetic.root, changed, seqs="0000"), out, progress=False)
    second = ShardStore(out).index
    assert len(first) == len(second) and (second["sweeps"] == 1).all()
    assert (second["valid_points"] < first["valid_points"]).all()


# ---- bad inputs -----------------------------------------------------------------------


def test_missing_calibration_key_names_file_and_key(synthetic, tmp_path):
    root = clone_tree(synthetic.root, tmp_path / "root")
    persp = root / "calibration" / "perspective.txt"
    text = "\n".join(l for l in persp.read_text().splitlines() if not l.startswith("P_rect_00"))
    replace_file(persp, text.encode())
    with pytest.raises(InputError, match=r"perspective\.txt.*P_rect_00"):
        build(Kitti360Source(root), tmp_path / "out", progress=False)


def test_nan_in_calibration_is_named(synthetic, tmp_path):
    root = clone_tree(synthetic.root, tmp_path / "root")
    velo = root / "calibration" / "calib_cam_to_velo.txt"
    values = velo.read_text().split()
    values[3] = "nan"
    replace_file(velo, " ".join(values).encode())
    with pytest.raises(InputError, match=r"calib_cam_to_velo\.txt.*NaN"):
        build(Kitti360Source(root), tmp_path / "out", progress=False)


def test_corrupt_frame_files_are_skipped_and_counted(synthetic, tmp_path):
    root = clone_tree(synthetic.root, tmp_path / "root")
    name = "2013_05_28_drive_0000_sync"
    out = tmp_path / "out"
    clean = build(Kitti360Source(synthetic.root, FAST, seqs="0000"), tmp_path / "clean", progress=False)
    posed = sorted(int(f) for f in ShardStore(tmp_path / "clean").index["frame"])
    bad_png, bad_bin = posed[5], posed[10]
    replace_file(root / "data_2d_raw" / name / "image_00" / "data_rect" / f"{bad_png:010d}.png", b"not a png")
    sweep = root / "data_3d_raw" / name / "velodyne_points" / "data" / f"{bad_bin:010d}.bin"
    replace_file(sweep, sweep.resolve().read_bytes()[:-6])
    summary = build(Kitti360Source(root, FAST, seqs="0000"), out, progress=False)
    skipped = summary["sequences"][f"kitti360/{name}"]["skipped"]
    assert "corrupt PNG" in skipped[str(bad_png)]
    assert "truncated sweep" in skipped[str(bad_bin)]
    written = summary["sequences"][f"kitti360/{name}"]["frames_written"]
    assert written == clean["sequences"][f"kitti360/{name}"]["frames_written"] - 2
    index = ShardStore(out).index
    assert bad_png not in set(index["frame"]) and bad_bin not in set(index["frame"])
    # neighbours of the broken sweep lose one sweep, nothing else
    neighbour = index.loc[index["frame"] == bad_bin + 1, "sweeps"].item()
    assert neighbour == ShardStore(tmp_path / "clean").index.set_index("frame").loc[bad_bin + 1, "sweeps"] - 1


def test_empty_sequence(synthetic, tmp_path):
    root = clone_tree(synthetic.root, tmp_path / "root")
    empty = root / "data_2d_raw" / "2013_05_28_drive_0009_sync" / "image_00" / "data_rect"
    empty.mkdir(parents=True)
    with pytest.raises(InputError, match="0009_sync has no images"):
        build(Kitti360Source(root, seqs="0009"), tmp_path / "a", progress=False)
    with pytest.raises(InputError, match="0009_sync has no images"):  # 'all' too: never silently dropped
        build(Kitti360Source(root, FAST, seqs="all"), tmp_path / "b", progress=False)
    skipping = Kitti360Source(root, FAST, seqs="all", skip_bad_sequences=True)
    summary = build(skipping, tmp_path / "b", progress=False)
    assert "no images" in summary["sequences"]["kitti360/2013_05_28_drive_0009_sync"]["error"]


def test_unknown_sequence_is_named(synthetic, tmp_path):
    with pytest.raises(InputError, match="0042"):
        build(Kitti360Source(synthetic.root, seqs="0042"), tmp_path / "out", progress=False)


def test_stats_cli_table_plots_and_sparse_warning(built, tmp_path):
    from typer.testing import CliRunner

    from preprocess.cli import app

    out, _ = built
    result = CliRunner().invoke(
        app, ["stats", str(out), "--plots", str(tmp_path), "--min-valid-points", "100000"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "building_rich" in text and "road" in text and "too sparse to supervise depth" in text
    for name in ("coverage_hist.png", "building_ratio_hist.png", "strata_counts.png", "samples.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_workers_take_runs_of_neighbouring_units():
    """Units go to workers in runs of consecutive units of one sequence (so that a worker's
    units share its prepared static windows), at most total frames / (4 * workers) frames
    each, largest first; every unit in exactly one run, in plan order within it."""
    size = ImageSize(height=4, width=8)

    def unit(sequence: str, first: int, count: int) -> UnitPlan:
        return UnitPlan(sequence, f"{first:010d}", size, {f: None for f in range(first, first + count)}, "h")

    units = (
        [unit("a", 16 * k, 16) for k in range(10)]
        + [unit("b", 16 * k, 16) for k in range(5)]
        + [unit("b", 80, 4)]
    )
    runs = unit_runs(units, workers=2)  # 244 frames: runs of at most 30
    assert [[u.name for u in run] for run in runs[:1]] == [["0000000064", "0000000080"]]  # 20 frames, first
    assert [len(run) for run in runs[1:]] == [1] * 14
    runs = unit_runs(units, workers=1)  # runs of at most 61 frames
    assert sorted((run[0].sequence, [u.name for u in run]) for run in runs) == sorted(
        [("a", [units[k].name for k in range(i, min(i + 3, 10))]) for i in range(0, 10, 3)]
        + [("b", [u.name for u in units[10:13]]), ("b", [u.name for u in units[13:16]])]
    )
    frames = [sum(len(u.frames) for u in run) for run in runs]
    assert frames == sorted(frames, reverse=True)
