"""Checkpoint-compatible VGGT (aggregator, camera / depth / point heads) written from published facts."""

from .config import TINY, VGGT_1B, VGGTConfig, config_for
from .geometry import decode_pose, encode_pose, quat_to_rotmat, rotmat_to_quat, unproject_depth
from .preprocess import PixelTransform, as_model_input, preprocess_images
from .vggt import VGGT, build_model
from .weights import CheckpointMismatch, LoadReport, load_pretrained, resolve_checkpoint

__all__ = [
    "TINY",
    "VGGT",
    "VGGT_1B",
    "CheckpointMismatch",
    "LoadReport",
    "PixelTransform",
    "VGGTConfig",
    "as_model_input",
    "build_model",
    "config_for",
    "decode_pose",
    "encode_pose",
    "load_pretrained",
    "preprocess_images",
    "quat_to_rotmat",
    "resolve_checkpoint",
    "rotmat_to_quat",
    "unproject_depth",
]
