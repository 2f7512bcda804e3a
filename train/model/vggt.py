"""The VGGT model: aggregator + camera / depth / point heads (+ optional weights-only track head)."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor, nn

from .aggregator import Aggregator
from .architecture import VGGTConfig, config_for
from .camera_head import CameraHead
from .dpt_head import DPTHead
from .track_head import TrackHead


class VGGT(nn.Module):
    """Feed-forward multi-view geometry; parameter names match the published checkpoint.

    On CUDA the aggregator runs under autocast (`aggregator_dtype`, bf16 by default; on CPU too
    when `autocast_on_cpu` is set) and the heads in float32, as in the reference.
    Call `set_activation_checkpointing(True)` for memory-lean training.
    """

    def __init__(
        self, cfg: VGGTConfig | None = None, aggregator_dtype: torch.dtype | None = torch.bfloat16
    ) -> None:
        super().__init__()
        cfg = cfg or VGGTConfig()
        self.cfg = cfg
        self.aggregator_dtype = aggregator_dtype
        self.autocast_on_cpu = False
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(cfg) if cfg.enable_camera else None
        self.point_head = DPTHead(cfg, output_dim=4, activation="inv_log") if cfg.enable_point else None
        self.depth_head = DPTHead(cfg, output_dim=2, activation="exp") if cfg.enable_depth else None
        self.track_head = TrackHead(cfg) if cfg.enable_track else None

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute aggregator block activations in backward (DINO, frame and global blocks)."""
        self.aggregator.set_checkpointing(enabled)

    def _needed_layers(self, heads: Collection[str]) -> set[int]:
        layers = {self.cfg.depth - 1} if "camera" in heads else set()
        if "depth" in heads or "point" in heads:
            layers |= set(self.cfg.dpt_layers)
        return layers

    def forward(
        self, images: Tensor, heads: Collection[str] | None = None
    ) -> dict[str, Tensor | list[Tensor]]:
        """images: (S, 3, H, W) or (B, S, 3, H, W), RGB in [0, 1], H and W multiples of the patch size.
        `heads`: which of "camera", "depth", "point" to run (default: every head the model has);
        training leaves out heads whose loss weight is 0.

        Returns pose_enc (B, S, 9), pose_enc_list, depth (B, S, H, W, 1), depth_conf (B, S, H, W),
        world_points (B, S, H, W, 3), world_points_conf (B, S, H, W), and images in eval mode.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(
                f"expected images of shape (S, 3, H, W) or (B, S, 3, H, W), got {tuple(images.shape)}"
            )
        h, w = images.shape[-2:]
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        present = {"camera": self.camera_head, "depth": self.depth_head, "point": self.point_head}
        run = {h for h, head in present.items() if head is not None and (heads is None or h in heads)}
        device_type = images.device.type
        use_autocast = self.aggregator_dtype is not None and (device_type == "cuda" or self.autocast_on_cpu)
        with torch.autocast(device_type, dtype=self.aggregator_dtype, enabled=use_autocast):
            layers = self.aggregator(images, keep_layers=self._needed_layers(run))
        layers = [None if t is None else t.float() for t in layers]
        out: dict[str, Tensor | list[Tensor]] = {}
        with torch.autocast(device_type, enabled=False):
            if "camera" in run:
                out["pose_enc_list"] = self.camera_head(layers[-1])
                out["pose_enc"] = out["pose_enc_list"][-1]
            start = self.cfg.patch_start_idx
            if "depth" in run:
                out["depth"], out["depth_conf"] = self.depth_head(layers, (h, w), start)
            if "point" in run:
                out["world_points"], out["world_points_conf"] = self.point_head(layers, (h, w), start)
        if not self.training:
            out["images"] = images
        return out


def build_model(size: str = "1b", **overrides: object) -> VGGT:
    """Randomly initialised model of a preset size ("1b" or "tiny"); config fields can be overridden."""
    return VGGT(config_for(size, **overrides))
