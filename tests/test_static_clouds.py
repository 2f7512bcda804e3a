"""Static point clouds: the synthetic windows honour KITTI-360's PLY layout and the scene's
geometry; the reader rejects bad files by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from preprocess.driver import build
from preprocess.errors import InputError
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from preprocess.sources.kitti360.static_depth import StaticSettings, prepare_window
from preprocess.sources.kitti360.static_ply import (
    Window,
    list_windows,
    parse_window_name,
    read_static_ply,
    static_vertex_dtype,
    write_static_ply,
)
from preprocess.synthetic import load_gt_depth
from shards import ShardStore
from shards.layout import INDEX_DIR, parse_unit_name

from .conftest import clone_tree, replace_file
from .support.static_accuracy import built_accuracy
from .support.surfel_scene import build_every_patch
from .test_synth import SEQ0, _calibration, _frame_poses

HEADER = (
    b"ply\nformat binary_little_endian 1.0\nelement vertex {n}\nproperty float x\nproperty float y\n"
    b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
    b"property int semantic\nproperty int instance\nproperty uchar visible\nproperty float confidence\n"
    b"end_header\n"
)
RECORD = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
     ("semantic", "<i4"), ("instance", "<i4"), ("visible", "u1"), ("confidence", "<f4")]
)  # fmt: skip


def _raw_window(path) -> np.ndarray:
    """The vertices of a window read with plain NumPy against the documented layout."""
    data = path.read_bytes()
    n = int(data.split(b"element vertex ")[1].split(b"\n")[0])
    header = HEADER.replace(b"{n}", str(n).encode())
    assert data.startswith(header), "header differs from KITTI-360's layout"
    assert len(data) == len(header) + n * RECORD.itemsize
    return np.frombuffer(data, RECORD, offset=len(header))


def _windows(synthetic, seq):
    return sorted((synthetic.root / "data_3d_semantics" / "train" / seq / "static").glob("*.ply"))


def test_synthetic_windows_overlap_and_use_the_kitti360_layout(synthetic):
    for seq in synthetic.sequences:
        paths = _windows(synthetic, seq)
        assert len(paths) == 2
        (a0, a1), (b0, b1) = [tuple(int(v) for v in p.stem.split("_")) for p in paths]
        assert a0 == 0 and b0 < a1 < b1, "two windows that overlap"
        for path in paths:
            vertices = _raw_window(path)
            assert len(vertices) > 100_000
            assert set(np.unique(vertices["semantic"])) >= {7, 11}
            assert np.isfinite(vertices["confidence"]).all()


def test_cloud_points_lie_on_scene_surfaces_visible_or_not(synthetic):
    """Projected into a camera, no cloud point is in front of the visible surface; many lie on
    it, many behind it (hidden faces), and facades rise far above the Velodyne's reach."""
    calib = _calibration(synthetic.root)
    P = calib["P_rect"]
    poses = _frame_poses(synthetic.gt_root / SEQ0 / "cam0_to_world.txt")
    vertices = _raw_window(_windows(synthetic, SEQ0)[0])
    world = np.column_stack([vertices["x"], vertices["y"], vertices["z"]]).astype(np.float64)
    building = vertices["semantic"] == 11
    assert world[building, 2].max() > 12.0, "upper facades are in the cloud"
    frame = 10
    gt = load_gt_depth(synthetic.gt_root, SEQ0, frame)
    cam_from_world = np.linalg.inv(poses[frame])
    cam = world @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    cam = cam[cam[:, 2] > 1.0]
    uv = cam @ P[:, :3].T
    u, v = np.rint(uv[:, 0] / uv[:, 2]).astype(int), np.rint(uv[:, 1] / uv[:, 2]).astype(int)
    inside = (u >= 1) & (u < gt.shape[1] - 1) & (v >= 1) & (v < gt.shape[0] - 1)
    z, u, v = cam[inside, 2], u[inside], v[inside]
    # the nearest GT depth around the landing pixel bounds a point on a visible surface
    around = np.min([gt[v + di, u + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)], axis=0)
    hit = around > 0
    rel = (z[hit] - around[hit]) / around[hit]
    assert (rel < -0.02).mean() < 0.001, "points in front of the visible surface"
    assert (np.abs(rel) < 0.02).mean() > 0.05 and (rel > 0.1).mean() > 0.3


# ---- reader ---------------------------------------------------------------------------


