"""PNG plots of what a prepared output root holds, for `kitti360-prep stats --plots`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from shards import STRATA, STRATUM_MIN_RATIO, ShardStore  # noqa: E402

from .data_summary import RATIO_BINS, building_coverage_by_stratum  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def coverage_histogram(index: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, group in index.groupby("split"):
        ax.hist(group["depth_coverage"] * 100, bins=30, alpha=0.6, label=str(split))
    ax.set(xlabel="depth coverage (% of pixels)", ylabel="frames", title="Depth coverage")
    ax.legend()
    return _save(fig, path)


def building_ratio_histogram(index: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labelled = index.dropna(subset=["building_ratio"])
    for split, group in labelled.groupby("split"):
        ax.hist(group["building_ratio"], bins=RATIO_BINS, alpha=0.6, label=str(split))
    ax.axvline(STRATUM_MIN_RATIO["mixed"], color="k", ls=":", lw=1)
    ax.axvline(STRATUM_MIN_RATIO["building_rich"], color="k", ls="--", lw=1)
    ax.set(xlabel="building ratio", ylabel="frames", title="Building ratio (dotted: mixed, dashed: rich)")
    if not labelled.empty:
        ax.legend()
    return _save(fig, path)


def strata_counts(index: pd.DataFrame, path: Path) -> Path:
    counts = index.groupby(["stratum", "split"]).size().unstack(fill_value=0).reindex(STRATA, fill_value=0)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    counts.plot.bar(ax=ax, rot=0)
    ax.set(xlabel="", ylabel="frames", title="Frames per stratum")
    return _save(fig, path)


def building_coverage(index: pd.DataFrame, path: Path) -> Path:
    """Building pixels with depth per stratum, one bar per depth source (solid: whole image,
    hatched: top third)."""
    table = building_coverage_by_stratum(index)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sources = sorted(table["depth_source"].unique())
    strata = [s for s in STRATA if s in set(table["stratum"])]
    width = 0.8 / max(1, 2 * len(sources))
    for k, source in enumerate(sources):
        rows = table[table["depth_source"] == source].set_index("stratum").reindex(strata)
        x = np.arange(len(strata)) + (2 * k - len(sources) + 0.5) * width
        bars = ax.bar(x, rows["building"] * 100, width, label=f"{source}: image")
        colour = bars.patches[0].get_facecolor() if bars.patches else None
        ax.bar(
            x + width,
            rows["top_third"] * 100,
            width,
            color=colour,
            hatch="//",
            alpha=0.5,
            label=f"{source}: top third",
        )
    ax.set_xticks(np.arange(len(strata)), strata)
    ax.set(
        ylabel="building pixels with depth (%)", title="Building depth coverage per stratum", ylim=(0, 100)
    )
    if sources:
        ax.legend(fontsize=7)
    return _save(fig, path)


def sample_grid(store: ShardStore, path: Path, samples: int = 4) -> Path:
    """RGB | depth | building mask for frames spread evenly over the index."""
    index = store.index
    picks = index.iloc[np.linspace(0, len(index) - 1, min(samples, len(index))).astype(int)]
    fig, axes = plt.subplots(len(picks), 3, figsize=(12, 1.6 * len(picks) + 0.4), squeeze=False)
    for row, (_, item) in zip(axes, picks.iterrows(), strict=True):
        frame = store.read(item["sequence"], int(item["frame"]), dataset=item["dataset"])
        depth = np.where(frame["valid_mask"], frame["depth"], np.nan)
        row[0].imshow(frame["image"])
        row[0].set_title(f"{item['sequence']} #{item['frame']}", fontsize=8)
        row[1].imshow(depth, cmap="turbo")
        row[1].set_title(f"depth ({item['depth_coverage'] * 100:.1f}% px)", fontsize=8)
        row[2].imshow(frame["building_mask"], cmap="gray", vmin=0, vmax=1)
        row[2].set_title(f"building mask ({item['stratum']})", fontsize=8)
        for ax in row:
            ax.axis("off")
    return _save(fig, path)


def write_all(store: ShardStore, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    index = store.index
    return [
        coverage_histogram(index, out_dir / "coverage_hist.png"),
        building_ratio_histogram(index, out_dir / "building_ratio_hist.png"),
        strata_counts(index, out_dir / "strata_counts.png"),
        building_coverage(index, out_dir / "building_coverage.png"),
        sample_grid(store, out_dir / "samples.png"),
    ]
