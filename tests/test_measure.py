"""The gpu measurement backend: latency from the sandboxed worker checked against the parent's
clock, energy from a meter's counter. On CPU the worker runs the Triton interpreter and energy
comes from the SimulatedPowerMeter (a test device); the CUDA path is in the gpu-marked tests."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from kernelagent.harness.energy import REASON_SW_POWER_CAP, NvmlPowerMeter, PowerMeter
from kernelagent.harness.measure import energy_window, measure
from kernelagent.harness.testing import FakeClock, SimulatedPowerMeter, ThrottleEpisode
from kernelagent.kernels.spec import Case

REPO = Path(__file__).resolve().parents[1]
SOFTMAX = (REPO / "kernels" / "softmax" / "kernel.py").read_text()
CASE = {"batch": 0, "rows": 4, "cols": 64}


@pytest.fixture(scope="module")
def honest():
    # A 10 ms counter and a 5 % bound keep the three real-time windows short (0.48 s each).
    meter = SimulatedPowerMeter(idle_w=50.0, busy_w=300.0, update_period_s=0.01)
    return measure("softmax", SOFTMAX, CASE, meter=meter, seed=11, min_window_s=0.3, idle_window_s=0.3,
                   energy_bound=0.05)


def test_latency_stats_are_sane(honest):
    m = honest
    assert m.ok, m.flags
    assert m.backend == "gpu" and m.measured and m.clock == "perf_counter"
    assert m.n >= 10 and len(m.samples_s) == m.n and m.input_sets == 8
    assert 0 < m.p20_s <= m.median_s <= m.p80_s
    assert m.mean_s > 0 and m.sem_s is not None and m.sem_s >= 0
    # The parent's own view of the batch agrees with the worker's claims.
    assert m.wall_per_call_s is not None and m.claimed_total_s >= 0.5 * (m.batch_wall_s - m.overhead_s)


def test_simulated_energy_is_power_times_time_per_call(honest):
    m = honest
    assert m.energy_rejected is None, m.energy_rejected
    assert m.energy_source.startswith("simulated")
    assert any("SimulatedPowerMeter" in w for w in m.warnings)  # never passed off as hardware
    assert m.energy_windows == 3 and len(m.energy_repeats_j) == 3 and m.energy_calls >= 3
    assert m.energy_update_period_s == 0.01 and m.energy_update_period_source == "declared"
    assert m.energy_quantisation_bound <= 0.05 and m.energy_window_s >= 3 * 2 * 0.012 / 0.05 * 0.98
    assert len(set(m.energy_phases_s)) == 3 and all(0 <= p < 0.01 for p in m.energy_phases_s)
    per_call_s = m.energy_window_s / m.energy_calls
    assert m.energy_j_per_call == pytest.approx(300.0 * per_call_s, rel=0.03)
    # The stated error covers the simulated truth (300 W while busy). Its size follows the
    # interpreter's per-call time, which varies with this machine's load between windows: the
    # fake-clock tests (tests/test_energy_error.py) check that it is tight.
    assert abs(m.energy_j_per_call - 300.0 * per_call_s) <= m.energy_uncertainty_j
    assert set(m.energy_error) == {"quantisation_j", "repeat_j", "idle_j", "combined"}
    assert m.cooldown_reached is True and m.idle_power_uncertainty_w is not None
    assert m.dynamic_energy_j_per_call == pytest.approx(250.0 * per_call_s, rel=0.05)
    assert m.idle_power_w == pytest.approx(50.0, rel=0.03)
    assert m.before["sm_clock_mhz"] and m.after["temperature_c"] >= m.before["temperature_c"]
    assert not m.throttled


def test_nondeterministic_outputs_are_flagged():
    src = (REPO / "tests" / "redteam" / "nondeterministic.py").read_text()
    m = measure("softmax", src, CASE, meter=None, seed=5)
    assert not m.ok
    assert any(f.startswith("nondeterministic") for f in m.flags), m.flags


def test_worker_clock_is_not_trusted(honest):
    # A candidate that slows the worker's clock tenfold: its claimed times shrink, the parent's do not.
    src = SOFTMAX + "\nimport time\n_real = time.perf_counter\ntime.perf_counter = lambda: _real() * 0.1\n"
    m = measure("softmax", src, CASE, meter=None, seed=11, static_checks=False)
    assert any("wall time" in f for f in m.flags), m.flags
    assert m.wall_per_call_s > 3 * m.median_s
    # Same kernel, same case: the parent's per-call time did not shrink with the claim (a 10×
    # patch would put it near 0.1×; the machine's load only makes it noisier, not smaller).
    assert m.wall_per_call_s > 0.3 * honest.wall_per_call_s


def test_throttling_episode_is_reported():
    meter = SimulatedPowerMeter(idle_w=50.0, busy_w=300.0, episodes=(
        ThrottleEpisode(start_busy_s=0.02, end_busy_s=0.6, reasons=REASON_SW_POWER_CAP, clock_factor=0.7,
                        power_factor=0.8),))
    m = measure("softmax", SOFTMAX, CASE, meter=meter, seed=3, min_window_s=1.0, idle_power_w=50.0,
                energy_bound=None, energy_repeats=1)
    assert m.throttled
    assert "sw_power_cap" in m.throttle_reasons
    assert any(r.startswith("power_violation") for r in m.throttle_reasons)
    assert any("throttled" in w for w in m.warnings)


# -- the energy window's rules, on a fake clock -------------------------------------------------


def _window(meter, clock, *, run_s, calls=100, min_window_s=1.0, **kw):
    def run_calls(duration_s):
        clock.advance(run_s)
        return calls

    return energy_window(meter, run_calls, min_window_s=min_window_s, clock=clock, sleep=clock.sleep, **kw)


def test_energy_window_on_a_fake_clock():
    clock = FakeClock()
    meter = SimulatedPowerMeter(idle_w=40.0, busy_w=250.0, update_period_s=0.1, clock=clock)
    w = _window(meter, clock, run_s=2.0123, idle_window_s=1.0)
    assert w.rejected is None
    assert w.idle_power_w == pytest.approx(40.0, rel=0.01)
    assert w.window_s == pytest.approx(2.0123)
    assert w.j_per_call == pytest.approx(250.0 * 2.0123 / 100, rel=0.01)
    assert w.dynamic_j_per_call == pytest.approx(210.0 * 2.0123 / 100, rel=0.01)


def test_window_without_counter_updates_is_rejected():
    clock = FakeClock()
    meter = SimulatedPowerMeter(update_period_s=math.inf, clock=clock)  # publishes nothing
    w = _window(meter, clock, run_s=1.5)
    assert w.j_per_call is None
    assert "did not advance" in w.rejected


def test_window_cut_short_is_rejected():
    clock = FakeClock()
    meter = SimulatedPowerMeter(clock=clock)
    w = _window(meter, clock, run_s=0.3, min_window_s=1.0, idle_power_w=60.0)
    assert "stopped early" in w.rejected


def test_energy_below_idle_floor_is_rejected():
    clock = FakeClock()
    meter = SimulatedPowerMeter(idle_w=60.0, busy_w=70.0, clock=clock)
    w = _window(meter, clock, run_s=1.2, idle_power_w=200.0)  # the counter says less than idle
    assert "below idle power" in w.rejected


def test_simulated_counter_steps_like_nvml():
    clock = FakeClock()
    meter = SimulatedPowerMeter(idle_w=50.0, update_period_s=0.1, clock=clock)
    assert isinstance(meter, PowerMeter)
    clock.advance(0.05)
    assert meter.energy_mj() == 0                # not published yet
    clock.advance(0.06)
    assert meter.energy_mj() == 5000             # 50 W × 0.1 s at the first update
    assert meter.exact_energy_j() == pytest.approx(5.5)


def test_energy_module_never_sets_device_state():
    tree = ast.parse((REPO / "harness" / "energy.py").read_text())
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | \
        {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    writers = sorted(n for n in names if n.startswith(("nvmlDeviceSet", "nvmlDeviceReset", "nvmlDeviceClear")))
    assert writers == []


def test_energy_module_does_not_import_the_test_doubles():
    tree = ast.parse((REPO / "harness" / "energy.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.split(".")[-1] == "testing" for m in imported)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU has NVML")
def test_nvml_meter_without_a_driver_is_an_environment_problem():
    from kernelagent.errors import EnvironmentProblem

    with pytest.raises(EnvironmentProblem, match="NVML"):
        NvmlPowerMeter(0)


# -- the CUDA path --------------------------------------------------------------------------------

GPU_CASE = {"batch": 0, "rows": 4096, "cols": 4096}


@pytest.mark.gpu
def test_gpu_measure_uses_events_flush_and_nvml():
    m = measure("softmax", SOFTMAX, GPU_CASE, seed=1, min_window_s=1.0)
    assert m.ok, m.flags
    assert m.clock == "cuda-events"
    assert m.l2_flush_bytes >= 256 << 20
    assert m.n >= 10 and 0 < m.p20_s <= m.median_s <= m.p80_s
    assert m.energy_source and m.energy_source.startswith("nvml")
    assert (m.energy_j_per_call or 0) > 0 or m.energy_rejected
    assert m.before["sm_clock_mhz"] and m.after["sm_clock_mhz"]


@pytest.mark.gpu
def test_gpu_nvml_meter_reads():
    import time

    meter = NvmlPowerMeter.for_torch_device()
    try:
        assert meter.device_name()
        e0 = meter.energy_mj()
        time.sleep(0.3)
        e1 = meter.energy_mj()
        assert e0 is not None and e1 >= e0
        assert (meter.power_w() or 0) > 0
        sm, mem = meter.clocks_mhz()
        assert sm and mem
        assert meter.clock_event_reasons() is not None
    finally:
        meter.close()


@pytest.mark.gpu
def test_gpu_side_stream_work_is_flagged():
    src = SOFTMAX + """
