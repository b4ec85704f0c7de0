"""Launch capture and static compile of *untrusted* kernel source, in a sandbox.

Predicting a kernel's latency (the tuner's ``model`` backend, the agent's race) needs what the
kernel would launch and what its launches compile to. Both run the kernel file's code: its
module body and its launcher. For the package's own kernel files that is done in-process
(``harness.compile``); for anything else (a generated candidate, a user-library variant) it is
done here, in a ``SandboxedWorker(device="static")`` — the same containment as verification,
without the interpreter, so Triton compiles for the target arch.

What comes back is a claim. It is parsed field by field (a malformed reply is an error, never a
parent traceback) and used only to *predict*: a candidate that misreports its launches can
mislead its own prediction, never a verdict, and the ``gpu`` backend times from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .compile import CompileReport, _decode
from .launch_capture import KernelLaunch
from .limits import Limits
from .sandbox import SandboxedWorker, WorkerDied

MAX_LAUNCHES = 64
MAX_GRID = 1 << 40


class PredictError(Exception):
    """The source could not be captured or compiled (its message says why)."""


@dataclass(frozen=True)
class Captured:
    launches: list[KernelLaunch]
    reports: list[CompileReport] | None     # None when no arch was asked for


def describe_arg(value: Any) -> dict:
    """An argument as the worker rebuilds it: a tensor by shape, stride and dtype (the worker
    allocates an untouched one), anything else as a JSON scalar."""
    if hasattr(value, "data_ptr") and hasattr(value, "stride"):
        return {"t": [list(value.shape), list(value.stride()), str(value.dtype).split(".")[-1]]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    raise PredictError(f"cannot describe argument {value!r} ({type(value).__name__}) for a sandboxed capture")


def _launch(d: Any) -> KernelLaunch:
    if not isinstance(d, dict):
        raise PredictError("malformed launch in the worker's reply")
    grid = d.get("grid")
    if not (isinstance(grid, list) and len(grid) == 3 and all(type(g) is int and 0 <= g for g in grid)
            and math.prod(grid) <= MAX_GRID):
        raise PredictError(f"malformed launch grid {grid!r} in the worker's reply")
    sig, cx, opts, aligned = d.get("signature"), d.get("constexprs"), d.get("options"), d.get("aligned")
    if not (isinstance(d.get("fn_name"), str) and isinstance(sig, dict) and isinstance(cx, dict)
            and isinstance(opts, dict) and isinstance(aligned, list)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in sig.items())
            and all(isinstance(a, str) for a in aligned)
            and all(v is None or isinstance(v, (bool, int, float, str)) for v in opts.values())):
        raise PredictError("malformed launch in the worker's reply")
    warps = opts.get("num_warps", 4)
    if type(warps) is not int or not 1 <= warps <= 64:
        raise PredictError(f"malformed num_warps {warps!r} in the worker's reply")
    return KernelLaunch(fn_name=d["fn_name"], signature=sig, constexprs={k: _decode(v) for k, v in cx.items()},
                        aligned=tuple(aligned), options=opts, grid=tuple(grid))


def _report(d: Any) -> CompileReport:
    try:
        rep = CompileReport.from_json(d)
        if not (isinstance(rep.ok, bool) and type(rep.num_warps) is int and type(rep.shared_bytes) is int
                and (rep.registers is None or type(rep.registers) is int) and isinstance(rep.mma, str)):
            raise TypeError("field types")
        return rep
    except (TypeError, ValueError, AttributeError) as e:
        raise PredictError(f"malformed compile report in the worker's reply ({e})") from None


class SandboxedCapture:
    """One sandboxed worker (no interpreter) for many captures of one source. A context manager."""

    def __init__(self, source: str, entry: str, *, filename: str = "candidate.py", cpu_s: float = 300.0):
        self.source, self.entry, self.filename = source, entry, filename
        self.limits = Limits(cpu_s=cpu_s)
        self.worker: SandboxedWorker | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def capture(self, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any], Mapping[str, Any] | None]],
                arch: int | None, timeout: float = 120.0) -> list[Captured | PredictError]:
        """For each (args, kwargs, config): what the entry point launches and, with ``arch``,
        each launch's compile report; or the error it raised."""
        items = [{"args": [describe_arg(a) for a in args], "kwargs": {k: describe_arg(v) for k, v in kw.items()},
                  "config": dict(config) if config is not None else None} for args, kw, config in calls]
        header = {"op": "predict", "source": self.source, "filename": self.filename, "entry": self.entry,
                  "arch": arch, "timeout": timeout, "items": items}
        try:
            if self.worker is None or self.worker.proc is None or self.worker.proc.poll() is not None:
                self.close()
                self.worker = SandboxedWorker(device="static", limits=self.limits)
                self.worker.start()
            self.worker.begin_budget()
            reply, _ = self.worker.request(header, max_reply_bytes=1 << 20)
        except WorkerDied as e:
            self.close()
            raise PredictError(f"the sandboxed capture failed ({e.reason}): {e.detail}") from None
        got = reply.get("items") if isinstance(reply, dict) else None
        if not isinstance(got, list) or len(got) != len(items):
            raise PredictError("malformed reply from the sandboxed capture")
        out: list[Captured | PredictError] = []
        for it in got:
            if not isinstance(it, dict) or it.get("ok") is not True:
                detail = it.get("detail") if isinstance(it, dict) else None
                out.append(PredictError(str(detail)[:3000] if detail else "capture failed"))
                continue
            launches = it.get("launches")
            if not isinstance(launches, list) or not 0 < len(launches) <= MAX_LAUNCHES:
                out.append(PredictError("malformed launches in the worker's reply"))
                continue
            try:
                lns = [_launch(x) for x in launches]
                reps = it.get("reports")
                reports = None if arch is None else [_report(r) for r in (reps if isinstance(reps, list) else [])]
                if reports is not None and len(reports) != len(lns):
                    raise PredictError("the worker's reply has a compile report per launch missing")
                out.append(Captured(lns, reports))
            except PredictError as e:
                out.append(e)
        return out
