"""Tiny VGGT bases, adapters and seed-fork checkpoints for the inference and export tests."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from torch import nn

from train.model import LoraSpec, apply_lora, build_base_model, build_model, load_pretrained, save_adapter

FIELD_OF_VIEW = 1.0  # radians, both axes


def camera_ready_base(path: Path, seed: int = 0) -> Path:
    """A seeded random tiny VGGT saved as a weights file, its camera head fixed to predict a
    1-radian field of view: a random head predicts FoV 0 (after its ReLU), i.e. no camera."""
    model = build_base_model("tiny", seed=seed, bf16=False)
    fc2 = model.camera_head.pose_branch.fc2
    with torch.no_grad():
        fc2.weight[7:9] = 0.0
        fc2.bias[7:9] = FIELD_OF_VIEW / model.cfg.camera_iterations  # each refinement adds it
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return Path(path)


def perturb_lora(model: nn.Module, scale: float = 0.05, seed: int = 1) -> nn.Module:
    """peft starts with B = 0 (no change); give every LoRA B matrix random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return model


def saved_adapter(base_weights: Path, folder: Path, spec: LoraSpec, run_config: bool = True) -> Path:
    """A perturbed adapter on the tiny base in `base_weights`, with the run record a trainer
    leaves beside it (so the base is found from it) unless `run_config` is False."""
    model = perturb_lora(apply_lora(build_base_model("tiny", weights=str(base_weights), bf16=False), spec))
    save_adapter(model, folder)
    if run_config:
        (folder / "config.yaml").write_text(
            f"model:\n  size: tiny\n  weights: {base_weights}\nrun:\n  seed: 0\n"
        )
    return folder


def seed_target_modules(model: nn.Module, patterns: list[str]) -> list[str]:
    """The seed's target selection: wildcard patterns ('.' literal, '*' anything, anchored) over
    module names, keeping Linear and Conv layers."""
    regexes = [re.compile("^" + p.replace(".", r"\.").replace("*", ".*") + "$") for p in patterns]
    return sorted(
        name
        for name, module in model.named_modules()
        if name
        and isinstance(module, nn.Linear | nn.Conv2d | nn.Conv1d)
        and any(r.match(name) for r in regexes)
    )


def seed_checkpoint(
    base_weights: Path, path: Path, patterns: list[str], rank: int = 4, alpha: float = 8.0
) -> PeftModel:
    """A checkpoint made the way the seed fork's trainer makes it: its VGGT without point and
    track heads, peft `get_peft_model` on the published module names chosen by its patterns,
    saved as {"model": state_dict, "optimizer": ..., "epoch": ..., ...}. Returns the model."""
    model = build_model("tiny", enable_point=False)
    load_pretrained(model, base_weights, strict=False)  # the file also holds the point head
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=seed_target_modules(model, patterns),
        lora_dropout=0.1,
        bias="none",
    )
    peft_model = perturb_lora(get_peft_model(model, config)).eval()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-5)
    checkpoint = {
        "epoch": 3,
        "steps": {"train": 120, "val": 8},
        "time_elapsed": 12.5,
        "optimizer": optimizer.state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "ema_models": None,
        "skip_saving_parameters": [],
        "model": peft_model.state_dict(),
    }
    torch.save(checkpoint, path)
    return peft_model
