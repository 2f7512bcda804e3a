"""`kitti360-prep colmap` against exact geometry: a COLMAP model of the synthetic scene (text
and binary), occlusion masks, distorted and unsupported cameras, missing images, and the
dense-GT path on real HoloLens frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.driver import build
from preprocess.errors import InputError
from preprocess.sources.colmap import ColmapConfig, ColmapScene, ColmapSource
from preprocess.sources.colmap.reader import PIXEL_CENTRE
from preprocess.synthetic import load_gt_depth
from shards import ShardStore
from shards.layout import INDEX_DIR

from .conftest import clone_tree
from .support.synthetic_colmap import SyntheticModel, synthetic_colmap_model

FRAMES = list(range(1, 13))
SOURCES = [2, 6, 10]
NATIVE = ColmapConfig(width=None)
HOLOLENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hololens-000"


@pytest.fixture(scope="module")
def model(synthetic, tmp_path_factory) -> SyntheticModel:
    out = tmp_path_factory.mktemp("colmap_model")
    m = synthetic_colmap_model(synthetic, synthetic.sequences[0], FRAMES, SOURCES, 6, out / "text")
    (out / "binary").mkdir()
    pycolmap.Reconstruction(m.model).write_binary(out / "binary")
    return m


@pytest.fixture(scope="module")
def native(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("colmap_native")
    build(ColmapSource(ColmapScene("syn", model.model, model.images), NATIVE), out, progress=False)
    return out


def _exact_pixels(model: SyntheticModel, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of image k hit by exactly one tracked point, that point being sampled at one of
    this image's pixel centres (so its depth there is the GT depth)."""
    hits: dict[tuple[int, int], int] = {}
    for track in model.tracks:
        for image, u, v in track:
            if image == k:
                key = (int(np.floor(v + 0.5)), int(np.floor(u + 0.5)))
                hits[key] = hits.get(key, 0) + 1
    own = {
        (int(round(v)), int(round(u)))
        for track in model.tracks
        for image, u, v in track
        if image == k and abs(u - round(u)) < 1e-6 and abs(v - round(v)) < 1e-6
    }
    pixels = [p for p in own if hits[p] == 1]
    return np.array([p[0] for p in pixels]), np.array([p[1] for p in pixels])


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_sparse_depth_is_exact_at_native_resolution(model, synthetic, tmp_path, fmt):
    out = tmp_path / "out"
    model_dir = model.model.parent / fmt
    summary = build(ColmapSource(ColmapScene("syn", model_dir, model.images), NATIVE), out, progress=False)
    assert summary["frames_written"] == len(FRAMES) and not summary["skipped"]
    store = ShardStore(out)
    index = store.index
    assert set(index["dataset"]) == {"colmap"} and set(index["sequence"]) == {"syn"}
    assert set(index["depth_source"]) == {"colmap_sparse"} and set(index["stratum"]) == {"unlabelled"}
    assert index["building_ratio"].isna().all() and (~index["has_semantics"]).all()
    k = FRAMES.index(6)
    frame = store.read("syn", k)
    # OpenCV intrinsics: COLMAP's principal point (K + 0.5) was converted back
    np.testing.assert_allclose(frame["intrinsics"], model.K, atol=1e-9)
    np.testing.assert_allclose(frame["cam_from_world"], model.cam_from_world[k], atol=1e-9)
    assert frame["building_mask"].all()
    rows, cols = _exact_pixels(model, k)
    assert len(rows) > 5000
    gt = load_gt_depth(synthetic.gt_root, synthetic.sequences[0], 6)
    rel = np.abs(frame["depth"][rows, cols] - gt[rows, cols]) / gt[rows, cols]
    assert rel.max() < 1e-4
    assert int(index.loc[index["frame"] == k, "valid_points"].iloc[0]) == frame["valid_mask"].sum()


