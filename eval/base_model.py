"""Which base model the checkpoints were trained on.

An adapter is only meaningful on the base it was trained with. A training run stores its
config beside every adapter, so model size, weights and (for a random-init base) the seed are
taken from there unless the user says otherwise; a user value that disagrees with the run is
allowed (e.g. a local copy of the weights) but logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from train.run_dir import RunRecord, newest_run_record

log = logging.getLogger(__name__)


class BaseModel(NamedTuple):
    size: str
    weights: str | None
    seed: int

    def describe(self) -> str:
        return f"size {self.size}, weights {self.weights or f'random init (seed {self.seed})'}"


def resolve_base(adapters: list[Path], size: str | None, weights: str | None, seed: int | None) -> BaseModel:
    """User values first, then the newest adapter's run config, then the training defaults
    (1b, random init, seed 0)."""
    record = newest_run_record(adapters) or RunRecord(None)
    trained = BaseModel(record.model.size, record.model.weights, record.seed)
    chosen = BaseModel(
        size or trained.size,
        weights if weights is not None else trained.weights,
        trained.seed if seed is None else seed,
    )
    if record.path is not None:
        for field in BaseModel._fields:
            if getattr(chosen, field) != getattr(trained, field):
                log.warning(
                    "base %s %r differs from the run's %r (%s)",
                    field, getattr(chosen, field), getattr(trained, field), record.path,
                )  # fmt: skip
    log.info("base model: %s", chosen.describe())
    return chosen
