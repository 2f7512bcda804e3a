"""Training windows streamed from shards: which frames may be trained on (split, sequences,
the leakage buffer around val frames), windows by the shared window rules (shards.windows),
building-aware stratified sampling, GT normalisation as in the VGGT recipe, then augmentation
(train.augment).

Sample `g` of a run is a pure function of (seed, g) -- and of the step's shape (frame count,
output size), itself a pure function of (seed, step) -- so any number of DataLoader workers or
DDP ranks, and a resumed run, see exactly the same data in the same order.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from shards import STRATA, ShardStore
from shards.windows import camera_centres, path_length, sequence_matches, split_at_gaps, within_radius

from .augment import StepShape, colour_jitter, output_size, step_shape, zoom_crop
from .config import AugmentConfig, ConfigError, DataConfig

log = logging.getLogger(__name__)

MAX_DRAWS = 64  # draws of a moving window before the data is declared unusable


@dataclass
class DataReport:
    """What the loader trains on and what the data rules left out: logged at start-up and
    written as the header of metrics.jsonl (counts that only arise while drawing windows --
    redrawn stationary windows, masked non-finite depth -- are logged per step)."""

    split: str
    sequences: list[str]
    val_buffer_m: float
    frames: int  # frames of the split in the chosen sequences
    buffer_removed: int  # of those, left out for lying within val_buffer_m of a val frame
    buffer_removed_by_sequence: dict[str, int]
    max_gap: int
    gaps: int  # places where kept frames are more than max_gap apart (windows never span them)
    short_runs: int  # gap-free runs with fewer frames than a window
    min_baseline_m: float
    anchors: dict[str, int]  # window anchors per stratum
    strata_weights: dict[str, float]  # base weights as used, after renormalising
    empty_strata: list[str] = field(default_factory=list)  # weighted but without anchors

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def strata_warning(self) -> str | None:
        if not self.empty_strata:
            return None
        return (
            f"data.strata_weights: stratum {', '.join(self.empty_strata)} has a weight but no window "
            f"anchors in these shards; weights renormalised over the others ({self.strata_weights})"
        )

    def lines(self) -> list[str]:
        removed = ", ".join(f"{k}: {v}" for k, v in self.buffer_removed_by_sequence.items() if v)
        out = [
            f"data: split {self.split!r}, {len(self.sequences)} sequence(s), {self.frames} frames",
            f"val buffer {self.val_buffer_m:g} m: {self.buffer_removed} train frames removed"
            + (f" ({removed})" if removed else ""),
            f"windows: max_gap {self.max_gap} frames ({self.gaps} gaps, {self.short_runs} runs too "
            f"short for a window), min_baseline {self.min_baseline_m:g} m; anchors {self.anchors}",
        ]
        return out


class Run(NamedTuple):
    """A gap-free run of kept frames of one sequence, with their camera centres."""

    dataset: str
    sequence: str
    frames: np.ndarray
    centres: np.ndarray


@dataclass(frozen=True)
class Anchor:
    """A frame a window is built around (it starts there, or ends so as to include it near
    the end of its run)."""

    run: int  # index into WindowIndex.runs
    position: int  # index into the run's frames
    stratum: str


def choose_sequences(names: list[str], cfg: DataConfig) -> list[str]:
    """The sequence names `data.sequences` / `data.exclude_sequences` leave (full names or
    KITTI-360 drive numbers); a name that matches nothing is an error listing the known ones."""
    for key, tokens in (("sequences", cfg.sequences or []), ("exclude_sequences", cfg.exclude_sequences)):
        for token in tokens:
            if not any(sequence_matches(n, str(token)) for n in names):
                raise ConfigError(
                    f"data.{key}: no sequence {token!r} in the shards (known: {', '.join(names)})"
                )
    chosen = [
        n for n in names if cfg.sequences is None or any(sequence_matches(n, str(t)) for t in cfg.sequences)
    ]
    return [n for n in chosen if not any(sequence_matches(n, str(t)) for t in cfg.exclude_sequences)]


def renormalised(weights: dict[str, float], available: set[str]) -> dict[str, float]:
    """Stratum weights over the strata that have anchors, summing to 1; an error when every
    weighted stratum is empty."""
    kept = {s: w for s, w in weights.items() if w > 0 and s in available}
    if not kept:
        weighted = ", ".join(s for s, w in weights.items() if w > 0)
        raise ConfigError(
            f"data.strata_weights: every weighted stratum ({weighted}) "
            f"has no window anchors in these shards (strata with anchors: {sorted(available) or 'none'})"
        )
    total = sum(kept.values())
    return {s: w / total for s, w in kept.items()}


class WindowIndex:
    """Kept frames per sequence, cut into gap-free runs, and the anchors a window may start from."""

    def __init__(self, store: ShardStore, cfg: DataConfig, shortest: int | None = None) -> None:
        """`shortest`: the fewest frames a window may have (data.seq_len unless it varies)."""
        shortest = shortest or cfg.seq_len
        index = self.index = store.index
        names = sorted(set(index["sequence"]))
        chosen = choose_sequences(names, cfg)
        pool = index[index["sequence"].isin(chosen)]
        rows = pool if cfg.split == "all" else pool[pool["split"] == cfg.split]
        if rows.empty:
            raise ConfigError(
                f"data.split: no frames with split {cfg.split!r} in the chosen sequences "
                f"({', '.join(chosen) or 'none'})"
            )
        self.runs: list[Run] = []
        anchors: list[Anchor] = []
        removed: dict[str, int] = {}
        gaps = short_runs = 0
        for (dataset, sequence), group in rows.groupby(["dataset", "sequence"], sort=True):
            stored, poses = store.cam_from_world(dataset, sequence)
            centres = camera_centres(poses)
            group = group.sort_values("frame")
            frames = group["frame"].to_numpy()
            keep = self._outside_buffer(pool, dataset, sequence, frames, stored, centres, cfg)
            removed[f"{dataset}/{sequence}"] = int((~keep).sum())
            group = group[keep]
            runs = split_at_gaps(group["frame"].to_numpy(), cfg.max_gap)
            gaps += max(0, len(runs) - 1)
            for run_frames in runs:
                if len(run_frames) < shortest:
                    short_runs += 1
                    continue
                part = group[group["frame"].isin(run_frames)]
                run_id = len(self.runs)
                self.runs.append(
                    Run(dataset, sequence, run_frames, centres[np.searchsorted(stored, run_frames)])
                )
                ok = (part["valid_points"] >= cfg.min_valid_points).to_numpy()
                strata = part["stratum"].to_numpy()
                anchors += [Anchor(run_id, int(p), str(strata[p])) for p in np.flatnonzero(ok)]
        if not anchors:
            raise ConfigError(
                f"no window anchors: no run of {shortest} frames without a gap of more than "
                f"{cfg.max_gap} frames (data.max_gap) starts at a frame with >= {cfg.min_valid_points} "
                "valid depth pixels (data.min_valid_points), after the val buffer (data.val_buffer_m)"
            )
        self.anchors = anchors
        self.by_stratum = {s: [i for i, a in enumerate(anchors) if a.stratum == s] for s in STRATA}
        self.report = DataReport(
            split=cfg.split,
            sequences=sorted(
                f"{d}/{s}" for d, s in rows[["dataset", "sequence"]].drop_duplicates().to_numpy()
            ),
            val_buffer_m=cfg.val_buffer_m,
            frames=len(rows),
            buffer_removed=sum(removed.values()),
            buffer_removed_by_sequence=removed,
            max_gap=cfg.max_gap,
            gaps=gaps,
            short_runs=short_runs,
            min_baseline_m=cfg.min_baseline_m,
            anchors={s: len(v) for s, v in self.by_stratum.items()},
            strata_weights={},
        )

    @staticmethod
    def _outside_buffer(
        pool: pd.DataFrame,
        dataset: str,
        sequence: str,
        frames: np.ndarray,
        stored: np.ndarray,
        centres: np.ndarray,
        cfg: DataConfig,
    ) -> np.ndarray:
        """bool per frame: not a val frame's neighbour (camera centre farther than val_buffer_m
        from every val-split frame of the same sequence). Val frames themselves are kept when
        the split asks for them."""
        same = pool[(pool["dataset"] == dataset) & (pool["sequence"] == sequence)]
        val = same.loc[same["split"] == "val", "frame"].to_numpy()
        if cfg.val_buffer_m <= 0 or val.size == 0:
            return np.ones(len(frames), dtype=bool)
        near = within_radius(
            centres[np.searchsorted(stored, frames)], centres[np.searchsorted(stored, val)], cfg.val_buffer_m
        )
        return ~near | np.isin(frames, val)

    def strata_weights(self, weights: dict[str, float]) -> dict[str, float]:
        return renormalised(weights, {s for s, members in self.by_stratum.items() if members})


def strata_weights_at(cfg: DataConfig, progress: float) -> dict[str, float]:
    """Stratum weights in force at `progress` (0..1 of training): the first schedule phase
    whose `until` lies ahead, else the base weights."""
    for phase in sorted(cfg.strata_schedule, key=lambda p: p.until):
        if progress < phase.until:
            return phase.weights
    return cfg.strata_weights


def _key(weights: dict[str, float]) -> tuple:
    """A hashable key of a weights mapping (its id would not survive pickling to workers)."""
    return tuple(sorted(weights.items()))


class SampleKey(NamedTuple):
    """What the sampler hands the dataset: the sample id, the shape of its step's batch and
    how far training is (0..1; for the strata schedule)."""

    g: int
    shape: StepShape
    progress: float


class WindowDataset(Dataset):
    """Item g (or SampleKey) -> one training window; deterministic in (seed, g, step shape)."""

    def __init__(
        self,
        store_root: str,
        cfg: DataConfig,
        seed: int,
        total_samples: int,
        augment: AugmentConfig | None = None,
    ) -> None:
        self.root = store_root
        self.cfg = cfg
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed = seed
        self.total = total_samples
        self._store: ShardStore | None = None
        shortest = self.augment.frames.min_frames if self.augment.frames.enabled else cfg.seq_len
        self.windows = WindowIndex(ShardStore(store_root), cfg, shortest)
        self.report = self.windows.report
        self._phases: dict[tuple, dict[str, float]] = {}  # configured weights -> as used
        self._eligible: dict[tuple[str, int], list[int]] = {}
        self.longest_run = max(len(run.frames) for run in self.windows.runs)
        if not cfg.overfit:
            phases = [cfg.strata_weights, *(p.weights for p in cfg.strata_schedule)]
            available = {s for s, members in self.windows.by_stratum.items() if members}
            empty = sorted({s for w in phases for s, v in w.items() if v > 0 and s not in available})
            self._phases = {_key(w): self.windows.strata_weights(w) for w in phases}
            self.report.strata_weights = self._phases[_key(cfg.strata_weights)]
            self.report.empty_strata = empty
            if self.report.strata_warning:
                log.warning(self.report.strata_warning)
        first = self.windows.runs[0]
        index = self.windows.index
        row = index[(index["dataset"] == first.dataset) & (index["sequence"] == first.sequence)].iloc[0]
        self._stored_size = (int(row["height"]), int(row["width"]))

    @property
    def store(self) -> ShardStore:  # opened lazily so each DataLoader worker has its own handles
        if self._store is None:
            self._store = ShardStore(self.root)
        return self._store

    def __len__(self) -> int:
        return self.total

    def default_shape(self) -> StepShape:
        """The step shape when frame count and aspect do not vary."""
        height, width = output_size(self.augment.crop, *self._stored_size, aspect=None)
        return StepShape(self.cfg.seq_len, height, width)

    def _weights(self, progress: float) -> dict[str, float]:
        return self._phases[_key(strata_weights_at(self.cfg, progress))]

    def _members(self, stratum: str, seq_len: int) -> list[int]:
        """Anchors of a stratum whose run can hold a window of `seq_len` frames (cached)."""
        key = (stratum, seq_len)
        if key not in self._eligible:
            runs = self.windows.runs
            members = self.windows.by_stratum.get(stratum, [])
            self._eligible[key] = [
                m for m in members if len(runs[self.windows.anchors[m].run].frames) >= seq_len
            ]
        return self._eligible[key]

    def _pick(
        self, rng: np.random.Generator, progress: float, seq_len: int | None = None
    ) -> tuple[Anchor, np.ndarray, int]:
        """(anchor, frames of the window, windows redrawn for moving too little); `progress`
        (0..1 of training) picks the strata schedule's phase."""
        seq_len = seq_len or self.cfg.seq_len
        if self.cfg.overfit:
            anchor = self.windows.anchors[0]
            run = self.windows.runs[anchor.run]
            start = min(anchor.position, len(run.frames) - seq_len)
            return anchor, run.frames[start : start + seq_len], 0
        weights = self._weights(progress)
        strata = [s for s in weights if self._members(s, seq_len)]
        if not strata:
            raise ConfigError(
                f"no run of {seq_len} frames without a gap in any weighted stratum; lower "
                "augment.frames.max_frames (or data.seq_len)"
            )
        p = np.array([weights[s] for s in strata], dtype=np.float64)
        stratum = strata[rng.choice(len(strata), p=p / p.sum())]
        members = self._members(stratum, seq_len)
        redrawn = 0
        for _ in range(MAX_DRAWS):
            anchor = self.windows.anchors[members[rng.integers(len(members))]]
            run = self.windows.runs[anchor.run]
            longest = (len(run.frames) - 1) // (seq_len - 1)
            stride = int(rng.integers(1, max(1, min(self.cfg.max_stride, longest)) + 1))
            start = min(anchor.position, len(run.frames) - 1 - stride * (seq_len - 1))
            positions = start + stride * np.arange(seq_len)
            if self.cfg.min_baseline_m <= 0 or path_length(run.centres[positions]) >= self.cfg.min_baseline_m:
                return anchor, run.frames[positions], redrawn
            redrawn += 1
        raise ConfigError(
            f"no window of {seq_len} frames in stratum {stratum!r} whose camera path is at least "
            f"{self.cfg.min_baseline_m} m (data.min_baseline_m) in {MAX_DRAWS} draws; lower it or "
            "raise data.max_stride"
        )

    def __getitem__(self, key: int | SampleKey) -> dict[str, torch.Tensor | str]:
        if isinstance(key, SampleKey):
            g, shape, progress = key
        else:
            g, shape, progress = int(key), self.default_shape(), int(key) / max(1, self.total)
        rng = np.random.default_rng([self.seed, int(g)])
        anchor, picked, redrawn = self._pick(rng, progress, shape.frames)
        run = self.windows.runs[anchor.run]
        window = self.store.read_window(run.dataset, run.sequence, picked)
        masked = mask_nonfinite(window, f"{self.root}: {run.dataset}/{run.sequence} frames {picked.tolist()}")
        sample = normalise_window(window)
        sample = zoom_crop(sample, self.augment.crop, shape.height, shape.width, rng)
        images = sample.pop("image").astype(np.float32) / 255.0
        if self.augment.colour.enabled:
            images = colour_jitter(images, self.augment.colour, rng)
        sample["semantic"] = sample["semantic"].astype(np.int64)
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sample.items()}
        out["images"] = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        out["sequence"] = run.sequence
        out["frames"] = torch.from_numpy(picked.astype(np.int64))
        out["redrawn_windows"] = torch.tensor(redrawn, dtype=torch.int64)
        out["nonfinite_depth"] = torch.tensor(masked, dtype=torch.int64)
        return out


