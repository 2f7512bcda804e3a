"""VGGT model: checkpoint layout of the 1B config, exactness against reference outputs, geometry helpers."""

from __future__ import annotations

import gzip
import json
import math
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from train.model import (
    VGGT,
    CheckpointMismatch,
    build_model,
    config_for,
    decode_pose,
    encode_pose,
    load_pretrained,
    preprocess_images,
    quat_to_rotmat,
    rotmat_to_quat,
    unproject_depth,
)

REFERENCE = Path(__file__).parent / "data" / "vggt_reference"
OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def deterministic_fill(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The weight fill used to produce the reference outputs (see the README next to them)."""
    t = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))
    if len(shape) == 1:
        return 1 + 0.1 * t if "norm" in key and key.endswith(".weight") else 0.2 * t
    if shape[0] == 1:
        return 0.5 * t
    return t / math.sqrt(t[0].numel())


def filled_tiny_model() -> VGGT:
    model = build_model("tiny").eval()
    model.load_state_dict({k: deterministic_fill(k, tuple(v.shape)) for k, v in model.state_dict().items()})
    return model


@pytest.fixture(scope="module")
def official_layout() -> dict[str, list[int]]:
    with gzip.open(REFERENCE / "vggt_1b_layout.json.gz", "rt") as f:
        return json.load(f)


def meta_state_shapes(**overrides: object) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = VGGT(config_for("1b", **overrides))
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_1b_layout_equals_official_checkpoint(official_layout):
    ours = meta_state_shapes(enable_track=True)
    assert ours == official_layout
    assert len(ours) == 1797
    assert sum(math.prod(s) for s in ours.values()) == 1_256_537_516

    def millions(prefix: str) -> float:
        return sum(math.prod(s) for k, s in ours.items() if k.startswith(prefix)) / 1e6

    expected = {
        "aggregator.": 909.1,
        "aggregator.patch_embed.": 304.4,
        "aggregator.frame_blocks.": 302.4,
        "aggregator.global_blocks.": 302.4,
        "camera_head.": 216.2,
        "track_head.": 65.9,
    }
    for prefix, value in expected.items():
        assert round(millions(prefix), 1) == value, prefix
    assert round(millions("depth_head."), 2) == round(millions("point_head."), 2) == 32.65


def test_1b_without_track_head_is_official_minus_track(official_layout):
    ours = meta_state_shapes()
    assert ours == {k: v for k, v in official_layout.items() if not k.startswith("track_head.")}


def test_tiny_matches_reference_implementation():
    ref = load_file(REFERENCE / "tiny_outputs.safetensors")
    with torch.no_grad():
        out = filled_tiny_model()(ref["images"])
    for key in OUTPUT_KEYS[1:]:
        torch.testing.assert_close(out[key], ref[key], atol=1e-5, rtol=1e-5, msg=key)
    for i, pose in enumerate(out["pose_enc_list"]):
        torch.testing.assert_close(pose, ref[f"pose_enc_list.{i}"], atol=1e-5, rtol=1e-5)
    assert out["pose_enc"] is out["pose_enc_list"][-1]


def test_forward_is_deterministic_and_shapes_follow_input_rank():
    model = filled_tiny_model()
    frames = torch.rand(3, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        single = model(frames)
        again = model(frames)
        batched = model(torch.stack((frames, frames.flip(0))))
    b, s, h, w = 1, 3, 28, 42
    expected = {
        "pose_enc": (b, s, 9),
        "depth": (b, s, h, w, 1),
        "depth_conf": (b, s, h, w),
        "world_points": (b, s, h, w, 3),
        "world_points_conf": (b, s, h, w),
        "images": (b, s, 3, h, w),
    }
    for key, shape in expected.items():
        assert tuple(single[key].shape) == shape, key
        assert tuple(batched[key].shape) == (2, *shape[1:]), key
        assert torch.equal(single[key], again[key]), key
        torch.testing.assert_close(batched[key][:1], single[key], atol=1e-5, rtol=1e-5)
    assert len(single["pose_enc_list"]) == 4
    # the second sequence has another first frame, so its predictions must differ
    assert not torch.allclose(batched["depth"][1], single["depth"][0])


def test_train_mode_omits_images_and_rejects_bad_sizes():
    model = build_model("tiny").train()
    assert "images" not in model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.rand(2, 3, 30, 28))


def test_activation_checkpointing_keeps_gradients():
    model = filled_tiny_model().train()
    images = torch.rand(1, 2, 3, 28, 28, generator=torch.Generator().manual_seed(1))

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        out = model(images)
        (out["depth"].mean() + out["pose_enc"].sum()).backward()
        return [p.grad.clone() for p in model.aggregator.frame_blocks.parameters()]

    plain = grads()
    model.set_activation_checkpointing(True)
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def random_cameras(
    n: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    extrinsics = torch.eye(4, dtype=dtype).repeat(n, 1, 1)
    extrinsics[:, :3, :3] = quat_to_rotmat(torch.randn(n, 4, generator=g, dtype=dtype))
    extrinsics[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=dtype)
    intrinsics = torch.eye(3, dtype=dtype).repeat(n, 1, 1)
    intrinsics[:, 0, 0] = 200 + 100 * torch.rand(n, generator=g, dtype=dtype)
    intrinsics[:, 1, 1] = 200 + 100 * torch.rand(n, generator=g, dtype=dtype)
    intrinsics[:, 0, 2], intrinsics[:, 1, 2] = 259, 175
    return extrinsics, intrinsics


def test_pose_encoding_round_trip():
    extrinsics, intrinsics = random_cameras(64)
    enc = encode_pose(extrinsics, intrinsics, (350, 518))
    assert enc.shape == (64, 9) and torch.all(enc[:, 6] >= 0)  # scalar-last, w >= 0
    ext2, int2 = decode_pose(enc, (350, 518))
    torch.testing.assert_close(ext2, extrinsics, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(int2, intrinsics, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(encode_pose(ext2[:, :3], int2, (350, 518)), enc, atol=1e-5, rtol=1e-5)


def test_rotation_conversion_handles_half_turns():
    half_turns = torch.diag_embed(torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]]))
    torch.testing.assert_close(quat_to_rotmat(rotmat_to_quat(half_turns)), half_turns, atol=1e-6, rtol=0)


def test_first_camera_identity_encoding_and_unprojection():
    identity = torch.eye(4)[None]
    intrinsics = torch.tensor([[[100.0, 0, 20], [0, 100, 15], [0, 0, 1]]])
    enc = encode_pose(identity, intrinsics, (30, 40))
    torch.testing.assert_close(enc[0, :7], torch.tensor([0.0, 0, 0, 0, 0, 0, 1]))
    ext, k = decode_pose(enc, (30, 40))
    torch.testing.assert_close(ext, identity)
    torch.testing.assert_close(k, intrinsics)
    # with the identity camera, world points are camera points: z = depth, x = (j - cx) / fx * z
    depth = torch.full((1, 30, 40, 1), 2.0)
    points = unproject_depth(depth, identity, intrinsics)
    assert points.shape == (1, 30, 40, 3)
    torch.testing.assert_close(points[0, 15, 20], torch.tensor([0.0, 0.0, 2.0]))
    torch.testing.assert_close(points[0, 0, 0], torch.tensor([-0.4, -0.3, 2.0]))


def test_unprojected_points_project_back_to_their_pixels():
    extrinsics, intrinsics = random_cameras(2, seed=3, dtype=torch.float64)
    depth = 1 + torch.rand(2, 6, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    world = unproject_depth(depth, extrinsics[:, :3], intrinsics)
    cam = torch.einsum("sij,shwj->shwi", extrinsics[:, :3, :3], world) + extrinsics[:, None, None, :3, 3]
    pix = torch.einsum("sij,shwj->shwi", intrinsics, cam)
    torch.testing.assert_close(cam[..., 2], depth)
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    torch.testing.assert_close(pix[..., 0] / pix[..., 2], xs.double().expand(2, -1, -1), atol=1e-9, rtol=0)
    torch.testing.assert_close(pix[..., 1] / pix[..., 2], ys.double().expand(2, -1, -1), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    ("mode", "hw", "expected"),
    [("crop", (376, 1408), (140, 518)), ("crop", (800, 600), (518, 518)), ("pad", (600, 800), (518, 518))],
)
def test_preprocess_sizes_and_intrinsics(mode, hw, expected):
    images = torch.rand(2, 3, *hw)
    out, transform = preprocess_images(images, mode=mode)
    assert tuple(out.shape) == (2, 3, *expected) and out.min() >= 0 and out.max() <= 1
    assert transform.out_hw == expected
    # the image centre stays the image centre (up to crop/pad rounding of whole pixels)
    k = torch.tensor([[500.0, 0, (hw[1] - 1) / 2], [0, 500, (hw[0] - 1) / 2], [0, 0, 1]])
    k2 = transform.apply_to_intrinsics(k)
    assert abs(k2[0, 2] - (expected[1] - 1) / 2) <= 1 and abs(k2[1, 2] - (expected[0] - 1) / 2) <= 1
    torch.testing.assert_close(k2[0, 0], torch.tensor(500.0 * transform.scale_x))
    if mode == "pad":
        assert out[:, :, 0].min() == 1.0  # white padding rows on top


def test_load_pretrained_ignores_exactly_the_track_head(tmp_path):
    source = build_model("tiny", enable_track=True)
    state = source.state_dict()
    save_file(state, tmp_path / "model.safetensors")
    target = build_model("tiny")
    report = load_pretrained(target, tmp_path)  # a directory holding model.safetensors
    assert report.ok and report.ignored and all(k.startswith("track_head.") for k in report.ignored)
    assert report.loaded == len(target.state_dict())
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key
    with_track = build_model("tiny", enable_track=True)
    assert load_pretrained(with_track, tmp_path / "model.safetensors").ignored == []


def test_load_pretrained_reports_mismatches(tmp_path):
    state = build_model("tiny").state_dict()
    state.pop("depth_head.norm.weight")
    state["aggregator.extra"] = torch.zeros(1)
    state["camera_head.embed_pose.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointMismatch) as err:
        load_pretrained(build_model("tiny"), tmp_path / "model.pt")
    message = str(err.value)
    assert "missing from checkpoint: 1" in message and "depth_head.norm.weight" in message
    assert "unexpected in checkpoint: 1" in message and "aggregator.extra" in message
    assert "camera_head.embed_pose.bias: checkpoint (3,)" in message
    report = load_pretrained(build_model("tiny"), tmp_path / "model.pt", strict=False)
    assert not report.ok and report.loaded == len(state) - 2


def test_load_pretrained_offline_without_cache_says_so(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_pretrained(build_model("tiny"), "facebook/VGGT-1B")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_pretrained(build_model("tiny"), "./does/not/exist.pt")
