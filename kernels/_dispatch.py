"""The per-call dispatcher behind ``kernelagent.kernels.<op>``: a tuned Triton kernel or PyTorch.

For each call ``decide`` answers one question — run the op's shipped Triton kernel
(``kernels/<op>/kernel.py``) with which config, or run the PyTorch reference and why:

* CUDA tensors: the kernel, with the config ``_configs.resolve`` finds for the device's SKU and
  the input's shape bucket (exact SKU → family → compute capability → the op's default). Which
  source won is logged once per (op, device, source) on the ``kernelagent.kernels`` logger.
* CPU tensors: the reference, unless ``KERNELAGENT_INTERPRET=1``; then the kernel runs through
  Triton's interpreter. Triton decides interpreter-or-compiler when a ``@triton.jit`` function is
  defined, so ``TRITON_INTERPRET=1`` must be in the environment before ``kernel.py`` is imported:
  importing ``kernelagent.kernels`` with ``KERNELAGENT_INTERPRET=1`` sets it (process-wide: every
  Triton kernel defined afterwards is interpreted), and so does the first interpreted call. A
  kernel module already loaded for the compiler cannot run CPU tensors; such calls fall back.
* Anything the kernel does not cover — a dtype outside ``OPSPEC.dtypes``, mixed float dtypes,
  tensors on several devices or on another device type, sizes the launcher rejects with
  ``ValueError`` — runs the reference, with one ``KernelFallbackWarning`` per (op, reason) that
  says why. A tuned config that fails is retried with the default config before falling back.

The shipped ``kernel.py`` is trusted library code (it was verified before it shipped): it is
imported in-process from its file path, once per process.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import _configs, _device
from .registry import get_opspec, kernel_path
from .spec import DTYPE_NAMES, Call, OpSpec

INTERPRET_ENV = "KERNELAGENT_INTERPRET"
logger = logging.getLogger("kernelagent.kernels")


class KernelFallbackWarning(RuntimeWarning):
    """A call ran PyTorch's reference instead of the Triton kernel; the message says why."""


@dataclass(frozen=True)
class Decision:
    """What a call will run: the kernel with ``resolution.config``, or the reference and why."""

    use_kernel: bool
    reason: str
    resolution: _configs.Resolution | None = None
    device_type: str | None = None
    # A reason worth a warning (the user asked for something the kernel cannot do), as opposed
    # to the documented CPU default, which is silent.
    warn: bool = False


_lock = threading.Lock()
_opspecs: dict[str, OpSpec] = {}
_kernels: dict[str, tuple[Callable, bool]] = {}
_signatures: dict[str, inspect.Signature] = {}
_decisions: dict[tuple, Decision] = {}
_MAX_DECISIONS = 4096
_announced: set = set()
_warned: set = set()


def interpret_requested() -> bool:
    return os.environ.get(INTERPRET_ENV) == "1"


def prepare_interpreter() -> None:
    """With ``KERNELAGENT_INTERPRET=1``, make Triton interpret kernels defined from now on."""
    if interpret_requested() and "TRITON_INTERPRET" not in os.environ:
        os.environ["TRITON_INTERPRET"] = "1"
    if os.environ.get("TRITON_INTERPRET") == "1":
        from ._interpreter import patch_interpreter

        patch_interpreter()


def opspec(op: str) -> OpSpec:
    spec = _opspecs.get(op)
    if spec is None:
        spec = _opspecs.setdefault(op, get_opspec(op))
    return spec


def kernel_entry(op: str) -> tuple[Callable, bool]:
    """The entry function of the op's shipped kernel.py, and whether Triton interprets it."""
    hit = _kernels.get(op)
    if hit is not None:
        return hit
    with _lock:
        hit = _kernels.get(op)
        if hit is not None:
            return hit
        prepare_interpreter()
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        name = f"kernelagent.kernels._shipped.{op}"
        module_spec = importlib.util.spec_from_file_location(name, kernel_path(op))
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # triton and inspect look kernels' source up via the module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        entry = getattr(module, op, None)
        if not callable(entry):
            raise AttributeError(f"{kernel_path(op)} defines no entry function {op!r}")
        _kernels[op] = (entry, interpreted)
        return _kernels[op]


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found = []
    for v in (*args, *kwargs.values()):
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found.extend(t for t in v if isinstance(t, torch.Tensor))
    return found


def shape_call(op: str, args: tuple, kwargs: dict) -> Call:
    """The call as the op's spec builds it: required arguments positional, options by keyword.

    ``shape_key`` reads options such as ``causal`` from ``Call.kwargs``; a user may pass them
    positionally, so the call is re-bound to the reference's signature first.
    """
    sig = _signatures.get(op)
    if sig is None:
        sig = _signatures.setdefault(op, inspect.signature(opspec(op).reference))
    bound = sig.bind(*args, **kwargs)
    positional, options = [], {}
    for name, value in bound.arguments.items():
        p = sig.parameters[name]
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(value)
        else:
            options[name] = value
    return Call(tuple(positional), options)


def _reference(reason: str, warn: bool = True) -> Decision:
    return Decision(False, reason, warn=warn)


