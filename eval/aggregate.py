"""Aggregate finished checkpoints: paired comparisons with the baseline, composite score,
best checkpoints and the keep-list."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .checkpoints import BASELINE
from .results import HEADLINE, headline_name, per_window
from .statistics import (
    Adjustment,
    adjust_pvalues,
    higher_is_better,
    paired_bootstrap_ci,
    sign_flip_pvalue,
    verdict,
)

DEFAULT_COMPOSITE = {
    "depth/all/abs_rel": 0.3,
    "depth/building/abs_rel": 0.3,
    "depth/all/delta1": 0.1,
    "pose/pose/auc_30": 0.1,
    "pose/pose/ate_rmse": 0.1,
    "geometry/normals/normal_median": 0.1,
}


def paired_table(rows: pd.DataFrame, n_boot: int = 1000, adjust: Adjustment = "holm") -> pd.DataFrame:
    """Per checkpoint and headline metric: mean, paired (ckpt - baseline) interval, raw and
    adjusted p-values and the verdict. The adjustment runs over the whole table: every
    checkpoint x metric test of the report is one family."""
    records = []
    for mg, group, name in HEADLINE:
        metric = headline_name(mg, group, name)
        table = per_window(rows, metric)
        if table.empty or BASELINE not in table:
            continue
        for tag in table.columns:
            if tag == BASELINE:
                continue
            pair = table[[tag, BASELINE]].dropna()
            candidate, baseline = pair[tag].to_numpy(), pair[BASELINE].to_numpy()
            diff = paired_bootstrap_ci(candidate, baseline, n_boot=n_boot)
            records.append(
                {
                    "checkpoint": tag, "metric": metric, "mean": float(pair[tag].mean()),
                    "baseline": float(pair[BASELINE].mean()), "diff": diff.mean,
                    "diff_lo": diff.lo, "diff_hi": diff.hi, "windows": diff.n,
                    "p_value": sign_flip_pvalue(candidate - baseline),
                }
            )  # fmt: skip
    return with_verdicts(pd.DataFrame(records), adjust)


def with_verdicts(table: pd.DataFrame, adjust: Adjustment, diff: str = "diff") -> pd.DataFrame:
    """Adds `p_adjusted` (over all rows, one family), `adjustment` and `verdict` columns to a
    table of paired tests with `metric`, ``diff`` and `p_value` columns."""
    if table.empty:
        return table
    table = table.copy()
    table["p_adjusted"] = adjust_pvalues(table["p_value"].to_numpy(dtype=float), adjust)
    table["adjustment"] = adjust
    table["verdict"] = [
        verdict(d, p, m) for d, p, m in zip(table[diff], table["p_adjusted"], table["metric"], strict=True)
    ]
    return table


def composite_scores(summaries: list[dict], weights: dict[str, float]) -> dict[str, float]:
    """Weighted relative improvement over the baseline (0 = baseline, higher = better);
    metrics a checkpoint lacks are left out of its weighted mean."""
    base = next((s["metrics"] for s in summaries if s["checkpoint"] == BASELINE), None)
    scores = {}
    for s in summaries:
        total = weight_sum = 0.0
        for metric, w in weights.items():
            if base is None or metric not in s["metrics"] or metric not in base:
                continue
            b, v = base[metric]["mean"], s["metrics"][metric]["mean"]
            if not (np.isfinite(b) and np.isfinite(v)) or b == 0:
                continue
            sign = 1.0 if higher_is_better(metric) else -1.0
            total += w * sign * (v - b) / abs(b)
            weight_sum += w
        scores[s["checkpoint"]] = total / weight_sum if weight_sum else float("nan")
    return scores


def overall_table(summaries: list[dict], scores: dict[str, float]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        flat = {"checkpoint": s["checkpoint"], "epoch": s["epoch"], "windows": s["windows"]}
        for metric, v in s["metrics"].items():
            flat[metric] = v["mean"]
            flat[f"{metric}/ci_lo"] = v["lo"]
            flat[f"{metric}/ci_hi"] = v["hi"]
        flat.update({f"runtime/{k}": v for k, v in s["runtime"].items()})
        flat["composite"] = scores.get(s["checkpoint"], float("nan"))
        rows.append(flat)
    return pd.DataFrame(rows)


def best_and_keep(overall: pd.DataFrame, top_k: int = 1) -> tuple[dict[str, str], list[str]]:
    """Best checkpoint by the composite and by each headline metric; keep-list = baseline +
    top-k per headline metric."""
    best, keep = {}, [BASELINE] if BASELINE in set(overall["checkpoint"]) else []
    candidates = overall[overall["checkpoint"] != BASELINE]
    if candidates.empty:
        return best, keep
    columns = ["composite"] + [headline_name(*h) for h in HEADLINE]
    for column in columns:
        if column not in candidates or candidates[column].isna().all():
            continue
        ascending = column != "composite" and not higher_is_better(column)
        ranked = candidates.sort_values(column, ascending=ascending, na_position="last")
        best[column] = str(ranked["checkpoint"].iloc[0])
        keep += [c for c in ranked["checkpoint"].iloc[:top_k] if c not in keep]
    return best, keep
