"""System configs as tuned dimensions: the SM clock and the board power limit, through NVML.

``kernelagent tune --system clocks,power-limit`` adds ``sm_clock_mhz`` (among the board's
supported application clocks at its current memory clock) and ``power_limit_w`` (between
the board's minimum and maximum) to the search. Nothing here runs unless the user asked for
it. The process must be allowed to set them (root, or an administrator's grant): without
permission the run stops before it measures anything, with exit code 3.

Whatever was set is restored: on success, on an exception, on SIGINT and SIGTERM. Before it
sets anything, a marker file (``$XDG_CACHE_HOME/kernelagent/system-config.json``) records the
board's original state; it is removed once that state is back. A run that was killed (SIGKILL,
a power cut) leaves it behind, and the next start restores the recorded state or, if it
cannot, says how to do so by hand.

``nvml`` is injectable (``pynvml`` by default) so the tests drive a simulated device.

With the ``model`` backend (``tune --measure model --system …``) nothing is set and NVML is
never opened: ``PredictedSystem`` offers the same dimensions from the SKU's spec sheet, and the
model predicts each point (``tuner/model.py``). A spec sheet lists no supported clocks or power
range, so both grids are assumptions, labelled so: SM clocks at ``PREDICTED_CLOCK_FRACTIONS`` of
the boost clock (50 % to 100 %, on the 15 MHz steps NVIDIA boards use), power limits from
``PREDICTED_POWER_FRACTIONS[0]`` to 100 % of the spec sheet's limit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import BadInput, EnvironmentProblem
from .storage import pid_alive

DIMENSIONS = {"clocks": "sm_clock_mhz", "power-limit": "power_limit_w"}
SYSTEM_KEYS = tuple(DIMENSIONS.values())
MAX_CLOCK_STEPS = 6
POWER_LIMIT_STEPS = 5
# The model backend's grids (assumed: a spec sheet gives no supported-clock list or power range).
PREDICTED_CLOCK_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PREDICTED_POWER_FRACTIONS = (0.5, 0.625, 0.75, 0.875, 1.0)
CLOCK_STEP_MHZ = 15


def parse_dimensions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"clocks,power-limit"`` → the dimensions asked for (BadInput naming the known ones)."""
    if not text:
        return ()
    items = [x.strip() for x in (text.split(",") if isinstance(text, str) else text) if x.strip()]
    unknown = [x for x in items if x not in DIMENSIONS]
    if unknown:
        raise BadInput(f"unknown --system dimension {unknown[0]!r}; expected a comma-separated subset of "
                       f"{', '.join(DIMENSIONS)}")
    return tuple(dict.fromkeys(items))


def split_config(config: Mapping[str, Any]) -> tuple[dict, dict]:
    """(the kernel's config, the system's part)."""
    return ({k: v for k, v in config.items() if k not in SYSTEM_KEYS},
            {k: v for k, v in config.items() if k in SYSTEM_KEYS})


def default_marker_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kernelagent" / "system-config.json"


@dataclass
class SavedState:
    """What the board was set to before this run changed it."""

    power_limit_mw: int | None = None
    app_clocks: tuple[int, int] | None = None    # (memory MHz, graphics MHz)

    def to_json(self) -> dict:
        return {"power_limit_mw": self.power_limit_mw,
                "app_clocks": list(self.app_clocks) if self.app_clocks else None}

    @classmethod
    def from_json(cls, d: Mapping) -> "SavedState":
        clocks = d.get("app_clocks")
        return cls(d.get("power_limit_mw"), tuple(int(x) for x in clocks) if clocks else None)


def _no_permission(nvml, e) -> bool:
    code = getattr(nvml, "NVML_ERROR_NO_PERMISSION", 4)
    return getattr(e, "value", None) == code or type(e).__name__ == "NVMLError_NoPermission"


