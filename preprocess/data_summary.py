"""What a prepared output root holds, before anyone trains on it: the tables of
`kitti360-prep stats`."""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_MIN_VALID_POINTS = 2000
RATIO_BINS = np.linspace(0.0, 1.0, 11)
GROUP_KEYS = ["split", "dataset", "sequence", "stratum"]


def summarize(index: pd.DataFrame, min_valid_points: int = DEFAULT_MIN_VALID_POINTS) -> pd.DataFrame:
    """One row per split/dataset/sequence/stratum with coverage and valid-point quantiles,
    frames under the valid-point threshold, and building pixels with depth."""
    if index.empty:
        return pd.DataFrame()
    df = index.assign(below=index["valid_points"] < min_valid_points)
    grouped = df.groupby(GROUP_KEYS, dropna=False, sort=True)
    table = grouped.agg(
        frames=("frame", "size"),
        coverage_p10=("depth_coverage", lambda s: s.quantile(0.10)),
        coverage_p50=("depth_coverage", "median"),
        coverage_p90=("depth_coverage", lambda s: s.quantile(0.90)),
        points_p10=("valid_points", lambda s: s.quantile(0.10)),
        points_p50=("valid_points", "median"),
        points_p90=("valid_points", lambda s: s.quantile(0.90)),
        below_min_points=("below", "sum"),
        building_points=("building_valid_points", lambda s: s.sum(min_count=1)),  # null: unknown
        building_ratio_mean=("building_ratio", "mean"),
    )
    return table.reset_index()


def building_coverage_by_stratum(index: pd.DataFrame) -> pd.DataFrame:
    """Mean share of building pixels with depth (whole image and top third) per stratum and
    depth source, so LiDAR-only frames and frames with static clouds sit side by side when a
    root holds both. Frames without semantics know no buildings and are left out."""
    known = index.dropna(subset=["building_depth_coverage"])
    if known.empty:
        return pd.DataFrame(columns=["stratum", "depth_source", "frames", "building", "top_third"])
    grouped = known.groupby(["stratum", "depth_source"], sort=True)
    return grouped.agg(
        frames=("frame", "size"),
        building=("building_depth_coverage", "mean"),
        top_third=("top_building_depth_coverage", "mean"),
    ).reset_index()


def sparse_sequences(index: pd.DataFrame, min_valid_points: int = DEFAULT_MIN_VALID_POINTS) -> pd.DataFrame:
    """Sequences where most frames fall under the threshold (e.g. sparse COLMAP points):
    training on them silently supervises almost nothing."""
    if index.empty:
        return pd.DataFrame(columns=["dataset", "sequence", "frames", "share_below", "median_points"])
    per_seq = index.groupby(["dataset", "sequence"]).agg(
        frames=("frame", "size"),
        share_below=("valid_points", lambda s: float((s < min_valid_points).mean())),
        median_points=("valid_points", "median"),
    )
    return per_seq[per_seq["share_below"] > 0.5].reset_index()


def building_ratio_histogram(index: pd.DataFrame) -> pd.DataFrame:
    """Frames per building-ratio decile and split (frames without semantics excluded)."""
    labelled = index.dropna(subset=["building_ratio"])
    bins = pd.cut(labelled["building_ratio"], RATIO_BINS, include_lowest=True)
    return labelled.groupby([labelled["split"], bins], observed=False).size().unstack(0, fill_value=0)
