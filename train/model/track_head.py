"""Track head parameter layout, so a model with `enable_track=True` holds the full published checkpoint.

Only the weights are modelled: point tracking is not used by this project, so the module has no
forward pass. The layout is a DPT feature extractor (no UV embedding, features = cfg.track_features)
plus a CoTracker-style update transformer with time/space attention and 64 virtual tracks.
"""

from __future__ import annotations

import torch
from torch import nn

from .architecture import VGGTConfig
from .dpt_head import DPTHead
from .layers import Mlp

CORR_LEVELS, CORR_RADIUS, HIDDEN, DEPTH, HEADS, VIRTUAL_TRACKS = 7, 4, 384, 6, 8, 64


class SelfAttnBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, HEADS, batch_first=True)
        self.mlp = Mlp(dim, 4 * dim)


class CrossAttnBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, HEADS, batch_first=True)
        self.mlp = Mlp(dim, 4 * dim)


class UpdateFormer(nn.Module):
    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, HIDDEN)
        self.output_norm = nn.LayerNorm(HIDDEN)
        self.flow_head = nn.Linear(HIDDEN, output_dim)
        self.virual_tracks = nn.Parameter(torch.zeros(1, VIRTUAL_TRACKS, 1, HIDDEN))  # (sic) checkpoint name
        self.time_blocks = nn.ModuleList(SelfAttnBlock(HIDDEN) for _ in range(DEPTH))
        self.space_virtual_blocks = nn.ModuleList(SelfAttnBlock(HIDDEN) for _ in range(DEPTH))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock(HIDDEN) for _ in range(DEPTH))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock(HIDDEN) for _ in range(DEPTH))


class Tracker(nn.Module):
    def __init__(self, latent: int) -> None:
        super().__init__()
        transformer_dim = 3 * latent + 4
        self.corr_mlp = Mlp(CORR_LEVELS * (2 * CORR_RADIUS + 1) ** 2, HIDDEN, latent)
        self.query_ref_token = nn.Parameter(torch.zeros(1, 2, transformer_dim))
        self.updateformer = UpdateFormer(transformer_dim, latent + 2)
        self.fmap_norm = nn.LayerNorm(latent)
        self.ffeat_norm = nn.GroupNorm(1, latent)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent, latent), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent, 1))


class TrackHead(nn.Module):
    """Weights-only track head (`track_head.feature_extractor.*`, `track_head.tracker.*`)."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        self.feature_extractor = DPTHead(cfg, output_dim=None, features=cfg.track_features)
        self.tracker = Tracker(cfg.track_features)
