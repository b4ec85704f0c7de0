"""Static targeting: compile a Triton kernel for a SKU's architecture on a machine without its GPU.

``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cc, 32))``
runs the whole pipeline (TTIR → TTGIR → LLVM → PTX → cubin through the bundled ``ptxas``) with no
driver involved. Shared memory comes from the compiled metadata (``shared``, what Triton asks for
at launch); registers and spills from ``ptxas -v`` on the PTX (``harness.ptxas``).

This module is the public API: what to compile (:class:`CompileRequest`) and what came out
(:class:`CompileReport`), compiling (:func:`compile_requests`, :func:`compile_kernel`,
:func:`compile_launches`, :func:`compile_op`), whether it fits a SKU (:func:`check_feasible`) and
the result cache. What an op launches is captured in ``harness.launch_capture``; its public names
are re-exported here, as is :func:`parse_ptxas_log`.

Triton's interpreter (``TRITON_INTERPRET=1``, which the CPU test lane sets) turns ``@triton.jit``
into an interpreted function that cannot be compiled. This module never sets or clears that
variable in its own process: when it is on, compilation runs in a child process started without
it (``python -m kernelagent.harness.compile``, JSON on stdin/stdout).

Reports are cached on disk (``$KERNELAGENT_CACHE_DIR/compile``, default
``~/.cache/kernelagent/compile``) keyed by the kernel source hash, function, signature,
constexprs, alignment, options, target arch, Triton version and the env knobs that change codegen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from kernelagent.errors import BadInput, EnvironmentProblem

from .launch_capture import (KernelLaunch, _base_jit, _interpreter_on, _load_module, _source_file,
                             capture_launches)
from .feasibility import Feasibility, check_feasible
from .ptxas import _mma_kind, _ptxas_resources, parse_ptxas_log, ptx_features
from .verdict import scrubbed_tail

__all__ = ["CompileReport", "CompileRequest", "Feasibility", "KernelLaunch", "capture_launches", "check_feasible",
           "compile_kernel", "compile_launches", "compile_op", "compile_requests", "default_cache_dir",
           "parse_arch", "parse_ptxas_log"]

CACHE_VERSION = 2   # 2: reports name TMA and warp specialisation
# Env vars that change what Triton generates; they are part of the cache key.
_CODEGEN_ENV = ("TRITON_DEFAULT_FP_FUSION", "TRITON_F32_DEFAULT", "TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")


def default_cache_dir() -> Path:
    root = os.environ.get("KERNELAGENT_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "kernelagent") / "compile"


# ---------------------------------------------------------------------------------------------
# What to compile


@dataclass(frozen=True)
class CompileRequest:
    """One kernel specialisation for one target: everything that changes the compiled code."""

    source_path: str
    source_sha: str
    fn_name: str
    signature: Mapping[str, str]      # arg name -> Triton type ("*fp16", "i32", "constexpr")
    constexprs: Mapping[str, Any]     # arg name -> value (JSON-encoded tl.dtype allowed)
    arch: int                         # compute capability as Triton's int (90 for sm_90)
    options: Mapping[str, Any] = field(default_factory=dict)  # num_warps, num_stages, ...
    aligned: tuple[str, ...] = ()     # pointer/int args known to be 16-byte divisible

    def cache_key(self, triton_version: str) -> str:
        doc = {"v": CACHE_VERSION, "src": self.source_sha, "fn": self.fn_name, "sig": dict(self.signature),
               "constexprs": {k: _encode(v) for k, v in self.constexprs.items()}, "arch": self.arch,
               "options": dict(sorted(self.options.items())), "aligned": sorted(self.aligned),
               "triton": triton_version, "env": {k: os.environ.get(k) for k in _CODEGEN_ENV}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["constexprs"] = {k: _encode(v) for k, v in self.constexprs.items()}
        d["aligned"] = list(self.aligned)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CompileRequest":
        return cls(source_path=d["source_path"], source_sha=d["source_sha"], fn_name=d["fn_name"],
                   signature=dict(d["signature"]), constexprs=dict(d["constexprs"]), arch=int(d["arch"]),
                   options=dict(d.get("options", {})), aligned=tuple(d.get("aligned", ())))


@dataclass(frozen=True)
class CompileReport:
    """What compiling one specialisation for one arch produced (or why it did not)."""

    arch: str                      # "sm_90"
    kernel: str
    ok: bool
    error: str | None = None
    failure: str | None = None     # "compile" | "ptxas" | "worker" when not ok
    shared_bytes: int = 0          # dynamic shared memory Triton requests per block
    tmem_bytes: int = 0            # Blackwell tensor memory
    registers: int | None = None   # per thread, from ptxas -v
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_bytes: int = 0
    num_warps: int = 4
    num_stages: int = 3
    num_ctas: int = 1
    mma: str = "none"              # tensor-core instruction family in the PTX: none | mma.sync | wgmma | tcgen05
    tma: bool = False              # TMA bulk tensor copies in the PTX (cp.async.bulk.tensor)
    warp_specialized: bool = False # warp groups with reallocated registers (setmaxnreg)
    triton_version: str = ""
    compile_s: float = 0.0
    cached: bool = False

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes

    @property
    def threads(self) -> int:
        return self.num_warps * 32

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["spill_bytes"] = self.spill_bytes
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CompileReport":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _encode(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    name = getattr(v, "name", None)
    if type(v).__name__ == "dtype" and type(v).__module__.startswith("triton") and isinstance(name, str):
        return {"tl_dtype": name}
    raise BadInput(f"constexpr value {v!r} ({type(v).__name__}) cannot be compiled statically; "
                   f"use ints, floats, bools, strings or tl dtypes")


def _decode(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"tl_dtype"}:
        import triton.language as tl

        return getattr(tl, v["tl_dtype"]) if hasattr(tl, v["tl_dtype"]) else tl.dtype(v["tl_dtype"])
    return v


def parse_arch(arch: Any) -> int:
    """A target as Triton's int capability: a Sku, "sm_90", "sm_90a", 90 or "90"."""
    if hasattr(arch, "arch") and hasattr(arch, "compute_capability"):  # a Sku
        if not getattr(arch, "static_compile", True) or not str(arch.arch).startswith("sm_"):
            raise BadInput(f"SKU {arch.id} ({arch.arch}) has no static compile target here "
                           f"(the AMD path is untested); use the model backend from its spec sheet alone")
        return arch.cc
    if isinstance(arch, int):
        return arch
    m = re.fullmatch(r"(?:sm_?)?(\d+)a?", str(arch).strip().lower())
    if not m:
        raise BadInput(f"unknown compile target {arch!r}; expected e.g. sm_80, sm_90, 100")
    return int(m.group(1))


