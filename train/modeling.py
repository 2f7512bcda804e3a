"""The trainer's model: the shared base model with this run's LoRA (optionally warm-started),
the parameter groups that get separate gradient clipping, and the camera loss target."""

from __future__ import annotations

import torch
from peft import PeftModel

from .config import TrainConfig
from .model import (
    apply_lora,
    build_base_model,
    copy_matching_adapter,
    encode_pose,
    print_trainable_parameters,
)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def build_lora_model(cfg: TrainConfig, device: torch.device, verbose: bool = True) -> PeftModel:
    base = build_base_model(
        size=cfg.model.size,
        weights=cfg.model.weights,
        seed=cfg.run.seed,
        activation_checkpointing=cfg.model.activation_checkpointing,
    )
    base.aggregator_dtype = AUTOCAST_DTYPES[cfg.optim.precision]
    base.autocast_on_cpu = (
        True  # the precision asked for, on CPU as well (PyTorch autocasts bf16 and fp16 there)
    )
    model = apply_lora(base, cfg.lora)
    if cfg.lora.init_from:
        copy_matching_adapter(model, cfg.lora.init_from)
    model.to(device)
    if verbose:
        print_trainable_parameters(model)
    return model


def clip_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Trainable parameters split into heads and aggregator (clipped separately)."""
    groups: dict[str, list[torch.nn.Parameter]] = {"heads": [], "aggregator": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["aggregator" if ".aggregator." in f".{name}" else "heads"].append(param)
    return groups


def gt_pose_encoding(cam_from_world: torch.Tensor, intrinsics: torch.Tensor, image_hw) -> torch.Tensor:
    """9-d pose encoding of normalised GT cameras, the camera loss target."""
    return encode_pose(cam_from_world.float(), intrinsics.float(), tuple(int(v) for v in image_hw))
