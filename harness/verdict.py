"""Verdict: the harness's answer about one candidate, decided in the trusted parent."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class Reason(str, Enum):
    """Why a candidate was rejected. The value is the stable string in ``--json`` output."""

    MISMATCH = "mismatch"                  # error over the budget vs the float64 reference
    NONFINITE = "nonfinite"                # NaN/Inf where the reference is finite
    SHAPE = "shape"
    DTYPE = "dtype"
    NOT_TENSOR = "not-tensor"              # output is not a plain torch.Tensor
    PYTORCH_FALLBACK = "pytorch-fallback"  # PyTorch compute on the inputs, or a fallback path
    NO_KERNEL = "no-kernel"                # no @triton.jit kernel defined or launched
    FORBIDDEN = "forbidden"                # forbidden import or construct (os, ctypes, gc, patching)
    INPUT_MUTATION = "input-mutation"
    OUTPUT_REUSE = "output-reuse"          # returns the same storage across calls, or aliases an input
    DEFERRED_WRITE = "deferred-write"      # output changes after the call returned
    NONDETERMINISTIC = "nondeterministic"  # identical calls, different bytes
    TIMEOUT = "timeout"
    CRASH = "crash"                        # the worker died (segfault, os._exit, OOM kill)
    IMPORT_ERROR = "import-error"          # does not parse, import, or define the entry point
    COMPILE_ERROR = "compile-error"        # Triton compile or launch failed
    UNSUPPORTED_ON_CPU = "unsupported-on-cpu"  # uses a feature the CPU interpreter cannot run (named in detail)
    RUNTIME_ERROR = "runtime-error"        # raised an exception while running


@dataclass
class Verdict:
    """Verified or why not, with the evidence. Never built from what a worker says of itself."""

    verified: bool
    reason: str | None = None            # a Reason value when rejected
    detail: str = ""                     # human-readable: worst error vs budget, counterexample
    trials: int = 0                      # property-based examples evaluated
    duration_s: float = 0.0              # wall time, parent's clock
    cpu_s: float | None = None           # CPU the worker used (what --timeout limits)
    target: str = ""
    counterexample: dict[str, Any] | None = None
    worst_error_ratio: float | None = None   # max over elements of |err| / allowed (≤ 1 passes)
    sandbox: str = ""                    # isolation mode actually used ("bwrap", "unshare", "weak: …")
    device: str = ""                     # "cpu (triton interpreter)" or the CUDA device name
    seed: int | None = None
    warnings: list[str] = field(default_factory=list)
    # axis ("dtype", "layout", "shape_class") -> the declared classes of the evaluated Cases, by
    # effect (a registered op's verify covers all of them; a problem file declares none)
    covered: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def reject(cls, reason: Reason, detail: str, **kw: Any) -> "Verdict":
        return cls(verified=False, reason=reason.value, detail=scrub_paths(detail), **kw)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def scrubbed_tail(text: str, n: int) -> str:
    """The last ``n`` characters of ``text`` (a traceback, a stderr log), host paths replaced
    first and the cut made at a line boundary: the same tail on any machine, and never half a
    path, which a later scrub could no longer recognise (CI's longer checkout path once left
    ``ython3.11/site-packages/…`` in an agent's feedback)."""
    text = scrub_paths(text)
    if len(text) <= n:
        return text
    tail = text[-n:]
    cut = tail.find("\n")
    return "…\n" + (tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail)


_SANDBOX_DIR = re.compile(r"/[^\s\"']*?kernelagent-sbx-[A-Za-z0-9_]+/")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


@functools.lru_cache(maxsize=1)
def _roots() -> tuple[tuple[str, str], ...]:
    repo = str(Path(__file__).resolve().parents[1]) + os.sep
    roots = [(p + os.sep, "<site-packages>/") for p in sys.path if p.endswith("site-packages")]
    roots += [(repo, "<kernelagent>/")]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        roots.append((os.path.join(prefix, "lib") + os.sep, "<python>/lib/"))
    return tuple(sorted(set(roots), key=lambda r: -len(r[0])))


def scrub_paths(text: str) -> str:
    """``text`` without host paths or run-specific noise: the worker's private folder (so the
    candidate is just its file name), site-packages, the Python install and this checkout become
    placeholders, and object addresses ``0x…``. A verdict's detail is then the same for the same
    candidate, inputs and seed on any machine, so an agent run replays byte for byte."""
    text = _SANDBOX_DIR.sub("", text)
    for root, placeholder in _roots():
        text = text.replace(root, placeholder)
    return _ADDRESS.sub("0x…", text)