def _write(path, vertices, header=None):
    if header is None:
        write_static_ply(path, vertices)
    else:
        path.write_bytes(header + vertices.tobytes())
    return path


def _vertices(n=10):
    v = np.zeros(n, static_vertex_dtype())
    v["x"], v["y"], v["z"], v["semantic"] = np.arange(n), 1.0, 2.0, 11
    return v


def test_reader_round_trip_and_nonfinite_points(tmp_path):
    v = _vertices()
    v["x"][3], v["z"][7] = np.nan, np.inf
    v["semantic"][0], v["semantic"][1] = -1, 300  # clipped to uint8, as the 2D labels are
    cloud = read_static_ply(_write(tmp_path / "0000000001_0000000050.ply", v))
    assert cloud.nonfinite_dropped == 2 and len(cloud.points) == 8
    np.testing.assert_array_equal(cloud.points[:, 0], [0, 1, 2, 4, 5, 6, 8, 9])
    assert cloud.semantic.dtype == np.uint8
    np.testing.assert_array_equal(cloud.semantic, [0, 255, 11, 11, 11, 11, 11, 11])


def test_reader_maps_the_rows_of_a_finite_window(tmp_path):
    """Every point finite: the points are the file's rows, mapped read-only, not a copy."""
    v = _vertices()
    v["semantic"][0], v["semantic"][1] = -1, 300
    cloud = read_static_ply(_write(tmp_path / "0000000001_0000000050.ply", v))
    assert cloud.nonfinite_dropped == 0 and not cloud.points.flags.writeable
    assert not cloud.points.flags.owndata and cloud.points.strides == (RECORD.itemsize, 4)
    np.testing.assert_array_equal(cloud.points, np.column_stack([v["x"], v["y"], v["z"]]))
    np.testing.assert_array_equal(cloud.semantic, [0, 255] + [11] * 8)


def test_a_window_prepares_alike_from_mapped_or_unpacked_rows(tmp_path, synthetic):
    """A non-finite point makes the reader unpack the rows instead of mapping them: dropped,
    it leaves the same prepared window, down to its patches and discs."""
    vertices = _raw_window(_windows(synthetic, SEQ0)[0])
    spoiled = np.concatenate([vertices[:1000], vertices[:1], vertices[1000:]])
    spoiled["y"][1000] = np.nan
    mapped = prepare_window(Window(_write(tmp_path / "a.ply", vertices), 0, 9), StaticSettings())
    unpacked = prepare_window(Window(_write(tmp_path / "b.ply", spoiled), 0, 9), StaticSettings())
    assert (mapped.nonfinite_dropped, unpacked.nonfinite_dropped) == (0, 1)
    assert len(mapped.patches[1]) > 10 and len(mapped.disc_ids) > 10
    for prepared in (mapped, unpacked):
        build_every_patch(prepared)
    pairs = [(mapped.points, unpacked.points), (mapped.labels, unpacked.labels)]
    pairs += [(mapped.disc_ids, unpacked.disc_ids), *zip(mapped.patches, unpacked.patches, strict=True)]
    for a, b in pairs + list(zip(mapped.fine[:5], unpacked.fine[:5], strict=True)):
        np.testing.assert_array_equal(a, b)


# a build worker in a fresh interpreter: every kernel signature its frames need is compiled
# (or loaded) by the warm-up, before the first frame; none is left for the first window
WARMED_BUILD = """
import sys
from pathlib import Path
import numba
import preprocess.worker_warmup
from preprocess.driver import build
from preprocess.sources.kitti360 import Kitti360Config, Kitti360Source

def signatures():
    return {
        (module, name): len(kernel.signatures)
        for module, loaded in list(sys.modules.items()) if module.startswith("preprocess")
        for name, kernel in vars(loaded).items() if isinstance(kernel, numba.core.registry.CPUDispatcher)
    }

warmed = signatures()
config = Kitti360Config(static_clouds=True)
build(Kitti360Source(Path(sys.argv[1]), config, seqs="0000"), Path(sys.argv[2]), workers=1, progress=False)
print({key: count for key, count in signatures().items() if count != warmed.get(key)})
"""