def _meta(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.shape, v.dtype, v.device
    if isinstance(v, (list, tuple)):
        return tuple(_meta(t) for t in v)
    hash(v)  # TypeError for unhashable options: such calls are decided afresh each time
    return type(v), v


def _signature_key(op: str, args: tuple, kwargs: dict) -> tuple | None:
    try:
        return (op, _device._override, tuple(_meta(a) for a in args),
                tuple((k, _meta(v)) for k, v in kwargs.items()))
    except TypeError:
        return None


def decide(op: str, args: tuple, kwargs: dict) -> Decision:
    """Which implementation a call of ``op`` with these arguments runs (no side effects but logs).

    Decisions are cached by the call's signature (shapes, dtypes, devices, option values) and
    the injected device identity; the environment (``KERNELAGENT_INTERPRET``,
    ``KERNELAGENT_LIBRARY``, ``KERNELAGENT_DEVICE_*``, ``KERNELAGENT_SKU_DIR``) is read when a
    signature is first seen: call ``clear_caches()`` after changing it in a running process.
    """
    key = _signature_key(op, args, kwargs)
    hit = _decisions.get(key) if key is not None else None
    if hit is not None:
        return hit
    decision = _decide(op, args, kwargs)
    if key is not None:
        if len(_decisions) >= _MAX_DECISIONS:
            _decisions.clear()
        _decisions[key] = decision
    return decision


def _decide(op: str, args: tuple, kwargs: dict) -> Decision:
    spec = opspec(op)
    tensors = _tensors(args, kwargs)
    if not tensors:
        return _reference("no tensor arguments")
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        return _reference("tensors on more than one device")
    if device.type == "cpu":
        if not interpret_requested():
            return _reference(f"CPU tensors run the PyTorch reference unless {INTERPRET_ENV}=1", warn=False)
    elif device.type == "meta":
        return _reference("meta tensors: shapes only", warn=False)
    elif device.type != "cuda":
        return _reference(f"no Triton kernel for device type {device.type!r}")
    floats = {t.dtype for t in tensors if t.is_floating_point()}
    if not floats:
        dtypes = sorted({str(t.dtype) for t in tensors})
        return _reference(f"dtype {', '.join(dtypes)} is not supported (kernel supports {', '.join(spec.dtypes)})")
    if len(floats) > 1:
        return _reference(f"mixed floating dtypes {sorted(str(d) for d in floats)}; the kernel needs one dtype")
    dtype = floats.pop()
    dtype_name = DTYPE_NAMES.get(dtype)
    if dtype_name not in spec.dtypes:
        return _reference(f"dtype {dtype} is not supported (kernel supports {', '.join(spec.dtypes)})")
    try:
        key = spec.shape_key(shape_call(op, args, kwargs))
    except Exception as e:  # malformed input: the reference raises PyTorch's own error for it
        return _reference(f"shape key failed ({type(e).__name__}: {e})", warn=False)
    identity = _device.identify(device)
    resolution = _configs.resolve(op, dtype_name, key, identity)
    where = identity.describe() if identity is not None else f"{device.type} (Triton interpreter)"
    announce = (op, where, resolution.tier, resolution.source)
    if announce not in _announced:
        _announced.add(announce)
        logger.info("%s on %s: config from %s", op, where, resolution.describe())
    return Decision(True, resolution.describe(), resolution, device_type=device.type)


def _warn_once(op: str, key: Any, message: str) -> None:
    with _lock:
        if (op, key) in _warned:
            return
        _warned.add((op, key))
    warnings.warn(f"kernelagent.kernels.{op}: {message}", KernelFallbackWarning, stacklevel=4)


def dispatch(op: str, args: tuple, kwargs: dict) -> Any:
    """Run ``op`` on these arguments with the implementation ``decide`` picks."""
    decision = decide(op, args, kwargs)
    reference = opspec(op).reference
    if not decision.use_kernel:
        if decision.warn:
            _warn_once(op, decision.reason, f"{decision.reason}; using the PyTorch reference")
        return reference(*args, **kwargs)
    entry, interpreted = kernel_entry(op)
    if decision.device_type == "cpu" and not interpreted:
        _warn_once(op, "not-interpreted",
                   "kernel.py was loaded for the Triton compiler (TRITON_INTERPRET was not 1 when it "
                   f"was imported), so it cannot run CPU tensors; set {INTERPRET_ENV}=1 before the "
                   "first kernel call; using the PyTorch reference")
        return reference(*args, **kwargs)
    resolution = decision.resolution
    try:
        return entry(*args, **kwargs, config=dict(resolution.config))
    except Exception as e:
        failure = e
    if resolution.tier != "default":
        _warn_once(op, ("tuned-config", resolution.source, type(failure).__name__),
                   f"tuned config {resolution.config} from {resolution.source} failed "
                   f"({type(failure).__name__}: {failure}); retrying with the default config")
        key = opspec(op).shape_key(shape_call(op, args, kwargs))
        default = _configs.Resolution(dict(opspec(op).default_config(key)), "default", "OPSPEC.default_config")
        signature = _signature_key(op, args, kwargs)
        if signature is not None:  # do not retry (and maybe recompile) the failing config every call
            _decisions[signature] = Decision(True, f"{default.describe()} (tuned config failed)", default,
                                             device_type=decision.device_type)
        try:
            return entry(*args, **kwargs, config=dict(default.config))
        except Exception as e:
            failure = e
    what = "rejected this input" if isinstance(failure, ValueError) else "failed"
    _warn_once(op, ("kernel", type(failure).__name__),
               f"the Triton kernel {what} ({type(failure).__name__}: {failure}); using the PyTorch reference")
    return reference(*args, **kwargs)


def clear_caches() -> None:
    """Forget decisions, one-time warnings and log lines, config files and answers (not the
    loaded kernel modules)."""
    with _lock:
        _announced.clear()
        _warned.clear()
        _decisions.clear()
    _configs.clear_caches()
