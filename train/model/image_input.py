"""Image preprocessing to VGGT's input sizes, with the pixel transform needed to adjust intrinsics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from shards import PATCH_SIZE

TARGET_SIZE = 518


@dataclass(frozen=True)
class PixelTransform:
    """Maps input pixel coordinates to output ones: x' = (x + 0.5) * scale_x - 0.5 + offset_x (same for y)."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    out_hw: tuple[int, int]

    def apply_to_intrinsics(self, intrinsics: Tensor) -> Tensor:
        """Intrinsics (..., 3, 3) of the input images -> intrinsics of the preprocessed images."""
        out = intrinsics.clone()
        out[..., 0, :] = intrinsics[..., 0, :] * self.scale_x
        out[..., 1, :] = intrinsics[..., 1, :] * self.scale_y
        out[..., 0, 2] += 0.5 * self.scale_x - 0.5 + self.offset_x
        out[..., 1, 2] += 0.5 * self.scale_y - 0.5 + self.offset_y
        return out


def _round_to_patch(x: float) -> int:
    return round(x / PATCH_SIZE) * PATCH_SIZE


def preprocess_images(
    images: Tensor, mode: str = "crop", target: int = TARGET_SIZE
) -> tuple[Tensor, PixelTransform]:
    """Resize (S, 3, H, W) RGB in [0, 1] for the model.

    "crop": width -> target, height -> nearest multiple of 14 keeping the aspect, then centre-crop
    the height to target if it is larger. "pad": the long side -> target, the short side -> a
    multiple of 14, then pad with white (1.0) to target x target.
    Resampling is bicubic with antialiasing, clamped to [0, 1].
    """
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    _, _, h, w = images.shape
    if mode == "crop" or w >= h:
        new_w, new_h = target, _round_to_patch(h * target / w)
    else:
        new_w, new_h = _round_to_patch(w * target / h), target
    out = F.interpolate(images.float(), size=(new_h, new_w), mode="bicubic", antialias=True).clamp(0, 1)
    off_x = off_y = 0
    if mode == "crop" and new_h > target:
        off_y = -((new_h - target) // 2)
        out = out[:, :, -off_y : -off_y + target]
    elif mode == "pad":
        pad_h, pad_w = target - new_h, target - new_w
        off_x, off_y = pad_w // 2, pad_h // 2
        out = F.pad(out, (off_x, pad_w - off_x, off_y, pad_h - off_y), value=1.0)
    transform = PixelTransform(new_w / w, new_h / h, off_x, off_y, (out.shape[-2], out.shape[-1]))
    return out.contiguous(), transform


def as_model_input(frames: Tensor) -> Tensor:
    """uint8 (S, H, W, 3) frames (as stored in shards) -> float (S, 3, H, W) in [0, 1]."""
    return frames.permute(0, 3, 1, 2).to(torch.float32) / 255.0
