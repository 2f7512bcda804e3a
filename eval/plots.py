"""Report figures (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .checkpoints import BASELINE  # noqa: E402
from .results import HEADLINE, headline_name  # noqa: E402
from .statistics import higher_is_better  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(overall: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series | None]:
    runs = overall[overall["checkpoint"] != BASELINE].sort_values("epoch")
    base = overall[overall["checkpoint"] == BASELINE]
    return runs, (base.iloc[0] if len(base) else None)


def metric_curves(overall: pd.DataFrame, metrics: list[str], path: Path, title: str) -> Path:
    """Metric vs epoch with 95% intervals, baseline as a dashed line and band."""
    metrics = [m for m in metrics if m in overall]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4 * max(1, len(metrics)), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        runs, base = _series(overall)
        if len(runs):
            x = runs["epoch"].to_numpy(dtype=float)
            yerr = [runs[metric] - runs[f"{metric}/ci_lo"], runs[f"{metric}/ci_hi"] - runs[metric]]
            ax.errorbar(x, runs[metric], yerr=yerr, marker="o", capsize=3, label="checkpoints")
        if base is not None and np.isfinite(base[metric]):
            ax.axhline(base[metric], color="k", ls="--", lw=1, label="baseline")
            ax.axhspan(base[f"{metric}/ci_lo"], base[f"{metric}/ci_hi"], color="k", alpha=0.08)
        arrow = "higher is better" if higher_is_better(metric) else "lower is better"
        ax.set(title=f"{metric}\n({arrow})", xlabel="epoch")
        ax.title.set_fontsize(8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def building_vs_rest(overall: pd.DataFrame, path: Path) -> Path:
    cols = ["depth/building/abs_rel", "depth/non_building/abs_rel"]
    cols = [c for c in cols if c in overall]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(overall) + 2), 3.2))
    x = np.arange(len(overall))
    for i, col in enumerate(cols):
        ax.bar(x + (i - 0.5) * 0.4, overall[col], width=0.4, label=col.split("/")[1])
    ax.set_xticks(x, overall["checkpoint"], rotation=45, ha="right", fontsize=7)
    ax.set(ylabel="AbsRel", title="Depth AbsRel: building vs non-building")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2)
    return _save(fig, path)


def depth_bins(rows: pd.DataFrame, path: Path) -> Path:
    sel = rows[(rows["metric_group"] == "depth") & rows["group"].str.startswith("all/")]
    table = sel.groupby(["group", "checkpoint"])["abs_rel"].mean().unstack()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    table.plot(ax=ax, marker="o")
    ax.set(xlabel="GT depth bin", ylabel="AbsRel", title="Error vs depth")
    ax.legend(fontsize=7)
    return _save(fig, path)


def summary_radar(overall: pd.DataFrame, path: Path) -> Path:
    """Each headline metric relative to the baseline (>1 = better), one polygon per checkpoint."""
    metrics = [headline_name(*h) for h in HEADLINE if headline_name(*h) in overall]
    base = overall[overall["checkpoint"] == BASELINE]
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False)
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(projection="polar")
    if len(base) and metrics:
        b = base.iloc[0]
        for _, row in overall.iterrows():
            ratios = []
            for m in metrics:
                v, bv = row[m], b[m]
                r = (v / bv if higher_is_better(m) else bv / v) if v and bv and np.isfinite(v * bv) else 1.0
                ratios.append(r)
            ax.plot(np.append(angles, angles[0]), np.append(ratios, ratios[0]), label=row["checkpoint"])
        ax.set_xticks(angles, [m.replace("/", "\n", 1) for m in metrics], fontsize=6)
        ax.legend(fontsize=6, loc="lower right")
    ax.set_title("relative to baseline (>1 better)")
    return _save(fig, path)


def qualitative_grid(samples: list[dict], path: Path) -> Path:
    """RGB | GT depth | predicted depth (aligned) | abs-rel error | building mask."""
    fig, axes = plt.subplots(len(samples), 5, figsize=(15, 1.5 * len(samples) + 0.5), squeeze=False)
    for row, s in zip(axes, samples, strict=True):
        gt = np.where(s["gt"] > 0, s["gt"], np.nan)
        vmax = np.nanpercentile(gt, 95) if np.isfinite(gt).any() else 1.0
        err = np.where(s["gt"] > 0, np.abs(s["pred"] - s["gt"]) / np.maximum(s["gt"], 1e-6), np.nan)
        panels = [
            (s["image"], None, s["title"]),
            (gt, dict(cmap="turbo", vmin=0, vmax=vmax), "GT depth"),
            (s["pred"], dict(cmap="turbo", vmin=0, vmax=vmax), "pred depth (aligned)"),
            (err, dict(cmap="magma", vmin=0, vmax=0.3), "abs-rel error"),
            (s["building"], dict(cmap="gray", vmin=0, vmax=1), "building mask"),
        ]
        for ax, (img, kw, title) in zip(row, panels, strict=True):
            ax.imshow(img, **(kw or {}))
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    return _save(fig, path)
