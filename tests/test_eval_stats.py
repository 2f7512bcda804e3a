"""Bootstrap intervals over windows, paired permutation p-values, the multiple-comparison
adjustment (checked against hand-computed values) and the gain/loss decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval.aggregate import paired_table
from eval.statistics import (
    adjust_pvalues,
    bootstrap_ci,
    higher_is_better,
    paired_bootstrap_ci,
    sign_flip_pvalue,
    verdict,
)


def test_interval_contains_mean_shrinks_with_n_and_is_reproducible():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.2, 0.05, 20), rng.normal(0.2, 0.05, 2000)
    ci_small, ci_large = bootstrap_ci(small), bootstrap_ci(large)
    for ci, x in ((ci_small, small), (ci_large, large)):
        assert ci.lo <= ci.mean <= ci.hi and ci.mean == pytest.approx(x.mean())
    assert ci_large.hi - ci_large.lo < 0.5 * (ci_small.hi - ci_small.lo)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    # small blocks give the same kind of interval as one big draw
    blocked = bootstrap_ci(large, block=5000)
    assert blocked.lo == pytest.approx(ci_large.lo, abs=0.002)


def test_nan_windows_are_dropped_and_empty_input_is_nan():
    ci = bootstrap_ci(np.array([1.0, np.nan, 3.0]))
    assert ci.n == 2 and ci.mean == 2.0
    empty = bootstrap_ci(np.array([np.nan]))
    assert empty.n == 0 and np.isnan(empty.lo)
    assert np.isnan(sign_flip_pvalue(np.array([np.nan])))
    assert verdict(empty.mean, sign_flip_pvalue(np.array([np.nan])), "abs_rel") == "no significant change"


def test_paired_interval_detects_consistent_gain_and_ignores_noise():
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0.05, 0.4, 60)  # windows differ far more than the change below
    better = baseline - 0.01 + rng.normal(0, 0.003, 60)
    noisy = baseline + rng.normal(0, 0.01, 60)
    gain = paired_bootstrap_ci(better, baseline)
    assert gain.hi < 0
    p_gain = sign_flip_pvalue(better - baseline)
    assert p_gain == pytest.approx(1 / 20_001)  # no sign pattern beats the observed one
    assert verdict(gain.mean, p_gain, "building/abs_rel") == "gain"
    # the same drop is a loss where higher is better
    assert verdict(gain.mean, p_gain, "all/delta1") == "loss"
    # unpaired intervals of the two runs overlap: only pairing shows the gain
    assert bootstrap_ci(better).hi > bootstrap_ci(baseline).lo
    no_change = paired_bootstrap_ci(noisy, baseline)
    assert no_change.lo < 0 < no_change.hi
    p_noise = sign_flip_pvalue(noisy - baseline)
    assert p_noise > 0.05
    assert verdict(no_change.mean, p_noise, "abs_rel") == "no significant change"
    with pytest.raises(ValueError, match="same windows"):
        paired_bootstrap_ci(better[:10], baseline)


def test_metric_directions():
    assert higher_is_better("pose/auc_30") and higher_is_better("normal_pct_11.25")
    assert not higher_is_better("all/0-10m/rmse") and not higher_is_better("chamfer")
    with pytest.raises(KeyError):
        higher_is_better("count")


def test_sign_flip_pvalue_enumerates_every_sign_pattern():
    # d = (1, 2, 3): the 8 patterns have |sum| 6, 4, 2, 0, 0, 2, 4, 6; two reach the observed 6
    assert sign_flip_pvalue(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 / 8)
    # d = (1, -1, 3): |sums| 3, 1, 5, 3, 3, 5, 1, 3; six are >= the observed 3
    assert sign_flip_pvalue(np.array([1.0, -1.0, 3.0])) == pytest.approx(6 / 8)
    # with n windows the smallest exact p-value is 2 / 2^n
    assert sign_flip_pvalue(np.full(5, 0.1)) == pytest.approx(2 / 32)
    assert sign_flip_pvalue(np.zeros(4)) == 1.0
    big = np.random.default_rng(0).normal(0.5, 1.0, 40)
    assert sign_flip_pvalue(big) == sign_flip_pvalue(big)  # sampled with a fixed seed
    assert 0 < sign_flip_pvalue(big) < 0.05


def test_adjustments_match_hand_computed_values():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # Holm, m = 4: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04;
    # running maximum -> 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02, np.nan])
    # BH: p * m / rank -> 0.02, 0.02, 0.04, 0.04; running minimum from the largest down
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02, np.nan])
    np.testing.assert_allclose(adjust_pvalues(np.array([0.3, 0.6]), "holm"), [0.6, 0.6])
    assert adjust_pvalues(np.array([0.9, 0.8]), "holm").max() == 1.0  # capped
    with pytest.raises(ValueError, match="unknown multiple-comparison"):
        adjust_pvalues(p, "bonferroni-ish")


def test_paired_table_adjusts_over_all_checkpoints_and_metrics():
    """Two checkpoints x one metric on 6 windows: each raw p = 2/64 (every window improves) passes
    alone at 5%, but Holm over the family of 2 makes it 1/16 = 0.0625: no verdict survives."""
    windows = [f"w{i}" for i in range(6)]
    rows = pd.DataFrame(
        [
            {"checkpoint": tag, "window": w, "metric_group": "depth", "group": "all", "abs_rel": value}
            for w, base in zip(windows, np.linspace(0.2, 0.4, 6), strict=True)
            for tag, value in (("baseline", base), ("a", base - 0.01), ("b", base - 0.02))
        ]
    )
    table = paired_table(rows, adjust="holm")
    assert list(table["checkpoint"]) == ["a", "b"]
    np.testing.assert_allclose(table["p_value"], [2 / 64, 2 / 64])
    np.testing.assert_allclose(table["p_adjusted"], [4 / 64, 4 / 64])
    assert set(table["verdict"]) == {"no significant change"}
    assert set(table["adjustment"]) == {"holm"}
    # the paired intervals alone exclude zero: without the adjustment both would be "gains"
    assert (table["diff_hi"] < 0).all()


def test_report_warns_when_no_verdict_can_survive_the_adjustment():
    from eval.report import power_note

    paired = pd.DataFrame({"windows": [9] * 40, "p_adjusted": [0.15] * 40})
    (note,) = power_note(paired, "holm")  # 40 x 2/2^9 = 0.156: nothing can reach 0.05
    assert "with 9 windows and 40 tests no change can be significant" in note and "0.156" in note
    assert power_note(paired, "bh") == []  # BH can reach 2/2^9
    assert power_note(paired.assign(windows=20), "holm") == []
