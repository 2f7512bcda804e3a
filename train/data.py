"""Training windows streamed from shards: anchors, building-aware stratified sampling, GT
normalisation as in the VGGT recipe, random crops in 14-px steps and colour jitter.

Sample `g` of a run is a pure function of (seed, g), so any number of DataLoader workers or
DDP ranks, and a resumed run, see exactly the same data in the same order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from shards import PATCH_SIZE, STRATA, ShardStore

from .config import ConfigError, DataConfig


@dataclass(frozen=True)
class Anchor:
    """A frame a window is built around (it starts there, or ends so as to include it near
    the end of a sequence)."""

    dataset: str
    sequence: str
    position: int  # index into the sequence's sorted frame list
    stratum: str


class WindowIndex:
    """Frames per sequence and the anchors a window may start from."""

    def __init__(self, index: pd.DataFrame, cfg: DataConfig) -> None:
        rows = index if cfg.split == "all" else index[index["split"] == cfg.split]
        if rows.empty:
            raise ConfigError(f"data.split: no frames with split {cfg.split!r} in the shards")
        self.frames: dict[tuple[str, str], np.ndarray] = {}
        anchors: list[Anchor] = []
        for (dataset, sequence), group in rows.groupby(["dataset", "sequence"], sort=True):
            group = group.sort_values("frame")
            self.frames[(dataset, sequence)] = group["frame"].to_numpy()
            if len(group) < cfg.seq_len:
                continue
            ok = (group["valid_points"] >= cfg.min_valid_points).to_numpy()
            for pos in np.flatnonzero(ok):
                anchors.append(Anchor(dataset, sequence, int(pos), str(group["stratum"].iloc[pos])))
        if not anchors:
            raise ConfigError(
                f"no window anchors: no sequence has {cfg.seq_len} frames starting at a frame with "
                f">= {cfg.min_valid_points} valid depth pixels (data.min_valid_points)"
            )
        self.anchors = anchors
        self.by_stratum = {s: [i for i, a in enumerate(anchors) if a.stratum == s] for s in STRATA}

    def check_weights(self, weights: dict[str, float]) -> None:
        for stratum, weight in weights.items():
            if weight > 0 and not self.by_stratum.get(stratum):
                counts = {s: len(v) for s, v in self.by_stratum.items()}
                raise ConfigError(
                    f"data.strata_weights: stratum {stratum!r} has weight {weight} but no anchors "
                    f"(anchors per stratum: {counts}); set its weight to 0"
                )


def strata_weights_at(cfg: DataConfig, progress: float) -> dict[str, float]:
    """Stratum weights in force at `progress` (0..1 of training): the first schedule phase
    whose `until` lies ahead, else the base weights."""
    for phase in sorted(cfg.strata_schedule, key=lambda p: p.until):
        if progress < phase.until:
            return phase.weights
    return cfg.strata_weights


class WindowDataset(Dataset):
    """Item g -> one training window; deterministic in (seed, g)."""

    def __init__(self, store_root: str, cfg: DataConfig, seed: int, total_samples: int) -> None:
        self.root = store_root
        self.cfg = cfg
        self.seed = seed
        self.total = total_samples
        self._store: ShardStore | None = None
        self.windows = WindowIndex(ShardStore(store_root).index, cfg)
        if not cfg.overfit:
            for phase in [cfg.strata_weights, *(p.weights for p in cfg.strata_schedule)]:
                self.windows.check_weights(phase)

    @property
    def store(self) -> ShardStore:  # opened lazily so each DataLoader worker has its own handles
        if self._store is None:
            self._store = ShardStore(self.root)
        return self._store

    def __len__(self) -> int:
        return self.total

    def _pick(self, rng: np.random.Generator, g: int) -> tuple[Anchor, int]:
        if self.cfg.overfit:
            return self.windows.anchors[0], 1
        weights = strata_weights_at(self.cfg, g / max(1, self.total))
        strata = [s for s, w in weights.items() if w > 0]
        p = np.array([weights[s] for s in strata], dtype=np.float64)
        stratum = strata[rng.choice(len(strata), p=p / p.sum())]
        members = self.windows.by_stratum[stratum]
        anchor = self.windows.anchors[members[rng.integers(len(members))]]
        n_frames = len(self.windows.frames[(anchor.dataset, anchor.sequence)])
        longest = (n_frames - 1) // (self.cfg.seq_len - 1)
        stride = int(rng.integers(1, max(1, min(self.cfg.max_stride, longest)) + 1))
        return anchor, stride

    def __getitem__(self, g: int) -> dict[str, torch.Tensor | str]:
        rng = np.random.default_rng([self.seed, int(g)])
        anchor, stride = self._pick(rng, int(g))
        frames = self.windows.frames[(anchor.dataset, anchor.sequence)]
        start = min(anchor.position, len(frames) - 1 - stride * (self.cfg.seq_len - 1))
        picked = frames[start + stride * np.arange(self.cfg.seq_len)]
        sample = normalise_window(self.store.read_window(anchor.dataset, anchor.sequence, picked))
        sample = random_crop(sample, self.cfg.crop_height, self.cfg.crop_width, rng)
        images = sample.pop("image").astype(np.float32) / 255.0
        if self.cfg.color_jitter > 0:
            images = colour_jitter(images, self.cfg.color_jitter, rng)
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sample.items()}
        out["images"] = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        out["sequence"] = anchor.sequence
        out["frames"] = torch.from_numpy(picked.astype(np.int64))
        return out


def normalise_window(window: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Express a window (`ShardStore.read_window`) in its first camera's frame, scaled so that
    the mean distance of valid points to that camera is 1 (the reference GT normalisation).
    Keys keep the shard contract's names; `cam_from_world` becomes 3x4 and `scale` is added."""
    first = window["cam_from_world"][0]
    world_from_first = np.linalg.inv(first)
    cam_from_world = np.stack([c @ world_from_first for c in window["cam_from_world"]])
    valid = window["valid_mask"]
    world = window["world_points"].astype(np.float64)
    points = world @ first[:3, :3].T + first[:3, 3]
    points[~valid] = 0.0
    norms = np.linalg.norm(points[valid], axis=-1)
    scale = float(norms.mean()) if norms.size else 1.0
    scale = scale if scale > 1e-8 else 1.0
    cam_from_world[:, :3, 3] /= scale
    return {
        "image": window["image"],
        "depth": (window["depth"] / scale).astype(np.float32),
        "valid_mask": valid,
        "world_points": (points / scale).astype(np.float32),
        "cam_from_world": cam_from_world[:, :3, :].astype(np.float32),
        "intrinsics": window["intrinsics"].astype(np.float32),
        "semantic": window["semantic"].astype(np.int64),
        "building_mask": window["building_mask"],
        "scale": np.array(scale, dtype=np.float64),
    }


