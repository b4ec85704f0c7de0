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
    ``leakage_w_per_c`` per °C above ``idle_c``. Temperature relaxes exponentially (time
    constant ``thermal_tau_s``) toward ``idle_c`` or ``busy_c``. The energy counter integrates
    that power exactly but, like NVML's, is only published every ``update_period_s`` (steps
    aligned to the meter's creation); in between, reads return the last published value.
    ``clock`` (default ``time.monotonic``) may be a fake clock a test advances by hand.
    """

    idle_w: float = 60.0
    busy_w: float = 300.0
    update_period_s: float = 0.1
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
    _busy: bool = field(init=False, default=False)
    _busy_s: float = field(init=False, default=0.0)
    _temp: float = field(init=False)
    _violation_ns: dict = field(init=False)
    _lock: threading.Lock = field(init=False)

    def __post_init__(self):
        self._origin = self._t = float(self.clock())
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

    def _next_change(self, now: float) -> float:
        """The first time after self._t when the power level changes (an episode edge), or the
        next counter publication: the model is integrated piecewise between such points."""
        t_next = now
        if self.update_period_s and math.isfinite(self.update_period_s) and self.update_period_s > 0:
            k = math.floor((self._t - self._origin) / self.update_period_s + 1e-9) + 1
            t_next = min(t_next, self._origin + k * self.update_period_s)
        if self._busy:
            for ep in self.episodes:
                for edge in (ep.start_busy_s, ep.end_busy_s):
                    if edge > self._busy_s + 1e-9:
                        t_next = min(t_next, self._t + (edge - self._busy_s))
        return t_next

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
            joules = self._base_power() * dt + self.leakage_w_per_c * excess_int
            self._exact_mj += joules * 1000.0
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
            self._t = t1
            if self.update_period_s and math.isfinite(self.update_period_s) and self.update_period_s > 0:
                phase = (self._t - self._origin) / self.update_period_s
                if abs(phase - round(phase)) < 1e-9:
                    self._published_mj = self._exact_mj

    # -- PowerMeter --------------------------------------------------------------------------
    def device_name(self) -> str:
        return self.name

    def energy_mj(self) -> int | None:
        with self._lock:
            self._advance()
            return int(self._published_mj)

    def power_w(self) -> float | None:
        with self._lock:
            self._advance()
            return self._base_power() + self.leakage_w_per_c * (self._temp - self.idle_c)

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