class SystemControl:
    """Sets the asked system dimensions on one GPU and always puts them back.

    Use as a context manager: ``__enter__`` checks permission (EnvironmentProblem, exit 3, when
    it is missing), records the original state in the marker file and installs SIGINT/SIGTERM
    handlers; ``__exit__`` restores. ``apply(config)`` sets a trial's values."""

    def __init__(self, dimensions: Sequence[str], *, nvml=None, index: int = 0, marker_path: Path | None = None):
        self.dimensions = tuple(dimensions)
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as e:
                raise EnvironmentProblem(f"--system needs the NVML bindings (pip install nvidia-ml-py): {e}") from None
        self.nvml, self.index = nvml, int(index)
        self.marker_path = Path(marker_path) if marker_path else default_marker_path()
        self.saved = SavedState()
        self.handle = None
        self.active = False
        self._handlers: dict = {}
        self.notes: list[str] = []

    # -- what can be tuned ---------------------------------------------------------------------
    def _call(self, name: str, *args):
        return getattr(self.nvml, name)(*args)

    def open(self) -> "SystemControl":
        nv = self.nvml
        try:
            nv.nvmlInit()
            self.handle = nv.nvmlDeviceGetHandleByIndex(self.index)
        except nv.NVMLError as e:
            raise EnvironmentProblem(f"--system: NVML could not open GPU {self.index} ({e})") from None
        return self

    def power_limit_range_w(self) -> tuple[float, float]:
        lo, hi = self._call("nvmlDeviceGetPowerManagementLimitConstraints", self.handle)
        return lo / 1000.0, hi / 1000.0

    def supported_sm_clocks(self) -> list[int]:
        mem = self._call("nvmlDeviceGetApplicationsClock", self.handle, self.nvml.NVML_CLOCK_MEM)
        return sorted(int(c) for c in self._call("nvmlDeviceGetSupportedGraphicsClocks", self.handle, mem))

    def space_values(self) -> dict[str, list]:
        """The values each asked dimension takes in the search (ordered, the board's default included)."""
        out: dict[str, list] = {}
        if "clocks" in self.dimensions:
            clocks = self.supported_sm_clocks()
            step = max(1, -(-len(clocks) // MAX_CLOCK_STEPS))
            picked = sorted(set(clocks[::-1][::step]) | {clocks[-1]})
            out["sm_clock_mhz"] = picked
        if "power-limit" in self.dimensions:
            lo, hi = self.power_limit_range_w()
            values = {round(lo + (hi - lo) * i / (POWER_LIMIT_STEPS - 1)) for i in range(POWER_LIMIT_STEPS)}
            default = self._call("nvmlDeviceGetPowerManagementDefaultLimit", self.handle) / 1000.0
            out["power_limit_w"] = sorted(values | {round(default)})
        return out

    def current(self) -> dict:
        """The board's values now, in the search's names (the default config's system part)."""
        out = {}
        if "clocks" in self.dimensions:
            out["sm_clock_mhz"] = int(self._call("nvmlDeviceGetApplicationsClock", self.handle,
                                                 self.nvml.NVML_CLOCK_GRAPHICS))
        if "power-limit" in self.dimensions:
            out["power_limit_w"] = round(self._call("nvmlDeviceGetPowerManagementLimit", self.handle) / 1000.0)
        return out

    # -- setting and restoring -----------------------------------------------------------------
    def _save(self) -> None:
        nv = self.nvml
        if "power-limit" in self.dimensions:
            self.saved.power_limit_mw = int(self._call("nvmlDeviceGetPowerManagementLimit", self.handle))
        if "clocks" in self.dimensions:
            self.saved.app_clocks = (int(self._call("nvmlDeviceGetApplicationsClock", self.handle, nv.NVML_CLOCK_MEM)),
                                     int(self._call("nvmlDeviceGetApplicationsClock", self.handle,
                                                    nv.NVML_CLOCK_GRAPHICS)))

    def _check_permission(self) -> None:
        """Set each asked value to what it already is: a no-op that fails without permission."""
        nv = self.nvml
        try:
            if self.saved.power_limit_mw is not None:
                self._call("nvmlDeviceSetPowerManagementLimit", self.handle, self.saved.power_limit_mw)
            if self.saved.app_clocks is not None:
                self._call("nvmlDeviceSetApplicationsClocks", self.handle, *self.saved.app_clocks)
        except nv.NVMLError as e:
            why = "this process may not change them" if _no_permission(nv, e) else f"NVML refused ({e})"
            raise EnvironmentProblem(
                f"--system {','.join(self.dimensions)}: {why}. Setting GPU clocks or power limits needs root or an "
                "administrator's grant (nvidia-smi -acp UNRESTRICTED for application clocks); run without --system "
                "to tune kernels at the board's current settings") from None

    def apply(self, system_config: Mapping[str, Any]) -> None:
        """Set a trial's system values (only the dimensions asked for)."""
        if not self.active:
            raise RuntimeError("SystemControl.apply outside its `with` block")
        if "power_limit_w" in system_config and "power-limit" in self.dimensions:
            self._call("nvmlDeviceSetPowerManagementLimit", self.handle, int(round(system_config["power_limit_w"] * 1000)))
        if "sm_clock_mhz" in system_config and "clocks" in self.dimensions:
            mem = self.saved.app_clocks[0]
            self._call("nvmlDeviceSetApplicationsClocks", self.handle, mem, int(system_config["sm_clock_mhz"]))

    def restore(self) -> list[str]:
        """Put the saved state back; the problems, if any (then the marker stays)."""
        problems = restore_state(self.nvml, self.handle, self.saved)
        if not problems:
            self.marker_path.unlink(missing_ok=True)
        return problems

    def __enter__(self) -> "SystemControl":
        if self.handle is None:
            self.open()
        recover_killed_run(self.nvml, self.marker_path, notes=self.notes, index=self.index)
        try:
            self._save()
        except self.nvml.NVMLError as e:
            raise EnvironmentProblem(f"--system: this GPU does not report its {','.join(self.dimensions)} ({e})") from None
        self._check_permission()
        self.marker_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.marker_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "index": self.index,
                                   "dimensions": list(self.dimensions), "saved": self.saved.to_json(),
                                   "started": time.time()}))
        os.replace(tmp, self.marker_path)
        self.active = True
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        self._finish()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def _finish(self) -> list[str]:
        for sig, old in self._handlers.items():
            signal.signal(sig, old)
        self._handlers = {}
        if not self.active:
            return []
        self.active = False
        return self.restore()

    def __exit__(self, exc_type, exc, tb):
        problems = self._finish()
        if problems:
            msg = (f"--system: could not restore the GPU's settings ({'; '.join(problems)}); the original state is "
                   f"kept in {self.marker_path} and the next `kernelagent tune --system` restores it, or by hand: "
                   f"{manual_restore_hint(self.saved)}")
            if exc_type is None:
                raise EnvironmentProblem(msg)
            self.notes.append(msg)   # do not hide the exception that is already on its way
        return False


