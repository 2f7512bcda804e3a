"""What to evaluate: the baseline plus every adapter found under CKPT_DIR (a training run
directory, a folder of peft adapter folders, or one adapter folder; see train.run_dir)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from train.run_dir import find_adapters

BASELINE = "baseline"


@dataclass(frozen=True)
class Checkpoint:
    tag: str
    adapter: Path | None  # None = baseline (no adapter)
    epoch: int | None


def checkpoints_to_evaluate(ckpt_dir: Path, include_baseline: bool = True) -> list[Checkpoint]:
    """Baseline first, then the adapters ordered by epoch (or name)."""
    found = [Checkpoint(a.tag, a.path, a.epoch) for a in find_adapters(ckpt_dir)]
    return ([Checkpoint(BASELINE, None, 0)] if include_baseline else []) + found
