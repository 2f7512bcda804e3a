"""Bootstrap intervals over windows and the gain/loss decision against a baseline."""

from __future__ import annotations

import numpy as np
import pytest

from eval.statistics import bootstrap_ci, higher_is_better, paired_bootstrap_ci, verdict


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
    assert verdict(empty, "abs_rel") == "no significant change"


def test_paired_interval_detects_consistent_gain_and_ignores_noise():
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0.05, 0.4, 60)  # windows differ far more than the change below
    better = baseline - 0.01 + rng.normal(0, 0.003, 60)
    noisy = baseline + rng.normal(0, 0.01, 60)
    gain = paired_bootstrap_ci(better, baseline)
    assert gain.hi < 0
    assert verdict(gain, "building/abs_rel") == "gain"
    assert verdict(gain, "all/delta1") == "loss"  # the same drop is a loss where higher is better
    # unpaired intervals of the two runs overlap: only pairing shows the gain
    assert bootstrap_ci(better).hi > bootstrap_ci(baseline).lo
    no_change = paired_bootstrap_ci(noisy, baseline)
    assert no_change.lo < 0 < no_change.hi
    assert verdict(no_change, "abs_rel") == "no significant change"
    with pytest.raises(ValueError, match="same windows"):
        paired_bootstrap_ci(better[:10], baseline)


def test_metric_directions():
    assert higher_is_better("pose/auc_30") and higher_is_better("normal_pct_11.25")
    assert not higher_is_better("all/0-10m/rmse") and not higher_is_better("chamfer")
    with pytest.raises(KeyError):
        higher_is_better("count")