def test_worker_warmup_compiles_what_a_clouds_build_runs(synthetic, tmp_path):
    """Both reader paths are warmed: the strided rows mapped from a window file are typed
    apart from an unpacked array (a one-row view of them would be contiguous)."""
    result = subprocess.run(
        [sys.executable, "-c", WARMED_BUILD, str(synthetic.root), str(tmp_path / "out")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert result.stdout.strip().splitlines()[-1] == "{}"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"ply\nformat ascii 1.0\nelement vertex 10\nend_header\n", "malformed PLY header"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n", "malformed PLY header"),
        (b"plx\n", "malformed PLY header"),
        (HEADER.replace(b"{n}", b"10").replace(b"property int semantic\n", b""), "lacks required .*semantic"),
        (HEADER.replace(b"{n}", b"11"), "short file"),
    ],
)  # fmt: skip
def test_reader_names_the_file_and_the_problem(tmp_path, header, message):
    path = _write(tmp_path / "0000000001_0000000050.ply", _vertices(), header)
    with pytest.raises(InputError, match=message) as err:
        read_static_ply(path)
    assert str(path) in str(err.value)


def test_window_names_must_parse(tmp_path):
    assert parse_window_name(tmp_path / "0000000002_0000000385.ply").end == 385
    for bad in ("0000000002-0000000385.ply", "static.ply", "0000000400_0000000300.ply"):
        with pytest.raises(InputError, match=bad):
            parse_window_name(tmp_path / bad)
    (tmp_path / "0000000300_0000000500.ply").touch()
    (tmp_path / "0000000002_0000000385.ply").touch()
    assert [w.start for w in list_windows(tmp_path)] == [2, 300]


# ---- builds with clouds ---------------------------------------------------------------

CLOUDS = Kitti360Config(depth=DepthSettings(accumulate=4), chunk_frames=16, static_clouds=True)
LIDAR = replace(CLOUDS, static_clouds=False)


@pytest.fixture(scope="module")
def builds(synthetic, tmp_path_factory):
    """Sequence 0000 built with and without clouds at width 518, and with clouds at native size."""
    base = tmp_path_factory.mktemp("static_builds")
    configs = {"lidar": LIDAR, "clouds": CLOUDS, "clouds_native": replace(CLOUDS, width=None)}
    for name, config in configs.items():
        build(Kitti360Source(synthetic.root, config, seqs="0000"), base / name, progress=False)
    return {name: base / name for name in configs}


def test_clouds_are_accurate_and_cover_buildings(builds, synthetic):
    """The issue's bar on exact GT: < 1.5% of depth pixels > 5% off at 518 and native; building
    coverage >= 45% and >= 2x LiDAR-only; top-third building coverage >= 25%."""
    frames = len(list((synthetic.root / "data_2d_raw" / SEQ0 / "image_00" / "data_rect").glob("*.png")))
    figures = {name: built_accuracy(out, frames) for name, out in builds.items()}
    for name, acc in figures.items():
        print(f"{name:14s} {acc.line()}")
    lidar, clouds = figures["lidar"], figures["clouds"]
    assert clouds.outlier_share < 0.015 and figures["clouds_native"].outlier_share < 0.015
    assert clouds.building_coverage >= 0.45 and clouds.building_coverage >= 2 * lidar.building_coverage
    assert figures["clouds_native"].building_coverage >= 0.45
    assert clouds.top_building_coverage >= 0.25 and lidar.top_building_coverage < 0.01


def test_index_and_manifest_say_what_the_clouds_gave(builds):
    out = builds["clouds"]
    index = ShardStore(out).index
    assert set(index["depth_source"]) == {"lidar+static"} and (index["static_points"] > 0).all()
    lidar = ShardStore(builds["lidar"]).index
    assert set(lidar["depth_source"]) == {"lidar"} and (lidar["static_points"] == 0).all()
    store = ShardStore(out)
    row = index[index["has_semantics"]].iloc[3]
    frame = store.read(row["sequence"], int(row["frame"]))
    mask, valid = frame["building_mask"], frame["valid_mask"]
    assert row["building_depth_coverage"] == pytest.approx((mask & valid).sum() / mask.sum())
    third = mask.shape[0] // 3
    top = (mask[:third] & valid[:third]).sum() / mask[:third].sum()
    assert row["top_building_depth_coverage"] == pytest.approx(top)
    assert index.loc[~index["has_semantics"], "building_depth_coverage"].isna().all()
    entry = json.loads((out / "manifest.json").read_text())["sequences"][f"kitti360/{SEQ0}"]
    assert len(entry["static_windows"]) == 2
    assert not any("static-cloud" in what for what in entry["dropped"])


