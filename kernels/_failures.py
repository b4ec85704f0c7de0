"""What dispatch reports when a call did not run the kernel it should have.

Two different things end a call in PyTorch's reference, and they are told apart:

* **The kernel does not apply** (``KernelFallbackWarning``, once per op and reason): a dtype
  outside the op's ``dtypes``, CPU tensors without ``KERNELAGENT_INTERPRET=1``, mixed devices, or
  an input the launcher itself declines by raising ``ValueError`` from its own code (the
  documented way for a launcher to say "not this input"). This is the library working as
  documented; it is not counted and never raises.
* **The kernel failed** (``KernelDispatchFailure``, a ``KernelFallbackWarning``): the kernel
  raised anything else, or a tuned config raised where the default config runs. The warning
  names the op, the kernel file, the config and the error, once per (op, kernel file, config,
  error type); every failed attempt is counted (``dispatch_failures()``). With
  ``KERNELAGENT_STRICT=1`` the call raises ``KernelDispatchError`` (the kernel's exception as its
  ``__cause__``) instead of falling back; the test suite runs this way.

Standard library only, like the package's import.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter

STRICT_ENV = "KERNELAGENT_STRICT"


class KernelFallbackWarning(RuntimeWarning):
    """A call ran PyTorch's reference instead of the Triton kernel; the message says why."""


class KernelDispatchFailure(KernelFallbackWarning):
    """The Triton kernel raised; the call fell back (or retried the default config). Counted."""


class KernelDispatchError(RuntimeError):
    """Under ``KERNELAGENT_STRICT=1``: the Triton kernel raised; the message names op, kernel
    file, config and error, and ``__cause__`` is the kernel's own exception."""


_lock = threading.Lock()
_counts: Counter = Counter()
_warned: set = set()


def strict() -> bool:
    """``KERNELAGENT_STRICT=1``: a kernel that raises fails the call instead of falling back."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def declined(exc: BaseException, kernel_file: str) -> bool:
    """Did the launcher decline the input (a ``ValueError`` raised in the kernel file's own
    code, or a ``tl.device_assert`` of the kernel failing in the interpreter: the input broke
    the kernel's stated contract, e.g. a cross_entropy target outside [0, vocab)), rather than
    fail? Judged by where the exception was raised: the innermost frame."""
    if not isinstance(exc, ValueError):
        return False
    if type(exc).__name__ == "DeviceAssertError" and type(exc).__module__.endswith("kernels._interpreter"):
        return True
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.realpath(tb.tb_frame.f_code.co_filename) == os.path.realpath(kernel_file)


def record(op: str, kernel_file: str, config: dict, exc: BaseException, then: str) -> None:
    """Count one failed kernel attempt; raise under strict, else warn once per (op, kernel
    file, config, error type). ``then`` says what the call does instead."""
    with _lock:
        _counts[op] += 1
    message = (f"kernelagent.kernels.{op}: the Triton kernel {kernel_file} failed with config {config} "
               f"({type(exc).__name__}: {exc})")
    if strict():
        raise KernelDispatchError(f"{message}; {STRICT_ENV}=1, so no fallback") from exc
    key = (op, kernel_file, repr(sorted(config.items())), type(exc).__name__)
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(f"{message}; {then} (counted in kernelagent.kernels.dispatch_failures(); "
                  f"{STRICT_ENV}=1 raises instead)", KernelDispatchFailure, stacklevel=4)


def dispatch_failures() -> dict[str, int]:
    """Failed kernel attempts per op in this process (since the last ``reset``): each call
    whose kernel raised, and each tuned config that raised before the default ran. Empty when
    every kernel call succeeded; a fallback because the kernel does not apply is not counted."""
    with _lock:
        return dict(sorted(_counts.items()))


def reset() -> None:
    """Forget the counts and which failures were already warned about."""
    with _lock:
        _counts.clear()
        _warned.clear()
