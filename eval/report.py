"""`report.md`: what was evaluated (and on which frames), best checkpoints with intervals,
what changed after the multiple-comparison adjustment, and the training run's leakage guard."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .statistics import ADJUSTMENT_NAMES, ALPHA, EXACT_PERMUTATION_MAX_N
from .windows import sequence_matches

POINTMAP_PREFIX = "pointmap/"


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.4g}"


def describe_base(settings: dict) -> str:
    weights = settings.get("weights")
    source = f"`{weights}`" if weights else f"random init (seed {settings.get('seed')})"
    return f"{settings.get('model_size')}, {source}"


def describe_selection(selection: dict) -> str:
    """One line on what the window rules did (also logged by the pipeline)."""
    if not selection:
        return "window rules not recorded"
    return (
        f"no window spans a gap of more than {selection['max_gap']} frames (gaps found: "
        f"{selection['gaps']}; gap-free runs shorter than a window: {selection['short_runs']}; "
        f"frames in no window: {selection['frames_in_no_window']}); {selection['pose_skipped']} of "
        f"{selection['windows']} windows move less than {selection['min_baseline_m']:g} m "
        "(GT camera path) and are left out of pose metrics"
    )


def _names(names: list[str] | None, empty: str) -> str:
    return ", ".join(names) if names else empty


def describe_training(training: dict | None, splits: dict[str, list[str]]) -> str:
    """The leakage guard of a checkpoint's run, and whether the evaluated sequences were trained on.

    ``splits`` maps each evaluated `dataset/sequence` to the splits its frames have in the shards:
    a sequence was trained on when the run's split, sequences and exclusions let it in."""
    if training is None:
        return "no run config saved with the adapter: training data not recorded"
    if not training.get("recorded"):
        return f"training data not recorded (`{training['config']}` has no `data` section)"
    buffer = training.get("val_buffer_m")
    trained = training.get("sequences")
    excluded = training.get("exclude_sequences") or []
    parts = [
        f"split `{training.get('split')}`, sequences {_names(trained, 'all')}, "
        f"excluded {_names(excluded, 'none')}",
        "val buffer not recorded"
        if buffer is None
        else f"val buffer {buffer:g} m (train frames within {buffer:g} m of a val frame of the same "
        "drive left out)",
    ]
    split = training.get("split")
    seen = [
        name
        for name, its_splits in ((key.split("/", 1)[-1], value) for key, value in splits.items())
        if (split in (None, "all") or split in its_splits)
        and (trained is None or any(sequence_matches(name, t) for t in trained))
        and not any(sequence_matches(name, t) for t in excluded)
    ]
    if not seen:
        parts.append("no evaluated sequence was trained on (held out)")
    elif not buffer:
        parts.append(
            f"evaluated sequences also trained on, without a buffer: {', '.join(seen)} (gains may be leakage)"
        )
    else:
        parts.append(f"evaluated sequences also trained on, beyond the buffer: {', '.join(seen)}")
    return "; ".join(parts)


def _training_lines(summaries: list[dict], splits: dict[str, list[str]]) -> list[str]:
    """One line per distinct training description, naming the checkpoints it covers."""
    lines: dict[str, list[str]] = {}
    for s in summaries:
        if s.get("adapter") is None:
            continue
        lines.setdefault(describe_training(s.get("training"), splits), []).append(s["checkpoint"])
    return [f"- {', '.join(tags)}: {text}" for text, tags in lines.items()] or ["- only the baseline"]


def power_note(paired: pd.DataFrame, adjust: str) -> list[str]:
    """A warning when the report has too few windows for any verdict to survive the adjustment."""
    tested = paired[paired["p_adjusted"].notna()] if "p_adjusted" in paired else paired.iloc[:0]
    if tested.empty:
        return []
    n, m = int(tested["windows"].max()), len(tested)
    if n > EXACT_PERMUTATION_MAX_N:
        return []
    floor = 2.0 / 2**n * (m if adjust == "holm" else 1)
    if floor < ALPHA:
        return []
    return [
        f"- with {n} windows and {m} tests no change can be significant (smallest possible adjusted "
        f"p-value {min(floor, 1.0):.3g}): evaluate more windows (more sequences, a smaller --seq-stride)"
    ]


