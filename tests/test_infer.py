"""`vggt-infer` on synthetic frames with the tiny model: outputs at the inputs' resolution, a
COLMAP model pycolmap reads, a PLY open3d reads; the grid <-> input mapping and the window
chaining checked against exact geometry; bad input named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pycolmap
import pytest
import torch
from typer.testing import CliRunner

from eval.align import Sim3
from eval.inference.cli import app
from eval.inference.grid import GridMapping, grid_transform
from eval.inference.windows import WindowPrediction, central_windows, chain_to, plan_windows
from eval.predict import Predictor
from preprocess.driver import build
from preprocess.sources.kitti360 import DepthSettings, Kitti360Config, Kitti360Source
from preprocess.synthetic import generate_synthetic_kitti360
from tests.support.tiny_vggt import camera_ready_base, saved_adapter
from train.model import LoraSpec, apply_lora, build_model, save_adapter

FRAMES = 5
ARGS = ["--device", "cpu", "--seq-len", "3", "--stride", "2"]


def invoke(*args: str):
    return CliRunner().invoke(app, [*map(str, args)])


def said(result) -> str:
    """What the command printed, on one line (error messages span lines)."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return camera_ready_base(tmp_path_factory.mktemp("base") / "tiny.safetensors")


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    return saved_adapter(
        base, run / "checkpoints" / "epoch_0002", LoraSpec(heads=["depth", "camera"], rank=4, alpha=8)
    )


