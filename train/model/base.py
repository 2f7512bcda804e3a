"""The frozen base model every adapter is trained on and later meets again.

Training, evaluation, inference and export all build it here, so an adapter always sits on
identical base weights: pretrained when `weights` is given, else a random init fixed by `seed`
(tests and demos).
"""

from __future__ import annotations

import logging

import torch

from .vggt import VGGT, build_model
from .weights import load_pretrained

log = logging.getLogger(__name__)


def build_base_model(
    size: str = "1b",
    weights: str | None = None,
    seed: int = 0,
    bf16: bool = True,
    activation_checkpointing: bool = False,
) -> VGGT:
    """VGGT of preset `size` with `weights` (local path or Hugging Face id) or a seeded random
    init; `bf16` runs the aggregator under bf16 autocast on CUDA."""
    torch.manual_seed(seed)
    model = build_model(size)
    model.aggregator_dtype = torch.bfloat16 if bf16 else None
    if weights:
        report = load_pretrained(model, weights)
        log.info("loaded base weights from %s (%s)", weights, report)
    if activation_checkpointing:
        model.set_activation_checkpointing(True)
    return model
