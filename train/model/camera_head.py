"""Camera head: a small transformer over the per-frame camera tokens, refined iteratively with adaLN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .architecture import VGGTConfig
from .layers import Block, Mlp

POSE_DIM = 9  # translation (3), quaternion XYZW (4), fov_h, fov_w


def activate_pose(raw: Tensor) -> Tensor:
    """Translation and quaternion stay linear; field-of-view values go through ReLU (must be positive)."""
    return torch.cat((raw[..., :7], F.relu(raw[..., 7:])), dim=-1)


class CameraHead(nn.Module):
    """Predicts one absT_quaR_FoV encoding per frame; returns the encoding after every refinement step."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        dim = 2 * cfg.embed_dim
        self.iterations = cfg.camera_iterations
        self.trunk = nn.Sequential(
            *(Block(dim, cfg.camera_num_heads, cfg.mlp_ratio) for _ in range(cfg.camera_trunk_depth))
        )
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_DIM)

    def forward(self, last_layer_tokens: Tensor) -> list[Tensor]:
        """last_layer_tokens: (B, S, P, 2C) from the final aggregator layer -> list of (B, S, 9)."""
        tokens = self.token_norm(last_layer_tokens[:, :, 0])
        b, s, _ = tokens.shape
        raw: Tensor | None = None
        encodings = []
        for _ in range(self.iterations):
            condition = self.empty_pose_tokens.expand(b, s, -1) if raw is None else raw.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(condition)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            raw = delta if raw is None else raw + delta
            encodings.append(activate_pose(raw))
        return encodings
