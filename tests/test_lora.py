"""LoRA through peft: target selection, frozen base, adapter save/load, merge."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

from train.model import VGGT, build_model, config_for
from train.model.lora import (
    LoraSpec,
    apply_lora,
    load_adapter,
    lora_target_names,
    merge_adapter,
    parameter_counts,
    parse_block_range,
    save_adapter,
    trainable_parameter_table,
)

IMAGES = torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(0))
SPEC = LoraSpec(heads=["depth", "camera"], frame_blocks="2-3", global_blocks="all", rank=4, alpha=8)


def tiny_base() -> VGGT:
    torch.manual_seed(0)
    return build_model("tiny").eval()


def randomize_adapters(model: torch.nn.Module) -> None:
    """peft starts with B = 0 (a no-op adapter); make the adapters matter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(0.02 * torch.randn(param.shape, generator=g))


def lora_layers(model: torch.nn.Module) -> set[str]:
    names = (n for n, _ in model.named_parameters() if ".lora_A." in n)
    return {n.split(".lora_A.")[0].removeprefix("base_model.model.") for n in names}


def predict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(IMAGES)
    return {k: out[k] for k in ("pose_enc", "depth", "world_points")}


def test_block_ranges():
    assert parse_block_range("16-23", 24) == list(range(16, 24))
    assert parse_block_range("0,4,8-9", 24) == [0, 4, 8, 9]
    assert parse_block_range("all", 4) == [0, 1, 2, 3]
    assert parse_block_range(None, 4) == []
    with pytest.raises(ValueError, match="outside"):
        parse_block_range("20-24", 24)
    with pytest.raises(ValueError, match="bad block range"):
        parse_block_range("first", 24)
    with pytest.raises(ValueError, match="unknown LoRA heads"):
        LoraSpec(heads=["tracks"])


def test_target_names_on_the_1b_layout():
    with torch.device("meta"):
        model = VGGT(config_for("1b"))
    spec = LoraSpec(heads=[], frame_blocks="16-23", global_blocks="16-23", submodules=["qkv", "proj"])
    names = lora_target_names(model, spec)
    assert len(names) == 2 * 8 * 2
    assert "aggregator.frame_blocks.16.attn.qkv" in names and "aggregator.global_blocks.23.attn.proj" in names
    assert not any(".15." in n for n in names)
    depth_only = lora_target_names(model, LoraSpec(heads=["depth"]))
    assert all(n.startswith("depth_head.") for n in depth_only)
    assert "depth_head.scratch.output_conv2.2" in depth_only and "depth_head.projects.0" in depth_only
    assert "depth_head.resize_layers.0" not in depth_only  # ConvTranspose2d: no LoRA in peft
    camera = lora_target_names(model, LoraSpec(heads=["camera"], submodules=["fc1", "fc2"]))
    assert "camera_head.trunk.3.mlp.fc2" in camera and "camera_head.pose_branch.fc1" in camera
    assert not any("qkv" in n for n in camera)


def test_only_adapter_parameters_receive_gradients():
    model = apply_lora(tiny_base(), SPEC)
    randomize_adapters(model)
    model.train()
    out = model(IMAGES)
    (out["depth"].mean() + out["pose_enc"].square().mean() + out["world_points"].mean()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert lora_layers(model) == set(lora_target_names(tiny_base(), SPEC))


def test_parameter_table_counts_groups():
    model = apply_lora(tiny_base(), SPEC)
    groups = {g.group: g for g in parameter_counts(model)}
    assert groups["point_head"].trainable == 0 and groups["aggregator.patch_embed"].trainable == 0
    assert groups["depth_head"].trainable > 0 and groups["aggregator.global_blocks"].lora_modules == 16
    console = Console(record=True, width=120)
    console.print(trainable_parameter_table(model))
    text = console.export_text()
    assert "aggregator.frame_blocks" in text and "total" in text


def test_save_load_reproduces_outputs(tmp_path):
    model = apply_lora(tiny_base(), SPEC)
    randomize_adapters(model)
    expected = predict(model.eval())
    assert not torch.allclose(expected["depth"], predict(tiny_base())["depth"])
    save_adapter(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 4
    loaded = load_adapter(tiny_base(), tmp_path)
    # peft may store target names as shortest unique suffixes; the adapted layers must be the same
    assert lora_layers(loaded) == set(lora_target_names(tiny_base(), SPEC))
    assert not any(p.requires_grad for p in loaded.parameters())
    reloaded = predict(loaded.eval())
    for key, value in expected.items():
        torch.testing.assert_close(reloaded[key], value, atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("variant", [{}, {"dora": True}, {"rslora": True}])
def test_merged_equals_unmerged(variant):
    spec = LoraSpec(
        heads=["depth", "point", "camera"], frame_blocks="all", global_blocks="0", rank=2, **variant
    )
    model = apply_lora(tiny_base(), spec)
    randomize_adapters(model)
    unmerged = predict(model.eval())
    merged_model = merge_adapter(model)
    assert type(merged_model) is VGGT and not any("lora_" in n for n, _ in merged_model.named_parameters())
    merged = predict(merged_model)
    for key, value in unmerged.items():
        torch.testing.assert_close(merged[key], value, atol=1e-5, rtol=1e-5, msg=key)
