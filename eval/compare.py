"""`vggt-eval compare`: several evaluated runs side by side, paired where windows match."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .aggregate import with_verdicts  # noqa: E402
from .checkpoints import BASELINE  # noqa: E402
from .results import HEADLINE, headline_name, load_results, per_window  # noqa: E402
from .statistics import (  # noqa: E402
    ADJUSTMENT_NAMES,
    ALPHA,
    Adjustment,
    higher_is_better,
    paired_bootstrap_ci,
    sign_flip_pvalue,
)


def _best(overall: pd.DataFrame) -> str:
    runs = overall[overall["checkpoint"] != BASELINE]
    if runs.empty or runs["composite"].isna().all():
        return BASELINE
    return str(runs.sort_values("composite", ascending=False)["checkpoint"].iloc[0])


def compare_runs(eval_dirs: list[Path], out: Path, adjust: Adjustment = "holm") -> Path:
    """Best checkpoint of each run side by side; paired tests between the runs' best checkpoints
    on shared windows, adjusted over all pairs x metrics together."""
    if adjust not in ADJUSTMENT_NAMES:
        raise ValueError(f"--adjust: need one of {', '.join(ADJUSTMENT_NAMES)}, got {adjust!r}")
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for d in eval_dirs:
        overall_path = Path(d) / "metrics_overall.csv"
        if not overall_path.is_file():
            raise FileNotFoundError(f"{overall_path} not found: run vggt-eval on that run first")
        rows, _ = load_results(Path(d))
        name = Path(d).parent.name if Path(d).name == "eval" else Path(d).name
        runs[name if name not in runs else str(d)] = (pd.read_csv(overall_path), rows)
    metrics = [headline_name(*h) for h in HEADLINE]
    side = []
    for name, (overall, _) in runs.items():
        best = _best(overall)
        row = overall.set_index("checkpoint").loc[best]
        side.append({"run": name, "best_checkpoint": best, **{m: row.get(m, float("nan")) for m in metrics}})
    table = pd.DataFrame(side)
    table.to_csv(out / "comparison.csv", index=False)

    paired = []
    names = list(runs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            best_a, best_b = table.loc[i, "best_checkpoint"], table.loc[names.index(b), "best_checkpoint"]
            for metric in metrics:
                ta, tb = per_window(runs[a][1], metric), per_window(runs[b][1], metric)
                if ta.empty or tb.empty or best_a not in ta or best_b not in tb:
                    continue
                joined = pd.concat(
                    [ta[best_a].rename("a"), tb[best_b].rename("b")], axis=1, join="inner"
                ).dropna()
                if joined.empty:
                    continue
                a_values, b_values = joined["a"].to_numpy(), joined["b"].to_numpy()
                diff = paired_bootstrap_ci(a_values, b_values)
                paired.append(
                    {"run_a": a, "run_b": b, "metric": metric, "diff_a_minus_b": diff.mean, "lo": diff.lo,
                     "hi": diff.hi, "windows": diff.n, "p_value": sign_flip_pvalue(a_values - b_values)}
                )  # fmt: skip
    tests = with_verdicts(pd.DataFrame(paired), adjust, diff="diff_a_minus_b")
    tests = tests.rename(columns={"verdict": "verdict_for_a"})
    tests.to_csv(out / "paired.csv", index=False)

    present = [m for m in metrics if any(m in o for o, _ in runs.values())]
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], present, strict=True):
        for name, (overall, _) in runs.items():
            if metric not in overall:
                continue
            curve = overall[overall["checkpoint"] != BASELINE].sort_values("epoch")
            ax.plot(curve["epoch"], curve[metric], marker="o", label=name)
        ax.set_title(f"{metric}\n({'higher' if higher_is_better(metric) else 'lower'} is better)", fontsize=8)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "comparison_curves.png", dpi=110)
    plt.close(fig)
    md = out / "comparison.md"
    md.write_text(
        "# Run comparison\n\n```\n"
        + table.to_string(index=False)
        + "\n```\n\nPaired differences of the best checkpoints on shared windows: see paired.csv. "
        f"Sign-flip permutation p-values, adjusted over all {len(tests)} tests with "
        f"{ADJUSTMENT_NAMES[adjust]}; `verdict_for_a` is a gain or loss only where the adjusted "
        f"p-value is below {ALPHA}.\n\n![curves](comparison_curves.png)\n"
    )
    return md