# ---------------------------------------------------------------------------------------------
# Compiling (in this process or in a child without the interpreter)



def _compile_one(req: CompileRequest) -> CompileReport:
    """Compile in this process. The interpreter must be off here (see module docstring)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    arch_name = f"sm_{req.arch}"
    opts = {k: v for k, v in req.options.items() if k not in ("debug",)}
    base = dict(arch=arch_name, kernel=req.fn_name, triton_version=triton.__version__,
                num_warps=int(opts.get("num_warps", 4)), num_stages=int(opts.get("num_stages", 3)),
                num_ctas=int(opts.get("num_ctas", 1)))
    t0 = time.perf_counter()
    try:
        mod = _load_module(req.source_path, req.source_sha, "jit")
        fn = _base_jit(getattr(mod, req.fn_name))
        if not hasattr(fn, "params"):
            raise RuntimeError(f"{req.fn_name} is not a JIT function here ({type(fn).__name__}); "
                               f"is TRITON_INTERPRET set in this process?")
        index = {n: i for i, n in enumerate(fn.arg_names)}
        attrs = {(index[n],): [["tt.divisibility", 16]] for n in req.aligned if n in index}
        src = ASTSource(fn=fn, signature=dict(req.signature),
                        constexprs={k: _decode(v) for k, v in req.constexprs.items()}, attrs=attrs)
        # Triton prints ptxas failures (with the whole PTX) to stdout; keep stdout for results.
        with contextlib.redirect_stdout(io.StringIO()):
            kernel = triton.compile(src, target=GPUTarget("cuda", req.arch, 32), options=opts)
    except Exception as e:  # a compile error is a result (infeasible config), not a crash
        kind = "ptxas" if "PTXAS" in type(e).__name__.upper() else "compile"
        msg = f"{type(e).__name__}: {e}"
        return CompileReport(ok=False, error=scrubbed_tail(msg, 3000), failure=kind,
                             compile_s=time.perf_counter() - t0, **base)
    md = kernel.metadata
    ptx = kernel.asm.get("ptx", "")
    try:
        res = _ptxas_resources(ptx, req.arch, md)
    except Exception as e:
        return CompileReport(ok=False, error=scrubbed_tail(f"{type(e).__name__}: {e}", 3000), failure="ptxas",
                             shared_bytes=int(md.shared or 0), compile_s=time.perf_counter() - t0, **base)
    base.update(num_warps=int(md.num_warps), num_stages=int(md.num_stages), num_ctas=int(getattr(md, "num_ctas", 1)))
    feats = ptx_features(ptx)
    return CompileReport(ok=True, shared_bytes=int(md.shared or 0), tmem_bytes=int(getattr(md, "tmem_size", 0) or 0),
                         mma=_mma_kind(ptx), tma=feats["tma"], warp_specialized=feats["warp_specialized"],
                         compile_s=time.perf_counter() - t0, **res, **base)


def _failed(q: CompileRequest, kind: str, msg: str) -> CompileReport:
    return CompileReport(arch=f"sm_{q.arch}", kernel=q.fn_name, ok=False, error=msg, failure=kind,
                         num_warps=int(q.options.get("num_warps", 4)), num_stages=int(q.options.get("num_stages", 3)))


_READY = "kernelagent-compile-ready"
CHILD_START_S = 300.0   # importing torch + triton in the child; generous for a loaded machine


def _run_worker(reqs: Sequence[CompileRequest], timeout: float) -> list[CompileReport]:
    """Compile in child processes without TRITON_INTERPRET. The child streams one JSON line per
    request; a request that runs past ``timeout`` seconds (LLVM/ptxas on a pathological tile
    can take many minutes) or crashes the child is reported as failed and the rest go on in a
    fresh child."""
    import queue
    import threading

    # KERNELAGENT_INTERPRET too: importing kernelagent.kernels turns it into TRITON_INTERPRET.
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KERNELAGENT_INTERPRET")}
    out: list[CompileReport] = []
    pending = list(reqs)
    while pending:
        with tempfile.TemporaryFile(mode="w+") as errf:
            proc = subprocess.Popen([sys.executable, "-m", "kernelagent.harness.compile"], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf)
            lines: "queue.Queue[str | None]" = queue.Queue()

            def pump() -> None:
                for line in proc.stdout:
                    lines.put(line)
                lines.put(None)

            threading.Thread(target=pump, daemon=True).start()
            proc.stdin.write(json.dumps([q.to_json() for q in pending]))
            proc.stdin.close()
            done = 0
            started = False
            while done < len(pending):
                # The child's start (importing torch and triton) has its own limit, so that
                # each request gets exactly ``timeout`` seconds of compiling.
                try:
                    line = lines.get(timeout=timeout if started else CHILD_START_S)
                    if line is not None and line.strip() == _READY:
                        started = True
                        continue
                except queue.Empty:
                    if not started:
                        proc.kill()
                        proc.wait()
                        raise EnvironmentProblem(f"the compile worker did not start within {CHILD_START_S:.0f}s "
                                                 "(importing torch and triton); is the machine overloaded?")
                    proc.kill()
                    proc.wait()
                    out.append(_failed(pending[done], "timeout", f"compile exceeded {timeout:.0f}s of wall time "
                                       f"(a tile this large makes LLVM/ptxas run for minutes)"))
                    done += 1
                    break
                if line is None:
                    proc.wait()
                    errf.seek(0)
                    out.append(_failed(pending[done], "worker", f"compile worker exited {proc.returncode} "
                                       f"on this request: {scrubbed_tail(errf.read(), 2000)}"))
                    done += 1
                    break
                out.append(CompileReport.from_json(json.loads(line)))
                done += 1
            else:
                proc.wait()
            pending = pending[done:]
    return out


def _triton_version() -> str:
    try:
        from importlib.metadata import version

        return version("triton")
    except Exception:
        import triton

        return triton.__version__


def compile_requests(reqs: Sequence[CompileRequest], cache_dir: Path | None = None, use_cache: bool = True,
                     isolate: bool | None = None, timeout: float = 120.0) -> list[CompileReport]:
    """Compile many specialisations; cached ones are read back (``cached=True``). ``isolate``
    forces (True) or forbids (False) the child process; by default it is used only when the
    interpreter is on in this process. ``timeout`` bounds each compile in the child."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    tv = _triton_version()
    out: list[CompileReport | None] = [None] * len(reqs)
    todo: list[int] = []
    for i, q in enumerate(reqs):
        hit = _cache_get(cache, q.cache_key(tv)) if use_cache else None
        if hit is not None:
            out[i] = dataclasses.replace(hit, cached=True)
        else:
            todo.append(i)
    if todo:
        if isolate is None:
            isolate = _interpreter_on()
        if isolate:
            fresh = _run_worker([reqs[i] for i in todo], timeout)
        else:
            if _interpreter_on():
                raise EnvironmentProblem("TRITON_INTERPRET is set in this process; compile with isolate=True")
            fresh = [_compile_one(reqs[i]) for i in todo]
        for i, rep in zip(todo, fresh):
            out[i] = rep
            if use_cache and (rep.ok or rep.failure in ("compile", "ptxas")):
                _cache_put(cache, reqs[i].cache_key(tv), rep)
    return [r for r in out if r is not None]