def test_clouds_off_leaves_lidar_build_unchanged(builds, synthetic, tmp_path):
    """--no-static-clouds builds exactly what a tree without clouds builds."""
    root = clone_tree(synthetic.root, tmp_path / "root")
    shutil.rmtree(root / "data_3d_semantics" / "train" / SEQ0 / "static")
    build(
        Kitti360Source(root, replace(LIDAR, static_clouds=None), seqs="0000"),
        tmp_path / "out",
        progress=False,
    )
    a, b = ShardStore(builds["lidar"]), ShardStore(tmp_path / "out")
    pd.testing.assert_frame_equal(a.index, b.index)
    for seq, f in zip(a.index["sequence"], a.index["frame"], strict=True):
        for name, value in a.read(seq, int(f)).items():
            np.testing.assert_array_equal(value, b.read(seq, int(f))[name], err_msg=name)
    with pytest.raises(InputError, match=r"static.*no static-cloud folder"):
        build(Kitti360Source(root, CLOUDS, seqs="0000"), tmp_path / "again", progress=False)


def test_resume_and_changed_window_rebuild_only_their_units(synthetic, tmp_path):
    root = clone_tree(synthetic.root, tmp_path / "root")
    config = replace(CLOUDS, depth=DepthSettings(accumulate=1))
    out = tmp_path / "out"
    build(Kitti360Source(root, config, seqs="0000"), out, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / INDEX_DIR).glob("*.parquet")}
    build(Kitti360Source(root, config, seqs="0000"), out, progress=False)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / INDEX_DIR).glob("*.parquet")}
    # the second window starts inside the first unit only if it overlaps it; NaN points are counted
    windows = _windows(synthetic, SEQ0)
    vertices = _raw_window(windows[1]).copy()
    vertices["x"][:5] = np.nan
    replace_file(root / "data_3d_semantics" / "train" / SEQ0 / "static" / windows[1].name, _header(vertices))
    summary = build(Kitti360Source(root, config, seqs="0000"), out, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / INDEX_DIR).glob("*.parquet")}
    start = int(windows[1].stem.split("_")[0])
    for name, stamp in stamps.items():
        unit_start = int(parse_unit_name(name.removesuffix(".parquet"))[2])
        uses = unit_start + config.chunk_frames > start
        assert (after[name] != stamp) == uses, name
    dropped = summary["sequences"][f"kitti360/{SEQ0}"]["dropped"]
    assert dropped[f"non-finite static-cloud points ({windows[1].name})"] == {str(start): 5}
    forced = build(Kitti360Source(root, config, seqs="0000"), out, progress=False, force=True)
    assert forced["frames_written"] == summary["frames_written"]
    assert all(p.stat().st_mtime_ns != after[p.name] for p in (out / INDEX_DIR).glob("*.parquet"))


def test_bad_window_name_is_named(synthetic, tmp_path):
    root = clone_tree(synthetic.root, tmp_path / "root")
    (root / "data_3d_semantics" / "train" / SEQ0 / "static" / "window_a.ply").write_bytes(b"")
    with pytest.raises(InputError, match="window_a.ply"):
        build(Kitti360Source(root, CLOUDS, seqs="0000"), tmp_path / "out", progress=False)


def _header(vertices: np.ndarray) -> bytes:
    return HEADER.replace(b"{n}", str(len(vertices)).encode()) + vertices.tobytes()