@pytest.fixture(scope="module")
def images(synthetic, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    source = synthetic.root / "data_2d_raw" / synthetic.sequences[0] / "image_00" / "data_rect"
    for path in sorted(source.glob("*.png"))[:FRAMES]:
        os.symlink(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def inferred(adapter, images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("infer") / "out"
    result = invoke(adapter.parent.parent, "--images", images, "--out", out, *ARGS)
    assert result.exit_code == 0, result.output
    assert f"point cloud: {out / 'points.ply'}" in said(result)
    return out


def test_depth_and_confidence_at_input_resolution(inferred, images):
    meta = json.loads((inferred / "meta.json").read_text())
    scale = meta["depth_png"]["scale"]
    for path in sorted(images.iterdir()):
        height, width = cv2.imread(str(path)).shape[:2]
        depth = np.load(inferred / "depth" / f"{path.stem}.npy")
        confidence = np.load(inferred / "confidence" / f"{path.stem}.npy")
        png = cv2.imread(str(inferred / "depth" / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert depth.shape == confidence.shape == png.shape == (height, width)
        assert depth.dtype == np.float32 and png.dtype == np.uint16
        assert np.all(depth > 0) and np.all(confidence >= 1)  # crop mode keeps all of a wide image
        np.testing.assert_allclose(png / scale, depth, atol=0.5 / scale + 1e-6)


def test_meta_records_model_windows_and_timing(inferred, adapter):
    meta = json.loads((inferred / "meta.json").read_text())
    assert meta["model"]["adapter"] == str(adapter)  # the run's newest (only) adapter
    assert meta["model"]["size"] == "tiny" and meta["model"]["weights"].endswith("tiny.safetensors")
    windows = meta["windows"]["list"]
    assert [len(w["frames"]) for w in windows] == [3, 3]  # frames 0-2 and 2-4: frame 2 is shared
    assert windows[0]["scale_to_world"] == 1.0 and windows[1]["scale_to_world"] > 0
    assert [f["window"] for f in meta["frames"]] == [0, 0, 0, 1, 1]  # frame 2 is central in window 0
    assert "not metres" in meta["scale"]
    assert meta["timing"]["frames"] == FRAMES and meta["timing"]["model_frames"] == 6
    assert meta["timing"]["frames_per_s"] > 0


def _cam_from_world(image) -> np.ndarray:
    pose = (
        image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    )  # pycolmap 3 / 4
    return pose.matrix()


def test_colmap_model_reads_back(inferred, images):
    model = pycolmap.Reconstruction(str(inferred / "cameras"))
    meta = json.loads((inferred / "meta.json").read_text())
    assert sorted(image.name for image in model.images.values()) == sorted(p.name for p in images.iterdir())
    assert model.num_points3D() > 0
    frames = {f["image"]: f for f in meta["frames"]}
    for image in model.images.values():
        frame = frames[image.name]
        camera = model.cameras[image.camera_id]
        assert (camera.width, camera.height) == (frame["width"], frame["height"])
        K = np.array(frame["intrinsics"])
        np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5], rtol=1e-6)
        np.testing.assert_allclose(_cam_from_world(image), np.array(frame["cam_from_world"])[:3], atol=1e-6)
    # every point projects (OpenCV camera of meta.json) onto its observation (COLMAP pixel centres)
    for point in list(model.points3D.values())[:300]:
        element = point.track.elements[0]
        image = model.images[element.image_id]
        frame = frames[image.name]
        cam = np.array(frame["cam_from_world"]) @ np.append(point.xyz, 1.0)
        uv = (np.array(frame["intrinsics"]) @ cam[:3])[:2] / cam[2]
        np.testing.assert_allclose(uv + 0.5, image.points2D[element.point2D_idx].xy, atol=1e-3)


def test_point_cloud_reads_in_open3d(inferred):
    cloud = o3d.io.read_point_cloud(str(inferred / "points.ply"))
    meta = json.loads((inferred / "meta.json").read_text())
    assert len(cloud.points) == meta["points"]["count"] > 0 and cloud.has_colors()
    assert np.isfinite(np.asarray(cloud.points)).all()
    # the confidence quantile keeps about half of the pixels
    grid_pixels = FRAMES * np.prod(meta["model_input_hw"])
    assert 0.4 < len(cloud.points) / grid_pixels <= 0.55


def test_existing_output_is_not_overwritten(inferred, images, base, tmp_path):
    before = (inferred / "meta.json").stat().st_mtime_ns
    result = invoke("--images", images, "--out", inferred, "--weights", base, "--model-size", "tiny", *ARGS)
    assert result.exit_code == 2 and "--force" in said(result)
    assert (inferred / "meta.json").stat().st_mtime_ns == before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("...")
    result = invoke(
        "--images", images, "--out", foreign, "--weights", base, "--model-size", "tiny", "--force", *ARGS
    )
    assert result.exit_code == 2 and "not a vggt-infer output" in said(result)
    assert (foreign / "thesis.tex").exists()


def test_force_replaces_a_former_output_and_base_model_runs_alone(inferred, images, base, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({"tool": "vggt-infer"}))
    (out / "stale.txt").write_text("old")
    (tmp_path / "out.tmp-99999").mkdir()  # left by a killed run
    known = "300,310,700.5,190.25"
    common = ["--weights", base, "--model-size", "tiny", "--intrinsics", known, "--force"]
    result = invoke("--images", images, "--out", out, *common, *ARGS)
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and not (tmp_path / "out.tmp-99999").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["adapter"] is None and meta["intrinsics"] == "given (--intrinsics)"
    model = pycolmap.Reconstruction(str(out / "cameras"))
    for camera in model.cameras.values():
        np.testing.assert_allclose(camera.params, [300, 310, 701, 190.75], rtol=1e-9)
    # the adapter changes the depth head: the fine-tuned depth differs from the base's
    name = sorted(images.iterdir())[0].stem
    base_depth, tuned_depth = (np.load(o / "depth" / f"{name}.npy") for o in (out, inferred))
    assert not np.allclose(base_depth, tuned_depth)


def test_a_model_without_usable_cameras_is_refused(images, tmp_path):
    """A random tiny model predicts a field of view of 0: no camera, so no COLMAP model or cloud."""
    result = invoke("--images", images, "--out", tmp_path / "out", "--model-size", "tiny", *ARGS)
    assert result.exit_code == 2 and "no usable camera" in said(result) and "--intrinsics" in said(result)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "holds no images"),
        (lambda d: (d / "broken.png").write_bytes(b"\x89PNG not really"), "broken.png"),
        (lambda d: [cv2.imwrite(str(d / f"{n}.png"), np.zeros((40, 60, 3), np.uint8)) for n in "ab"]
         + [(d / "a.jpg").write_bytes((d / "a.png").read_bytes())], "share a name"),
    ],
    ids=["empty", "unreadable", "name clash"],
)  # fmt: skip
def test_bad_image_folders_are_named(tmp_path, base, make, message):
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder)
    result = invoke(
        "--images", folder, "--out", tmp_path / "out", "--weights", base, "--model-size", "tiny", *ARGS
    )
    assert result.exit_code == 2 and message in said(result)
    assert not (tmp_path / "out").exists()


