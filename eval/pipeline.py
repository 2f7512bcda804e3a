"""`vggt-eval` end to end: discover, evaluate what is not finished, aggregate, report."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from shards import ShardStore

from . import plots
from .aggregate import DEFAULT_COMPOSITE, best_and_keep, composite_scores, overall_table, paired_table
from .base_model import resolve_base
from .checkpoints import checkpoints_to_evaluate
from .report import write_report
from .results import discard_partial_results, finished, load_qualitative, load_results
from .settings import EvalSettings
from .window_metrics import ReferenceCache
from .windows import select_windows

log = logging.getLogger(__name__)


def run_evaluation(settings: EvalSettings) -> Path:
    """Evaluate every unfinished checkpoint, then (re)write all aggregate outputs."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    discard_partial_results(out)
    store = ShardStore(settings.shards)
    windows = select_windows(
        store.index, settings.split, settings.seq_len, settings.seq_stride, settings.max_seqs
    )
    checkpoints = checkpoints_to_evaluate(settings.ckpt_dir)
    adapters = [c.adapter for c in checkpoints if c.adapter is not None]
    base = resolve_base(adapters, settings.model_size, settings.weights, settings.seed)
    settings = dataclasses.replace(settings, model_size=base.size, weights=base.weights, seed=base.seed)
    window_ids = [w.window_id for w in windows]
    todo = [c for c in checkpoints if not finished(out, c.tag, settings.result_key(), window_ids)]
    log.info(
        "%d windows; %d checkpoints (%d already evaluated)",
        len(windows),
        len(checkpoints),
        len(checkpoints) - len(todo),
    )
    if todo:
        from .predict import Predictor
        from .runner import evaluate_checkpoint

        predictor = Predictor(base.size, base.weights, settings.device, settings.bf16, base.seed)
        references = ReferenceCache()
        for checkpoint in todo:
            evaluate_checkpoint(checkpoint, predictor, store, windows, settings, out, references)
            log.info("evaluated %s", checkpoint.tag)
    return write_outputs(out, settings, checkpoints[-1].tag)


def write_outputs(out: Path, settings: EvalSettings, qualitative_tag: str) -> Path:
    """Aggregate tables, plots and report.md from the stored results; the qualitative figure
    shows the samples kept while evaluating `qualitative_tag` (the newest checkpoint)."""
    rows, summaries = load_results(out)
    weights = settings.composite or DEFAULT_COMPOSITE
    scores = composite_scores(summaries, weights)
    overall = overall_table(summaries, scores)
    paired = paired_table(rows)
    best, keep = best_and_keep(overall, settings.top_k)
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
    samples = load_qualitative(out, qualitative_tag)
    if samples:
        figures.append(plots.qualitative_grid(samples, out / "qualitative.png"))
    else:
        log.info("no qualitative samples stored for %s; qualitative.png not drawn", qualitative_tag)
    return write_report(out / "report.md", summaries, overall, paired, best, keep, weights, figures)
