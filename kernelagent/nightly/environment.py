"""The environment block of a nightly run: what the numbers were taken on and with.

A library entry is only as good as the versions and the device it was checked under, so every
``results.json`` (and every history row) carries device, driver, clocks and the versions of
torch, triton, python and kernelagent.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any

from .. import __version__
from ..errors import EnvironmentProblem


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def versions() -> dict[str, str | None]:
    import torch
    import triton

    return {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "kernelagent": __version__, "numpy": _version("numpy"), "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None)}


def nvml_block(index: int = 0) -> dict[str, Any]:
    """Driver, clocks (current and maximum), power limit and clock-event reasons from NVML."""
    try:
        import pynvml as nv

        nv.nvmlInit()
    except Exception as e:
        raise EnvironmentProblem(f"NVML unavailable ({e}); the GPU nightly reads energy and clocks through it: "
                                 "install nvidia-ml-py and run where the NVIDIA driver is loaded") from None
    try:
        h = nv.nvmlDeviceGetHandleByIndex(index)

        def read(fn, *args):
            try:
                v = fn(*args)
                return v.decode() if isinstance(v, bytes) else v
            except Exception:
                return None

        return {
            "driver": read(nv.nvmlSystemGetDriverVersion),
            "nvml_device": read(nv.nvmlDeviceGetName, h),
            "clocks": {
                "sm_mhz": read(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                "mem_mhz": read(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
                "sm_max_mhz": read(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
                "mem_max_mhz": read(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
                "sm_app_mhz": read(nv.nvmlDeviceGetApplicationsClock, h, nv.NVML_CLOCK_SM),
                "clock_event_reasons": read(nv.nvmlDeviceGetCurrentClocksThrottleReasons, h),
            },
            "power_limit_w": (lambda mw: mw / 1000.0 if mw else None)(read(nv.nvmlDeviceGetPowerManagementLimit, h)),
            "persistence_mode": read(nv.nvmlDeviceGetPersistenceMode, h),
        }
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


def environment(mode: str, measure: str, sku: str | None, device_index: int = 0) -> dict[str, Any]:
    """The block for ``results.json``. ``mode`` is "gpu" or "cpu"."""
    import torch

    env: dict[str, Any] = {"mode": mode, "measure": measure, "sku": sku, "versions": versions(),
                           "platform": platform.platform(), "hostname": socket.gethostname(),
                           "python_executable": sys.executable,
                           "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")}
    if mode == "gpu":
        props = torch.cuda.get_device_properties(device_index)
        env.update(device=props.name, compute_capability=[props.major, props.minor],
                   memory_bytes=int(props.total_memory), **nvml_block(device_index))
    else:
        env.update(device="cpu (triton interpreter)", compute_capability=None, driver=None, clocks=None,
                   cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
    return env