def test_mixed_aspect_ratios_need_pad(tmp_path, base):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "wide.png"), rng.integers(0, 255, (90, 300, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "tall.png"), rng.integers(0, 255, (200, 120, 3), dtype=np.uint8))
    common = ["--weights", base, "--model-size", "tiny", *ARGS]
    result = invoke("--images", folder, "--out", tmp_path / "crop", *common)
    assert result.exit_code == 2 and "--resize pad" in said(result) and "tall.png" in said(result)
    result = invoke("--images", folder, "--out", tmp_path / "pad", "--resize", "pad", *common)
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "pad" / "depth" / "tall.npy").shape == (200, 120)
    assert np.load(tmp_path / "pad" / "depth" / "wide.npy").shape == (90, 300)


def test_adapter_that_does_not_fit_lists_keys(tmp_path, images):
    other = build_model("tiny", dpt_features=8)  # a depth head of another width
    save_adapter(apply_lora(other, LoraSpec(heads=["depth"], rank=2)), tmp_path / "adapter")
    predictor = Predictor("tiny", None, "cpu", bf16=False)
    with pytest.raises(ValueError, match="does not fit the base model") as info:
        predictor.use_adapter(tmp_path / "adapter")
    assert "depth_head.scratch.output_conv1.lora_A" in str(info.value)
    result = invoke(
        tmp_path / "adapter", "--images", images, "--out", tmp_path / "out", "--model-size", "tiny", *ARGS
    )
    assert result.exit_code == 2 and "does not fit" in said(result)


