"""Checkpoint-compatible VGGT (aggregator, camera / depth / point heads) written from published
facts, the base model every adapter is built on, and LoRA adapters for it.

Training, evaluation, inference and export import the model through this package only.
"""

from .architecture import PRESETS, TINY, VGGT_1B, VGGTConfig, config_for
from .base import build_base_model
from .geometry import decode_pose, encode_pose, quat_to_rotmat, rotmat_to_quat, unproject_depth
from .image_input import PixelTransform, as_model_input, preprocess_images
from .lora import (
    LoraSpec,
    apply_lora,
    copy_matching_adapter,
    load_adapter,
    load_adapter_weights,
    merge_adapter,
    print_trainable_parameters,
    save_adapter,
)
from .vggt import VGGT, build_model
from .weights import CheckpointMismatch, LoadReport, load_pretrained, resolve_checkpoint

__all__ = [
    "PRESETS",
    "TINY",
    "VGGT",
    "VGGT_1B",
    "CheckpointMismatch",
    "LoadReport",
    "LoraSpec",
    "PixelTransform",
    "VGGTConfig",
    "apply_lora",
    "as_model_input",
    "build_base_model",
    "build_model",
    "config_for",
    "copy_matching_adapter",
    "decode_pose",
    "encode_pose",
    "load_adapter",
    "load_adapter_weights",
    "load_pretrained",
    "merge_adapter",
    "preprocess_images",
    "print_trainable_parameters",
    "quat_to_rotmat",
    "resolve_checkpoint",
    "rotmat_to_quat",
    "save_adapter",
    "unproject_depth",
]
