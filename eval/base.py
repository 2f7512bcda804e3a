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

import yaml

from train.checkpoints import CONFIG_FILE

from .discover import Checkpoint

log = logging.getLogger(__name__)
DEFAULT_SIZE = "1b"
DEFAULT_SEED = 0


class BaseModel(NamedTuple):
    size: str
    weights: str | None
    seed: int


def _run_config(checkpoints: list[Checkpoint]) -> tuple[Path, dict] | None:
    """The newest checkpoint's saved training config, if any checkpoint has one."""
    for checkpoint in reversed(checkpoints):
        if checkpoint.adapter is None:
            continue
        path = checkpoint.adapter / CONFIG_FILE
        if path.is_file():
            try:
                config = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"{path} is not valid YAML: {exc}") from None
            return path, config
    return None


def resolve_base(
    checkpoints: list[Checkpoint], size: str | None, weights: str | None, seed: int | None
) -> BaseModel:
    """User values first, then the run's config, then defaults (1b, random init, seed 0)."""
    found = _run_config(checkpoints)
    if found is None:
        return BaseModel(size or DEFAULT_SIZE, weights, DEFAULT_SEED if seed is None else seed)
    path, config = found
    model, run = config.get("model", {}) or {}, config.get("run", {}) or {}
    trained = BaseModel(model.get("size", DEFAULT_SIZE), model.get("weights"), run.get("seed", DEFAULT_SEED))
    chosen = BaseModel(
        size or trained.size,
        weights if weights is not None else trained.weights,
        trained.seed if seed is None else seed,
    )
    for field in ("size", "weights", "seed"):
        if getattr(chosen, field) != getattr(trained, field):
            log.warning(
                "base %s %r differs from the run's %r (%s)",
                field, getattr(chosen, field), getattr(trained, field), path,
            )  # fmt: skip
    weights_label = chosen.weights or "random init"
    log.info("base model: size %s, weights %s, seed %d", chosen.size, weights_label, chosen.seed)
    return chosen