def compile_kernel(source: str | Path, fn_name: str, signature: Mapping[str, str], constexprs: Mapping[str, Any],
                   arch: Any, *, num_warps: int = 4, num_stages: int = 3, options: Mapping[str, Any] | None = None,
                   aligned: Sequence[str] = (), cache_dir: Path | None = None, use_cache: bool = True,
                   isolate: bool | None = None, timeout: float = 120.0) -> CompileReport:
    """Compile ``fn_name`` from a kernel file (a ``Path``) or source text for ``arch`` (a Sku,
    "sm_90" or 90). ``signature`` maps every argument to a Triton type, with "constexpr" for the
    ones given in ``constexprs``."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path, sha = _source_file(source, cache)
    opts = {"num_warps": num_warps, "num_stages": num_stages, **(options or {})}
    req = CompileRequest(str(path), sha, fn_name, dict(signature), dict(constexprs), parse_arch(arch), opts,
                         tuple(aligned))
    return compile_requests([req], cache, use_cache, isolate, timeout)[0]


def compile_launches(source: str | Path, launches: Sequence[KernelLaunch], arch: Any,
                     cache_dir: Path | None = None, use_cache: bool = True,
                     isolate: bool | None = None, timeout: float = 120.0) -> list[CompileReport]:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path, sha = _source_file(source, cache)
    cc = parse_arch(arch)
    return compile_requests([ln.request(str(path), sha, cc) for ln in launches], cache, use_cache, isolate, timeout)


def compile_op(op: str, call: Any, config: Mapping[str, Any] | None, arch: Any, cache_dir: Path | None = None,
               use_cache: bool = True, isolate: bool | None = None,
               timeout: float = 120.0) -> list[tuple[KernelLaunch, CompileReport]]:
    """Capture the launches the library op ``op`` makes for ``call`` (an OpSpec ``Call``) under
    ``config`` and compile each for ``arch``."""
    from kernelagent.kernels import kernel_path

    src = kernel_path(op)
    launches = capture_launches(src, op, call.args, dict(call.kwargs), config, cache_dir)
    reports = compile_launches(src, launches, arch, cache_dir, use_cache, isolate, timeout)
    return list(zip(launches, reports))


# ---------------------------------------------------------------------------------------------
# Disk cache


def _cache_path(cache: Path, key: str) -> Path:
    return cache / key[:2] / f"{key}.json"


def _cache_get(cache: Path, key: str) -> CompileReport | None:
    p = _cache_path(cache, key)
    try:
        return CompileReport.from_json(json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _cache_put(cache: Path, key: str, rep: CompileReport) -> None:
    p = _cache_path(cache, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.replace(rep, cached=False).to_json()))
    os.replace(tmp, p)


def _worker_main() -> None:
    """Child-process entry: a JSON list of CompileRequest on stdin, one report per line on stdout."""
    reqs = [CompileRequest.from_json(d) for d in json.loads(sys.stdin.read())]
    if _interpreter_on():
        raise SystemExit("compile worker started with TRITON_INTERPRET set")
    importlib.import_module("triton")  # paid before "ready", so no request's limit pays for it

    sys.stdout.write(_READY + "\n")
    sys.stdout.flush()
    for q in reqs:
        sys.stdout.write(json.dumps(_compile_one(q).to_json()) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _worker_main()
