"""`report.md`: what was evaluated, best checkpoints with intervals, what changed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.4g}"


def write_report(
    path: Path,
    summaries: list[dict],
    overall: pd.DataFrame,
    paired: pd.DataFrame,
    best: dict[str, str],
    keep: list[str],
    weights: dict[str, float],
    plots: list[Path],
) -> Path:
    settings = summaries[0]["settings"] if summaries else {}
    lines = [
        "# VGGT evaluation report",
        "",
        "## What was evaluated",
        f"- checkpoints: {', '.join(s['checkpoint'] for s in summaries)}",
        f"- split `{settings.get('split')}`, windows of {settings.get('seq_len')} frames every "
        f"{settings.get('seq_stride')} frames: {summaries[0]['windows'] if summaries else 0} windows",
        f"- base weights: `{settings.get('weights')}`; device `{settings.get('device')}`, "
        f"bf16={settings.get('bf16')}",
        f"- alignment: depth `{settings.get('align')}` (one least-squares scale per window unless stated), "
        "points Sim(3) Umeyama on valid pixels (`sim3_points`), poses Sim(3) Umeyama on camera centres",
        "- intervals: 95% percentile bootstrap over windows; a change counts as a gain or loss only "
        "where the paired (checkpoint - baseline) interval excludes zero",
        "",
        "## Headline metrics (mean [95% CI])",
        "",
    ]
    metrics = [c for c in overall.columns if c.count("/") == 2 and not c.startswith("runtime")]
    lines.append("| checkpoint | " + " | ".join(metrics) + " | composite |")
    lines.append("|---" * (len(metrics) + 2) + "|")
    for _, row in overall.iterrows():
        cells = [f"{_fmt(row[m])} [{_fmt(row[m + '/ci_lo'])}, {_fmt(row[m + '/ci_hi'])}]" for m in metrics]
        lines.append(f"| {row['checkpoint']} | " + " | ".join(cells) + f" | {_fmt(row['composite'])} |")
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
                    f"over {r['windows']} windows"
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
