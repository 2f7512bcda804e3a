"""Glue between the training config and the model: base model construction (shared with
the evaluator so adapters always meet identical base weights), LoRA, warm starts, and the
parameter groups that get separate gradient clipping."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from .config import ModelConfig, TrainConfig
from .lora import LoraSpec, apply_lora, print_trainable_parameters
from .model import VGGT, build_model, encode_pose, load_pretrained

log = logging.getLogger(__name__)
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def build_base_model(cfg: ModelConfig, seed: int, bf16: bool = True) -> VGGT:
    """The frozen base: pretrained weights when given, else a random init fixed by `seed`
    (tests/demo). Training and evaluation both build it here."""
    torch.manual_seed(seed)
    model = build_model(cfg.size)
    model.aggregator_dtype = torch.bfloat16 if bf16 else None
    if cfg.weights:
        report = load_pretrained(model, cfg.weights)
        log.info("loaded base weights from %s (%s)", cfg.weights, report)
    if cfg.activation_checkpointing:
        model.set_activation_checkpointing(True)
    return model


def lora_spec(cfg: TrainConfig) -> LoraSpec:
    lora = cfg.lora
    return LoraSpec(
        heads=list(lora.heads), frame_blocks=lora.frame_blocks, global_blocks=lora.global_blocks,
        submodules=list(lora.submodules), rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
        rslora=lora.rslora, dora=lora.dora,
    )  # fmt: skip


def warm_start(model: PeftModel, adapter_dir: str | Path) -> int:
    """Copy the LoRA tensors of another run's adapter into matching layers of this one
    (strategy switch); returns how many tensors were copied."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"lora.init_from: {path} not found")
    saved = load_file(str(path))
    result = set_peft_model_state_dict(model, saved)
    unexpected = len(getattr(result, "unexpected_keys", []) or [])
    copied = len(saved) - unexpected
    log.info(
        "warm start from %s: %d of %d adapter tensors matched this run's targets", path, copied, len(saved)
    )
    return copied


def build_lora_model(cfg: TrainConfig, device: torch.device, verbose: bool = True) -> PeftModel:
    base = build_base_model(cfg.model, cfg.run.seed, cfg.optim.bf16 and device.type == "cuda")
    model = apply_lora(base, lora_spec(cfg))
    if cfg.lora.init_from:
        warm_start(model, cfg.lora.init_from)
    model.to(device)
    if verbose:
        print_trainable_parameters(model)
    return model


def parameter_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Trainable parameters split into heads and aggregator (clipped separately)."""
    groups: dict[str, list[torch.nn.Parameter]] = {"heads": [], "aggregator": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["aggregator" if ".aggregator." in f".{name}" else "heads"].append(param)
    return groups


def gt_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw) -> torch.Tensor:
    """9-d pose encoding of normalised GT cameras, the camera loss target."""
    return encode_pose(extrinsics.float(), intrinsics.float(), tuple(int(v) for v in image_hw))


def load_adapter_weights(model: PeftModel, directory: Path) -> None:
    """Restore adapter tensors saved by `save_adapter` into an identically configured model."""
    state = load_file(str(Path(directory) / ADAPTER_WEIGHTS), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{directory}: adapter does not match this run's LoRA targets")
