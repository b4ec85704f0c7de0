"""Energy with a stated error: the simulated meter's part-time counter, the window length a
quantisation bound needs, random start phases, repeats, cooldown, idle power after it, the
uncertainty every figure carries, and the energy policy that does not chase noise.

Everything runs on a FakeClock: the simulated truth is known exactly and nothing sleeps."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from kernelagent.errors import BadInput
from kernelagent.harness.energy import read_sample
from kernelagent.harness.energy_window import (Cooldown, EnergyBaseline, energy_estimate, energy_window,
                                               measure_idle)
from kernelagent.harness.testing import FakeClock, SimulatedPowerMeter
from kernelagent.tuner.results import select

H100_LIKE = dict(idle_w=60.0, busy_w=300.0, update_period_s=0.1, sample_window_s=0.025)  # 25 ms of every 100 ms


def sim(clock, **kw):
    return SimulatedPowerMeter(clock=clock, **{**H100_LIKE, **kw})


class Workload:
    """``run_calls`` for the energy window: back-to-back calls of ``per_call_s`` on the fake clock,
    ending a little after the asked duration (as the worker's last sync batch does), and the true
    energy per call of each window, from the simulated meter's exact integral."""

    def __init__(self, meter, clock, per_call_s, rng):
        self.meter, self.clock, self.per_call_s, self.rng = meter, clock, per_call_s, rng
        self.truth_j: list[float] = []

    def __call__(self, duration_s):
        e0 = self.meter.exact_energy_j()
        n = math.ceil((duration_s + self.rng.uniform(0.0, 0.1)) / self.per_call_s)
        self.clock.advance(n * self.per_call_s)
        self.truth_j.append((self.meter.exact_energy_j() - e0) / n)
        return n


def estimate(meter, clock, *, per_call_s=1.3e-4, seed=0, **kw):
    rng = random.Random(seed)
    work = Workload(meter, clock, per_call_s, rng)
    est = energy_estimate(meter, work, rng=rng, clock=clock, sleep=clock.sleep, **kw)
    return est, statistics.fmean(work.truth_j) if work.truth_j else None


# -- the simulated meter ------------------------------------------------------------------------


def test_part_time_counter_credits_the_sampled_part_to_the_whole_period():
    clock = FakeClock()
    meter = sim(clock, update_offset_s=0.03)   # updates at +0.03, +0.13, …; sampled: the first 25 ms of each
    assert meter.counter_update_period_s() == 0.1
    clock.advance(0.03 + 0.1)
    assert meter.energy_mj() == pytest.approx(1800 + 6000, abs=1)   # partial first period, then 60 W × 0.1 s
    clock.advance(0.03)                       # busy for 30 ms after the sampled part: the counter misses it
    meter.mark_busy(True)
    clock.advance(0.03)
    meter.mark_busy(False)
    clock.advance(0.04)
    assert meter.energy_mj() == pytest.approx(7800 + 6000, abs=1)
    assert meter.exact_energy_j() == pytest.approx(7.8 + 6.0 + 0.03 * 240.0)
    clock.advance(0.01)                       # busy for 10 of the 25 sampled ms: credited to the whole 100 ms
    meter.mark_busy(True)
    clock.advance(0.01)
    meter.mark_busy(False)
    clock.advance(0.08)
    assert meter.energy_mj() == pytest.approx(13800 + 6000 + 0.1 * 240.0 * 10 / 25 * 1000, abs=1)


def test_idle_baseline_drifts_with_time_and_temperature():
    clock = FakeClock()
    meter = sim(clock, drift_w_per_s=0.5, leakage_w_per_c=1.0, busy_c=80.0, thermal_tau_s=10.0)
    p0 = meter.power_w()
    clock.advance(10.0)
    assert meter.power_w() == pytest.approx(p0 + 5.0)          # drift alone
    meter.mark_busy(True)
    clock.advance(30.0)
    meter.mark_busy(False)
    hot_idle = meter.power_w()
    assert hot_idle > p0 + 20.0 + 40.0                          # leakage: still hot right after the batch
    clock.advance(60.0)
    assert meter.power_w() == pytest.approx(60.0 + 0.5 * 100.0, abs=0.5)   # cooled: idle plus the drift


def test_update_period_is_measured_when_the_meter_does_not_declare_it():
    clock = FakeClock()
    meter = sim(clock, update_period_s=0.08, sample_window_s=None, declares_update_period=False)
    assert meter.counter_update_period_s() is None
    idle = measure_idle(meter, 0.5, clock=clock, sleep=clock.sleep)
    assert idle.update_period_s == pytest.approx(0.08, abs=0.0021)
    assert idle.power_w == pytest.approx(60.0, rel=0.01) and idle.uncertainty_w < 1.5


# -- the window length a bound needs ------------------------------------------------------------


@pytest.mark.parametrize("period,declared,bound", [(0.1, True, 0.02), (0.05, False, 0.02), (0.1, True, 0.05),
                                                   (0.02, False, 0.01)])
def test_window_length_meets_the_quantisation_bound(period, declared, bound):
    clock = FakeClock()
    meter = sim(clock, update_period_s=period, sample_window_s=period / 4, declares_update_period=declared)
    est, _ = estimate(meter, clock, bound=bound)
    assert est.rejected is None
    assert est.update_period_source == ("declared" if declared else "measured")
    assert est.update_period_s == pytest.approx(period, abs=0.0021)
    assert len(est.windows) == 3
    for w in est.windows:   # 2·T_update / T_window within the bound, for every window
        assert 2 * period / w.window_s <= bound
    assert est.quantisation_rel <= bound
    assert est.window_s <= 2 * (period + 0.0021 + 0.002) / bound     # and not longer than it needs


def test_a_bound_that_needs_too_long_a_window_is_capped_and_says_so():
    clock = FakeClock()
    est, _ = estimate(sim(clock), clock, bound=0.001, max_window_s=30.0, repeats=1)
    assert est.window_s == 30.0 and est.quantisation_rel > 0.001
    assert any("capped at 30 s" in n for n in est.notes)


def test_the_measured_period_is_kept_for_the_next_batch():
    clock = FakeClock()
    meter = sim(clock, declares_update_period=False)
    baseline = EnergyBaseline()
    estimate(meter, clock, baseline=baseline, repeats=1, bound=0.2)
    assert baseline.taken and baseline.update_period_s == pytest.approx(0.1, abs=0.0021)
    est, _ = estimate(meter, clock, baseline=baseline, repeats=1, bound=0.2, idle_power_w=60.0)
    assert est.update_period_source == "measured" and est.update_period_s == baseline.update_period_s


def test_windows_start_at_random_phases():
    clock = FakeClock()
    est, _ = estimate(sim(clock), clock, repeats=5, bound=0.2)
    phases = [w.phase_s for w in est.windows]
    assert len(set(phases)) == 5 and all(0 <= p < 0.1 for p in phases)
    assert len(est.repeats_j) == 5


# -- the stated error covers the truth ------------------------------------------------------------


def test_stated_uncertainty_covers_the_true_energy_over_random_phases():
    """Part-time sampling (25 ms of 100 ms), leakage heating the board across the windows, a
    drifting baseline, and random grid offsets, sampling offsets and start phases: the stated
    ≈95 % uncertainty covers the simulated truth in ≥ 95 % of runs, and is not vacuous."""
    covered, rel_u, rel_err = 0, [], []
    runs = 100
    for seed in range(runs):
        r = random.Random(1000 + seed)
        clock = FakeClock(1000.0 + r.random())
        meter = sim(clock, update_offset_s=r.uniform(0, 0.1), sample_offset_s=r.uniform(0, 0.075),
                    leakage_w_per_c=0.5, drift_w_per_s=0.01, thermal_tau_s=20.0, declares_update_period=False)
        est, truth = estimate(meter, clock, seed=seed, cooldown=Cooldown())
        assert est.rejected is None and est.quantisation_rel <= 0.02
        covered += abs(est.j_per_call - truth) <= est.uncertainty_j
        rel_u.append(est.uncertainty_j / truth)
        rel_err.append(abs(est.j_per_call - truth) / truth)
    assert covered / runs >= 0.95
    assert statistics.median(rel_u) < 0.06          # a stated error a user can act on
    assert max(rel_err) <= 0.02                     # the bound holds for the figure itself


def test_a_single_short_window_misses_by_more_than_the_bound():
    """Why the windows are long: with part-time sampling, one 1 s window (the old default) is off
    by more than 2 % at a good share of start phases; its stated quantisation bound (20 %)
    still covers it."""
    errors, covered = [], 0
    for seed in range(60):
        r = random.Random(seed)
        clock = FakeClock(1000.0 + r.random())
        meter = sim(clock, update_offset_s=r.uniform(0, 0.1), sample_offset_s=r.uniform(0, 0.075))
        est, truth = estimate(meter, clock, seed=seed, bound=None, repeats=1, min_window_s=1.0)
        errors.append(abs(est.j_per_call - truth) / truth)
        covered += abs(est.j_per_call - truth) <= est.uncertainty_j
        assert any("one energy window" in n for n in est.notes)
    assert sum(e > 0.02 for e in errors) >= 6
    assert covered == 60


def test_dynamic_energy_carries_the_idle_power_uncertainty():
    clock = FakeClock()
    est, truth = estimate(sim(clock, sample_window_s=None), clock, seed=3)
    assert est.dynamic_j_per_call == pytest.approx(truth * 240.0 / 300.0, rel=0.01)
    assert est.dynamic_uncertainty_j >= est.uncertainty_j > 0
    assert est.idle_power_w == pytest.approx(60.0, rel=0.01) and est.idle_power_uncertainty_w is not None


# -- cooldown and idle power --------------------------------------------------------------------


def hot_meter(clock, **kw):
    meter = sim(clock, leakage_w_per_c=1.0, busy_c=85.0, thermal_tau_s=20.0, **kw)
    baseline = EnergyBaseline()
    baseline.capture(read_sample(meter, clock))      # the cold idle state, before any work
    meter.mark_busy(True)        # a previous trial's busy batch
    clock.advance(60.0)
    meter.mark_busy(False)
    return meter, baseline


def test_cooldown_waits_for_the_baseline_and_idle_power_is_taken_after_it():
    clock = FakeClock()
    meter, baseline = hot_meter(clock)
    est, _ = estimate(meter, clock, baseline=baseline, cooldown=Cooldown(max_wait_s=300.0), repeats=1, bound=0.2)
    assert est.cooldown_reached is True and est.cooldown_s > 30.0
    assert est.idle_power_w < 60.0 + 2.5            # within the 2 °C tolerance × 1 W/°C of the cold idle

    clock2 = FakeClock()
    meter2, baseline2 = hot_meter(clock2)
    warm, _ = estimate(meter2, clock2, baseline=baseline2, cooldown=None, repeats=1, bound=0.2)
    assert warm.cooldown_reached is None and warm.idle_power_w > 60.0 + 30.0   # what "right after a batch" reads


def test_cooldown_is_bounded_and_says_when_the_baseline_was_not_reached():
    clock = FakeClock()
    meter, baseline = hot_meter(clock)
    t0 = clock()
    est, _ = estimate(meter, clock, baseline=baseline, cooldown=Cooldown(max_wait_s=5.0), repeats=1, bound=0.2)
    assert est.cooldown_reached is False and 5.0 <= est.cooldown_s < 5.5
    assert any("not within 2 °C" in n and "measured warmer" in n for n in est.notes)
    assert clock() - t0 < 5.0 + 10.0                 # bounded: it went on measuring


def test_back_to_back_trials_agree_within_their_uncertainty_with_a_cooldown():
    """The same kernel measured twice in a row: with the cooldown both trials start from the
    same idle state and agree; without it the second inherits the first one's heat."""
    def two_trials(cooldown):
        clock = FakeClock()
        meter = sim(clock, leakage_w_per_c=1.0, busy_c=85.0, thermal_tau_s=20.0)
        baseline = EnergyBaseline()
        a, _ = estimate(meter, clock, seed=1, baseline=baseline, cooldown=cooldown)
        b, _ = estimate(meter, clock, seed=2, baseline=baseline, cooldown=cooldown)
        return a, b

    a, b = two_trials(Cooldown(max_wait_s=600.0))
    assert a.cooldown_reached and b.cooldown_reached
    assert abs(a.j_per_call - b.j_per_call) <= math.hypot(a.uncertainty_j, b.uncertainty_j)
    cooled_gap = abs(a.j_per_call - b.j_per_call) / a.j_per_call
    a, b = two_trials(None)
    assert (b.j_per_call - a.j_per_call) / a.j_per_call > 3 * cooled_gap + 0.02


# -- the energy policy ----------------------------------------------------------------------------


def measured(name, latency_s, busy_w, seed):
    clock = FakeClock(1000.0 + seed * 0.0137)
    meter = sim(clock, busy_w=busy_w, update_offset_s=(seed * 0.031) % 0.1)
    est, truth = estimate(meter, clock, per_call_s=latency_s, seed=seed)
    assert abs(est.j_per_call - truth) <= est.uncertainty_j
    return {"config": {"id": name}, "latency_s": latency_s, "energy_j": est.j_per_call,
            "energy_uncertainty_j": est.uncertainty_j}


def test_policy_energy_does_not_switch_for_a_saving_inside_the_uncertainty():
    fastest = measured("fastest", 1.00e-4, 300.0, seed=1)
    near = measured("near", 1.03e-4, 288.0, seed=2)          # truly 1.1 % less energy per call
    assert near["energy_j"] < fastest["energy_j"]            # the figures alone would switch
    best, note = select([fastest, near], "energy")
    assert best["config"]["id"] == "fastest"
    assert "less than the combined uncertainty" in note


def test_policy_energy_switches_for_a_saving_clearly_larger():
    fastest = measured("fastest", 1.00e-4, 300.0, seed=1)
    near = measured("near", 1.03e-4, 288.0, seed=2)
    frugal = measured("frugal", 1.04e-4, 240.0, seed=3)      # truly 17 % less
    best, note = select([fastest, near, frugal], "energy")
    assert best["config"]["id"] == "frugal" and note == ""


def test_policy_choice_rules_on_stated_uncertainties():
    def p(name, lat, e, u):
        return {"config": {"id": name}, "latency_s": lat, "energy_j": e, "energy_uncertainty_j": u}

    fast = p("fast", 1.00, 10.0, 0.3)
    inside = p("inside", 1.02, 9.7, 0.3)        # saving 0.3 < √(0.3² + 0.3²) = 0.42
    clear = p("clear", 1.04, 9.0, 0.3)          # saving 1.0 > 0.42
    tied = p("tied", 1.01, 9.2, 0.3)            # clear of fast, but within 0.42 of "clear": the faster wins
    assert select([fast, inside], "energy")[0]["config"]["id"] == "fast"
    assert select([fast, inside, clear], "energy")[0]["config"]["id"] == "clear"
    assert select([fast, inside, clear, tied], "energy")[0]["config"]["id"] == "tied"
    # Without stated uncertainties (predictions, older recordings): the figures decide, as before.
    legacy = [{**q, "energy_uncertainty_j": None} for q in (fast, inside)]
    assert select(legacy, "energy")[0]["config"]["id"] == "inside"
    # balanced: the energy-delay product, under the same rule
    slow = p("slow", 1.5, 6.0, 0.1)             # EDP 9.0 vs 10.0; uncertainty √(0.3² + 0.15²) = 0.34
    assert select([fast, slow], "balanced")[0]["config"]["id"] == "slow"
    assert select([fast, p("slow", 1.5, 6.6, 0.5)], "balanced")[0]["config"]["id"] == "fast"


# -- where the figures travel: the search, recordings, the tuner ----------------------------------


def test_search_records_the_energy_uncertainty():
    from kernelagent.tuner.search import SearchSpace, run_search

    space = SearchSpace.from_values({"BLOCK": [64, 128, 256]})
    energy = {64: 10.0, 128: 9.8, 256: 8.0}

    def measure(cfg):
        return 1e-5 * (1 + cfg["BLOCK"] / 1e4), energy[cfg["BLOCK"]], None, 0.25

    res = run_search(space, measure, budget=3, study_name="u", storage=":memory:", seed=0, policy="energy")
    assert all(m["energy_uncertainty_j"] == 0.25 for m in res.measurements)
    assert res.best_config == {"BLOCK": 256}    # 2 J saved ≫ √2 · 0.25; 128's 0.2 J is not


def test_recordings_carry_the_uncertainty_and_older_ones_still_load(tmp_path):
    from kernelagent.tuner.replay import Recording, ReplayBackend, load

    rec = Recording(op="softmax", sku="h100-sxm", dtype="fp32", bucket="cols=64", device="test")
    measure = rec.wrap(lambda c: (1e-5, 2e-3, None, 5e-5))
    measure({"BLOCK": 64})
    old = rec.wrap(lambda c: (2e-5, 3e-3, None))         # a backend that states none
    old({"BLOCK": 128})
    path = rec.save(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    assert doc["measurements"][0]["energy_uncertainty_uj"] == pytest.approx(50.0)
    assert doc["measurements"][1]["energy_uncertainty_uj"] is None
    backend = ReplayBackend(load(path))
    assert backend.objective({"BLOCK": 64})[3] == pytest.approx(5e-5)
    assert backend.objective({"BLOCK": 128})[3] is None
    # A recording written before the field existed.
    for m in doc["measurements"]:
        del m["energy_uncertainty_uj"]
    legacy = tmp_path / "old.json"
    legacy.write_text(json.dumps(doc))
    hit = load(legacy).lookup({"BLOCK": 64})
    assert hit.energy_j == pytest.approx(2e-3) and hit.energy_uncertainty_j is None
    doc["measurements"][0]["energy_uncertainty_uj"] = -1.0
    legacy.write_text(json.dumps(doc))
    with pytest.raises(BadInput, match="energy_uncertainty_uj"):
        load(legacy)


def test_tuner_gpu_objective_asks_for_the_bound_and_returns_the_uncertainty(monkeypatch):
    from kernelagent.harness import measure as harness_measure
    from kernelagent.tuner import tune

    seen = []

    def fake_measure(target, source, case, **kw):
        seen.append(kw)
        return harness_measure.Measurement(target=target, device="fake", case={}, config=kw["config"],
                                           median_s=1e-5, energy_j_per_call=2e-3, energy_uncertainty_j=4e-5)

    monkeypatch.setattr(harness_measure, "measure", fake_measure)

    class Session:
        source = "src"

    task = tune.TuneTask("softmax", "fp32", {"cols": 64}, {"cols": 64})
    options = tune._energy_options(None)
    objective = tune._objective("gpu", task, None, None, None, None, seed=0, energy=True, session=Session(),
                                energy_options=options)
    assert objective({"BLOCK": 64}) == (1e-5, 2e-3, None, 4e-5)
    objective({"BLOCK": 128})
    assert seen[0]["energy_bound"] == 0.02 and isinstance(seen[0]["energy_baseline"], EnergyBaseline)
    assert seen[0]["energy_baseline"] is seen[1]["energy_baseline"]     # one idle baseline for every trial
    with pytest.raises(BadInput, match="energy-bound"):
        tune.tune(sku_id="h100", ops=["softmax"], measure="model", energy_bound=2.0)


def test_energy_window_alone_still_reports_its_quantisation():
    clock = FakeClock()
    meter = sim(clock, sample_window_s=None)
    work = Workload(meter, clock, 1e-3, random.Random(0))
    w = energy_window(meter, work, min_window_s=2.0, idle_power_w=60.0, update_period_s=0.1, phase_s=0.05,
                      clock=clock, sleep=clock.sleep)
    assert w.rejected is None and w.phase_s == 0.05 and w.gaps_s >= 0.05
    assert w.quantisation_j == pytest.approx(2 * 0.102 * w.avg_power_w / w.calls)
    assert abs(w.j_per_call - work.truth_j[0]) <= w.quantisation_j


def test_the_energy_policy_also_chooses_between_variants_beyond_the_uncertainty():
    from kernelagent.tuner.tune import TuneResult, _choose

    def result(variant, latency_us, energy_uj, u_uj):
        return TuneResult(op="softmax", sku="h100-sxm", dtype="bf16", bucket={}, backend="gpu", measured=True,
                          policy="energy", sampler="auto", trials_used=8, study="s", variant=variant, verified=True, latency_us=latency_us,
                          energy_uj=energy_uj, energy_uncertainty_uj=u_uj)

    fast = result("kernel", 100.0, 1000.0, 10.0)
    frugal = result("twopass", 103.0, 800.0, 10.0)         # 20 % less energy at 3 % more latency
    assert _choose([fast, frugal], "latency") is fast
    assert _choose([fast, frugal], "energy") is frugal
    unsure = result("twopass", 103.0, 980.0, 30.0)         # 2 % less, inside the uncertainty
    assert _choose([fast, unsure], "energy") is fast
    slow = result("slow", 120.0, 500.0, 5.0)               # outside the 1.05x latency slack
    assert _choose([fast, slow], "energy") is fast
