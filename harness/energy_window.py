"""Energy per call with a stated error, read from a meter's energy counter; and a power sampler.

``energy_estimate`` is what ``measure`` runs: a cooldown to the device's idle baseline, idle
power measured after it, then ``repeats`` windows, each long enough for the asked quantisation
bound and started at a random phase of the counter's update period. Every figure it gives
carries a ≈95 % uncertainty (quantisation + repeat spread + idle power, combined in
quadrature). ``energy_window`` is one window: both ends aligned to counter updates, idle power
× the gaps taken off. ``Sampler`` polls power, clocks and throttle reasons from a parent
thread. See docs/MEASUREMENT.md ("Energy" and "The error model").
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .energy import MeterSample, PowerMeter, read_sample

DEFAULT_QUANTISATION_BOUND = 0.02   # per window: 2·T_update / T_window ≤ 2 %
DEFAULT_REPEATS = 3
MAX_WINDOW_S = 120.0                # a window longer than this is not worth the bound it buys

# Two-sided 95 % Student-t quantiles by degrees of freedom (a df between two keys uses the lower key: larger t).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}


def t95(df: int) -> float:
    if df < 1:
        return math.inf
    return _T95[max(k for k in _T95 if k <= df)] if df <= 60 else 1.96


@dataclass
class EnergyWindow:
    """The outcome of one energy window (see ``energy_window``)."""

    j_per_call: float | None = None
    dynamic_j_per_call: float | None = None
    window_s: float | None = None
    calls: int = 0
    idle_power_w: float | None = None
    avg_power_w: float | None = None
    t_start: float | None = None       # parent clock at the request, and at the reply
    t_end: float | None = None
    phase_s: float = 0.0               # idle time added after the start update (a random start phase)
    gaps_s: float = 0.0                # idle time between the updates and the request/reply, taken off
    quantisation_j: float | None = None  # worst-case boundary error per call (needs the update period)
    rejected: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class IdlePower:
    """Idle power from the counter updates seen over an idle window."""

    power_w: float | None = None
    uncertainty_w: float | None = None   # ≈95 % half-width
    window_s: float = 0.0
    intervals_s: list[float] = field(default_factory=list)   # between successive counter updates
    note: str | None = None

    @property
    def update_period_s(self) -> float | None:
        return statistics.median(self.intervals_s) if self.intervals_s else None


@dataclass
class Cooldown:
    """Wait, before an energy batch, until the device is back near its idle baseline.

    Temperature decides (within ``tolerance_c`` of the baseline); where the device reports no
    temperature, power does (within ``power_tolerance`` × baseline + ``power_tolerance_w``).
    The wait is bounded by ``max_wait_s``; a batch that starts warmer says so in a note."""

    max_wait_s: float = 60.0
    tolerance_c: float = 2.0
    power_tolerance: float = 0.10
    power_tolerance_w: float = 5.0
    poll_s: float = 0.25


@dataclass
class EnergyBaseline:
    """The device's idle state, taken once (before the first batch) and shared by every batch a
    caller compares (a tuner's trials), so that each batch starts from the same state. Also
    keeps the counter's update period once it was measured."""

    temperature_c: float | None = None
    power_w: float | None = None
    taken: bool = False
    update_period_s: float | None = None

    def capture(self, sample: MeterSample) -> None:
        self.temperature_c, self.power_w, self.taken = sample.temperature_c, sample.power_w, True


@dataclass
class EnergyEstimate:
    """Energy per call over ``repeats`` windows, with its uncertainty (J per call, ≈95 % half-widths).

    ``uncertainty_j`` = √(quantisation_j² + repeat_j² + idle_j²); see docs/MEASUREMENT.md."""

    j_per_call: float | None = None
    uncertainty_j: float | None = None
    quantisation_j: float | None = None   # mean of the windows' worst-case boundary errors
    repeat_j: float | None = None         # t(0.975, n−1) · s / √n over the windows
    idle_j: float | None = None           # idle power's uncertainty × the gaps taken off, per call
    dynamic_j_per_call: float | None = None
    dynamic_uncertainty_j: float | None = None
    repeats_j: list[float] = field(default_factory=list)
    windows: list[EnergyWindow] = field(default_factory=list)
    window_s: float | None = None         # each window's asked length
    bound: float | None = None            # the asked quantisation bound (relative, per window)
    quantisation_rel: float | None = None  # the bound the windows achieved: max 2·T/T_window
    update_period_s: float | None = None
    update_period_source: str | None = None   # "declared" | "measured"
    idle_power_w: float | None = None
    idle_power_uncertainty_w: float | None = None
    cooldown_s: float = 0.0
    cooldown_reached: bool | None = None      # None: no cooldown asked, or nothing to judge it by
    rejected: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(w.calls for w in self.windows)

    @property
    def total_window_s(self) -> float:
        return sum(w.window_s or 0.0 for w in self.windows)


def _wait_for_update(meter: PowerMeter, clock, sleep, timeout_s: float, poll_s: float):
    """(counter value, time seen) at the counter's next update, or None if it did not update."""
    e0 = meter.energy_mj()
    if e0 is None:
        return None
    t0 = clock()
    while clock() - t0 < timeout_s:
        sleep(poll_s)
        e = meter.energy_mj()
        if e is not None and e != e0:
            return e, clock()
    return None


def measure_idle(meter: PowerMeter, window_s: float, *, clock=time.perf_counter, sleep=time.sleep,
                 poll_s: float = 0.002, update_timeout_s: float = 0.5, min_updates: int = 3) -> IdlePower:
    """Idle power between the first and last counter updates seen over ``window_s`` (at least
    ``min_updates`` updates), and the intervals between updates (the counter's update period).

    Uncertainty: t(0.975, K−1) · s / √K over the K per-interval powers, plus the timing error
    of the two ends (each seen up to ``poll_s`` late)."""
    res = IdlePower()
    first = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
    updates = [first] if first else []
    while first:
        nxt = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
        if nxt is None:
            break
        updates.append(nxt)
        if nxt[1] - first[1] >= window_s and len(updates) >= min_updates:
            break
    if len(updates) < 2 or updates[-1][0] <= updates[0][0]:
        res.note = "idle power could not be measured: the counter did not advance while idle"
        return res
    res.intervals_s = [b[1] - a[1] for a, b in zip(updates, updates[1:])]
    res.window_s = updates[-1][1] - updates[0][1]
    res.power_w = (updates[-1][0] - updates[0][0]) / 1e3 / res.window_s
    per = [(b[0] - a[0]) / 1e3 / (b[1] - a[1]) for a, b in zip(updates, updates[1:])]
    spread = t95(len(per) - 1) * statistics.stdev(per) / math.sqrt(len(per)) if len(per) > 1 else res.power_w
    res.uncertainty_w = spread + 2 * poll_s * res.power_w / res.window_s
    return res


def cool_down(meter: PowerMeter, baseline: EnergyBaseline, cooldown: Cooldown, *, clock=time.perf_counter,
              sleep=time.sleep) -> tuple[float, bool | None, str | None]:
    """(seconds waited, baseline reached, a note) — waits until the device is back near ``baseline``."""
    use_temp = baseline.temperature_c is not None and meter.temperature_c() is not None
    use_power = not use_temp and baseline.power_w is not None and meter.power_w() is not None
    if not (use_temp or use_power):
        return 0.0, None, "no temperature or power reading to cool down to: the batch starts without a cooldown"
    t0 = clock()

    def state():
        return meter.temperature_c() if use_temp else meter.power_w()

    limit = (baseline.temperature_c + cooldown.tolerance_c if use_temp
             else baseline.power_w * (1 + cooldown.power_tolerance) + cooldown.power_tolerance_w)
    now = state()
    while now > limit:
        if clock() - t0 >= cooldown.max_wait_s:
            what = (f"{now:.1f} °C, not within {cooldown.tolerance_c:g} °C of the {baseline.temperature_c:.1f} °C"
                    if use_temp else f"{now:.1f} W, not within {cooldown.power_tolerance:.0%} + "
                    f"{cooldown.power_tolerance_w:g} W of the {baseline.power_w:.1f} W")
            return clock() - t0, False, (f"cooldown: after {cooldown.max_wait_s:g} s the device is at {what} idle "
                                         "baseline: this batch was measured warmer than the first")
        sleep(cooldown.poll_s)
        now = state()
    return clock() - t0, True, None


def energy_window(meter: PowerMeter, run_calls: Callable[[float], int], *, min_window_s: float,
                  idle_power_w: float | None = None, idle_window_s: float = 1.0, phase_s: float = 0.0,
                  update_period_s: float | None = None,
                  clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                  update_timeout_s: float = 0.5, poll_s: float = 0.002) -> EnergyWindow:
    """Energy per call over one window of ``run_calls(min_window_s)`` (which returns the calls made).

    The start is read just after a counter update; ``phase_s`` of idle follows (a random start
    phase, so that the window's ends do not always fall at the same point of the update period);
    the end is read at the next update after the calls. Idle power × the idle gaps is taken off.
    Idle power is measured first over ``idle_window_s`` unless given. With ``update_period_s``
    the window also gives ``quantisation_j``: at each end the counter's period holding the edge
    may credit idle or busy power to all of it (part-time sampling), so the error is at most
    2 · T_update · avg power per window.
    """
    res = EnergyWindow(idle_power_w=idle_power_w, phase_s=phase_s)
    if meter.energy_mj() is None:
        res.rejected = "this device has no energy counter (NVML's needs Volta or newer)"
        return res
    if update_period_s:
        update_timeout_s = max(update_timeout_s, 3 * update_period_s)
    if res.idle_power_w is None:
        idle = measure_idle(meter, idle_window_s, clock=clock, sleep=sleep, poll_s=poll_s,
                            update_timeout_s=update_timeout_s)
        res.idle_power_w = idle.power_w
        if idle.note:
            res.notes.append(idle.note)
    start = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
    if start is None:
        res.notes.append(f"the energy counter did not update within {update_timeout_s:g} s before the window; "
                         "its start is not aligned to an update")
        start = (meter.energy_mj(), clock())
    if phase_s > 0:
        sleep(phase_s)
    meter.mark_busy(True)
    res.t_start = clock()
    try:
        res.calls = int(run_calls(min_window_s))
    finally:
        res.t_end = clock()
        meter.mark_busy(False)
    end = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
    if end is None:
        res.notes.append(f"the energy counter did not update within {update_timeout_s:g} s after the window; "
                         "its end is not aligned to an update")
        end = (meter.energy_mj(), clock())
    res.window_s = res.t_end - res.t_start
    delta_j = ((end[0] or 0) - (start[0] or 0)) / 1e3
    if delta_j <= 0:
        res.rejected = (f"the energy counter did not advance during the {res.window_s:.3g} s window (a window "
                        "shorter than the counter's update period, or a stuck counter)")
        return res
    if res.calls <= 0:
        res.rejected = "no calls ran in the energy window"
        return res
    busy_j = delta_j
    res.gaps_s = max(0.0, res.t_start - start[1]) + max(0.0, end[1] - res.t_end)
    if res.idle_power_w is not None:
        busy_j -= res.idle_power_w * res.gaps_s
    else:
        res.notes.append("the window's energy includes the idle gaps at its ends (idle power unknown)")
    res.j_per_call = busy_j / res.calls
    res.avg_power_w = busy_j / res.window_s if res.window_s > 0 else None
    if update_period_s and res.avg_power_w is not None:
        res.quantisation_j = 2 * (update_period_s + poll_s) * res.avg_power_w / res.calls
    if res.idle_power_w is not None:
        res.dynamic_j_per_call = (busy_j - res.idle_power_w * res.window_s) / res.calls
        floor = res.idle_power_w * res.window_s / res.calls
        if res.j_per_call < 0.98 * floor:
            res.rejected = (f"energy per call {res.j_per_call:.4g} J is below idle power × time per call "
                            f"({floor:.4g} J): the work did not happen inside the window, or the counter is wrong")
    if res.window_s < 0.98 * min_window_s and res.rejected is None:
        res.rejected = (f"the window lasted {res.window_s:.3g} s by the parent's clock, less than the "
                        f"{min_window_s:g} s asked: the worker stopped early")
    return res


def energy_estimate(meter: PowerMeter, run_calls: Callable[[float], int], *,
                    bound: float | None = DEFAULT_QUANTISATION_BOUND, repeats: int = DEFAULT_REPEATS,
                    min_window_s: float = 1.0, max_window_s: float = MAX_WINDOW_S,
                    idle_power_w: float | None = None, idle_window_s: float = 1.0,
                    cooldown: Cooldown | None = None, baseline: EnergyBaseline | None = None,
                    rng: random.Random | None = None, clock: Callable[[], float] = time.perf_counter,
                    sleep: Callable[[float], None] = time.sleep, update_timeout_s: float = 0.5,
                    poll_s: float = 0.002) -> EnergyEstimate:
    """Cooldown, idle power, then ``repeats`` windows at random start phases; see the module doc.

    Each window lasts max(``min_window_s``, 2·(T_update + ``poll_s``) / ``bound``), at most
    ``max_window_s``; T_update is the meter's declared update period, else the one measured
    while idle (kept in ``baseline`` for the next batch). ``bound`` None: ``min_window_s`` only.
    """
    if repeats < 1:
        raise ValueError("energy repeats must be at least 1")
    if bound is not None and not 0 < bound < 1:
        raise ValueError(f"the quantisation bound is a fraction in (0, 1), got {bound}")
    rng = rng or random.Random()
    est = EnergyEstimate(bound=bound)
    if meter.energy_mj() is None:
        est.rejected = "this device has no energy counter (NVML's needs Volta or newer)"
        return est
    baseline = baseline if baseline is not None else EnergyBaseline()
    if not baseline.taken:
        baseline.capture(read_sample(meter, clock))
    if cooldown is not None:
        est.cooldown_s, est.cooldown_reached, note = cool_down(meter, baseline, cooldown, clock=clock, sleep=sleep)
        if note:
            est.notes.append(note)
    declared = getattr(meter, "counter_update_period_s", lambda: None)()
    period, est.update_period_source = (declared, "declared") if declared else (baseline.update_period_s, "measured")
    # Idle power after the cooldown, never right after a busy batch; it also shows the update period.
    if idle_power_w is None or not period:
        idle = measure_idle(meter, idle_window_s if idle_power_w is None else 0.0, clock=clock, sleep=sleep,
                            poll_s=poll_s, update_timeout_s=max(update_timeout_s, 3 * (period or 0)),
                            min_updates=4)
        if idle.note:
            est.notes.append(idle.note)
        if idle_power_w is None:
            est.idle_power_w, est.idle_power_uncertainty_w = idle.power_w, idle.uncertainty_w
        if not period and idle.update_period_s:
            period = baseline.update_period_s = idle.update_period_s
    if idle_power_w is not None:
        est.idle_power_w, est.idle_power_uncertainty_w = idle_power_w, 0.0   # the caller's figure, taken as exact
    est.update_period_s = period
    if not period:
        est.update_period_source = None
        est.rejected = ("the energy counter's update period is unknown (the meter does not declare it and the "
                        "counter did not update while idle): no window length meets a stated error")
        return est
    window = max(min_window_s, 2 * (period + poll_s) / bound) if bound else min_window_s
    if window > max_window_s:
        est.notes.append(f"a {bound:.1%} quantisation bound needs {window:.3g} s windows at a {period * 1e3:.0f} ms "
                         f"counter update period; capped at {max_window_s:g} s")
        window = max(min_window_s, max_window_s)
    est.window_s = window
    for i in range(repeats):
        w = energy_window(meter, run_calls, min_window_s=window, idle_power_w=est.idle_power_w,
                          phase_s=rng.uniform(0.0, period), update_period_s=period, clock=clock, sleep=sleep,
                          update_timeout_s=update_timeout_s, poll_s=poll_s)
        est.windows.append(w)
        est.notes += [n for n in w.notes if n not in est.notes]
        if w.rejected:
            est.rejected = w.rejected if repeats == 1 else f"window {i + 1} of {repeats}: {w.rejected}"
            return est
    _combine(est, poll_s)
    return est


def _combine(est: EnergyEstimate, poll_s: float) -> None:
    """The figures and their ≈95 % half-widths, combined in quadrature (independent sources)."""
    ws, n = est.windows, len(est.windows)
    est.repeats_j = [w.j_per_call for w in ws]
    calls = sum(w.calls for w in ws)
    est.j_per_call = sum(w.j_per_call * w.calls for w in ws) / calls   # all windows' energy over all their calls
    est.quantisation_j = statistics.fmean(w.quantisation_j for w in ws)
    est.quantisation_rel = max(2 * (est.update_period_s + poll_s) / w.window_s for w in ws)
    if n > 1:
        est.repeat_j = t95(n - 1) * statistics.stdev(est.repeats_j) / math.sqrt(n)
    else:
        est.repeat_j = 0.0
        est.notes.append("one energy window: no repeat spread in the uncertainty (quantisation and idle power only)")
    u_idle = est.idle_power_uncertainty_w or 0.0
    est.idle_j = u_idle * statistics.fmean(w.gaps_s / w.calls for w in ws)
    est.uncertainty_j = math.sqrt(est.quantisation_j ** 2 + est.repeat_j ** 2 + est.idle_j ** 2)
    if all(w.dynamic_j_per_call is not None for w in ws):
        dyn = [w.dynamic_j_per_call for w in ws]
        est.dynamic_j_per_call = sum(w.dynamic_j_per_call * w.calls for w in ws) / calls
        spread = t95(n - 1) * statistics.stdev(dyn) / math.sqrt(n) if n > 1 else 0.0
        idle_dyn = u_idle * statistics.fmean((w.window_s + w.gaps_s) / w.calls for w in ws)
        est.dynamic_uncertainty_j = math.sqrt(est.quantisation_j ** 2 + spread ** 2 + idle_dyn ** 2)


class Sampler:
    """Polls the meter every ``period_s`` from a parent thread."""

    def __init__(self, meter: PowerMeter, period_s: float):
        self.meter, self.period_s = meter, period_s
        self.samples: list[MeterSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kernelagent-meter-sampler", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(read_sample(self.meter))
            except Exception:  # a meter read failing mid-run must not kill the measurement
                pass
            self._stop.wait(self.period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, t0: float, t1: float) -> list[MeterSample]:
        return [s for s in list(self.samples) if t0 <= s.t <= t1]