def random_crop(
    sample: dict[str, np.ndarray], height: int | None, width: int | None, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Same crop for all frames of a window, origin on the 14-px grid; intrinsics follow."""
    full_h, full_w = sample["depth"].shape[1:3]
    h, w = min(height or full_h, full_h), min(width or full_w, full_w)
    h, w = h - h % PATCH_SIZE, w - w % PATCH_SIZE
    if h < PATCH_SIZE or w < PATCH_SIZE:
        raise ConfigError(f"crop {height}x{width} does not fit stored frames of {full_h}x{full_w}")
    y0 = PATCH_SIZE * int(rng.integers(0, (full_h - h) // PATCH_SIZE + 1))
    x0 = PATCH_SIZE * int(rng.integers(0, (full_w - w) // PATCH_SIZE + 1))
    if (h, w) == (full_h, full_w):
        return sample
    out = dict(sample)
    for key in ("image", "depth", "valid_mask", "world_points", "semantic", "building_mask"):
        out[key] = sample[key][:, y0 : y0 + h, x0 : x0 + w]
    intrinsics = sample["intrinsics"].copy()
    intrinsics[:, 0, 2] -= x0
    intrinsics[:, 1, 2] -= y0
    out["intrinsics"] = intrinsics
    return out


def colour_jitter(images: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation factors in [1 - strength, 1 + strength], one set
    per window so frames stay photometrically consistent."""
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    out = images * b
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * c + mean
    grey = out.mean(axis=-1, keepdims=True)
    out = (out - grey) * s + grey
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class RankSampler(Sampler[int]):
    """Global sample ids for one rank: step k's global batch is ids [k*B*W, (k+1)*B*W), and
    rank r takes its contiguous slice, so W ranks x batch B see what one process with batch
    B*W sees. `start_step` resumes mid-run."""

    def __init__(self, steps: int, batch_size: int, rank: int, world_size: int, start_step: int = 0) -> None:
        self.steps, self.batch, self.rank, self.world = steps, batch_size, rank, world_size
        self.start = start_step

    def __iter__(self):
        global_batch = self.batch * self.world
        for step in range(self.start, self.steps):
            base = step * global_batch + self.rank * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.batch


def validation_windows(
    store_root: str, cfg: DataConfig, split: str, count: int
) -> list[dict[str, torch.Tensor]]:
    """Up to `count` windows of consecutive `split` frames, anchors spread evenly over the
    split, no colour jitter, crop origin fixed per window: the same windows at every
    validation of a run."""
    store = ShardStore(store_root)
    windows = WindowIndex(store.index, dataclasses.replace(cfg, split=split))
    picks = np.unique(np.linspace(0, len(windows.anchors) - 1, count).round().astype(int))
    out = []
    for i, pick in enumerate(picks):
        anchor = windows.anchors[pick]
        frames = windows.frames[(anchor.dataset, anchor.sequence)]
        start = min(anchor.position, len(frames) - cfg.seq_len)
        picked = frames[start : start + cfg.seq_len]
        sample = normalise_window(store.read_window(anchor.dataset, anchor.sequence, picked))
        sample = random_crop(sample, cfg.crop_height, cfg.crop_width, np.random.default_rng(i))
        images = sample.pop("image").astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        window = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in sample.items()}
        window["images"] = torch.from_numpy(np.ascontiguousarray(images))[None]
        out.append(window)
    return out
