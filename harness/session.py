"""A candidate session: static checks → sandbox → load, once per candidate, reused.

Tuning one kernel asks many questions of one candidate: ``measure`` for each trial config, then
``verify`` for the best few. A ``CandidateSession`` answers them all from one sandboxed worker
(one Python start, one torch import, one Triton cache), switching configs per request
(``configure``) instead of re-importing, and keeps in the parent what does not depend on the
config: the static-check result, the staged benchmark inputs and their harness-overhead
calibration, and the float64 references of every case (bounded by ``ref_cache_bytes``)::

    with CandidateSession("softmax", source) as s:
        for config in trials:
            m = measure("softmax", source, case, config=config, session=s)
        v = verify("softmax", source, config=best, session=s)

What the reuse gives up, stated: the candidate's Python state survives from one config to the
next inside the worker. Each ``verify`` still runs its own A/B/A calls on fresh inputs and
each ``measure`` its own fingerprints, so state can only change a verdict by making the
candidate fail; a worker that dies is restarted (and the candidate re-imported) on next use.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import Any

import torch

from .protocol import configure_request, failure, load_request
from .sandbox import Limits, SandboxedWorker
from .static_checks import check_candidate

DEFAULT_REF_CACHE_BYTES = 1 << 30


class SessionError(Exception):
    """The candidate cannot be loaded: ``reason`` is a Verdict Reason value."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class RefCache:
    """Parent-side results that depend only on the inputs (references, pristine input images),
    least recently used first out once over ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_REF_CACHE_BYTES):
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()

    def get(self, key):
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key, value, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes and self._items:
            _, (_, n) = self._items.popitem(last=False)
            self.bytes -= n


def tensor_nbytes(*values) -> int:
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


class CandidateSession:
    """One candidate (source text) for one target, checked once and loaded into one worker.

    Not thread-safe; use as a context manager (``close`` kills the worker). ``verify`` and
    ``measure`` accept it as ``session=``; they check it is for the same target and source.
    """

    def __init__(self, target, source: str, *, candidate_name: str = "candidate.py", static_checks: bool = True,
                 device: str | None = None, init_seed: int | None = None,
                 ref_cache_bytes: int = DEFAULT_REF_CACHE_BYTES):
        from .verify import resolve_target

        self.target = resolve_target(target)
        self.source, self.candidate_name = source, candidate_name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.init_seed = secrets.randbits(31) if init_seed is None else int(init_seed)
        self.static_checks = static_checks
        self._problems: list | None = None
        self.refs = RefCache(ref_cache_bytes)
        self.worker: SandboxedWorker | None = None
        self.loaded = False
        self.config: dict | None = None
        self.bench: dict[str, Any] | None = None     # what measure staged in this worker (see measure.py)
        self.starts = 0                              # workers started (1 unless one died)
        self.uses = 0

    # -- static checks, once -----------------------------------------------------------------
    def problems(self) -> list[tuple[str, str]]:
        if not self.static_checks:
            return []
        if self._problems is None:
            tgt = self.target
            self._problems = check_candidate(self.source, entry=tgt.entry if tgt.kind == "op" else None,
                                             model_class="ModelNew" if tgt.kind == "problem" else None)
        return self._problems

    def matches(self, target, source: str) -> bool:
        from .verify import resolve_target

        if source != self.source:
            return False
        other = target if hasattr(target, "kind") and hasattr(target, "entry") else resolve_target(target)
        return (other.kind, other.name) == (self.target.kind, self.target.name)

    # -- the worker --------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.worker is not None and self.worker.proc is not None and self.worker.proc.poll() is None

    def begin(self, limits: Limits) -> SandboxedWorker:
        """A started worker for one use under ``limits`` (a new one if there is none or it died)."""
        if self.device == "cuda":
            limits.memory_bytes = None
        if not self.alive():
            self.reset()
            self.worker = SandboxedWorker(device=self.device, limits=limits)
            self.starts += 1
            self.worker.start()
        else:
            self.worker.begin_budget(limits)
        self.uses += 1
        return self.worker

    def load(self, config: dict | None) -> None:
        """Import the candidate (first time) or switch its config; raises ``SessionError``."""
        w = self.worker
        if not self.loaded:
            reply = w.request(*load_request(self.target, self.source, self.candidate_name, config, self.device,
                                            self.init_seed))[0]
            if reply.get("ok") is not True:
                reason, detail = failure(reply)
                raise SessionError(reason or "import-error", detail)
            self.loaded, self.config = True, config
            return
        if config != self.config:
            reply = w.request(configure_request(config))[0]
            if reply.get("ok") is not True:
                raise SessionError("crash", "the worker refused a config switch: " + failure(reply)[1])
            self.config = config

    def reset(self) -> None:
        """Drop the worker (the next use starts and loads a fresh one); keeps the caches."""
        if self.worker is not None:
            self.worker.close()
        self.worker, self.loaded, self.config, self.bench = None, False, None, None

    @property
    def mode(self) -> str:
        return self.worker.mode if self.worker else ""

    def close(self) -> None:
        self.reset()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

