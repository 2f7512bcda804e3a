"""Bootstrap intervals over evaluation windows, paired tests against a baseline, and the
adjustment of a report's whole family of tests for multiple comparisons.

A report tests every checkpoint on every headline metric: at 5% each, a few "changes" per
report would be chance alone. So each paired difference gets a p-value (a sign-flip
permutation test over windows), the p-values of the whole family are adjusted together (Holm
or Benjamini-Hochberg), and a checkpoint "beats" the baseline on a metric only where the
adjusted p-value stays below the level, read in the metric's own direction.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import numpy as np

Verdict = Literal["gain", "loss", "no significant change"]
Adjustment = Literal["holm", "bh"]
ADJUSTMENTS: tuple[str, ...] = get_args(Adjustment)
ADJUSTMENT_NAMES = {
    "holm": "Holm-Bonferroni (family-wise error)",
    "bh": "Benjamini-Hochberg (false discovery rate)",
}
ALPHA = 0.05
EXACT_PERMUTATION_MAX_N = 16  # up to 2^16 sign patterns are enumerated; more are sampled

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


def sign_flip_pvalue(diff: np.ndarray, n_resamples: int = 20_000, seed: int = 0) -> float:
    """Two-sided p-value of "mean paired difference = 0" by flipping the signs of the per-window
    differences (a paired permutation test; NaN windows are left out, NaN when none remain).

    Under the null each window's difference is as likely negative as positive. With up to
    ``EXACT_PERMUTATION_MAX_N`` windows every sign pattern is enumerated (exact); beyond that
    ``n_resamples`` patterns are drawn with a fixed seed and the observed one counts as well,
    so p is never 0. A handful of windows cannot reach small p-values: with n windows the
    smallest possible exact p is 2 / 2^n.
    """
    d = np.asarray(diff, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return float("nan")
    observed = abs(d.sum())
    tolerance = 1e-9 * max(np.abs(d).sum(), 1e-300)  # equal sums up to rounding count as extreme
    if n <= EXACT_PERMUTATION_MAX_N:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return float((np.abs(signs @ d) >= observed - tolerance).mean())
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_resamples, n))
    extreme = int((np.abs(signs @ d) >= observed - tolerance).sum())
    return (extreme + 1) / (n_resamples + 1)


def adjust_pvalues(p_values: np.ndarray, method: Adjustment = "holm") -> np.ndarray:
    """p-values adjusted for the whole family tested together; NaN entries are not tests (they stay
    NaN and do not count in the family size).

    ``holm``: step-down Bonferroni, controls the family-wise error rate. ``bh``: Benjamini-Hochberg
    step-up, controls the false discovery rate (for independent or positively dependent tests).
    """
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown multiple-comparison adjustment {method!r}; choose from {ADJUSTMENTS}")
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if m == 0:
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    ranked = p[order]
    if method == "holm":
        values = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        values = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    adjusted[order] = np.minimum(values, 1.0)
    return adjusted


def verdict(diff_mean: float, p_adjusted: float, metric: str, alpha: float = ALPHA) -> Verdict:
    """'gain' / 'loss' where the adjusted p-value of (candidate - baseline) is below ``alpha``,
    read in the metric's direction; otherwise (also for NaN) no significant change."""
    if not p_adjusted < alpha or not np.isfinite(diff_mean) or diff_mean == 0:
        return "no significant change"
    improved = (diff_mean > 0) == higher_is_better(metric)
    return "gain" if improved else "loss"
