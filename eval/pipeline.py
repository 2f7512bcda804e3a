"""`vggt-eval` end to end: discover, evaluate what is not finished, aggregate, report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shards import ShardStore

from . import plots
from .base import resolve_base
from .discover import discover
from .markdown import write_report
from .predict import Predictor
from .report import (
    DEFAULT_COMPOSITE,
    best_and_keep,
    composite_scores,
    load_results,
    overall_table,
    paired_table,
)
from .runner import RunSettings, evaluate_checkpoint, finished
from .window_metrics import MetricOptions, ReferenceCache
from .windows import load_window, select_windows

log = logging.getLogger(__name__)
QUALITATIVE_WINDOWS = 3


@dataclass
class EvalRequest:
    ckpt_dir: Path
    shards: Path
    out: Path
    weights: str | None = None  # None: the run's model.weights (random init if none)
    seed: int | None = None  # None: the run's run.seed (0 without a run config)
    model_size: str | None = None  # None: the run's model.size ("1b" without a run config)
    split: str = "val"
    seq_len: int = 8
    seq_stride: int = 8
    max_seqs: int | None = None
    align: str = "window"
    device: str = "auto"
    bf16: bool = False
    geometry: bool = True
    composite: dict[str, float] | None = None
    top_k: int = 1


def run_evaluation(req: EvalRequest) -> Path:
    """Evaluate every unfinished checkpoint, then (re)write all aggregate outputs."""
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    for debris in out.glob("*.tmp-*"):
        debris.unlink()
    store = ShardStore(req.shards)
    windows = select_windows(store.index, req.split, req.seq_len, req.seq_stride, req.max_seqs)
    checkpoints = discover(req.ckpt_dir)
    base = resolve_base(checkpoints, req.model_size, req.weights, req.seed)
    settings = RunSettings(
        req.split, req.seq_len, req.seq_stride, req.align, base.size, base.weights, base.seed,
        req.device, req.bf16, req.geometry,
    )  # fmt: skip
    window_ids = [w.window_id for w in windows]
    todo = [c for c in checkpoints if not finished(out, c.tag, settings, window_ids)]
    log.info(
        "%d windows; %d checkpoints (%d already evaluated)",
        len(windows),
        len(checkpoints),
        len(checkpoints) - len(todo),
    )
    predictor = Predictor(base.size, base.weights, req.device, req.bf16, base.seed) if todo else None
    options = MetricOptions(align=req.align, geometry=req.geometry)
    references = ReferenceCache()
    for checkpoint in todo:
        evaluate_checkpoint(checkpoint, predictor, store, windows, options, settings, out, references)
        log.info("evaluated %s", checkpoint.tag)
    return write_outputs(out, store, windows[:QUALITATIVE_WINDOWS], predictor, req)


def write_outputs(
    out: Path, store: ShardStore, sample_windows, predictor: Predictor | None, req: EvalRequest
) -> Path:
    rows, summaries = load_results(out)
    weights = req.composite or DEFAULT_COMPOSITE
    scores = composite_scores(summaries, weights)
    overall = overall_table(summaries, scores)
    paired = paired_table(rows)
    best, keep = best_and_keep(overall, req.top_k)
    rows.to_parquet(out / "windows.parquet", index=False)
    overall.to_csv(out / "metrics_overall.csv", index=False)
    paired.to_csv(out / "paired_vs_baseline.csv", index=False)
    headline = [c for c in overall.columns if c.count("/") == 2 and not c.startswith("runtime")]
    figures = [
        plots.metric_curves(
            overall, [m for m in headline if m.startswith("depth/")], out / "depth_vs_epoch.png", "Depth"
        ),
        plots.metric_curves(
            overall, [m for m in headline if m.startswith("pose/")], out / "pose_vs_epoch.png", "Pose"
        ),
        plots.metric_curves(
            overall,
            [m for m in headline if m.startswith(("geometry/", "pointcloud/"))],
            out / "geometry_vs_epoch.png",
            "Geometry",
        ),
        plots.building_vs_rest(overall, out / "building_vs_non_building.png"),
        plots.depth_bins(rows, out / "error_vs_depth_bin.png"),
        plots.summary_radar(overall, out / "summary_radar.png"),
    ]
    if predictor is not None:
        figures.append(
            plots.qualitative_grid(
                _qualitative(store, sample_windows, predictor, req), out / "qualitative.png"
            )
        )
    return write_report(out / "report.md", summaries, overall, paired, best, keep, weights, figures)


def _qualitative(store: ShardStore, windows, predictor: Predictor, req: EvalRequest) -> list[dict]:
    """First frame of a few fixed windows, predicted by the last evaluated model state."""
    from .align import fit_depth_scale

    samples = []
    for window in windows:
        gt = load_window(store, window)
        pred = predictor.predict(gt.images)
        scaled = fit_depth_scale(pred.depth, gt.depth, gt.valid, req.align).apply(pred.depth)
        samples.append(
            {"image": gt.images[0], "gt": gt.depth[0], "pred": scaled[0], "building": gt.building[0],
             "title": window.window_id},
        )  # fmt: skip
    return samples
