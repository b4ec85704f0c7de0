"""The messages between the trusted parent and a sandboxed worker, in one place.

Requests (parent → worker) are built here; the worker (``worker.py``, ``worker_bench.py``) reads
the same field names. Replies (worker → parent) are untrusted: ``CallReply.parse`` and
``BenchReply.parse`` check every field's type and bound and raise ``Malformed`` for anything
else, so a forged reply becomes a ``crash`` verdict with a reason, never a parent traceback.
Tensor bytes never travel in these headers: ``call`` uses the shared file, ``bench`` blobs are
decoded by ``wire.decode_tensor`` against limits the parent set (``max_reply_bytes``).

  load       {kind, entry, source, filename, config, device, init_seed[, init_args, metas]}
             → {ok} | {ok: false, reason, detail}
  configure  {config}   bind another tuning config without re-importing → {ok}
  call       inputs in the shared file (``wire.pack_shared``) → ``CallReply``
  bench      stage input sets, or run warm-up / timed / energy-window calls → ``BenchReply``
  exit
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .wire import encode_args

MAX_LIST = 1 << 20        # no reply list (times, fingerprints) may be longer than this


class Malformed(Exception):
    """A reply that does not follow the protocol (the worker is broken or lying)."""


def _get(reply: dict, name: str, kind, default):
    v = reply.get(name, default)
    if kind is int:
        ok = type(v) is int
    elif kind is bool:
        ok = type(v) is bool
    elif kind is float:
        ok = type(v) in (int, float)
    else:
        ok = isinstance(v, kind)
    if not ok:
        raise Malformed(f"field {name!r} is {type(v).__name__}, expected {getattr(kind, '__name__', kind)}")
    if isinstance(v, (list, dict, str)) and len(v) > MAX_LIST:
        raise Malformed(f"field {name!r} has {len(v)} entries")
    return v


def _counts(reply: dict, name: str) -> dict[str, int]:
    d = _get(reply, name, dict, {})
    if not all(isinstance(k, str) and type(v) is int for k, v in d.items()):
        raise Malformed(f"field {name!r} is not a map of names to counts")
    return d


def _int_list(reply: dict, name: str) -> list[int]:
    v = _get(reply, name, list, [])
    if not all(type(x) is int for x in v):
        raise Malformed(f"field {name!r} is not a list of integers")
    return v


def failure(reply: dict) -> tuple[str | None, str]:
    """(reason, detail) of an ``ok: false`` reply, both as plain bounded strings."""
    reason = reply.get("reason")
    return (reason if isinstance(reason, str) else None), str(reply.get("detail", ""))[:4000]


# -- requests ------------------------------------------------------------------------------------

def load_request(target, source: str, filename: str, config, device: str, init_seed: int):
    """(header, blobs) of the ``load`` request for ``target`` (an OpTarget or ProblemTarget)."""
    header: dict[str, Any] = {"op": "load", "kind": target.kind, "entry": target.entry, "source": source,
                              "filename": Path(filename).name or "candidate.py", "config": config,
                              "device": device, "init_seed": init_seed}
    blobs: list[bytes] = []
    if target.kind == "problem":
        enc, (metas, blobs) = encode_args(target.init_inputs)
        header.update(init_args=enc, metas=metas)
    return header, blobs


def configure_request(config: dict | None) -> dict:
    return {"op": "configure", "config": None if config is None else dict(config)}


# -- replies -------------------------------------------------------------------------------------

@dataclass
class CallReply:
    """The worker's account of one ``call`` (every field a claim; see ``judge.py``)."""

    ok: bool
    reason: str | None = None
    detail: str = ""
    launches: int = 0
    bad_ops: dict[str, int] = field(default_factory=dict)
    host_reads: dict[str, int] = field(default_factory=dict)
    out_type: str = ""
    out_launched: bool = False
    out_shape: list[int] | None = None
    out_dtype: str | None = None
    out_nbytes: int | None = None
    out_written: bool = False
    changed_after_return: bool = False
    threads_added: int = 0
    mutated_inputs: list[int] = field(default_factory=list)
    aliases_input: bool = False
    reuses_previous_output: bool = False

    @classmethod
    def parse(cls, r: dict) -> "CallReply":
        if _get(r, "ok", bool, False) is not True:
            reason, detail = failure(r)
            return cls(ok=False, reason=reason, detail=detail)
        out = cls(ok=True, launches=_get(r, "launches", int, 0), bad_ops=_counts(r, "bad_ops"),
                  host_reads=_counts(r, "host_reads"), out_type=_get(r, "out_type", str, "")[:300],
                  out_launched=_get(r, "out_launched", bool, False), out_written=_get(r, "out_written", bool, False),
                  changed_after_return=_get(r, "changed_after_return", bool, False),
                  threads_added=_get(r, "threads_added", int, 0), mutated_inputs=_int_list(r, "mutated_inputs"),
                  aliases_input=_get(r, "aliases_input", bool, False),
                  reuses_previous_output=_get(r, "reuses_previous_output", bool, False))
        if "out" in r:
            meta = _get(r, "out", dict, {})
            shape = meta.get("shape")
            if not isinstance(shape, list) or len(shape) > 64 or not all(type(d) is int and d >= 0 for d in shape):
                raise Malformed(f"bad output shape {shape!r}"[:200])
            dtype, nbytes = meta.get("dtype"), meta.get("nbytes")
            if not isinstance(dtype, str) or len(dtype) > 64:
                raise Malformed(f"bad output dtype {str(dtype)[:40]!r}")
            if type(nbytes) is not int or nbytes < 0:
                raise Malformed(f"bad output size {nbytes!r}"[:100])
            out.out_shape, out.out_dtype, out.out_nbytes = shape, dtype, nbytes
        return out


@dataclass
class BenchReply:
    """The worker's account of one ``bench`` run (every number a claim; see ``measure.py``)."""

    n: int
    times_s: list[float]
    elapsed_s: float
    clock: str
    fingerprints: list[tuple[int, str]]
    flush_bytes: int = 0
    l2_persist_reset: bool = False
    changed_after_return: list[int] = field(default_factory=list)
    outputs: list[tuple[int, dict]] = field(default_factory=list)

    @classmethod
    def parse(cls, r: dict) -> "BenchReply":
        times = _get(r, "times_s", list, [])
        if not all(type(t) in (int, float) for t in times):
            raise Malformed("field 'times_s' is not a list of numbers")
        fps = []
        for item in _get(r, "fingerprints", list, []):
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and isinstance(item[1], str)
                    and len(item[1]) <= 64):
                raise Malformed(f"bad fingerprint entry {str(item)[:80]}")
            fps.append((item[0], item[1]))
        outs = []
        for item in _get(r, "outputs", list, []):
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and isinstance(item[1], dict)):
                raise Malformed(f"bad output entry {str(item)[:80]}")
            outs.append((item[0], item[1]))
        elapsed = float(_get(r, "elapsed_s", float, 0.0))
        if not math.isfinite(elapsed):
            raise Malformed("elapsed_s is not finite")
        return cls(n=_get(r, "n", int, 0), times_s=[float(t) for t in times], elapsed_s=elapsed,
                   clock=_get(r, "clock", str, "")[:40], fingerprints=fps, flush_bytes=_get(r, "flush_bytes", int, 0),
                   l2_persist_reset=_get(r, "l2_persist_reset", bool, False),
                   changed_after_return=_int_list(r, "changed_after_return"), outputs=outs)
