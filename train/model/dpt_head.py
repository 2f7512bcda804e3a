"""DPT dense head: fuses four aggregator layers into a full-resolution map (depth or world points)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .architecture import VGGTConfig


def uv_embedding(channels: int, height: int, width: int, aspect: float, like: Tensor) -> Tensor:
    """Sin/cos embedding (channels, height, width) of a centred UV grid whose spans follow the image aspect.

    The grid spans +-aspect/diag horizontally and +-1/diag vertically (diag = sqrt(aspect^2 + 1)),
    sampled at cell centres; u fills the first half of the channels, v the second.
    """
    diag = math.sqrt(aspect**2 + 1.0)
    span_x, span_y = aspect / diag, 1.0 / diag
    u = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=like.dtype)
    v = torch.linspace(
        -span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=like.dtype
    )
    uu, vv = torch.meshgrid(u.to(like.device), v.to(like.device), indexing="xy")
    quarter = channels // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float64, device=like.device) / quarter)

    def sincos(coord: Tensor) -> Tensor:
        angles = coord.reshape(-1, 1).double() * omega
        return torch.cat((angles.sin(), angles.cos()), dim=-1).float()

    emb = torch.cat((sincos(uu), sincos(vv)), dim=-1).reshape(height, width, channels)
    return emb.permute(2, 0, 1).to(like.dtype)


def add_uv_embedding(x: Tensor, image_hw: tuple[int, int], scale: float = 0.1) -> Tensor:
    h, w = image_hw
    return x + scale * uv_embedding(x.shape[1], x.shape[2], x.shape[3], w / h, x)[None]


def upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """relu -> conv -> relu -> conv, added to relu(input): the reference ReLUs its input in place."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FusionBlock(nn.Module):
    """Adds the refined skip feature (when present), refines, upsamples, then a 1x1 conv."""

    def __init__(self, features: int, has_skip: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = upsample(x, size or (x.shape[2] * 2, x.shape[3] * 2))
        return self.out_conv(x)


class Scratch(nn.Module):
    """Container whose attribute names match the checkpoint's `scratch.*` keys."""

    def __init__(self, out_channels: tuple[int, ...], features: int, output_dim: int | None) -> None:
        super().__init__()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features, has_skip=False)
        if output_dim is None:  # feature extractor (track head): keep the full width, no prediction
            self.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
            )


def inverse_log(y: Tensor) -> Tensor:
    return torch.sign(y) * torch.expm1(y.abs())


ACTIVATIONS = {"exp": torch.exp, "inv_log": inverse_log}


class DPTHead(nn.Module):
    """Dense prediction head; `output_dim` channels = values + 1 confidence (confidence = 1 + exp(c)).

    With `output_dim=None` it is a feature extractor (the track head's layout) and has no forward output head.
    """

    def __init__(
        self,
        cfg: VGGTConfig,
        output_dim: int | None,
        activation: str = "exp",
        features: int | None = None,
    ) -> None:
        super().__init__()
        dim, oc = 2 * cfg.embed_dim, cfg.dpt_out_channels
        features = features or cfg.dpt_features
        self.patch_size = cfg.patch_size
        self.layers = cfg.dpt_layers
        self.frames_chunk = cfg.dpt_frames_chunk
        self.activation = activation
        self.norm = nn.LayerNorm(dim)
        self.projects = nn.ModuleList(nn.Conv2d(dim, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = Scratch(oc, features, output_dim)

    def forward(
        self, layers: list[Tensor | None], image_hw: tuple[int, int], patch_start: int
    ) -> tuple[Tensor, Tensor]:
        """layers: aggregator outputs (B, S, P, 2C) -> (values (B, S, H, W, D-1), confidence (B, S, H, W))."""
        frames = next(t for t in layers if t is not None).shape[1]
        chunks = [
            self._forward_frames(layers, image_hw, patch_start, start, min(start + self.frames_chunk, frames))
            for start in range(0, frames, self.frames_chunk)
        ]
        return torch.cat([c[0] for c in chunks], dim=1), torch.cat([c[1] for c in chunks], dim=1)

    def _forward_frames(
        self, layers: list[Tensor | None], image_hw: tuple[int, int], patch_start: int, start: int, stop: int
    ) -> tuple[Tensor, Tensor]:
        h, w = image_hw
        rows, cols = h // self.patch_size, w // self.patch_size
        features = []
        for i, layer in enumerate(self.layers):
            tokens = layers[layer][:, start:stop, patch_start:]
            b, s = tokens.shape[:2]
            x = self.norm(tokens.reshape(b * s, rows * cols, -1))
            x = x.permute(0, 2, 1).reshape(b * s, -1, rows, cols)
            x = add_uv_embedding(self.projects[i](x), image_hw)
            features.append(self.resize_layers[i](x))
        x = self.fuse(features)
        x = add_uv_embedding(upsample(x, (rows * self.patch_size, cols * self.patch_size)), image_hw)
        out = self.scratch.output_conv2(x).permute(0, 2, 3, 1)
        values = ACTIVATIONS[self.activation](out[..., :-1])
        conf = 1 + out[..., -1].exp()
        return values.reshape(b, s, *values.shape[1:]), conf.reshape(b, s, *conf.shape[1:])

    def fuse(self, features: list[Tensor]) -> Tensor:
        """Coarse-to-fine fusion of the four projected feature maps, then output_conv1."""
        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(f) for i, f in enumerate(features, start=1))
        x = sc.refinenet4(l4, size=l3.shape[2:])
        x = sc.refinenet3(x, l3, size=l2.shape[2:])
        x = sc.refinenet2(x, l2, size=l1.shape[2:])
        x = sc.refinenet1(x, l1)
        return sc.output_conv1(x)
