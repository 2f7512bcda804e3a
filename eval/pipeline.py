"""`vggt-eval` end to end: discover, evaluate what is not finished, aggregate, report."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from shards import ShardStore

from . import plots
from .aggregate import DEFAULT_COMPOSITE, best_and_keep, composite_scores, overall_table, paired_table
from .base_model import resolve_base
from .checkpoints import adapts_point_head, checkpoints_to_evaluate, training_record
from .provenance import adapter_fingerprint, code_version, shards_fingerprint
from .report import describe_selection, write_report
from .results import discard_partial_results, finished, load_qualitative, load_results
from .settings import EvalSettings
from .window_metrics import ReferenceCache
from .windows import select_windows

log = logging.getLogger(__name__)


def run_evaluation(settings: EvalSettings) -> Path:
    """Evaluate every unfinished checkpoint, then (re)write all aggregate outputs."""
    if not Path(settings.ckpt_dir).is_dir():
        raise FileNotFoundError(f"checkpoint folder {settings.ckpt_dir} does not exist (CKPT_DIR)")
    checkpoints = checkpoints_to_evaluate(settings.ckpt_dir)
    adapters = [c.adapter for c in checkpoints if c.adapter is not None]
    store = ShardStore(settings.shards)
    selection = select_windows(
        store, settings.split, settings.seq_len, settings.seq_stride, settings.max_seqs,
        settings.sequences, settings.max_gap, settings.min_baseline_m,
    )  # fmt: skip
    base = resolve_base(adapters, settings.model_size, settings.weights, settings.seed)
    pointmap = adapts_point_head(adapters) if settings.pointmap is None else settings.pointmap
    settings = dataclasses.replace(
        settings, model_size=base.size, weights=base.weights, seed=base.seed, pointmap=pointmap
    )
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    discard_partial_results(out)
    window_ids = [w.window_id for w in selection.windows]
    common = {"code": code_version(), "shards": shards_fingerprint(store, selection.windows)}
    inputs = {c.tag: common | {"adapter": adapter_fingerprint(c.adapter)} for c in checkpoints}
    todo = [
        c for c in checkpoints if not finished(out, c.tag, settings.result_key(), window_ids, inputs[c.tag])
    ]
    log.info(
        "%d windows (%s); %d checkpoints (%d already evaluated)",
        len(selection.windows),
        describe_selection(selection.summary()),
        len(checkpoints),
        len(checkpoints) - len(todo),
    )
    if todo:
        from .predict import Predictor
        from .runner import evaluate_checkpoint

        predictor = Predictor(base.size, base.weights, settings.device, settings.bf16, base.seed)
        references = ReferenceCache()
        for checkpoint in todo:
            evaluate_checkpoint(
                checkpoint, predictor, store, selection, settings, out, references, inputs[checkpoint.tag],
                training_record(checkpoint.adapter),
            )  # fmt: skip
            log.info("evaluated %s", checkpoint.tag)
    return write_outputs(out, settings, [c.tag for c in checkpoints])


def write_outputs(out: Path, settings: EvalSettings, tags: list[str]) -> Path:
    """Aggregate tables, plots and report.md from the stored results of the checkpoints
    ``tags`` (baseline first); the qualitative figure shows the samples kept while evaluating
    the newest checkpoint."""
    rows, summaries = load_results(out, tags)
    weights = settings.composite or DEFAULT_COMPOSITE
    scores = composite_scores(summaries, weights)
    overall = overall_table(summaries, scores)
    paired = paired_table(rows, adjust=settings.adjust)
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
            "Geometry (depth unprojected with predicted cameras)",
        ),
        plots.building_vs_rest(overall, out / "building_vs_non_building.png"),
        plots.depth_bins(rows, out / "error_vs_depth_bin.png"),
        plots.summary_radar(overall, out / "summary_radar.png"),
    ]
    pointmap = [m for m in headline if m.startswith("pointmap/")]
    if pointmap:
        figures.append(
            plots.metric_curves(overall, pointmap, out / "pointmap_vs_epoch.png", "Point-head geometry")
        )
    samples = load_qualitative(out, tags[-1])
    if samples:
        figures.append(plots.qualitative_grid(samples, out / "qualitative.png"))
    else:
        log.info("no qualitative samples stored for %s; qualitative.png not drawn", tags[-1])
    return write_report(
        out / "report.md", summaries, overall, paired, best, keep, weights, figures, settings.adjust
    )