def restore_state(nvml, handle, saved: SavedState) -> list[str]:
    problems = []
    if saved.power_limit_mw is not None:
        try:
            nvml.nvmlDeviceSetPowerManagementLimit(handle, saved.power_limit_mw)
        except nvml.NVMLError as e:
            problems.append(f"power limit back to {saved.power_limit_mw / 1000:g} W: {e}")
    if saved.app_clocks is not None:
        try:
            nvml.nvmlDeviceSetApplicationsClocks(handle, *saved.app_clocks)
        except nvml.NVMLError as e:
            try:
                nvml.nvmlDeviceResetApplicationsClocks(handle)
            except nvml.NVMLError:
                problems.append(f"application clocks back to {saved.app_clocks[1]} MHz SM / "
                                f"{saved.app_clocks[0]} MHz memory: {e}")
    return problems


def manual_restore_hint(saved: SavedState) -> str:
    parts = []
    if saved.power_limit_mw is not None:
        parts.append(f"nvidia-smi -pl {saved.power_limit_mw / 1000:g}")
    if saved.app_clocks is not None:
        parts.append(f"nvidia-smi -ac {saved.app_clocks[0]},{saved.app_clocks[1]}")
    return " and ".join(parts) or "nothing to restore"


def recover_killed_run(nvml, marker_path: Path, *, notes: list[str], index: int = 0) -> None:
    """A marker left by an earlier run: restore its saved state (a dead run), or refuse (a live one)."""
    if not marker_path.is_file():
        return
    try:
        doc = json.loads(marker_path.read_text())
        saved = SavedState.from_json(doc["saved"])
        pid, host = int(doc["pid"]), doc.get("host")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EnvironmentProblem(f"--system: the marker {marker_path} of an earlier run is unreadable ({e}); check the "
                                 "GPU's clocks and power limit (nvidia-smi -q -d CLOCK,POWER), then delete it") from None
    if host == socket.gethostname() and pid != os.getpid() and pid_alive(pid):
        raise EnvironmentProblem(f"--system: another run (pid {pid}) holds this GPU's system settings "
                                 f"({marker_path}); wait for it to finish")
    handle = nvml.nvmlDeviceGetHandleByIndex(int(doc.get("index", index)))
    problems = restore_state(nvml, handle, saved)
    if problems:
        raise EnvironmentProblem(f"--system: an earlier run (pid {pid}) was killed with the GPU's settings changed and "
                                 f"they could not be restored ({'; '.join(problems)}); restore them by hand "
                                 f"({manual_restore_hint(saved)}), then delete {marker_path}")
    marker_path.unlink(missing_ok=True)
    notes.append(f"an earlier run (pid {pid}) was killed with the GPU's settings changed; they were restored "
                 f"({manual_restore_hint(saved)})")


