"""Alternating-attention aggregator: per-frame DINO tokens refined by frame blocks and global blocks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .architecture import VGGTConfig
from .dino import DinoPatchEmbed
from .layers import Block, RoPE2D, maybe_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def first_and_rest(tokens: Tensor, batch: int, frames: int) -> Tensor:
    """(1, 2, X, C) learned tokens -> (B*S, X, C): index 0 for the first frame, index 1 for the others."""
    first = tokens[:, :1].expand(batch, 1, *tokens.shape[2:])
    rest = tokens[:, 1:].expand(batch, frames - 1, *tokens.shape[2:])
    return torch.cat((first, rest), dim=1).reshape(batch * frames, *tokens.shape[2:])


def patch_positions(frames: int, rows: int, cols: int, special: int, device: torch.device) -> Tensor:
    """RoPE positions (frames, special + rows*cols, 2): patch (r, c) at (r+1, c+1), special tokens at 0."""
    grid = torch.cartesian_prod(torch.arange(rows, device=device), torch.arange(cols, device=device)) + 1
    pos = torch.cat((torch.zeros(special, 2, dtype=grid.dtype, device=device), grid))
    return pos.expand(frames, -1, -1)


class Aggregator(nn.Module):
    """Returns, per layer, concat(frame-block output, global-block output) as (B, S, P, 2C).

    Only the layers listed in `keep_layers` are kept (others are None) to save activation memory.
    """

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = DinoPatchEmbed(cfg)
        rope = RoPE2D(cfg.rope_frequency)

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(
                Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qk_norm=True, rope=rope)
                for _ in range(cfg.depth)
            )

        self.frame_blocks = blocks()
        self.global_blocks = blocks()
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, cfg.embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, cfg.num_register_tokens, cfg.embed_dim) * 1e-6)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.checkpointing = False

    def set_checkpointing(self, enabled: bool) -> None:
        self.checkpointing = enabled
        self.patch_embed.checkpointing = enabled

    def forward(self, images: Tensor, keep_layers: set[int] | None = None) -> list[Tensor | None]:
        """images: (B, S, 3, H, W) in [0, 1]."""
        b, s, _, h, w = images.shape
        cfg = self.cfg
        x = ((images - self._mean) / self._std).reshape(b * s, 3, h, w)
        patches = self.patch_embed(x)
        tokens = torch.cat(
            (first_and_rest(self.camera_token, b, s), first_and_rest(self.register_token, b, s), patches),
            dim=1,
        )
        p, c = tokens.shape[1:]
        pos = patch_positions(b * s, h // cfg.patch_size, w // cfg.patch_size, cfg.patch_start_idx, x.device)
        global_pos = pos.reshape(b, s * p, 2)
        keep = set(range(cfg.depth)) if keep_layers is None else keep_layers
        outputs: list[Tensor | None] = []
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks, strict=True):
            tokens = maybe_checkpoint(
                frame_block, tokens.reshape(b * s, p, c), pos, enabled=self.checkpointing
            )
            frame_out = tokens.reshape(b, s, p, c)
            tokens = maybe_checkpoint(
                global_block, tokens.reshape(b, s * p, c), global_pos, enabled=self.checkpointing
            )
            keep_this = len(outputs) in keep
            outputs.append(torch.cat((frame_out, tokens.reshape(b, s, p, c)), dim=-1) if keep_this else None)
        return outputs