_side = []


_launch = softmax


def softmax(x, *, config=None):
    if not _side:
        _side.append(torch.cuda.Stream())
    with torch.cuda.stream(_side[0]):
        for _ in range(19):
            _launch(x, config=config)
        return _launch(x, config=config)
"""
    m = measure("softmax", src, GPU_CASE, meter=None, seed=2, static_checks=False)
    assert any("wall time" in f for f in m.flags), m.flags


def test_statically_forbidden_candidate_is_not_measured():
    from kernelagent.harness.measure import MeasureError

    with pytest.raises(MeasureError) as e:
        measure("softmax", "import os\n" + SOFTMAX, CASE, meter=None)
    assert e.value.reason == "forbidden"


def test_speedup_and_roofline_checks():
    from kernelagent.harness.measure import Measurement
    from kernelagent.harness.measure_checks import judge_speed as _judge_speed
    from kernelagent.harness.verify import resolve_target

    tgt = resolve_target("softmax")
    call = tgt.build(Case(params=CASE))
    m = Measurement(target="softmax", device="test", case=CASE, config=None, median_s=1e-9)
    # 4×64 fp32 softmax reads and writes 2 KiB: ≥ 0.6 ns at 3.35 TB/s, so 1 ns passes and 0.1 ns cannot be real.
    _judge_speed(m, tgt, call, reference_latency_s=1e-7, peak_flops=None, peak_bytes_per_s=3.35e12)
    assert any("speedup > 10×" in w for w in m.warnings)
    assert not m.flags
    m.median_s = 1e-10
    _judge_speed(m, tgt, call, reference_latency_s=None, peak_flops=None, peak_bytes_per_s=3.35e12)
    assert any("speedup > 10×" in w for w in m.warnings)
    assert any("roofline floor" in f for f in m.flags)
