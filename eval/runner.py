"""Evaluate one checkpoint over the fixed windows and store its results (eval.results).

The first few windows' predictions are kept for the report's qualitative figure, so the
figure shows exactly what was scored.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from shards import ShardStore

from .align import fit_depth_scale
from .checkpoints import Checkpoint
from .metrics.normals import load_kernels
from .predict import Predictor
from .results import summarise, write_result
from .settings import EvalSettings
from .window_metrics import MetricOptions, NonFinitePrediction, Prediction, ReferenceCache, evaluate_window
from .windows import WindowData, WindowSelection, load_window

QUALITATIVE_WINDOWS = 3


def qualitative_sample(pred: Prediction, gt: WindowData, align: str) -> dict:
    """First frame of a window: image, GT depth, aligned predicted depth, building mask."""
    scaled = fit_depth_scale(pred.depth, gt.depth, gt.valid_mask, align).apply(pred.depth)
    return {
        "image": gt.image[0], "gt": gt.depth[0], "pred": scaled[0], "building": gt.building_mask[0],
        "title": gt.window_id,
    }  # fmt: skip


def evaluate_checkpoint(
    checkpoint: Checkpoint,
    predictor: Predictor,
    store: ShardStore,
    selection: WindowSelection,
    settings: EvalSettings,
    out: Path,
    references: ReferenceCache | None = None,
    inputs: dict | None = None,
    training: dict | None = None,
) -> dict:
    """Evaluate one checkpoint on every window; returns its summary (also written to disk).

    ``settings`` has its base model resolved; ``references`` carries GT-only geometry from
    checkpoint to checkpoint of one run. ``inputs`` (code, shards, adapter fingerprints) and
    ``training`` (what the adapter's run config says about its data) are stored with the result.
    """
    predictor.use_adapter(checkpoint.adapter)
    load_kernels()  # a one-time start-up cost, like building the model: not metric time
    options = MetricOptions(
        align=settings.align, geometry=settings.geometry, pointmap=bool(settings.pointmap)
    )
    windows = selection.windows
    rows: list[dict] = []
    qualitative: list[dict] = []
    infer_s = metric_s = 0.0
    frames = 0
    for window in tqdm(windows, desc=checkpoint.tag, unit="window", leave=False):
        gt = load_window(store, window)
        t0 = time.perf_counter()
        pred = predictor.predict(gt.image)
        t1 = time.perf_counter()
        try:
            window_rows = evaluate_window(pred, gt, options, references, pose=selection.pose_window(window))
        except NonFinitePrediction as exc:
            raise ValueError(
                f"checkpoint {checkpoint.tag} ({checkpoint.adapter}), window {window.window_id}: {exc}"
            ) from None
        metric_s += time.perf_counter() - t1
        infer_s += t1 - t0
        frames += len(window.frames)
        if len(qualitative) < QUALITATIVE_WINDOWS:
            qualitative.append(qualitative_sample(pred, gt, settings.align))
        for row in window_rows:
            rows.append(
                {"checkpoint": checkpoint.tag, "epoch": checkpoint.epoch, "window": window.window_id,
                 "path_m": window.path_m, **row}
            )  # fmt: skip
    table = pd.DataFrame(rows)
    summary = {
        "checkpoint": checkpoint.tag,
        "epoch": checkpoint.epoch,
        "adapter": str(checkpoint.adapter) if checkpoint.adapter else None,
        "windows": len(windows),
        "window_ids": [w.window_id for w in windows],
        "window_selection": selection.summary(),
        "settings": settings.result_key(),
        "inputs": inputs or {},
        "training": training,
        "alignment": {
            "depth": settings.align,
            "geometry": "sim3_depth_cameras",
            "pointmap": "sim3_points",
            "pose": "sim3_umeyama_centres",
        },
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
    write_result(out, checkpoint.tag, table, summary, qualitative)
    return summary
