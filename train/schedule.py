"""Learning-rate schedule: linear warmup over a fraction of steps, then cosine to a floor."""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup: float, min_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    warmup_steps = int(round(warmup * total_steps))
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
