"""Bootstrap intervals over evaluation windows, and the gain/loss decision against a baseline.

A checkpoint only "beats" the baseline where the paired interval of (checkpoint - baseline)
over shared windows excludes zero, read in the metric's own direction.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

Verdict = Literal["gain", "loss", "no significant change"]

# Metric base names (the part after the last "/"); parametrised families by prefix.
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {
        "abs_rel",
        "sq_rel",
        "rmse",
        "rmse_log",
        "silog",
        "mae",
        "ate_rmse",
        "rpe_trans_rmse",
        "rpe_rot_rmse",
        "normal_mean",
        "normal_median",
        "planarity_mean",
        "accuracy",
        "completeness",
        "chamfer",
    }
)
HIGHER_IS_BETTER_PREFIXES: tuple[str, ...] = (
    "delta",
    "rra_",
    "rta_",
    "auc_",
    "normal_pct_",
    "planarity_pct_",
)


class Interval(NamedTuple):
    """Mean of the finite values, its percentile bootstrap interval, and how many values it used."""

    mean: float
    lo: float
    hi: float
    n: int


def higher_is_better(metric: str) -> bool:
    """Direction of a registered metric; unknown names raise so a new metric cannot be misread."""
    base = metric.rsplit("/", 1)[-1]
    if base in LOWER_IS_BETTER:
        return False
    if base.startswith(HIGHER_IS_BETTER_PREFIXES):
        return True
    raise KeyError(f"metric {metric!r} has no registered direction")


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0, block: int = 4_000_000
) -> Interval:
    """Percentile bootstrap interval of the mean over windows; NaN windows are left out.

    Resamples are drawn as an index matrix in blocks of about ``block`` entries to bound memory.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    rows = max(1, block // n)
    means = np.concatenate(
        [
            x[rng.integers(0, n, size=(min(rows, n_boot - start), n))].mean(axis=1)
            for start in range(0, n_boot, rows)
        ]
    )
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(x.mean()), float(lo), float(hi), n)


def paired_bootstrap_ci(
    candidate: np.ndarray, baseline: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Interval of mean (candidate - baseline) over the same windows, given in the same order.

    Pairing removes the between-window variance that both share; a window missing in either
    (NaN) drops out.
    """
    candidate, baseline = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if candidate.shape != baseline.shape:
        raise ValueError(f"paired values need the same windows: {candidate.shape} vs {baseline.shape}")
    return bootstrap_ci(candidate - baseline, n_boot=n_boot, level=level, seed=seed)


def verdict(diff: Interval, metric: str) -> Verdict:
    """'gain' / 'loss' where the (candidate - baseline) interval excludes zero, else no change."""
    if not (diff.lo > 0 or diff.hi < 0):  # also covers NaN intervals
        return "no significant change"
    improved = (diff.mean > 0) == higher_is_better(metric)
    return "gain" if improved else "loss"
