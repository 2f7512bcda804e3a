"""Depth metrics of one window, per region (all / building / non-building) and per GT depth bin.

All metrics are means (or roots of means) of per-pixel terms, so every group is reduced from
per-cell sums (``np.bincount`` per term) instead of re-masking the pixels per group.
"""

from __future__ import annotations

import numpy as np

from eval.align import DepthAlignMode, fit_depth_scale
from eval.metrics.result import MetricResult

DEPTH_BINS: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0, 80.0)
DEPTH_METRICS: tuple[str, ...] = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "silog",
    "mae",
    "delta1",
    "delta2",
    "delta3",
)
REGIONS: tuple[str, ...] = ("building", "non_building")

# Per-pixel terms whose means give every metric.
# log_c is log_d minus its window mean: SILog's variance is shift-invariant, and centring avoids
# cancellation in mean(x^2) - mean(x)^2 when the log error is nearly constant.
_TERMS = ("abs_rel", "sq_rel", "sq", "abs", "log_d2", "log_c", "log_c2", "delta1", "delta2", "delta3")


def _pixel_terms(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[N, len(_TERMS)] per-pixel terms of positive pred/gt depth pairs."""
    terms = np.empty((len(gt), len(_TERMS)))
    diff = pred - gt
    log_d = np.log(pred / gt)
    log_c = log_d - log_d.mean() if log_d.size else log_d
    # max(p/g, g/p) < 1.25^k  <=>  |log(p/g)| < k log(1.25)
    abs_log = np.abs(log_d)
    terms[:, 0] = np.abs(diff) / gt
    terms[:, 1] = diff**2 / gt
    terms[:, 2] = diff**2
    terms[:, 3] = np.abs(diff)
    terms[:, 4] = log_d**2
    terms[:, 5] = log_c
    terms[:, 6] = log_c**2
    for k in (1, 2, 3):
        terms[:, 6 + k] = abs_log < k * np.log(1.25)
    return terms


def _finalize(sums: np.ndarray, count: int) -> dict[str, float]:
    """Metrics from summed per-pixel terms; NaN for an empty group."""
    if count == 0:
        return {**dict.fromkeys(DEPTH_METRICS, float("nan")), "count": 0}
    m = {k: float(v) for k, v in zip(_TERMS, sums / count, strict=True)}
    return {
        "abs_rel": m["abs_rel"],
        "sq_rel": m["sq_rel"],
        "rmse": float(np.sqrt(m["sq"])),
        "rmse_log": float(np.sqrt(m["log_d2"])),
        # Scale-invariant log error (Eigen et al.), x100 as on the KITTI benchmark.
        "silog": float(np.sqrt(max(m["log_c2"] - m["log_c"] ** 2, 0.0)) * 100.0),
        "mae": m["abs"],
        "delta1": m["delta1"],
        "delta2": m["delta2"],
        "delta3": m["delta3"],
        "count": count,
    }


def _bin_index(gt: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each GT depth, bins [lo, hi) with the last edge included; len(edges)-1 means 'no bin'."""
    n_bins = len(edges) - 1
    idx = np.searchsorted(edges, gt, side="right") - 1
    idx[gt == edges[-1]] = n_bins - 1
    idx[(idx < 0) | (idx >= n_bins)] = n_bins
    return idx


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    building: np.ndarray | None = None,
    align: DepthAlignMode = "window",
    max_depth: float | None = 80.0,
    min_pred: float = 1e-3,
    bins: tuple[float, ...] = DEPTH_BINS,
) -> MetricResult:
    """AbsRel, SqRel, RMSE, RMSE-log, SILog, MAE, delta<1.25^k of one window.

    ``pred``/``gt`` are z-depth [S,H,W] in metres (gt 0 = no measurement), ``building`` a bool
    mask [S,H,W] or None (then building/non-building groups are empty). Valid pixels have finite
    GT in (0, max_depth] and a finite prediction; the scale is fitted on them by ``align``, and
    the aligned prediction is clamped to ``min_pred`` so a collapsed prediction stays finite.
    Groups: ``all``, ``building``, ``non_building``, and ``<region>/<lo>-<hi>m`` per GT depth bin.
    Pixels are pooled over the window's frames.
    """
    valid = np.isfinite(gt) & (gt > 0) & np.isfinite(pred)
    if max_depth is not None:
        valid &= gt <= max_depth
    alignment = fit_depth_scale(pred, gt, valid, align)
    g = gt[valid].astype(np.float64)
    p = np.maximum(alignment.apply(pred)[valid].astype(np.float64), min_pred)
    terms = _pixel_terms(p, g)

    edges = np.asarray(bins, dtype=np.float64)
    n_cols = len(edges)  # bins plus the 'no bin' column
    region = np.zeros(len(g), dtype=np.int64) if building is None else (~building[valid]).astype(np.int64)
    cell = region * n_cols + _bin_index(g, edges)
    n_cells = len(REGIONS) * n_cols
    counts = np.bincount(cell, minlength=n_cells).reshape(len(REGIONS), n_cols)
    sums = np.stack([np.bincount(cell, weights=t, minlength=n_cells) for t in terms.T], axis=-1)
    sums = sums.reshape(len(REGIONS), n_cols, -1)

    bin_names = [f"{lo:g}-{hi:g}m" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    region_rows = {"all": [0, 1], "building": [0], "non_building": [1]}
    groups: dict[str, dict[str, float]] = {}
    for name, rows in region_rows.items():
        rows = rows if building is not None or name == "all" else []  # no mask: regions unknown
        for label, cols in [(name, slice(None))] + [
            (f"{name}/{b}", slice(i, i + 1)) for i, b in enumerate(bin_names)
        ]:
            groups[label] = _finalize(sums[rows, cols].sum(axis=(0, 1)), int(counts[rows, cols].sum()))
    return MetricResult(groups, alignment.record())
