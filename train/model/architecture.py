"""Model sizes. The default is the published VGGT-1B layout; `tiny` exists so tests and demos run on CPU."""

from __future__ import annotations

from dataclasses import dataclass, replace

from shards import PATCH_SIZE


@dataclass(frozen=True)
class VGGTConfig:
    """Every size knob of the model; field defaults reproduce the VGGT-1B checkpoint layout."""

    img_size: int = 518  # the pretrained positional grid is img_size // patch_size per side
    patch_size: int = PATCH_SIZE
    embed_dim: int = 1024
    depth: int = 24  # frame/global block pairs in the aggregator
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    dino_depth: int = 24
    dino_num_heads: int = 16
    rope_frequency: float = 100.0
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    dpt_frames_chunk: int = 8
    track_features: int = 128
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = False

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token: camera token + registers come first."""
        return 1 + self.num_register_tokens

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or self.head_dim % 4:
            raise ValueError("embed_dim / num_heads must be a multiple of 4 (2D RoPE splits each head in 4)")
        if max(self.dpt_layers) >= self.depth:
            raise ValueError(f"dpt_layers {self.dpt_layers} must be < depth {self.depth}")


VGGT_1B = VGGTConfig()

TINY = VGGTConfig(
    img_size=56,
    embed_dim=64,
    depth=4,
    num_heads=4,
    dino_depth=2,
    dino_num_heads=4,
    camera_trunk_depth=1,
    camera_num_heads=4,
    dpt_features=16,
    dpt_out_channels=(8, 16, 32, 32),
    dpt_layers=(0, 1, 2, 3),
    track_features=16,
)

PRESETS: dict[str, VGGTConfig] = {"1b": VGGT_1B, "tiny": TINY}


def config_for(size: str, **overrides: object) -> VGGTConfig:
    """Look up a preset by name ("1b" or "tiny") and apply field overrides (e.g. enable_track=True)."""
    try:
        base = PRESETS[size.lower()]
    except KeyError:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(PRESETS)}") from None
    return replace(base, **overrides)
