"""The settings of one `vggt-eval` run, the one object that travels through the evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    ckpt_dir: Path
    shards: Path
    out: Path
    weights: str | None = None  # None: the run's model.weights (random init if none)
    seed: int | None = None  # None: the run's run.seed (0 without a run config)
    model_size: str | None = None  # None: the run's model.size ("1b" without a run config)
    split: str = "val"
    seq_len: int = 8
    seq_stride: int = 8
    max_seqs: int | None = None
    align: str = "window"
    device: str = "auto"
    bf16: bool = False
    geometry: bool = True
    composite: dict[str, float] | None = None
    top_k: int = 1

    def result_key(self) -> dict[str, object]:
        """Everything that changes a checkpoint's numbers (with the base model resolved); a
        stored result made with another key is stale and is evaluated again."""
        return {
            "split": self.split,
            "seq_len": self.seq_len,
            "seq_stride": self.seq_stride,
            "align": self.align,
            "model_size": self.model_size,
            "weights": self.weights,
            "seed": self.seed,
            "device": self.device,
            "bf16": self.bf16,
            "geometry": self.geometry,
        }
