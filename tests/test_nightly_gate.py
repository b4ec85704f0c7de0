"""The nightly's regression gate as a pure function: constructed sample sets, asserted decisions."""

import itertools

import numpy as np
import pytest

from kernelagent.nightly.gate import (GatePolicy, gate, mann_whitney_one_sided, sign_test_one_sided)


def lognormal(seed, median, cv, n):
    return np.random.default_rng(seed).lognormal(np.log(median), cv, n)


def test_a_real_slowdown_in_recorded_samples_is_a_regression():
    stored = lognormal(1, 20.0, 0.04, 30)
    new = lognormal(2, 20.0 * 1.15, 0.04, 30)
    d = gate(stored, new)
    assert d.verdict == "regression", d.reason
    assert d.test == "mann-whitney"
    assert d.ci_low > 1.0 and d.ratio >= 1.05 and d.p_worse < 0.01
    assert "+1" in d.reason  # the change is printed


def test_a_noisy_but_unchanged_kernel_is_not_flagged():
    # 25 % spread, same distribution: a one-timing threshold would fire constantly.
    flagged = []
    for seed in range(100):
        d = gate(lognormal(seed, 50.0, 0.25, 30), lognormal(seed + 1000, 50.0, 0.25, 30))
        if d.verdict == "regression":
            flagged.append((seed, d.reason))
    assert not flagged
    # and a single timing well above the stored median proves nothing
    one = gate(lognormal(3, 50.0, 0.25, 30), [80.0])
    assert one.verdict == "inconclusive" and "at least 5" in one.reason


def test_the_same_noise_with_a_large_shift_is_still_caught():
    d = gate(lognormal(5, 50.0, 0.25, 60), lognormal(6, 50.0 * 1.5, 0.25, 60))
    assert d.verdict == "regression", d.reason


def test_one_outlier_does_not_make_a_regression():
    stored = lognormal(7, 10.0, 0.03, 30)
    new = lognormal(8, 10.0, 0.03, 30)
    new[4] = 100.0  # a preempted sample
    assert gate(stored, new).verdict == "unchanged"


def test_a_significant_shift_below_the_minimum_effect_is_unchanged():
    stored = lognormal(9, 100.0, 0.003, 40)
    new = lognormal(10, 102.0, 0.003, 40)   # +2 %, very significant, not worth a red build
    d = gate(stored, new, GatePolicy(min_effect=0.05))
    assert d.verdict == "unchanged" and d.p_worse < 1e-6
    assert "minimum effect" in d.reason
    assert gate(stored, new, GatePolicy(min_effect=0.01)).verdict == "regression"


def test_the_noise_floor_keeps_timer_resolution_out():
    stored = lognormal(11, 0.30, 0.02, 30)
    new = lognormal(12, 0.40, 0.02, 30)     # +33 %, but 0.1 µs: below a 0.5 µs timer floor
    d = gate(stored, new, GatePolicy(noise_floor=0.5))
    assert d.verdict == "unchanged" and "noise floor" in d.reason
    assert gate(stored, new, GatePolicy(noise_floor=0.0)).verdict == "regression"


def test_improvements_are_reported_not_flagged():
    d = gate(lognormal(13, 30.0, 0.03, 30), lognormal(14, 24.0, 0.03, 30))
    assert d.verdict == "improvement" and not d.flagged and d.ratio < 0.9


def test_a_stored_median_without_samples_uses_the_sign_test():
    d = gate([20.0], lognormal(15, 23.0, 0.03, 25))
    assert d.verdict == "regression" and d.test == "sign-test" and d.n_stored == 1
    same = gate([20.0], lognormal(16, 20.0, 0.2, 25))
    assert same.verdict != "regression"


def test_no_baseline_or_too_few_samples_is_inconclusive():
    assert gate([], lognormal(17, 1.0, 0.1, 30)).verdict == "inconclusive"
    assert gate(None, None).verdict == "inconclusive"
    assert gate(lognormal(18, 1.0, 0.1, 30), [1.5, 1.6, 1.7]).verdict == "inconclusive"


def test_decisions_are_deterministic():
    stored, new = lognormal(19, 10.0, 0.1, 20), lognormal(20, 11.0, 0.1, 20)
    assert gate(stored, new) == gate(list(stored), list(new))


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        GatePolicy(min_effect=0)
    with pytest.raises(ValueError):
        GatePolicy(confidence=1.5)


@pytest.mark.parametrize("n1,n2", [(3, 4), (5, 5), (2, 6)])
def test_exact_mann_whitney_matches_enumeration(n1, n2):
    x = [0.5, 3.5, 6.5, 2.2, 9.1][:n1]
    y = [1.0, 2.0, 4.0, 5.0, 7.0, 8.0][:n2]
    values = x + y
    u_obs = sum(a > b for a in x for b in y)
    ge = le = total = 0
    for idx in itertools.combinations(range(n1 + n2), n1):
        xs = [values[i] for i in idx]
        ys = [values[i] for i in range(n1 + n2) if i not in idx]
        u = sum(a > b for a in xs for b in ys)
        ge += u >= u_obs
        le += u <= u_obs
        total += 1
    p_larger, p_smaller = mann_whitney_one_sided(x, y)
    assert p_larger == pytest.approx(ge / total)
    assert p_smaller == pytest.approx(le / total)


def test_sign_test_tails():
    assert sign_test_one_sided([2.0] * 10, 1.0) == pytest.approx((1 / 1024, 1.0))
    p_larger, p_smaller = sign_test_one_sided([0.5, 2, 3, 4], 1.0)  # 3 of 4 above
    assert p_larger == pytest.approx(5 / 16) and p_smaller == pytest.approx(15 / 16)
