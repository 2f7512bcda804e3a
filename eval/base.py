"""Which base model the checkpoints were trained on.

An adapter is only meaningful on the base it was trained with. A training run stores its
resolved config beside every adapter, so model size, weights and (for a random-init base)
the seed are taken from there unless the user says otherwise; a user value that disagrees
with the run is allowed (e.g. a local copy of the weights) but logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from train.checkpoints import CONFIG_FILE
from train.config import ConfigError, TrainConfig, load_config

from .discover import Checkpoint

log = logging.getLogger(__name__)


class BaseModel(NamedTuple):
    size: str
    weights: str | None
    seed: int


def _trained_base(checkpoints: list[Checkpoint]) -> tuple[BaseModel, Path | None]:
    """The base in the newest checkpoint's saved training config (validated like any training
    config) and that file; the training defaults and None when no checkpoint has one."""
    saved = [c.adapter / CONFIG_FILE for c in checkpoints if c.adapter is not None]
    path = next((p for p in reversed(saved) if p.is_file()), None)
    try:
        config = TrainConfig() if path is None else load_config(path)
    except ConfigError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return BaseModel(config.model.size, config.model.weights, config.run.seed), path


def resolve_base(
    checkpoints: list[Checkpoint], size: str | None, weights: str | None, seed: int | None
) -> BaseModel:
    """User values first, then the run's config, then the training defaults (1b, random init, seed 0)."""
    trained, path = _trained_base(checkpoints)
    chosen = BaseModel(
        size or trained.size,
        weights if weights is not None else trained.weights,
        trained.seed if seed is None else seed,
    )
    if path is not None:
        for field in BaseModel._fields:
            if getattr(chosen, field) != getattr(trained, field):
                log.warning(
                    "base %s %r differs from the run's %r (%s)",
                    field, getattr(chosen, field), getattr(trained, field), path,
                )  # fmt: skip
    weights_label = chosen.weights or "random init"
    log.info("base model: size %s, weights %s, seed %d", chosen.size, weights_label, chosen.seed)
    return chosen
