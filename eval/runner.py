"""Evaluate the baseline and every checkpoint over fixed windows, resumably.

Per checkpoint, window rows go to `<tag>_windows.parquet` and the summary to
`<tag>_metrics.json`, each written to a temporary name and renamed; the JSON is written
last and is what marks a checkpoint finished, so a crash mid-checkpoint leaves nothing
that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from shards import ShardStore

from .discover import Checkpoint
from .predict import Predictor
from .stats import bootstrap_ci
from .window_metrics import MetricOptions, ReferenceCache, evaluate_window
from .windows import EvalWindow, load_window

log = logging.getLogger(__name__)
TMP_MARK = ".tmp-"
HEADLINE = (
    ("depth", "all", "abs_rel"),
    ("depth", "all", "delta1"),
    ("depth", "building", "abs_rel"),
    ("depth", "non_building", "abs_rel"),
    ("pose", "pose", "ate_rmse"),
    ("pose", "pose", "auc_30"),
    ("geometry", "normals", "normal_median"),
    ("geometry", "planarity", "planarity_mean"),
    ("pointcloud", "all", "chamfer"),
)


def headline_name(metric_group: str, group: str, metric: str) -> str:
    return f"{metric_group}/{group}/{metric}"


@dataclass
class RunSettings:
    """Everything that changes a checkpoint's numbers; a stored result made with other
    settings is stale and is evaluated again."""

    split: str
    seq_len: int
    seq_stride: int
    align: str
    model_size: str
    weights: str | None
    seed: int
    device: str
    bf16: bool
    geometry: bool


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def finished(out: Path, tag: str, settings: RunSettings, window_ids: list[str]) -> bool:
    """True when both result files exist and were made with these settings and windows."""
    metrics, windows = out / f"{tag}_metrics.json", out / f"{tag}_windows.parquet"
    if not (metrics.is_file() and windows.is_file()):
        return False
    try:
        stored = json.loads(metrics.read_text())
    except json.JSONDecodeError:
        return False
    if stored.get("settings") != asdict(settings) or stored.get("window_ids") != window_ids:
        log.warning("%s: stored result used other settings or windows; evaluating again", tag)
        return False
    return True


def summarise(rows: pd.DataFrame, n_boot: int = 1000) -> dict[str, dict]:
    """Mean and 95% bootstrap interval over windows for each headline metric."""
    out = {}
    for mg, group, metric in HEADLINE:
        sel = rows[(rows["metric_group"] == mg) & (rows["group"] == group)]
        if metric not in sel:
            continue
        ci = bootstrap_ci(sel[metric].to_numpy(dtype=float), n_boot=n_boot)
        out[headline_name(mg, group, metric)] = {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n}
    return out


def evaluate_checkpoint(
    checkpoint: Checkpoint,
    predictor: Predictor,
    store: ShardStore,
    windows: list[EvalWindow],
    options: MetricOptions,
    settings: RunSettings,
    out: Path,
    references: ReferenceCache | None = None,
) -> dict:
    """Evaluate one checkpoint on every window; returns its summary (also written to disk).

    ``references`` carries GT-only geometry from checkpoint to checkpoint of one run.
    """
    predictor.use_adapter(checkpoint.adapter)
    rows: list[dict] = []
    infer_s = metric_s = 0.0
    frames = 0
    for window in tqdm(windows, desc=checkpoint.tag, unit="window", leave=False):
        gt = load_window(store, window)
        t0 = time.perf_counter()
        pred = predictor.predict(gt.images)
        t1 = time.perf_counter()
        window_rows = evaluate_window(pred, gt, options, references)
        metric_s += time.perf_counter() - t1
        infer_s += t1 - t0
        frames += len(window.frames)
        for row in window_rows:
            rows.append(
                {"checkpoint": checkpoint.tag, "epoch": checkpoint.epoch, "window": window.window_id, **row}
            )
    table = pd.DataFrame(rows)
    summary = {
        "checkpoint": checkpoint.tag,
        "epoch": checkpoint.epoch,
        "adapter": str(checkpoint.adapter) if checkpoint.adapter else None,
        "windows": len(windows),
        "window_ids": [w.window_id for w in windows],
        "settings": asdict(settings),
        "alignment": {"depth": settings.align, "points": "sim3_points", "pose": "sim3_umeyama_centres"},
        "metrics": summarise(table),
        "runtime": {
            "frames_per_s": frames / max(infer_s, 1e-9),
            "windows_per_s": len(windows) / max(infer_s + metric_s, 1e-9),
            "inference_s": infer_s,
            "metrics_s": metric_s,
            "metrics_share": metric_s / max(infer_s + metric_s, 1e-9),
            "peak_gpu_mem_gb": predictor.peak_memory_gb(),
        },
    }
    _atomic_write(out / f"{checkpoint.tag}_windows.parquet", lambda p: table.to_parquet(p, index=False))
    _atomic_write(
        out / f"{checkpoint.tag}_metrics.json", lambda p: p.write_text(json.dumps(summary, indent=2))
    )
    return summary
