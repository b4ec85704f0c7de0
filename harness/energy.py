"""Power meters: where the measurement backend reads energy, power, clocks and throttling.

``PowerMeter`` is what ``harness.measure`` needs from a device; ``NvmlPowerMeter`` implements it
for a real NVIDIA GPU through NVML (``pynvml``). Every call it makes is a read. This project
never sets clocks, power limits or modes on a GPU; locking clocks is an operator's decision,
taken outside the project. Also here: the clock-event reason bits and ``read_sample``.

The simulated test device (``SimulatedPowerMeter``) and ``FakeClock`` live in
``harness.testing``, which this module does not import.

Units: energy in millijoules (the NVML counter's unit), power in watts, clocks in MHz,
temperature in °C, violation times in nanoseconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from ..errors import EnvironmentProblem

# Clock-event ("throttle") reason bits, as NVML numbers them.
REASON_GPU_IDLE = 0x1
REASON_APPLICATIONS_CLOCKS = 0x2      # application clocks / user-defined clocks: an operator's lock
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SYNC_BOOST = 0x10
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40
REASON_HW_POWER_BRAKE = 0x80
REASON_DISPLAY_CLOCKS = 0x100

REASON_NAMES = {
    REASON_GPU_IDLE: "gpu_idle",
    REASON_APPLICATIONS_CLOCKS: "applications_clocks",
    REASON_SW_POWER_CAP: "sw_power_cap",
    REASON_HW_SLOWDOWN: "hw_slowdown",
    REASON_SYNC_BOOST: "sync_boost",
    REASON_SW_THERMAL: "sw_thermal_slowdown",
    REASON_HW_THERMAL: "hw_thermal_slowdown",
    REASON_HW_POWER_BRAKE: "hw_power_brake",
    REASON_DISPLAY_CLOCKS: "display_clocks",
}
# The reasons that mean the clocks were pulled down by power or heat while working: a sample
# taken under them is not comparable with one taken without. Idle, an operator's clock lock,
# sync boost and display clocks are conditions, not throttling.
THROTTLE_MASK = (REASON_SW_POWER_CAP | REASON_HW_SLOWDOWN | REASON_SW_THERMAL | REASON_HW_THERMAL
                 | REASON_HW_POWER_BRAKE)


def reason_names(mask: int | None) -> list[str]:
    """The names of the bits set in a clock-event reason mask (unknown bits as hex)."""
    if not mask:
        return []
    names = [name for bit, name in REASON_NAMES.items() if mask & bit]
    unknown = mask & ~sum(REASON_NAMES)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


@runtime_checkable
class PowerMeter(Protocol):
    """Read-only view of one device's power, energy, clocks and throttling.

    Any reading a device does not support is ``None``.
    """

    simulated: bool

    def device_name(self) -> str: ...

    def energy_mj(self) -> int | None:
        """The cumulative energy counter (mJ). It updates in steps (about every 20–100 ms on
        NVIDIA GPUs), so two reads less than a step apart can be equal."""

    def counter_update_period_s(self) -> float | None:
        """How often the energy counter updates, when the device declares it; None: not known,
        and ``harness.energy_window`` measures it by watching the counter."""

    def power_w(self) -> float | None:
        """Instantaneous power where the device has it, else its averaged power reading."""

    def clocks_mhz(self) -> tuple[int | None, int | None]:
        """(SM clock, memory clock) now."""

    def temperature_c(self) -> float | None: ...

    def clock_event_reasons(self) -> int | None:
        """Bitmask of the active clock-event (throttle) reasons; see ``reason_names``."""

    def power_limit_w(self) -> float | None: ...

    def violation_ns(self) -> dict[str, int] | None:
        """Cumulative time (ns) the clocks were held down by the power and thermal policies,
        so that a short throttling episode between two samples is not missed."""

    def mark_busy(self, busy: bool) -> None:
        """The harness is starting (True) or has finished (False) running work on the device.

        A real meter ignores this: the hardware knows. The simulated meter uses it as its load.
        """

    def close(self) -> None: ...


@dataclass(frozen=True)
class MeterSample:
    """One reading of every quantity, taken at ``t`` (the reader's ``time.perf_counter``)."""

    t: float
    energy_mj: int | None
    power_w: float | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    temperature_c: float | None
    reasons: int | None

    def conditions(self) -> dict:
        return {"power_w": _round(self.power_w), "sm_clock_mhz": self.sm_clock_mhz,
                "mem_clock_mhz": self.mem_clock_mhz, "temperature_c": _round(self.temperature_c),
                "clock_event_reasons": reason_names(self.reasons)}


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


def read_sample(meter: PowerMeter, clock: Callable[[], float] = time.perf_counter) -> MeterSample:
    sm, mem = meter.clocks_mhz()
    return MeterSample(t=clock(), energy_mj=meter.energy_mj(), power_w=meter.power_w(), sm_clock_mhz=sm,
                       mem_clock_mhz=mem, temperature_c=meter.temperature_c(), reasons=meter.clock_event_reasons())


# ---------------------------------------------------------------------------------------------
# NVML


class NvmlPowerMeter:
    """One NVIDIA GPU through NVML. Read-only: no call here changes the device's state."""

    simulated = False

    def __init__(self, index: int = 0, *, uuid: str | None = None):
        try:
            import pynvml
        except ImportError as e:
            raise EnvironmentProblem("NVML bindings are missing (pip install nvidia-ml-py): GPU energy "
                                     f"cannot be measured ({e})") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise EnvironmentProblem(f"NVML could not be initialised ({e}): no NVIDIA driver here, or it is not "
                                     "reachable from this process; GPU energy cannot be measured") from None
        try:
            if uuid:
                full = uuid if uuid.startswith(("GPU-", "MIG-")) else "GPU-" + uuid
                self._handle = pynvml.nvmlDeviceGetHandleByUUID(full)
            else:
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(int(index))
        except pynvml.NVMLError as e:
            pynvml.nvmlShutdown()
            raise EnvironmentProblem(f"NVML has no GPU {uuid or index} ({e})") from None
        self._closed = False
        self._name = self._read(pynvml.nvmlDeviceGetName) or f"NVIDIA GPU {index}"
        if isinstance(self._name, bytes):
            self._name = self._name.decode(errors="replace")

    @classmethod
    def for_torch_device(cls, device_index: int | None = None) -> "NvmlPowerMeter":
        """The NVML device behind a CUDA device index as torch numbers it.

        torch's indices follow CUDA_VISIBLE_DEVICES and NVML's do not, so the GPU's UUID links them.
        """
        import torch

        idx = torch.cuda.current_device() if device_index is None else int(device_index)
        uuid = getattr(torch.cuda.get_device_properties(idx), "uuid", None)
        if uuid:
            try:
                return cls(idx, uuid=str(uuid))
            except EnvironmentProblem:
                if os.environ.get("CUDA_VISIBLE_DEVICES"):
                    raise  # the index alone could name another GPU
        return cls(idx)

    def _read(self, fn, *args):
        try:
            return fn(self._handle, *args)
        except self._nvml.NVMLError:
            return None

    def device_name(self) -> str:
        return str(self._name)

    def energy_mj(self) -> int | None:
        v = self._read(self._nvml.nvmlDeviceGetTotalEnergyConsumption)
        return None if v is None else int(v)

    def counter_update_period_s(self) -> float | None:
        return None  # NVML does not say (about 20–100 ms, by GPU): measured from the counter itself

    def power_w(self) -> float | None:
        nv = self._nvml
        field_id = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is not None:
            values = self._read(nv.nvmlDeviceGetFieldValues, [field_id])
            if values is not None and values[0].nvmlReturn == nv.NVML_SUCCESS:
                v = _field_value(nv, values[0])
                if v is not None:
                    return v / 1000.0
        mw = self._read(nv.nvmlDeviceGetPowerUsage)  # averaged over ~1 s on Ampere and newer
        return None if mw is None else mw / 1000.0

    def clocks_mhz(self) -> tuple[int | None, int | None]:
        nv = self._nvml
        return (self._read(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
                self._read(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM))

    def temperature_c(self) -> float | None:
        v = self._read(self._nvml.nvmlDeviceGetTemperature, self._nvml.NVML_TEMPERATURE_GPU)
        return None if v is None else float(v)

    def clock_event_reasons(self) -> int | None:
        nv = self._nvml
        fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        v = self._read(fn) if fn else None
        return None if v is None else int(v)

    def power_limit_w(self) -> float | None:
        v = self._read(self._nvml.nvmlDeviceGetEnforcedPowerLimit)
        return None if v is None else v / 1000.0

    def violation_ns(self) -> dict[str, int] | None:
        nv = self._nvml
        out = {}
        for name, policy in (("power", getattr(nv, "NVML_PERF_POLICY_POWER", 0)),
                             ("thermal", getattr(nv, "NVML_PERF_POLICY_THERMAL", 1))):
            v = self._read(nv.nvmlDeviceGetViolationStatus, policy)
            if v is not None:
                out[name] = int(v.violationTime)
        return out or None

    def mark_busy(self, busy: bool) -> None:
        pass  # the hardware knows when it is busy

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass


def _field_value(nv, fv) -> float | None:
    kinds = {getattr(nv, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal", getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
             getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
             getattr(nv, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
             getattr(nv, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
             getattr(nv, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal"}
    attr = kinds.get(int(fv.valueType))
    return None if attr is None else float(getattr(fv.value, attr))
