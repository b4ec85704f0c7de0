"""Energy over a window of calls, read from a meter's energy counter, and a power sampler.

``energy_window`` aligns both ends of a window to counter updates and takes idle power × the
gaps off; ``Sampler`` polls power, clocks and throttle reasons from a parent thread. Used by
``measure`` (see docs/MEASUREMENT.md, "GPU measurement method").
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .energy import MeterSample, PowerMeter, read_sample


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
    rejected: str | None = None
    notes: list[str] = field(default_factory=list)


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


def energy_window(meter: PowerMeter, run_calls: Callable[[float], int], *, min_window_s: float,
                  idle_power_w: float | None = None, idle_window_s: float = 1.0,
                  clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                  update_timeout_s: float = 0.5, poll_s: float = 0.002) -> EnergyWindow:
    """Energy per call over a window of ``run_calls(min_window_s)`` (which returns the calls made).

    Both ends are read just after a counter update, so the only energy outside the calls is
    the idle gap between that update and the request (and the reply and the next update);
    idle power × those gaps is taken off. Idle power is measured the same way over
    ``idle_window_s`` unless given.
    """
    res = EnergyWindow(idle_power_w=idle_power_w)
    if meter.energy_mj() is None:
        res.rejected = "this device has no energy counter (NVML's needs Volta or newer)"
        return res
    if res.idle_power_w is None:
        a = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
        sleep(idle_window_s)
        b = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
        if a and b and b[0] > a[0] and b[1] > a[1]:
            res.idle_power_w = (b[0] - a[0]) / 1e3 / (b[1] - a[1])
        else:
            res.notes.append("idle power could not be measured: the counter did not advance while idle")
    start = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
    if start is None:
        res.notes.append(f"the energy counter did not update within {update_timeout_s:g} s before the window; "
                         "its start is not aligned to an update")
        start = (meter.energy_mj(), clock())
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
    if res.idle_power_w is not None:
        gaps = max(0.0, res.t_start - start[1]) + max(0.0, end[1] - res.t_end)
        busy_j -= res.idle_power_w * gaps
    else:
        res.notes.append("the window's energy includes the idle gaps at its ends (idle power unknown)")
    res.j_per_call = busy_j / res.calls
    res.avg_power_w = busy_j / res.window_s if res.window_s > 0 else None
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
