"""Transformer building blocks shared by the DINO patch embed, the aggregator and the camera head.

Module and parameter names follow the published checkpoint (norm1, attn.qkv, attn.q_norm, ls1.gamma,
mlp.fc1, ...), so a state dict loads without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class RoPE2D(nn.Module):
    """2D rotary embedding: the first half of each head rotates with the token row, the second with the col.

    Positions are integer (row, col) pairs; tables are cached per (length, device, dtype).
    """

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = frequency
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _tables(
        self, dim: int, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        key = (dim, length, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / self.frequency ** (torch.arange(0, dim, 2, device=device).float() / dim)
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq)
            angles = torch.cat((angles, angles), dim=-1).to(dtype)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]

    @staticmethod
    def _rotate_half(x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def _rotate(self, x: Tensor, pos: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        cos, sin = F.embedding(pos, cos)[:, None], F.embedding(pos, sin)[:, None]
        return x * cos + self._rotate_half(x) * sin

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, heads, N, head_dim); pos: (B, N, 2) integer (row, col)."""
        half = x.shape[-1] // 2
        cos, sin = self._tables(half, int(pos.max()) + 1, x.device, x.dtype)
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat(
            (self._rotate(rows, pos[..., 0], cos, sin), self._rotate(cols, pos[..., 1], cos, sin)), dim=-1
        )


class Attention(nn.Module):
    """Multi-head self-attention via scaled_dot_product_attention, optional q/k LayerNorm and RoPE."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope: RoPE2D | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer GELU MLP (fc1, fc2)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale (parameter name `gamma`)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        layer_scale: float = 0.01,
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale)

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


def maybe_checkpoint(block: nn.Module, x: Tensor, pos: Tensor | None = None, *, enabled: bool) -> Tensor:
    """Run `block`, recomputing its activations in backward when enabled and gradients are on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(block, x, pos, use_reentrant=False)
    return block(x, pos)
