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
  tensors on several devices or on another device type, inputs the launcher declines by raising
  ``ValueError`` from its own code — runs the reference, with one ``KernelFallbackWarning`` per
  (op, reason) that says why. That is the kernel not applying, not failing.
* A kernel that raises anything else fails: a tuned config that fails is retried with the
  default config, a default config that fails runs the reference, and each failure is warned
  about (``KernelDispatchFailure``, naming op, kernel file, config and error, once per op, file,
  config and error type) and counted (``kernelagent.kernels.dispatch_failures()``). Under
  ``KERNELAGENT_STRICT=1`` a failure raises ``KernelDispatchError`` instead (``_failures``).

The shipped ``kernel.py`` is trusted library code (it was verified before it shipped): it is
imported in-process once, as ``kernelagent.kernels.<op>.kernel``, the same module its spec.py
takes helpers such as ``default_config`` from (lazily, so that the first import happens after
``KERNELAGENT_INTERPRET`` has been honoured). Whether Triton interprets it is read off its
kernels, since a module imported before the variable was set stays compiled.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import _configs, _device, _failures, _variants
from ._failures import KernelDispatchError, KernelFallbackWarning  # noqa: F401 - re-exported
from ._interpreter import INTERPRET_ENV, interpret_requested, prepare_interpreter
from .registry import get_opspec
from .spec import DTYPE_NAMES, Call, OpSpec

__all__ = ["INTERPRET_ENV", "Decision", "KernelDispatchError", "KernelFallbackWarning", "clear_caches", "decide",
           "dispatch", "interpret_requested", "kernel_entry", "opspec", "prepare_interpreter", "shape_call"]
logger = logging.getLogger("kernelagent.kernels")


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
_kernels: dict = {}   # op, or (op, variant, sha256) → (entry, interpreted)
_signatures: dict[str, inspect.Signature] = {}
_decisions: dict[tuple, Decision] = {}
_bound: dict[tuple, tuple] = {}   # signature → (entry, config) of a kernel call that ran cleanly
_MAX_DECISIONS = 4096
_announced: set = set()
_warned: set = set()


def opspec(op: str) -> OpSpec:
    spec = _opspecs.get(op)
    if spec is None:
        spec = _opspecs.setdefault(op, get_opspec(op))
    return spec


def kernel_module_name(op: str) -> str:
    """The one name the op's kernel.py is imported under, by dispatch and by its spec.py."""
    return f"{__package__}.{op}.kernel"


def _interpreted(module: Any) -> bool:
    """Were the module's Triton kernels defined for the interpreter? (Triton decides when a
    ``@triton.jit`` function is defined, from ``TRITON_INTERPRET`` at that moment.)"""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for value in vars(module).values():
        for _ in range(8):  # Autotuner and Heuristics wrap the function as .fn
            if not type(value).__module__.startswith("triton"):
                break
            if isinstance(value, InterpretedFunction):
                return True
            if isinstance(value, JITFunction):
                return False
            value = getattr(value, "fn", None)
    return os.environ.get("TRITON_INTERPRET") == "1"


def kernel_entry(op: str, variant: str = _variants.DEFAULT_VARIANT, sha256: str | None = None) -> tuple[Callable, bool]:
    """The entry function of the op's variant (``kernel``: the shipped kernel.py), and whether
    Triton interprets it. ``sha256``: the content the caller's entry was tuned for (the resolution
    checked it); cached per content, so a call on the hot path touches no file."""
    default = variant == _variants.DEFAULT_VARIANT
    key = op if default else (op, variant, sha256)
    hit = _kernels.get(key)
    if hit is not None:
        return hit
    with _lock:
        prepare_interpreter()
        v = _variants.get_variant(op, variant)
        if sha256 is not None and v.sha256 != sha256:
            raise RuntimeError(f"{v.path} changed since its entry was resolved (call clear_caches())")
        module = _variants.load_module(v)
        entry = getattr(module, op, None)
        if not callable(entry):
            raise AttributeError(f"{v.path} defines no entry function {op!r}")
        _kernels[key] = (entry, _interpreted(module))
        return _kernels[key]


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
    prepare_interpreter()  # before anything (a spec's default_config) imports kernel.py
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


def _entry_file(entry: Callable) -> str:
    code = getattr(entry, "__code__", None)
    return code.co_filename if code is not None else str(entry)