def test_occlusion_masks_remove_pixels(model, native, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((376, 1408), np.uint8)
    mask[100:200, 300:600] = 1  # occluded
    mask[200:300, 700:900] = 2  # undefined
    for frame in FRAMES:
        cv2.imwrite(str(masks / f"{frame:010d}.png"), mask if frame == 6 else np.zeros_like(mask))
    out = tmp_path / "out"
    scene = ColmapScene("syn", model.model, model.images, masks=masks)
    build(ColmapSource(scene, NATIVE), out, progress=False)
    k = FRAMES.index(6)
    masked = ShardStore(out).read("syn", k)["depth"]
    plain = ShardStore(native).read("syn", k)["depth"]
    assert (plain[mask != 0] > 0).sum() > 1000
    assert not (masked[mask != 0] > 0).any()
    np.testing.assert_array_equal(masked[mask == 0], plain[mask == 0])


def test_unsupported_camera_is_rejected(model, tmp_path):
    bad = clone_tree(model.model, tmp_path / "model")
    (bad / "cameras.txt").unlink()
    (bad / "cameras.txt").write_text("1 EQUIRECTANGULAR 1408 376 1408 376\n")
    with pytest.raises(InputError, match=r"EQUIRECTANGULAR.*not perspective") as err:
        build(ColmapSource(ColmapScene("syn", bad, model.images), NATIVE), tmp_path / "out", progress=False)
    assert "0000000001.png" in str(err.value)


def test_distorted_camera_is_undistorted_consistently(model, synthetic, tmp_path):
    """Dense depth written in a distorted OPENCV camera comes back, after undistortion, as
    the GT depth of the pinhole view it was made from."""
    fx, fy, cx, cy = model.K[0, 0], model.K[1, 1], model.K[0, 2] + PIXEL_CENTRE, model.K[1, 2] + PIXEL_CENTRE
    params = [fx, fy, cx, cy, -0.08, 0.01, 0.001, -0.001]
    distorted = pycolmap.Camera.create_from_model_name(1, "OPENCV", fx, 1408, 376)
    distorted.params = params
    bent = clone_tree(model.model, tmp_path / "model")
    (bent / "cameras.txt").unlink()
    (bent / "cameras.txt").write_text(f"1 OPENCV 1408 376 {' '.join(f'{p:.17g}' for p in params)}\n")
    # the distorted depth file: each pixel centre's ray looked up (nearest) in the pinhole GT
    jj, ii = np.meshgrid(np.arange(1408), np.arange(376))
    rays = distorted.cam_from_img(np.stack([jj.ravel(), ii.ravel()], 1).astype(float) + PIXEL_CENTRE)
    u, v = rays[:, 0] * fx + model.K[0, 2], rays[:, 1] * fy + model.K[1, 2]
    depth_dir = tmp_path / "depth"
    depth_dir.mkdir()
    for frame in (5, 6):
        gt = load_gt_depth(synthetic.gt_root, synthetic.sequences[0], frame)
        raw = cv2.remap(gt, u.reshape(376, 1408).astype(np.float32), v.reshape(376, 1408).astype(np.float32),
                        cv2.INTER_NEAREST, borderValue=0)  # fmt: skip
        raw.astype("<f4").tofile(depth_dir / f"{frame:010d}.raw")
    source = ColmapSource(ColmapScene("bent", bent, model.images, depth=depth_dir), NATIVE)
    out = tmp_path / "out"
    summary = build(source, out, progress=False)
    assert summary["frames_written"] == 2 and "no depth" in next(iter(summary["skipped"].values()))
    frame = ShardStore(out).read("bent", FRAMES.index(6))
    K_u = frame["intrinsics"]
    gt = load_gt_depth(synthetic.gt_root, synthetic.sequences[0], 6)
    rows, cols = np.nonzero(frame["valid_mask"])
    x = (cols - K_u[0, 2]) / K_u[0, 0] * model.K[0, 0] + model.K[0, 2]
    y = (rows - K_u[1, 2]) / K_u[1, 1] * model.K[1, 1] + model.K[1, 2]
    inside = (x > -0.5) & (x < 1407.5) & (y > -0.5) & (y < 375.5)
    expected = gt[np.rint(y[inside]).astype(int), np.rint(x[inside]).astype(int)]
    rel = np.abs(frame["depth"][rows[inside], cols[inside]] - expected) / np.maximum(expected, 1e-6)
    assert inside.mean() > 0.95 and frame["valid_mask"].mean() > 0.5
    assert np.median(rel) < 1e-3 and (rel < 0.02).mean() > 0.97


def test_missing_images_are_counted_and_skipped_and_stats_warn(model, tmp_path):
    images = clone_tree(model.images, tmp_path / "images")
    for frame in (3, 7):
        (images / f"{frame:010d}.png").unlink()
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["colmap", "--model", str(model.model), "--images", str(images), "--name", "syn",
            "--out", str(out), "--width", "518", "--split", "val"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 10 frames" in result.output and "2 skipped" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["sequences"]["colmap/syn"]
    skipped = {entry["frames"][f]: reason for f, reason in entry["skipped"].items()}
    assert set(skipped) == {"0000000003.png", "0000000007.png"}
    assert all("no image file" in r for r in skipped.values())
    index = ShardStore(out).index
    assert len(index) == 10 and set(index["split"]) == {"val"} and (index["width"] == 518).all()
    stamps = {p: p.stat().st_mtime_ns for p in (out / INDEX_DIR).glob("*.parquet")}
    assert runner.invoke(app, args).exit_code == 0  # resume: nothing rebuilt
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / INDEX_DIR).glob("*.parquet")}
    stats = runner.invoke(app, ["stats", str(out), "--min-valid-points", "100000"])
    assert stats.exit_code == 0, stats.output
    assert "colmap/syn" in stats.output and "warning" in stats.output