def mask_nonfinite(window: dict[str, np.ndarray], where: str) -> int:
    """Mask pixels whose depth or point is NaN/inf (in place: depth 0, invalid) and return how
    many; non-finite cameras cannot be masked and raise, naming the frames."""
    for key in ("cam_from_world", "intrinsics"):
        if not np.isfinite(window[key]).all():
            raise ValueError(f"{where}: non-finite {key} in the shards; rebuild or verify them")
    bad = ~np.isfinite(window["depth"]) | ~np.isfinite(window["world_points"]).all(axis=-1)
    count = int(bad.sum())
    if count:
        window["depth"] = np.where(bad, 0.0, window["depth"]).astype(np.float32)
        window["world_points"] = np.where(bad[..., None], 0.0, window["world_points"]).astype(np.float32)
        window["valid_mask"] = window["valid_mask"] & ~bad
    return count


def normalise_window(window: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Express a window (`ShardStore.read_window`) in its first camera's frame, scaled so that
    the mean distance of valid points to that camera is 1 (the reference GT normalisation).
    Keys keep the shard contract's names; `cam_from_world` becomes 3x4 and `scale` is added."""
    first = window["cam_from_world"][0]
    world_from_first = np.linalg.inv(first)
    cam_from_world = np.stack([c @ world_from_first for c in window["cam_from_world"]])
    valid = window["valid_mask"]
    # R0 X + t0 = R0 (X - C0): subtracting the camera centre first keeps float32 exact enough
    # (world coordinates are stored as float32 anyway)
    centre = world_from_first[:3, 3].astype(np.float32)
    points = _rotate(window["world_points"] - centre, first[:3, :3].astype(np.float32))
    points *= valid[..., None]
    count = int(valid.sum())
    scale = float(np.sqrt((points * points).sum(axis=-1)).sum(dtype=np.float64) / count) if count else 1.0
    scale = scale if scale > 1e-8 else 1.0
    cam_from_world[:, :3, 3] /= scale
    return {
        "image": window["image"],
        "depth": np.where(valid, window["depth"] / np.float32(scale), np.float32(0.0)).astype(np.float32),
        "valid_mask": valid,
        "world_points": points / np.float32(scale),
        "cam_from_world": cam_from_world[:, :3, :].astype(np.float32),
        "intrinsics": window["intrinsics"].astype(np.float32),
        "semantic": window["semantic"],
        "building_mask": window["building_mask"],
        "scale": np.array(scale, dtype=np.float64),
    }


def _rotate(points: np.ndarray, R: np.ndarray) -> np.ndarray:
    """R @ p for points [...,3], elementwise: far faster than a matmul with a 3x3 operand."""
    out = np.empty_like(points)
    for i in range(3):
        out[..., i] = R[i, 0] * points[..., 0] + R[i, 1] * points[..., 1] + R[i, 2] * points[..., 2]
    return out


class RankSampler(Sampler[list]):
    """Batches of sample keys for one rank, one batch per micro-step. Step k's global batch is
    ids [k*B*W, (k+1)*B*W) with B the largest batch a step may have, and rank r takes its
    contiguous slice, so W ranks x batch B see what one process with batch B*W sees.
    `shape_of(step)` gives the step's frame count and output size (the batch then holds
    `batch_of(shape)` windows); `start_step` resumes mid-run."""

    def __init__(
        self,
        steps: int,
        batch_size: int,
        rank: int,
        world_size: int,
        start_step: int = 0,
        shape_of=None,
        batch_of=None,
    ) -> None:
        self.steps, self.batch, self.rank, self.world = steps, batch_size, rank, world_size
        self.start = start_step
        self.shape_of, self.batch_of = shape_of, batch_of

    def __iter__(self):
        global_batch = self.batch * self.world
        for step in range(self.start, self.steps):
            base = step * global_batch + self.rank * self.batch
            if self.shape_of is None:
                yield list(range(base, base + self.batch))
                continue
            shape = self.shape_of(step)
            size = self.batch_of(shape) if self.batch_of else self.batch
            yield [SampleKey(g, shape, step / self.steps) for g in range(base, base + size)]

    def __len__(self) -> int:
        return self.steps - self.start


def step_sampler(
    dataset: WindowDataset, steps: int, batch_size: int, rank: int, world_size: int, start_step: int = 0
) -> RankSampler:
    """The batch sampler for a run: fixed shape, or per-step frame count and aspect (augment)."""
    aug = dataset.augment
    if not (aug.frames.enabled or aug.crop.aspect):
        return RankSampler(steps, batch_size, rank, world_size, start_step)
    budget = aug.frames.frames_per_gpu

    def batch_of(shape: StepShape) -> int:
        return max(1, budget // shape.frames) if aug.frames.enabled else batch_size

    largest = batch_of(StepShape(aug.frames.min_frames, 0, 0)) if aug.frames.enabled else batch_size

    # never more frames than the longest gap-free run holds
    frames = replace(aug.frames, max_frames=min(aug.frames.max_frames, dataset.longest_run))
    if aug.frames.enabled and frames.max_frames < frames.min_frames:
        raise ConfigError(
            f"augment.frames.min_frames: {frames.min_frames} frames, but the longest run without a "
            f"gap holds {dataset.longest_run}"
        )
    clamped = replace(aug, frames=frames)

    def shape_of(step: int) -> StepShape:
        return step_shape(clamped, dataset.cfg.seq_len, dataset._stored_size, dataset.seed, step)

    return RankSampler(steps, largest, rank, world_size, start_step, shape_of, batch_of)


def validation_windows(
    store_root: str, cfg: DataConfig, split: str, count: int, augment: AugmentConfig | None = None
) -> list[dict[str, torch.Tensor]]:
    """Up to `count` windows of consecutive `split` frames (by the same window rules as
    training), anchors spread evenly over the split, at the training output size with no zoom
    and no colour jitter, crop origin fixed per window: the same windows at every validation."""
    store = ShardStore(store_root)
    windows = WindowIndex(store, replace(cfg, split=split, val_buffer_m=0.0))
    crop = replace((augment or AugmentConfig()).crop, zoom=False)
    picks = np.unique(np.linspace(0, len(windows.anchors) - 1, count).round().astype(int))
    out = []
    for i, pick in enumerate(picks):
        anchor = windows.anchors[pick]
        run = windows.runs[anchor.run]
        start = min(anchor.position, len(run.frames) - cfg.seq_len)
        picked = run.frames[start : start + cfg.seq_len]
        window = store.read_window(run.dataset, run.sequence, picked)
        mask_nonfinite(window, f"{store_root}: {run.dataset}/{run.sequence} frames {picked.tolist()}")
        sample = normalise_window(window)
        height, width = output_size(crop, *sample["depth"].shape[1:3], aspect=None)
        sample = zoom_crop(sample, crop, height, width, np.random.default_rng(i))
        sample["semantic"] = sample["semantic"].astype(np.int64)
        images = sample.pop("image").astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        item = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in sample.items()}
        item["images"] = torch.from_numpy(np.ascontiguousarray(images))[None]
        out.append(item)
    return out
