"""The settings of one `vggt-eval` run, the one object that travels through the evaluator.

Values are checked when the object is made, so a bad argument stops the run before anything
is loaded, with a message naming the command-line option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .align import DEPTH_ALIGN_MODES
from .results import HEADLINE_METRICS
from .statistics import ADJUSTMENTS
from .windows import DEFAULT_MAX_GAP, DEFAULT_MIN_BASELINE_M


def _valid_composite(weights: object) -> bool:
    return (
        isinstance(weights, dict)
        and bool(weights)
        and all(
            key in HEADLINE_METRICS
            and isinstance(w, int | float)
            and not isinstance(w, bool)
            and math.isfinite(w)
            and w >= 0
            for key, w in weights.items()
        )
    )


class SettingsError(ValueError):
    """A `vggt-eval` argument is out of range; the message names the option."""


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    ckpt_dir: Path
    shards: Path
    out: Path
    weights: str | None = None  # None: the run's model.weights (random init if none)
    seed: int | None = None  # None: the run's run.seed (0 without a run config)
    model_size: str | None = None  # None: the run's model.size ("1b" without a run config)
    split: str = "val"
    sequences: tuple[str, ...] | None = None  # None: every sequence of the split
    seq_len: int = 8
    seq_stride: int = 8
    max_seqs: int | None = None
    max_gap: int = DEFAULT_MAX_GAP
    min_baseline_m: float = DEFAULT_MIN_BASELINE_M
    align: str = "window"
    device: str = "auto"
    bf16: bool = False
    geometry: bool = True
    pointmap: bool | None = None  # None: scored when an evaluated run adapts the point head
    composite: dict[str, float] | None = None
    top_k: int = 1
    adjust: str = "holm"

    def __post_init__(self) -> None:
        need = (  # (fine, option, value, what it needs)
            (self.seq_len >= 2, "--seq-len", self.seq_len, "at least 2 frames per window"),
            (self.seq_stride >= 1, "--seq-stride", self.seq_stride, "at least 1"),
            (self.max_seqs is None or self.max_seqs >= 1, "--max-seqs", self.max_seqs, "at least 1"),
            (self.max_gap >= 1, "--max-gap", self.max_gap, "at least 1 frame"),
            (
                math.isfinite(self.min_baseline_m) and self.min_baseline_m >= 0,
                "--min-baseline",
                self.min_baseline_m,
                "a finite length >= 0 (metres)",
            ),
            (self.top_k >= 1, "--top-k", self.top_k, "at least 1"),
            (
                self.align in DEPTH_ALIGN_MODES,
                "--align",
                self.align,
                f"one of {', '.join(DEPTH_ALIGN_MODES)}",
            ),
            (self.adjust in ADJUSTMENTS, "--adjust", self.adjust, f"one of {', '.join(ADJUSTMENTS)}"),
            (self.sequences is None or len(self.sequences) > 0, "--sequences", self.sequences, "a name"),
            (self.composite is None or _valid_composite(self.composite), "--composite", self.composite,
             "a JSON object of headline metric -> finite weight >= 0, "
             f"metrics from: {', '.join(HEADLINE_METRICS)}"),
        )  # fmt: skip
        for fine, option, value, what in need:
            if not fine:
                raise SettingsError(f"{option}: need {what}, got {value!r}")

    def result_key(self) -> dict[str, object]:
        """Everything in the settings that changes a checkpoint's numbers (with the base model
        resolved); a stored result made with another key is stale and is evaluated again."""
        return {
            "split": self.split,
            "sequences": sorted(self.sequences) if self.sequences else None,
            "seq_len": self.seq_len,
            "seq_stride": self.seq_stride,
            "max_gap": self.max_gap,
            "min_baseline_m": self.min_baseline_m,
            "align": self.align,
            "model_size": self.model_size,
            "weights": self.weights,
            "seed": self.seed,
            "device": self.device,
            "bf16": self.bf16,
            "geometry": self.geometry,
            "pointmap": self.pointmap,
        }
