"""`vggt-export`: merged weights equal base + adapter and load strictly in the published layout;
a seed-fork checkpoint converts into an adapter that reproduces the seed's model, and every
key it cannot account for is listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from eval.base_model import resolve_base
from eval.export.cli import app
from eval.predict import Predictor
from tests.support.tiny_vggt import camera_ready_base, saved_adapter, seed_checkpoint
from train.model import LoraSpec, apply_lora, build_model, load_pretrained, save_adapter

IMAGES = torch.rand(3, 3, 28, 56, generator=torch.Generator().manual_seed(0))
SPEC = LoraSpec(heads=["depth", "camera"], frame_blocks="2-3", global_blocks="0", rank=4, alpha=8)
SEED_PATTERNS = ["depth_head.*", "aggregator.frame_blocks.[2-3].*", "aggregator.global_blocks.3.attn.*"]


def invoke(*args: object):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, " ".join(result.output.split())


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return camera_ready_base(tmp_path_factory.mktemp("base") / "tiny.safetensors")


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> Path:
    return saved_adapter(base, tmp_path_factory.mktemp("run") / "checkpoints" / "epoch_0001", SPEC)


def outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model.eval()(IMAGES)
    return {k: out[k][0] for k in ("pose_enc", "depth", "depth_conf")}


def adapted(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    predictor = Predictor("tiny", str(base), "cpu", bf16=False)
    predictor.use_adapter(adapter)
    return predictor.outputs(IMAGES)


def test_merged_equals_base_plus_adapter(base, adapter, tmp_path):
    out = tmp_path / "merged.safetensors"
    result, said = invoke("merge", adapter.parent.parent, "--out", out)  # a run dir: its newest adapter
    assert result.exit_code == 0, result.output
    assert f"merged model: {out}" in said
    merged = build_model("tiny")
    report = load_pretrained(merged, out, strict=True)
    assert report.ok and not report.ignored
    with safe_open(str(out), "pt") as f:
        assert all(not k.startswith("base_model.") and "lora_" not in k for k in f.keys())
        assert json.loads(f.metadata()["base"])["weights"] == str(base)
    expected = adapted(base, adapter)
    plain = outputs(build_model("tiny"))
    got = outputs(merged)
    for key in got:
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=1e-4, msg=key)
    assert not torch.allclose(plain["depth"], expected["depth"])  # the adapter matters

    result, said = invoke("merge", adapter, "--out", out)
    assert result.exit_code == 2 and "--force" in said
    result, _ = invoke("merge", adapter, "--out", out, "--dtype", "bf16", "--force")
    assert result.exit_code == 0, result.output
    with safe_open(str(out), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    half = build_model("tiny")
    load_pretrained(half, out, strict=True)
    torch.testing.assert_close(outputs(half)["depth"], expected["depth"], rtol=0.05, atol=0.05)


def test_merge_refuses_an_adapter_for_another_base(base, tmp_path):
    other = apply_lora(build_model("tiny", dpt_features=8), LoraSpec(heads=["depth"], rank=2))
    save_adapter(other, tmp_path / "adapter")
    result, said = invoke(
        "merge",
        tmp_path / "adapter",
        "--out",
        tmp_path / "m.safetensors",
        "--weights",
        base,
        "--model-size",
        "tiny",
    )
    assert result.exit_code == 2
    assert "does not fit the base model" in said and "depth_head.scratch.output_conv1.lora_A" in said
    assert not (tmp_path / "m.safetensors").exists()


@pytest.fixture(scope="module")
def seed(base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed")
    model = seed_checkpoint(base, folder / "checkpoint_3.pt", SEED_PATTERNS, rank=4, alpha=8.0)
    return folder / "checkpoint_3.pt", model


def test_from_seed_round_trips_the_seed_model(seed, base, tmp_path):
    checkpoint, seed_model = seed
    out = tmp_path / "adapter"
    result, said = invoke("from-seed", checkpoint, "--out", out, "--alpha", 8, "--weights", base)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert "depth_head.scratch.output_conv2.0" in config["target_modules"]
    assert "aggregator.global_blocks.3.attn.qkv" in config["target_modules"]
    assert "aggregator.global_blocks.3.mlp.fc1" not in config["target_modules"]
    expected = outputs(seed_model)
    got = adapted(base, out)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5, msg=key)
    assert resolve_base([out], None, None, None) == ("tiny", str(base), 0)  # config.yaml names the base


def test_from_seed_reads_alpha_from_the_seed_config(seed, tmp_path):
    checkpoint, _ = seed
    config = tmp_path / "lora_strategy.yaml"
    config.write_text(
        "defaults:\n  - default_dataset.yaml\nlora:\n  enabled: true\n  rank: 4\n  alpha: 8\n  dropout: 0.1\n"
    )
    result, _ = invoke("from-seed", checkpoint, "--out", tmp_path / "a", "--config", config)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["lora_alpha"] == 8
    result, said = invoke("from-seed", checkpoint, "--out", tmp_path / "b")
    assert result.exit_code == 2 and "does not store LoRA alpha" in said
    config.write_text("lora:\n  rank: 16\n  alpha: 32\n")
    result, said = invoke("from-seed", checkpoint, "--out", tmp_path / "c", "--config", config)
    assert result.exit_code == 2 and "rank 4" in said


def test_from_seed_lists_unknown_and_missing_keys(seed, tmp_path):
    checkpoint, _ = seed
    saved = torch.load(checkpoint, weights_only=True)
    state = saved["model"]
    state["base_model.model.aggregator.extra_token"] = torch.zeros(3)
    del state["base_model.model.aggregator.frame_blocks.2.attn.qkv.lora_B.default.weight"]
    del state["base_model.model.camera_head.trunk_norm.weight"]
    broken = tmp_path / "checkpoint_4.pt"
    torch.save(saved, broken)
    result, said = invoke("from-seed", broken, "--out", tmp_path / "a", "--alpha", 8, "--model-size", "tiny")
    assert result.exit_code == 2
    assert "aggregator.extra_token: unknown key" in said
    assert "camera_head.trunk_norm.weight: missing" in said
    assert "aggregator.frame_blocks.2.attn.qkv.lora_B: missing" in said
    assert not (tmp_path / "a").exists()


def test_from_seed_finds_a_base_other_than_the_given_one(seed, base, tmp_path):
    """A seed run that loaded pretrained weights under unwrapped names trained its adapter on
    layers that kept their random init: the adapter alone cannot reproduce that model."""
    checkpoint, _ = seed
    saved = torch.load(checkpoint, weights_only=True)
    key = "base_model.model.depth_head.projects.0.base_layer.weight"
    saved["model"][key] = torch.randn_like(saved["model"][key])
    other = tmp_path / "checkpoint_5.pt"
    torch.save(saved, other)
    result, said = invoke("from-seed", other, "--out", tmp_path / "a", "--alpha", 8, "--weights", base)
    assert (
        result.exit_code == 2
        and "depth_head.projects.0.weight: differs" in said
        and "--allow-base-mismatch" in said
    )
    result, _ = invoke(
        "from-seed", other, "--out", tmp_path / "a", "--alpha", 8, "--weights", base, "--allow-base-mismatch"
    )
    assert result.exit_code == 0, result.output


class NotATensor:
    """Anything pickled beyond tensors and plain data is refused (weights_only=True)."""


def test_from_seed_runs_no_code_from_the_file(tmp_path):
    path = tmp_path / "checkpoint_1.pt"
    torch.save({"model": {}, "hook": NotATensor()}, path)
    result, said = invoke("from-seed", path, "--out", tmp_path / "a", "--alpha", 8)
    assert result.exit_code == 2 and "weights_only=True" in said and str(path) in said
    plain = tmp_path / "model.pt"
    torch.save({"model": build_model("tiny").state_dict()}, plain)
    result, said = invoke("from-seed", plain, "--out", tmp_path / "a", "--alpha", 8)
    assert result.exit_code == 2 and "no LoRA tensors" in said