class PredictedSystem:
    """The ``--system`` dimensions for the ``model`` backend: grids from the SKU's spec sheet,
    nothing set on any device (``apply`` does nothing; the model reads a trial's system part
    from its config). Same interface as ``SystemControl`` where the tuner uses it."""

    def __init__(self, dimensions: Sequence[str], sku: Any):
        from .model import DEFAULT_CLOCK_MHZ

        self.dimensions, self.sku = tuple(dimensions), sku
        self.boost_mhz = int(sku.boost_clock_mhz or DEFAULT_CLOCK_MHZ)
        self.notes: list[str] = []

    def assumptions(self) -> str:
        parts = []
        if "clocks" in self.dimensions:
            parts.append(f"SM clocks {PREDICTED_CLOCK_FRACTIONS[0] * 100:.0f}–100 % of the "
                         f"{'boost clock' if self.sku.boost_clock_mhz else 'assumed clock'} ({self.boost_mhz} MHz)")
        if "power-limit" in self.dimensions:
            parts.append(f"power limits {PREDICTED_POWER_FRACTIONS[0] * 100:.0f}–100 % of {self.sku.power_limit_w:g} W")
        return ("--system with the model backend: nothing is set on any GPU; " + " and ".join(parts)
                + " are an assumed grid (a spec sheet lists neither), and every point is PREDICTED")

    def space_values(self) -> dict[str, list]:
        out: dict[str, list] = {}
        if "clocks" in self.dimensions:
            out["sm_clock_mhz"] = sorted({self.boost_mhz if f == 1.0 else
                                          int(round(self.boost_mhz * f / CLOCK_STEP_MHZ) * CLOCK_STEP_MHZ)
                                          for f in PREDICTED_CLOCK_FRACTIONS})
        if "power-limit" in self.dimensions:
            out["power_limit_w"] = sorted({round(self.sku.power_limit_w * f) for f in PREDICTED_POWER_FRACTIONS})
        return out

    def current(self) -> dict:
        """What the model assumes without a system part: the boost clock and the spec sheet's limit."""
        out = {}
        if "clocks" in self.dimensions:
            out["sm_clock_mhz"] = self.boost_mhz
        if "power-limit" in self.dimensions:
            out["power_limit_w"] = round(self.sku.power_limit_w)
        return out

    def apply(self, system_config: Mapping[str, Any]) -> None:
        """Nothing to set: the prediction takes the values from the trial's config."""

    def __enter__(self) -> "PredictedSystem":
        return self

    def __exit__(self, exc_type, exc, tb):
        return False