@pytest.mark.parametrize(
    "size_hw, mode", [((376, 1408), "crop"), ((900, 500), "crop"), ((376, 1408), "pad"), ((480, 300), "pad")]
)
def test_grid_mapping_returns_exact_geometry_to_input_pixels(size_hw, mode):
    """A tilted plane seen by a known camera: its depth rendered on the model grid (through the
    grid intrinsics) comes back at the input's pixels as the plane's depth there, and the grid
    intrinsics return to the input camera."""
    h, w = size_hw
    K = np.array([[0.9 * w, 0, w / 2 - 3.2], [0, 0.9 * w, h / 2 + 1.7], [0, 0, 1]])
    mapping = GridMapping(grid_transform(h, w, mode), size_hw)
    K_grid = mapping.transform.apply_to_intrinsics(torch.as_tensor(K)).numpy()
    np.testing.assert_allclose(mapping.intrinsics_to_input(K_grid), K, rtol=1e-12, atol=1e-9)
    normal, offset = np.array([0.1, -0.3, 1.0]), 8.0  # plane n . X = offset

    def plane_depth(K_: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float64)
        rays = np.stack(((xs - K_[0, 2]) / K_[0, 0], (ys - K_[1, 2]) / K_[1, 1], np.ones_like(xs)), -1)
        return offset / (rays @ normal)

    back = mapping.to_input(plane_depth(K_grid, mapping.transform.out_hw))
    exact = plane_depth(K, size_hw)
    covered = back > 0
    if mode == "pad" or h / w < 1:
        assert covered.all()
    else:  # a tall image loses its top and bottom to the centre crop
        assert covered[h // 2].all() and not covered[0].any() and not covered[-1].any()
    np.testing.assert_allclose(back[covered], exact[covered], rtol=2e-3)


def test_window_plan_and_central_frames():
    assert plan_windows(5, 8, 6) == [range(5)]
    assert plan_windows(20, 8, 6) == [range(0, 8), range(6, 14), range(12, 20)]
    assert plan_windows(10, 4, 3) == [range(0, 4), range(3, 7), range(6, 10)]
    assert plan_windows(11, 4, 3)[-1] == range(7, 11)  # moved back to end on the last frame
    owner = central_windows(plan_windows(20, 8, 6), 20)
    assert owner == [0] * 7 + [1] * 6 + [2] * 7  # windows 0-7, 6-13, 12-19: centres 3.5, 9.5, 15.5
    assert central_windows([range(0, 4), range(1, 5)], 5) == [0, 0, 0, 1, 1]  # frame 2: a tie -> earlier
    with pytest.raises(ValueError, match="share no frame"):
        plan_windows(20, 8, 8)


def test_chaining_recovers_the_similarity_between_windows():
    """Window B predicts frames 2-4 of the same scene as window A (frames 0-2) in another world
    (scaled, rotated, shifted): chaining brings B's cameras and depth onto A's exactly."""
    rng = np.random.default_rng(0)
    h, w = 14, 28
    K = np.array([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]])
    cams = []
    for _ in range(5):
        R = cv2.Rodrigues(rng.normal(0, 0.1, 3))[0]
        cams.append(np.block([[R, rng.normal(0, 0.5, (3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]]))
    cams = np.stack(cams)
    depth = rng.uniform(2, 6, (5, h, w))
    conf = rng.uniform(1, 3, (5, h, w))
    a = WindowPrediction([0, 1, 2], depth[:3], conf[:3], cams[:3], np.stack([K] * 3))
    truth = WindowPrediction([2, 3, 4], depth[2:], conf[2:], cams[2:], np.stack([K] * 3))
    R = cv2.Rodrigues(np.array([0.3, -0.2, 0.5]))[0]
    to_b = Sim3(2.5, R, np.array([1.0, -2.0, 0.5]))
    b = truth.in_world(to_b)
    content = {i: np.ones((h, w), bool) for i in range(5)}
    sim, residual = chain_to(a, b, content)
    assert residual < 1e-9
    assert sim.s == pytest.approx(1 / 2.5)
    back = b.in_world(sim)
    np.testing.assert_allclose(back.cam_from_world, truth.cam_from_world, atol=1e-9)
    np.testing.assert_allclose(back.depth, truth.depth, rtol=1e-9)


def test_shard_sequences_as_input(base, tmp_path):
    scene = generate_synthetic_kitti360(tmp_path / "scene", frames=6, seed=0, sequences=2)
    shards = tmp_path / "shards"
    config = Kitti360Config(depth=DepthSettings(accumulate=0), chunk_frames=16)
    build(Kitti360Source(scene.root, config, split="all"), shards, progress=False)
    out = tmp_path / "out"
    sequence = scene.sequences[1]
    common = ["--weights", base, "--model-size", "tiny", *ARGS]
    result = invoke("--shards", shards, "--split", "val", "--sequences", "nope", "--out", out, *common)
    assert result.exit_code == 2 and sequence in said(result)
    result = invoke("--shards", shards, "--split", "val", "--sequences", sequence, "--out", out, *common)
    assert result.exit_code == 0, result.output
    folder = next(out.glob(f"*/{sequence}"))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["input"]["sequence"] == sequence and json.loads((out / "meta.json").read_text())["scenes"]
    model = pycolmap.Reconstruction(str(folder / "cameras"))
    names = sorted(image.name for image in model.images.values())
    assert names == sorted(p.name for p in (folder / "images").iterdir())
    stored = cv2.imread(str(folder / "images" / names[0]))
    assert np.load(folder / "depth" / names[0].replace(".png", ".npy")).shape == stored.shape[:2]