@pytest.mark.skipif(not HOLOLENS.is_dir(), reason="shared hololens-000 data not present")
def test_dense_depth_from_real_hololens_frames(tmp_path):
    K = np.loadtxt(HOLOLENS / "K.txt").reshape(3, 3)
    poses = np.loadtxt(HOLOLENS / "poses.txt").reshape(-1, 4, 4)
    names = sorted(p.name for p in (HOLOLENS / "images").glob("*.png"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "cameras.txt").write_text(
        f"1 PINHOLE 540 360 {K[0, 0]:.17g} {K[1, 1]:.17g} {K[0, 2] + 0.5:.17g} {K[1, 2] + 0.5:.17g}\n"
    )
    lines = []
    for n, (name, world_from_cam) in enumerate(zip(names, poses, strict=True)):
        T = np.linalg.inv(world_from_cam)
        qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
        lines += [f"{n + 1} {qw} {qx} {qy} {qz} {T[0, 3]} {T[1, 3]} {T[2, 3]} 1 {name}", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("")
    out = tmp_path / "out"
    for width in (None, 518):
        scene = ColmapScene("holo", model, HOLOLENS / "images", depth=HOLOLENS / "depth")
        config = ColmapConfig(width=width, depth_scale=1000.0)
        build(ColmapSource(scene, config), out / str(width), progress=False)
    store = ShardStore(out / "None")
    assert len(store.index) == len(names) and set(store.index["depth_source"]) == {"gt_dense"}
    first = store.read("holo", 0)
    raw = cv2.imread(str(HOLOLENS / "depth" / names[0]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(first["depth"], raw / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(first["intrinsics"], K, atol=1e-9)
    np.testing.assert_allclose(np.linalg.inv(first["cam_from_world"]), poses[0], atol=2e-5)  # 6-digit file
    # world points of frame 0 land on frame 2's surface (README: ~0.2% median difference)
    other = store.read("holo", 2)
    pts = first["world_points"][first["valid_mask"]].astype(np.float64)
    cam = pts @ other["cam_from_world"][:3, :3].T + other["cam_from_world"][:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * np.diag(K)[:2] + K[:2, 2]
    j, i = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    ok = (cam[:, 2] > 0) & (i >= 0) & (i < 360) & (j >= 0) & (j < 540)
    target = other["depth"][i[ok], j[ok]]
    rel = np.abs(cam[ok, 2][target > 0] - target[target > 0]) / target[target > 0]
    assert np.median(rel) < 0.01
    # resized: nearest resampling invents no depth between surfaces
    small = ShardStore(out / "518").read("holo", 0)
    assert small["depth"].shape == (350, 518)
    assert set(np.unique(small["depth"])) <= set(np.unique(first["depth"]))