def test_stats_show_building_coverage_per_source(builds, synthetic, tmp_path):
    from typer.testing import CliRunner

    from preprocess.cli import app

    out = tmp_path / "both"
    shutil.copytree(builds["clouds"], out)
    build(Kitti360Source(synthetic.root, LIDAR, seqs="0002"), out, progress=False)
    result = CliRunner().invoke(app, ["stats", str(out), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "building pixels with depth" in text and "lidar+static" in text and " lidar " in text
    assert (tmp_path / "plots" / "building_coverage.png").stat().st_size > 1000


@pytest.mark.parametrize("aside_share", [0.0, 0.6])
def test_detail_levels_nest_and_keep_one_point_per_cube(aside_share):
    """Each level is a prefix of its cell's drawn points, holds one point per cube of its side
    (every occupied cube represented) and lies inside the next finer level; points set aside
    (on a planar patch) are in no level."""
    from preprocess.sources.kitti360.static_depth import detail_sizes
    from preprocess.surfels import detail_levels

    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(0, 2, 4000), rng.uniform(0, 2, 4000), np.zeros(4000)])
    points = points.astype(np.float32)
    aside = rng.uniform(size=4000) < aside_share
    starts = np.array([0, 1500, 4000])
    sizes = detail_sizes(0.03, 0.5)
    order, drawn_starts, ends = detail_levels(points, starts, sizes, aside)
    assert np.array_equal(np.sort(order), np.flatnonzero(~aside)) and len(sizes) == 5
    for cell in range(2):
        members = np.arange(starts[cell], starts[cell + 1])
        drawn = order[drawn_starts[cell] : drawn_starts[cell + 1]]
        assert ends[cell, 0] == drawn_starts[cell + 1]
        assert np.array_equal(np.sort(drawn), members[~aside[members]])
        lo = points[members].min(axis=0)  # cubes from the lowest corner of all the cell's points
        previous = set(drawn)
        for level in range(1, len(sizes)):
            kept = order[drawn_starts[cell] : ends[cell, level]]
            cubes = np.floor((points[kept] - lo) / sizes[level]).astype(int)
            assert len({tuple(c) for c in cubes}) == len(kept)  # one per cube
            occupied = {tuple(c) for c in np.floor((points[drawn] - lo) / sizes[level]).astype(int)}
            assert len(occupied) == len(kept)  # every cube with a drawn point represented
            assert set(kept) <= previous
            previous = set(kept)


class _WindowLabels:
    """What check_labels reads of a prepared window: its points' labels, by id."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)


def test_label_check_and_merge_follow_their_rules():
    """check_labels and merge_depth (one-pass kernels) against the rules written in NumPy:
    a pixel whose winner's 3D label is not in the 2D label's group, or whose 2D label may
    move, loses its cloud depth; the merge keeps agreeing or lone depths, drops disagreeing
    ones, and counts the distinct cloud points it used."""
    from preprocess.kernels import label_lut
    from preprocess.sources.kitti360.static_depth import (
        CloudDepth,
        StaticSettings,
        check_labels,
        label_agreement,
        merge_depth,
    )

    rng = np.random.default_rng(3)
    shape, settings, dynamic = (40, 60), StaticSettings(), label_lut((26,))
    windows = [_WindowLabels(rng.choice([6, 7, 11, 26], 2_000_000).astype(np.uint8)) for _ in range(2)]
    depth = np.where(rng.uniform(size=shape) < 0.8, rng.uniform(2, 40, shape), 0).astype(np.float32)
    winner = np.repeat(
        rng.integers(0, 4_000_000, (shape[0], shape[1] // 3)), 3, axis=1
    )  # runs, as on a surface
    winner[depth == 0] = -1
    semantic = rng.choice([6, 8, 11, 26], shape).astype(np.uint8)
    factor = rng.choice([1.0, 1.01, 1.2, 0.5], shape)
    lidar = np.where(rng.uniform(size=shape) < 0.5, depth * factor, rng.uniform(0, 40, shape)).astype(
        np.float32
    )
    lidar[rng.uniform(size=shape) < 0.3] = 0.0

    cloud = CloudDepth(depth.copy(), winner.copy())
    check_labels(cloud, windows, semantic, settings, dynamic)
    merged, used = merge_depth(lidar, cloud, settings.merge_rel_tol)

    group, labels = label_agreement(settings), np.concatenate([w.labels for w in windows])
    has = winner >= 0
    bad = np.zeros(shape, bool)
    bad[has] = (group[labels[winner[has]]] != group[semantic[has]]) | dynamic[semantic[has]]
    kept = np.where(bad, 0.0, depth).astype(np.float32)
    np.testing.assert_array_equal(cloud.depth, kept)
    np.testing.assert_array_equal(cloud.winner, np.where(bad, -1, winner))
    assert 0 < bad.sum() < has.sum()
    both = (lidar > 0) & (kept > 0)
    disagree = both & (np.abs(kept - lidar) > np.float32(settings.merge_rel_tol) * np.minimum(kept, lidar))
    use_cloud = (kept > 0) & ~disagree
    expected = np.where(use_cloud, kept, lidar).astype(np.float32)
    expected[disagree] = 0.0
    np.testing.assert_array_equal(merged, expected)
    assert used == len(np.unique(winner[use_cloud])) and 0 < disagree.sum() < both.sum()
