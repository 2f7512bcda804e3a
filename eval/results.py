"""A checkpoint's stored results and the headline metrics read from them.

Per checkpoint, window rows go to `<tag>_windows.parquet`, the few qualitative samples kept
during the loop to `<tag>_qualitative.npz`, and the summary to `<tag>_metrics.json`. Each is
written to a temporary name and renamed; the JSON comes last and is what marks a checkpoint
finished, so a crash mid-checkpoint leaves nothing that looks finished. Nothing here needs
the model: reports and `compare` work from these files alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from shards.atomic import discard_staging, write_atomic, write_text_atomic

from .checkpoints import BASELINE
from .statistics import bootstrap_ci

log = logging.getLogger(__name__)
# Geometry headlines (`geometry`, `pointcloud`) score predicted depth unprojected with the
# predicted cameras; `pointmap` scores the point head by the same definitions.
HEADLINE = (
    ("depth", "all", "abs_rel"),
    ("depth", "all", "delta1"),
    ("depth", "building", "abs_rel"),
    ("depth", "non_building", "abs_rel"),
    ("pose", "pose", "ate_rmse"),
    ("pose", "pose", "auc_30"),
    ("geometry", "normals", "normal_median"),
    ("geometry", "normals_all", "normal_median"),
    ("geometry", "planarity", "planarity_mean"),
    ("pointcloud", "all", "chamfer"),
    ("pointmap", "normals", "normal_median"),
    ("pointmap", "planarity", "planarity_mean"),
    ("pointmap", "all", "chamfer"),
)
QUALITATIVE_KEYS = ("image", "gt", "pred", "building")
METRICS_SUFFIX = "_metrics.json"


def headline_name(metric_group: str, group: str, metric: str) -> str:
    return f"{metric_group}/{group}/{metric}"


HEADLINE_METRICS: tuple[str, ...] = tuple(headline_name(*h) for h in HEADLINE)


def _metrics_path(out: Path, tag: str) -> Path:
    return out / f"{tag}{METRICS_SUFFIX}"


def _windows_path(out: Path, tag: str) -> Path:
    return out / f"{tag}_windows.parquet"


def _qualitative_path(out: Path, tag: str) -> Path:
    return out / f"{tag}_qualitative.npz"


def discard_partial_results(out: Path) -> None:
    discard_staging(out, recursive=False)


def finished(out: Path, tag: str, result_key: dict, window_ids: list[str], inputs: dict) -> bool:
    """True when both result files exist and were made with these settings, windows and inputs
    (code version, shards, adapter); otherwise says what changed."""
    metrics, windows = _metrics_path(out, tag), _windows_path(out, tag)
    if not (metrics.is_file() and windows.is_file()):
        return False
    try:
        stored = json.loads(metrics.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    changed = [
        what
        for what, now, then in (
            ("settings", result_key, stored.get("settings")),
            ("windows", window_ids, stored.get("window_ids")),
            *((f"{k} (inputs)", v, (stored.get("inputs") or {}).get(k)) for k, v in inputs.items()),
        )
        if now != then
    ]
    if changed:
        log.warning("%s: stored result has other %s; evaluating again", tag, ", ".join(changed))
        return False
    return True


def summarise(rows: pd.DataFrame, n_boot: int = 1000) -> dict[str, dict]:
    """Mean and 95% bootstrap interval over windows for each headline metric."""
    out = {}
    for mg, group, metric in HEADLINE:
        sel = rows[(rows["metric_group"] == mg) & (rows["group"] == group)]
        if sel.empty or metric not in sel:
            continue
        ci = bootstrap_ci(sel[metric].to_numpy(dtype=float), n_boot=n_boot)
        out[headline_name(mg, group, metric)] = {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n}
    return out


def write_result(out: Path, tag: str, table: pd.DataFrame, summary: dict, qualitative: list[dict]) -> None:
    """Store one checkpoint's results; the summary JSON last (the completion marker)."""
    write_atomic(_windows_path(out, tag), lambda p: table.to_parquet(p, index=False))
    arrays = {f"{key}_{n}": np.asarray(s[key]) for n, s in enumerate(qualitative) for key in QUALITATIVE_KEYS}
    arrays["titles"] = np.array([s["title"] for s in qualitative])

    def save(path: Path) -> None:
        with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a path
            np.savez(fh, **arrays)

    write_atomic(_qualitative_path(out, tag), save)
    write_text_atomic(_metrics_path(out, tag), json.dumps(summary, indent=2))


def load_qualitative(out: Path, tag: str) -> list[dict]:
    """Samples kept while evaluating `tag` (empty for results that predate them)."""
    path = _qualitative_path(out, tag)
    if not path.is_file():
        return []
    with np.load(path) as data:
        return [
            {"title": str(title), **{key: data[f"{key}_{n}"] for key in QUALITATIVE_KEYS}}
            for n, title in enumerate(data["titles"])
        ]


def _read_summary(path: Path) -> dict | None:
    """A stored summary whose `checkpoint` is the tag in its own file name (so a stored tag can
    never point at files elsewhere); None, with a warning, for anything else."""
    tag = path.name.removesuffix(METRICS_SUFFIX)
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("%s: not readable (%s); ignored", path, exc)
        return None
    if not isinstance(summary, dict) or summary.get("checkpoint") != tag:
        log.warning("%s: names checkpoint %r, not %r; ignored", path, summary.get("checkpoint"), tag)
        return None
    if not _windows_path(path.parent, tag).is_file():
        log.warning("%s: its window table is missing; ignored", path)
        return None
    return summary


def load_results(out: Path, tags: list[str] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Finished checkpoints' window rows and summaries (all of them, or those of ``tags``);
    unfinished or unreadable ones are left out."""
    paths = sorted(out.glob(f"*{METRICS_SUFFIX}"))
    if tags is not None:
        wanted = {_metrics_path(out, t).name for t in tags}
        paths = [p for p in paths if p.name in wanted]
    summaries = [s for s in map(_read_summary, paths) if s is not None]
    tables = [pd.read_parquet(_windows_path(out, s["checkpoint"])) for s in summaries]
    rows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    summaries.sort(key=lambda s: (s["checkpoint"] != BASELINE, s["epoch"] if s["epoch"] is not None else 1e9))
    return rows, summaries


def per_window(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """checkpoint x window table of one headline metric."""
    mg, group, name = metric.split("/")
    sel = rows[(rows["metric_group"] == mg) & (rows["group"] == group)]
    if name not in sel:
        return pd.DataFrame()
    return sel.pivot_table(index="window", columns="checkpoint", values=name, aggfunc="first")
