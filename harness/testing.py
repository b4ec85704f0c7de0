"""Test doubles: a simulated power meter and a fake clock, for tests and CPU demos; never used by a real measurement.

``SimulatedPowerMeter`` implements ``harness.energy.PowerMeter`` with a deterministic model of a
GPU's meter (idle/busy power, a counter published in steps, temperature, throttling episodes
placed on busy time). It is used only when a caller injects it, and a Measurement that used it
says so (``simulated`` is true). ``FakeClock`` is a clock that moves only when a test moves it.
``harness.energy`` does not import this module.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .energy import (REASON_GPU_IDLE, REASON_HW_POWER_BRAKE, REASON_HW_SLOWDOWN, REASON_HW_THERMAL,
                     REASON_SW_POWER_CAP, REASON_SW_THERMAL)


@dataclass(frozen=True)
class ThrottleEpisode:
    """A throttling episode of the simulated device, placed on its *busy* time (seconds of work
    since it was created), the way real GPUs slow down after a stretch of back-to-back work."""

    start_busy_s: float
    end_busy_s: float
    reasons: int = REASON_SW_THERMAL
    clock_factor: float = 0.8
    power_factor: float = 1.0


@dataclass
class SimulatedPowerMeter:
    """A deterministic model of a GPU's meter, for tests. Never used unless a test injects it.

    Model: power is ``idle_w`` while idle and ``busy_w`` while the harness has marked the
    device busy (times ``power_factor`` during a throttling episode), plus optional leakage
    ``leakage_w_per_c`` per °C above ``idle_c`` and an optional drift of the static power
    ``drift_w_per_s`` per second since creation (the idle baseline drifting with time). Temperature
    relaxes exponentially (time constant ``thermal_tau_s``) toward ``idle_c`` or ``busy_c``.

    The energy counter, like NVML's, is published only at updates: every ``update_period_s``,
    on a grid shifted by ``update_offset_s`` from the meter's creation; in between, reads
    return the last published value. By default each update publishes the exact integral of
    power. With ``sample_window_s`` (part-time sampling, as on A100/H100: Yang et al., SC24)
    the counter integrates power only over ``sample_window_s`` of each period, starting
    ``sample_offset_s`` into it, and credits that mean power to the whole period; what happens
    in the rest of the period is not seen. ``declares_update_period``: whether
    ``counter_update_period_s()`` tells the period (NVML does not; the harness then measures it).

    ``exact_energy_j()`` is the truth a test compares against. ``clock`` (default
    ``time.monotonic``) may be a fake clock a test advances by hand.
    """

    idle_w: float = 60.0
    busy_w: float = 300.0
    update_period_s: float = 0.1
    update_offset_s: float = 0.0
    sample_window_s: float | None = None
    sample_offset_s: float = 0.0
    declares_update_period: bool = True
    drift_w_per_s: float = 0.0
    idle_c: float = 35.0
    busy_c: float = 70.0
    thermal_tau_s: float = 30.0
    leakage_w_per_c: float = 0.0
    sm_clock_idle_mhz: int = 345
    sm_clock_busy_mhz: int = 1980
    mem_clock_mhz: int = 2619
    power_limit: float = 700.0
    episodes: tuple[ThrottleEpisode, ...] = ()
    clock: Callable[[], float] = time.monotonic
    name: str = "simulated GPU (test device)"

    simulated = True

    # state
    _t: float = field(init=False)
    _origin: float = field(init=False)
    _exact_mj: float = field(init=False, default=0.0)
    _published_mj: float = field(init=False, default=0.0)
    _sampled_mj: float = field(init=False, default=0.0)   # part-time: energy seen in this period's sampled part
    _busy: bool = field(init=False, default=False)
    _busy_s: float = field(init=False, default=0.0)
    _temp: float = field(init=False)
    _violation_ns: dict = field(init=False)
    _lock: threading.Lock = field(init=False)

    def __post_init__(self):
        self._origin = self._t = float(self.clock())
        if self.sample_window_s is not None:
            if not (self._gridded() and 0 < self.sample_window_s and self.sample_offset_s >= 0
                    and self.sample_offset_s + self.sample_window_s <= self.update_period_s + 1e-12):
                raise ValueError("part-time sampling needs a finite update period and 0 ≤ sample_offset_s, "
                                 "sample_offset_s + sample_window_s ≤ update_period_s")
        if self._gridded() and not 0 <= self.update_offset_s < self.update_period_s:
            raise ValueError("update_offset_s must lie in [0, update_period_s)")
        self._temp = float(self.idle_c)
        self._violation_ns = {"power": 0, "thermal": 0}
        self._lock = threading.Lock()

    # -- the model ---------------------------------------------------------------------------
    def _episode(self) -> ThrottleEpisode | None:
        if not self._busy:
            return None
        for ep in self.episodes:
            # 1 ns of slack: the busy time lands on an edge only up to rounding
            if ep.start_busy_s - 1e-9 <= self._busy_s < ep.end_busy_s - 1e-9:
                return ep
        return None

    def _base_power(self) -> float:
        if not self._busy:
            return self.idle_w
        ep = self._episode()
        return self.busy_w * (ep.power_factor if ep else 1.0)

    def _gridded(self) -> bool:
        T = self.update_period_s
        return bool(T) and math.isfinite(T) and T > 0

    def _period_index(self, t: float) -> int:
        """k of the counter period [p_k, p_k+1) holding ``t``, where p_k = origin + offset + k·T."""
        return math.floor((t - self._origin - self.update_offset_s) / self.update_period_s + 1e-9)

    def _period_start(self, k: int) -> float:
        return self._origin + self.update_offset_s + k * self.update_period_s

    def _next_change(self, now: float) -> float:
        """The first time after self._t when the power level changes (an episode edge), the
        sampled part of a period starts or ends, or the counter publishes: the model is
        integrated piecewise between such points."""
        t_next = now
        if self._gridded():
            k = self._period_index(self._t)
            p_k = self._period_start(k)
            t_next = min(t_next, self._period_start(k + 1))
            if self.sample_window_s is not None:
                for edge in (p_k + self.sample_offset_s, p_k + self.sample_offset_s + self.sample_window_s):
                    if edge > self._t + 1e-12:
                        t_next = min(t_next, edge)
        if self._busy:
            for ep in self.episodes:
                for edge in (ep.start_busy_s, ep.end_busy_s):
                    if edge > self._busy_s + 1e-9:
                        t_next = min(t_next, self._t + (edge - self._busy_s))
        return t_next

    def _in_sampled_part(self, t0: float, t1: float) -> bool:
        mid = 0.5 * (t0 + t1)
        p_k = self._period_start(self._period_index(mid))
        return p_k + self.sample_offset_s <= mid < p_k + self.sample_offset_s + self.sample_window_s

    def _advance(self) -> None:
        now = float(self.clock())
        while self._t < now:
            t1 = self._next_change(now)
            if t1 <= self._t:
                t1 = now
            dt = t1 - self._t
            target = self.busy_c if self._busy else self.idle_c
            decay = math.exp(-dt / self.thermal_tau_s) if self.thermal_tau_s > 0 else 0.0
            # ∫ (T(t) - idle_c) dt over the segment, with T relaxing toward ``target``.
            excess_int = (target - self.idle_c) * dt + (self._temp - target) * self.thermal_tau_s * (1 - decay)
            drift_int = self.drift_w_per_s * (self._t - self._origin + 0.5 * dt) * dt
            mj = (self._base_power() * dt + self.leakage_w_per_c * excess_int + drift_int) * 1000.0
            self._exact_mj += mj
            if self.sample_window_s is not None and self._in_sampled_part(self._t, t1):
                self._sampled_mj += mj
            ep = self._episode()
            if ep is not None:
                ns = int(round(dt * 1e9))
                if ep.reasons & (REASON_SW_POWER_CAP | REASON_HW_POWER_BRAKE):
                    self._violation_ns["power"] += ns
                if ep.reasons & (REASON_SW_THERMAL | REASON_HW_THERMAL | REASON_HW_SLOWDOWN):
                    self._violation_ns["thermal"] += ns
            self._temp = target + (self._temp - target) * decay
            if self._busy:
                self._busy_s += dt
            t0, self._t = self._t, t1
            if self._gridded():
                phase = (self._t - self._origin - self.update_offset_s) / self.update_period_s
                if abs(phase - round(phase)) < 1e-9:
                    self._publish(self._period_index(t0))

    def _publish(self, k: int) -> None:
        """An update at the end of period ``k``."""
        if self.sample_window_s is None or self._period_start(k) < self._origin - 1e-12:
            self._published_mj = self._exact_mj     # full integration (or the partial first period)
        else:
            self._published_mj += self._sampled_mj * self.update_period_s / self.sample_window_s
        self._sampled_mj = 0.0

    # -- PowerMeter --------------------------------------------------------------------------
    def device_name(self) -> str:
        return self.name

    def energy_mj(self) -> int | None:
        with self._lock:
            self._advance()
            return int(self._published_mj + 1e-6)   # whole mJ, as NVML's; 1e-6: float rounding

    def power_w(self) -> float | None:
        with self._lock:
            self._advance()
            return self._true_power()

    def _true_power(self) -> float:
        return (self._base_power() + self.leakage_w_per_c * (self._temp - self.idle_c)
                + self.drift_w_per_s * (self._t - self._origin))

    def counter_update_period_s(self) -> float | None:
        return self.update_period_s if self.declares_update_period and self._gridded() else None

    def clocks_mhz(self) -> tuple[int | None, int | None]:
        with self._lock:
            self._advance()
            if not self._busy:
                return self.sm_clock_idle_mhz, self.mem_clock_mhz
            ep = self._episode()
            return int(self.sm_clock_busy_mhz * (ep.clock_factor if ep else 1.0)), self.mem_clock_mhz

    def temperature_c(self) -> float | None:
        with self._lock:
            self._advance()
            return round(self._temp, 1)

    def clock_event_reasons(self) -> int | None:
        with self._lock:
            self._advance()
            if not self._busy:
                return REASON_GPU_IDLE
            ep = self._episode()
            return ep.reasons if ep else 0

    def power_limit_w(self) -> float | None:
        return self.power_limit

    def violation_ns(self) -> dict[str, int] | None:
        with self._lock:
            self._advance()
            return dict(self._violation_ns)

    def mark_busy(self, busy: bool) -> None:
        with self._lock:
            self._advance()
            self._busy = bool(busy)

    def close(self) -> None:
        pass

    # -- for tests ---------------------------------------------------------------------------
    def exact_energy_j(self) -> float:
        """The model's true energy so far (what a perfect counter would read)."""
        with self._lock:
            self._advance()
            return self._exact_mj / 1000.0


class FakeClock:
    """A clock that moves only when told: drives a SimulatedPowerMeter in unit tests."""

    def __init__(self, start: float = 1000.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += float(seconds)

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 1e-6))
