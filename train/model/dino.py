"""DINOv2-style ViT with register tokens, used as the per-frame patch embedder of the aggregator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .architecture import VGGTConfig
from .layers import Block, maybe_checkpoint


class PatchProjection(nn.Module):
    """Non-overlapping patch convolution; kept as its own module so the key is `patch_embed.proj`."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoPatchEmbed(nn.Module):
    """ViT-L/14 + 4 registers in the 1B config; returns only the normalized patch tokens."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        dim, grid = cfg.embed_dim, cfg.img_size // cfg.patch_size
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_embed = PatchProjection(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        # Unused by VGGT but present in the checkpoint.
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.dino_num_heads, cfg.mlp_ratio, layer_scale=1.0, norm_eps=1e-6)
            for _ in range(cfg.dino_depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.checkpointing = False

    def _pos_embed(self, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        """Bicubic (antialiased) resize of the square grid to rows x cols; the class position is kept."""
        n = self.pos_embed.shape[1] - 1
        side = int(round(n**0.5))
        if rows == cols == side:
            return self.pos_embed
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((pos[:, :1], grid), dim=1).to(dtype)

    def forward(self, images: Tensor) -> Tensor:
        """images: (N, 3, H, W) normalized -> (N, H/p * W/p, dim)."""
        n, _, h, w = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        x = x + self._pos_embed(h // self.patch_size, w // self.patch_size, x.dtype)
        x = torch.cat((x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = maybe_checkpoint(block, x, enabled=self.checkpointing)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