def _metric_table(overall: pd.DataFrame, metrics: list[str], composite: bool = True) -> list[str]:
    columns = [*metrics, "composite"] if composite else metrics
    lines = ["| checkpoint | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for _, row in overall.iterrows():
        cells = [f"{_fmt(row[m])} [{_fmt(row[m + '/ci_lo'])}, {_fmt(row[m + '/ci_hi'])}]" for m in metrics]
        cells += [_fmt(row["composite"])] if composite else []
        lines.append(f"| {row['checkpoint']} | " + " | ".join(cells) + " |")
    return lines


def write_report(
    path: Path,
    summaries: list[dict],
    overall: pd.DataFrame,
    paired: pd.DataFrame,
    best: dict[str, str],
    keep: list[str],
    weights: dict[str, float],
    plots: list[Path],
    adjust: str = "holm",
) -> Path:
    first = summaries[0] if summaries else {}
    settings = first.get("settings", {})
    selection = first.get("window_selection", {})
    evaluated = selection.get("sequences", [])
    n_tests = int(paired["p_adjusted"].notna().sum()) if "p_adjusted" in paired else 0
    lines = [
        "# VGGT evaluation report",
        "",
        "## What was evaluated",
        f"- checkpoints: {', '.join(s['checkpoint'] for s in summaries)}",
        f"- base model: {describe_base(settings)}; device `{settings.get('device')}`, "
        f"bf16={settings.get('bf16')}",
        f"- split `{settings.get('split')}`, sequences: {_names(evaluated, '-')}",
        f"- windows of {settings.get('seq_len')} frames every {settings.get('seq_stride')} frames: "
        f"{first.get('windows', 0)} windows",
        f"- window rules: {describe_selection(selection)}",
        f"- alignment: depth `{settings.get('align')}` (one least-squares scale per window unless stated); "
        "geometry and point cloud: predicted depth unprojected with the predicted cameras, one Sim(3) "
        "Umeyama per window (`sim3_depth_cameras`); point head: the same on its point map (`sim3_points`); "
        "poses: Sim(3) Umeyama on camera centres",
        "",
        "## Training data and leakage",
        "",
        *_training_lines(summaries, selection.get("splits", {})),
        "",
        "## Statistics",
        "",
        "- intervals: 95% percentile bootstrap over windows",
        "- tests: paired sign-flip permutation test of (checkpoint - baseline) over windows, exact up to "
        f"{EXACT_PERMUTATION_MAX_N} windows (with n windows no p-value is below 2/2^n)",
        f"- multiple comparisons: {ADJUSTMENT_NAMES.get(adjust, adjust)} over all {n_tests} tests of this "
        f"report (checkpoints x headline metrics); a change counts as a gain or loss only where the "
        f"adjusted p-value is below {ALPHA}",
        *power_note(paired, adjust),
        "",
        "## Headline metrics (mean [95% CI])",
        "",
        "Geometry (`geometry/...`, `pointcloud/...`) is computed from the predicted depth unprojected "
        "with the predicted cameras, what depth and camera training change.",
        "",
    ]
    metrics = [c for c in overall.columns if c.count("/") == 2 and not c.startswith("runtime")]
    lines += _metric_table(overall, [m for m in metrics if not m.startswith(POINTMAP_PREFIX)])
    pointmap = [m for m in metrics if m.startswith(POINTMAP_PREFIX)]
    if pointmap:
        lines += [
            "",
            "## Point-head geometry (mean [95% CI])",
            "",
            "The same geometry from the point head's point map (`world_points`); it only moves for "
            "runs that train the point head.",
            "",
        ]
        lines += _metric_table(overall, pointmap, composite=False)
    elif settings.get("pointmap") is False:
        lines += [
            "",
            "Point-head geometry (`pointmap/...`) was not scored: no evaluated run adapts the point "
            "head (`--pointmap on` scores it).",
        ]
    lines += ["", "## Best checkpoints", ""]
    lines += [f"- by `{k}`: **{v}**" for k, v in best.items()] or ["- only the baseline was evaluated"]
    lines += [
        f"- keep-list: {', '.join(keep)}",
        "",
        "Composite score weights (relative improvement over baseline):",
        "",
    ]
    lines += [f"- `{k}`: {w}" for k, w in weights.items()]
    lines += ["", "## Paired comparison with the baseline", ""]
    if paired.empty:
        lines.append("No checkpoint besides the baseline.")
    else:
        for verdict_name in ("gain", "loss", "no significant change"):
            sel = paired[paired["verdict"] == verdict_name]
            lines.append(f"### {verdict_name} ({len(sel)})")
            for _, r in sel.iterrows():
                lines.append(
                    f"- {r['checkpoint']} `{r['metric']}`: {_fmt(r['mean'])} vs {_fmt(r['baseline'])}, "
                    f"diff {_fmt(r['diff'])} [{_fmt(r['diff_lo'])}, {_fmt(r['diff_hi'])}] "
                    f"over {r['windows']} windows, p {_fmt(r['p_value'])}, adjusted {_fmt(r['p_adjusted'])}"
                )
            lines.append("")
    lines += ["## Runtime", ""]
    for s in summaries:
        rt = s["runtime"]
        lines.append(
            f"- {s['checkpoint']}: {_fmt(rt['frames_per_s'])} frames/s inference, "
            f"{_fmt(rt['windows_per_s'])} windows/s overall, metrics {rt['metrics_share']:.0%} of eval time, "
            f"peak GPU memory {_fmt(rt['peak_gpu_mem_gb'])} GB"
        )
    lines += ["", "## Plots", ""] + [f"- [{p.name}]({p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")
    return path