def dispatch(op: str, args: tuple, kwargs: dict) -> Any:
    """Run ``op`` on these arguments with the implementation ``decide`` picks.

    A kernel that raises is either declining the input (a ``ValueError`` from the launcher's own
    code: the reference runs, as for an unsupported dtype) or failing (anything else, or a tuned
    config that raises where the default runs): see ``_failures`` for how failures are reported,
    counted, and raised under ``KERNELAGENT_STRICT=1``.

    Hot path: once a signature's kernel ran without a failure, its entry function and config
    are kept bound to the signature (``_bound``), so the next call with the same shapes, dtypes
    and options goes straight to the launcher: no decision, entry or config lookup. Anything
    that raises there takes the full path below, which reports it.
    """
    key = _signature_key(op, args, kwargs)
    bound = _bound.get(key) if key is not None else None
    if bound is not None:
        entry, config = bound
        try:
            return entry(*args, **kwargs, config=dict(config))
        except Exception:  # noqa: BLE001 - the full path runs it again and judges the failure
            _bound.pop(key, None)
    return _dispatch(op, args, kwargs, key)


def _dispatch(op: str, args: tuple, kwargs: dict, key: tuple | None) -> Any:
    decision = decide(op, args, kwargs)
    reference = opspec(op).reference
    if not decision.use_kernel:
        if decision.warn:
            _warn_once(op, decision.reason, f"{decision.reason}; using the PyTorch reference")
        return reference(*args, **kwargs)
    resolution = decision.resolution
    try:
        entry, interpreted = kernel_entry(op, resolution.variant,
                                          resolution.entry.kernel_sha256 if resolution.entry else None)
    except Exception as e:  # the winning variant's file does not import: a failure, then the default
        if resolution.variant == _variants.DEFAULT_VARIANT:
            raise
        _failures.record(op, f"variant {resolution.variant}", resolution.config, e,
                         "using the default kernel and config")
        resolution = _default_resolution(op, args, kwargs)
        entry, interpreted = kernel_entry(op)
    if decision.device_type == "cpu" and not interpreted:
        _warn_once(op, "not-interpreted",
                   "kernel.py was loaded for the Triton compiler (TRITON_INTERPRET was not 1 when it "
                   f"was imported), so it cannot run CPU tensors; set {INTERPRET_ENV}=1 before the "
                   "first kernel call; using the PyTorch reference")
        return reference(*args, **kwargs)
    where = _entry_file(entry)
    try:
        out = entry(*args, **kwargs, config=dict(resolution.config))
    except Exception as e:
        failure = e
    else:
        if key is not None and not (decision.device_type == "cpu" and not interpreted):
            if len(_bound) >= _MAX_DECISIONS:
                _bound.clear()
            _bound[key] = (entry, dict(resolution.config))
        return out
    if resolution.tier != "default" or resolution.variant != _variants.DEFAULT_VARIANT:
        # A tuned config, or an architecture's default variant, failed: kernel.py's default next.
        tuned, tuned_failure, tuned_where = resolution, failure, where
        retry = f"retrying with the default config of kernel.py (the failing one came from {tuned.source})"
        if not _failures.declined(tuned_failure, tuned_where):
            _failures.record(op, tuned_where, tuned.config, tuned_failure, retry)  # raises under strict
        resolution = _default_resolution(op, args, kwargs)
        if tuned.variant != _variants.DEFAULT_VARIANT:
            entry = kernel_entry(op)[0]
            where = _entry_file(entry)
        signature = _signature_key(op, args, kwargs)
        if signature is not None:  # do not retry (and maybe recompile) the failing config every call
            _decisions[signature] = Decision(True, f"{resolution.describe()} (tuned config failed)", resolution,
                                             device_type=decision.device_type)
        try:
            out = entry(*args, **kwargs, config=dict(resolution.config))
        except Exception as e:
            failure = e
        else:
            if _failures.declined(tuned_failure, tuned_where):  # the launcher refused the tuned config only
                _failures.record(op, tuned_where, tuned.config, tuned_failure, retry)
            return out
    if _failures.declined(failure, where):
        _warn_once(op, ("declined", type(failure).__name__),
                   f"the Triton kernel rejected this input ({type(failure).__name__}: {failure}); "
                   "using the PyTorch reference")
        return reference(*args, **kwargs)
    _failures.record(op, where, resolution.config, failure, "using the PyTorch reference")
    return reference(*args, **kwargs)


def _default_resolution(op: str, args: tuple, kwargs: dict) -> _configs.Resolution:
    """kernel.py with its default config: the fallback when anything else failed."""
    key = opspec(op).shape_key(shape_call(op, args, kwargs))
    return _configs.default_resolution(op, key, use_arch=False)


def clear_caches() -> None:
    """Forget decisions, one-time warnings and log lines, failure counts, config files and
    answers (not the loaded kernel modules)."""
    with _lock:
        _announced.clear()
        _warned.clear()
        _decisions.clear()
        _bound.clear()
    _failures.reset()
    _configs.clear_caches()
