"""The sandboxed worker: imports one candidate and runs it on inputs the parent sends.

Runs as ``python -I -m kernelagent.harness.worker`` inside the sandbox (see sandbox.py). It
never sees a reference output, a seed it could exploit, or the comparison. What it reports
besides the output bytes (launch counts, aten ops seen, mutated inputs) is used by the parent
only to reject: a candidate could tamper with this process, so nothing here can acquit it.

Protocol (wire.py messages on stdin → private stdout copy):
  {"op": "load", ...}  → {"ok": true} | {"ok": false, "reason", "detail"}
  {"op": "call", ...}  → {"ok": true, "out": meta, audit…} | {"ok": false, …}; inputs and the
                         output bytes travel through the shared file (fd in KERNELAGENT_SHM_FD),
                         never the pipe (see ``Worker.call``)
  {"op": "bench", ...} → stage input sets, or run warm-up / timed / energy-window calls
                         (see ``Worker.bench``; every number it returns is a claim)
  {"op": "predict", ...} → launches recorded and compiled for an arch, no interpreter
                         (see worker_predict.py; only ever a claim used to predict latency)
  {"op": "exit"}
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
import time
import traceback

from .worker_audit import Audit
from .worker_bench import BenchState

REPLY_FD = None


def _reply(header, blobs=()):
    from .wire import write_message

    write_message(REPLY_FD, header, list(blobs))


def _tail(text: str, n: int = 1500) -> str:
    from .verdict import scrubbed_tail

    return scrubbed_tail(text, n)


def _failure(e: BaseException, candidate_path: str | None) -> str:
    """The error's last line first, then where in the candidate it came from (file name, line,
    code), then the traceback's tail: what a model needs to fix it, summary first."""
    cause = e.__cause__ if type(e).__name__ == "InterpreterError" and e.__cause__ is not None else None
    shown = cause or e
    last = "".join(traceback.format_exception_only(type(shown), shown)).strip().splitlines()
    head = last[-1] if last else type(shown).__name__
    where = ""
    # The innermost frame in the candidate's file: in the underlying error first (the jit body
    # line under the interpreter), else in the one raised.
    for err in (cause, e):
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == candidate_path] \
            if err is not None and candidate_path else []
        if frames:
            f = frames[-1]
            where = f"\n  in the candidate: {os.path.basename(f.filename)}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}"
            break
    return f"{head}{where}\n{_tail(traceback.format_exc())}"


class _Shared:
    """The worker's mapping of the shared file the parent passed (fd in ``KERNELAGENT_SHM_FD``)."""

    def __init__(self):
        self.fd = int(os.environ.pop("KERNELAGENT_SHM_FD", "-1"))
        self.map = None

    def buffer(self, size: int):
        import mmap

        if self.fd < 0:
            raise RuntimeError("no shared file was passed to the worker")
        if self.map is None or len(self.map) < size:
            # Older mappings stay alive as long as tensors over them do (the file never shrinks).
            self.map = mmap.mmap(self.fd, max(size, 1), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return self.map


class Worker:
    def __init__(self):
        self.entry = None
        self.audit: Audit | None = None
        self.fn = None                     # the op entry point, before a config is bound
        self.problem = None                # (module, ModelNew, init args, init seed) for problem files
        self.device = "cpu"
        self.previous_outputs: list = []  # kept alive so a fresh output can never share their memory
        self.shared = _Shared()

    def load(self, h, blobs):
        import torch

        self.device = h.get("device", "cpu")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = "candidate_" + hashlib.sha256(h["source"].encode()).hexdigest()[:12]
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), h.get("filename", "candidate.py"))
        with open(path, "w") as f:
            f.write(h["source"])
        self.audit = Audit(name, path)
        if os.environ.get("TRITON_INTERPRET") == "1":
            from ..kernels import _interpreter

            _interpreter.patch_interpreter()
        self.audit.install_launch_hooks()
        self.audit.install_thread_hooks()
        self.audit.install_host_read_hooks()
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except BaseException as e:  # noqa: BLE001 - any failure of untrusted code is a verdict
            if isinstance(e, SystemExit):
                return {"ok": False, "reason": "import-error", "detail": f"the candidate called exit() at import ({e.code!r})"}
            return {"ok": False, "reason": "import-error", "detail": _failure(e, path)}
        if h["kind"] == "op":
            fn = getattr(module, h["entry"], None)
            if not callable(fn):
                return {"ok": False, "reason": "import-error", "detail": f"the candidate does not define {h['entry']}()"}
            self.fn = fn
            self.configure({"config": h.get("config")})
        else:
            from .wire import decode_args

            cls = getattr(module, h["entry"], None)
            if not isinstance(cls, type):
                return {"ok": False, "reason": "import-error", "detail": f"the candidate does not define class {h['entry']}"}
            self.problem = (module, cls, decode_args(h["init_args"], h["metas"], blobs), h["init_seed"])
            return self._build_model(h.get("config"))
        return {"ok": True}

    def _build_model(self, config) -> dict:
        """Construct ModelNew after setting the candidate module's ``CONFIG`` (a problem file's
        tuning config, see docs/LIBRARY.md), seeded as the parent seeds ``Model``."""
        import torch

        module, cls, init, init_seed = self.problem
        try:
            if config is not None:
                module.CONFIG = dict(config)
            torch.manual_seed(init_seed)
            self.entry = cls(*init).to(self.device).eval()
        except BaseException as e:  # noqa: BLE001
            return {"ok": False, "reason": "runtime-error",
                    "detail": "constructing ModelNew failed: " + _failure(e, self.audit.path if self.audit else None)}
        return {"ok": True}

    def configure(self, h) -> dict:
        """Bind another tuning config to the loaded op entry point (no re-import): one worker,
        one Triton cache, for every config a tuning run tries."""
        config = h.get("config")
        if config is not None and not isinstance(config, dict):
            return {"ok": False, "reason": "protocol", "detail": "config must be an object or null"}
        if self.problem is not None:
            return self._build_model(config)
        if self.fn is None:
            return {"ok": False, "reason": "protocol", "detail": "configure before a candidate was loaded"}
        fn = self.fn
        self.entry = (lambda *a, **k: fn(*a, config=config, **k)) if config else fn
        return {"ok": True}

    def call(self, h, blobs):
        """One call of the entry point on inputs in the shared file; the output goes back there.

        Request fields: ``args``/``metas``/``kwargs_names``/``kwargs_enc`` (``wire.pack_shared``),
        ``shm_size``, ``out_off``/``out_capacity`` (where the output goes, and the exact byte size
        the parent expects), ``grad`` (grad mode for the call), ``side_stream`` (CUDA: call on a
        non-default current stream), ``poison`` / ``poison_bytes`` (CUDA allocator).
        """
        import torch

        from .wire import WIRE_NAMES, tensor_bytes, unpack_shared

        # Memory a candidate allocates but never writes reads as NaN (or the dtype's max int),
        # not as whatever the allocator left there: an unwritten output then fails the same way
        # on every run and machine (so a run replays byte for byte) and reads as unwritten.
        # Verification calls only; ``bench`` turns it off so it costs the timings nothing.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True
        names = list(h.get("kwargs_names") or [])
        buf = self.shared.buffer(int(h["shm_size"]))
        values = unpack_shared(list(h["args"]) + list(h.get("kwargs_enc") or []), h["metas"], buf)
        cuda = self.device != "cpu"
        if cuda:
            values = [v.to(self.device) if isinstance(v, torch.Tensor) else v for v in values]
        args = values[:len(values) - len(names)] if names else values
        kwargs = dict(zip(names, values[len(values) - len(names):])) if names else {}
        stream = None
        if cuda:
            # Poison the caching allocator: freed blocks the candidate may get back hold garbage.
            poison = torch.empty(int(h.get("poison_bytes", 1 << 22)) // 4 + 1024, dtype=torch.float32, device=self.device)
            poison.fill_(float(h.get("poison", float("nan"))))
            torch.cuda.synchronize()
            del poison
            if h.get("side_stream"):
                stream = torch.cuda.Stream()
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        # On the CPU the parent checks the inputs itself in the shared file; on CUDA it cannot
        # see the device copies, so this process checks them (a claim: it can only convict).
        digests_before = [_digest(t) for t in tensors] if cuda else None
        threads_before = threading.active_count()
        audit = self.audit
        audit.reset()
        t0 = time.perf_counter()
        early_raw = None
        try:
            with torch.set_grad_enabled(bool(h.get("grad", False))):
                if stream is not None:
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        out = self._run_audited(args, kwargs)
                        # What a caller on this stream does: wait for this stream only, then read.
                        stream.synchronize()
                        if type(out) is torch.Tensor:
                            early_raw = tensor_bytes(out)
                else:
                    out = self._run_audited(args, kwargs)
            if cuda:
                torch.cuda.synchronize()
        except BaseException as e:  # noqa: BLE001
            audit.active = False
            if isinstance(e, SystemExit):
                return {"ok": False, "reason": "crash", "detail": f"the candidate called exit() ({e.code!r})"}, []
            return {"ok": False, "reason": _classify(e), "detail": _failure(e, self.audit.path if self.audit else None)}, []
        elapsed = time.perf_counter() - t0
        result = {"ok": True, "launches": audit.launches, "kernels": sorted(audit.kernels),
                  "bad_ops": audit.bad_ops, "host_reads": audit.host_reads, "wall_s": elapsed}
        if type(out) is not torch.Tensor:
            result["out_type"] = f"{type(out).__module__}.{type(out).__qualname__}"
            return result, []
        result["out_type"] = "torch.Tensor"
        try:
            result["out_launched"] = audit.output_launched(out)
            out_raw = tensor_bytes(out) if early_raw is None else early_raw
        except Exception as e:  # noqa: BLE001 - a sparse, meta or otherwise unreadable tensor
            result["out_type"] = f"unreadable torch.Tensor ({type(e).__name__}: {str(e)[:200]})"
            return result, []
        result["out"] = {"dtype": WIRE_NAMES.get(out.dtype, str(out.dtype)), "shape": list(out.shape),
                         "nbytes": len(out_raw)}
        off, cap = int(h["out_off"]), int(h["out_capacity"])
        result["out_written"] = len(out_raw) == cap and off + cap <= len(buf)
        if result["out_written"] and cap:
            buf[off:off + cap] = out_raw
        # Deferred writes: the output must not change after the call returned.
        time.sleep(0.002)
        if cuda:
            torch.cuda.synchronize()
        after = tensor_bytes(out)
        result["changed_after_return"] = after != out_raw
        result["threads_added"] = max(threading.active_count() - threads_before, audit.threads_started)
        if cuda:
            result["mutated_inputs"] = [i for i, (t, d) in enumerate(zip(tensors, digests_before)) if _digest(t) != d]
        result["aliases_input"] = any(_overlaps(out, t) for t in tensors)
        result["reuses_previous_output"] = any(_overlaps(out, p) for p in self.previous_outputs)
        self.previous_outputs.append(out)
        return result, []

    def _run_audited(self, args, kwargs):
        audit = self.audit
        with audit.dispatch_mode():
            audit.active = True
            try:
                return self.entry(*args, **kwargs)
            finally:
                audit.active = False

    def bench(self, h, blobs):
        """Runs calls for ``harness.measure``; see ``worker_bench.BenchState`` for the request fields.

        Everything it reports (times, call counts, fingerprints) is a claim the parent checks
        against its own clock and its own copy of the outputs.
        """
        import torch

        torch.use_deterministic_algorithms(False)   # no NaN fill of new tensors while timing (see call)
        state = self.__dict__.setdefault("_bench_state", BenchState())
        try:
            if "sets" in h:
                return state.stage(h, blobs), []
            return state.run(self.entry, h)
        except BaseException as e:  # noqa: BLE001 - any failure of untrusted code is a verdict
            if isinstance(e, SystemExit):
                return {"ok": False, "reason": "crash", "detail": f"the candidate called exit() ({e.code!r})"}, []
            return {"ok": False, "reason": _classify(e), "detail": _failure(e, self.audit.path if self.audit else None)}, []


def _digest(t) -> str:
    from .wire import storage_bytes

    return hashlib.sha256(storage_bytes(t)).hexdigest() if t.numel() else "empty"


def _overlaps(a, b) -> bool:
    import torch

    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    sa, sb = torch._C.TensorBase.untyped_storage(a), torch._C.TensorBase.untyped_storage(b)
    a0, b0 = sa.data_ptr(), sb.data_ptr()
    return a0 < b0 + sb.nbytes() and b0 < a0 + sa.nbytes()


def _classify(e: BaseException) -> str:
    names = {c.__name__ for c in type(e).__mro__}
    module = type(e).__module__ or ""
    if "UnsupportedOnCPU" in names:  # kernels/_interpreter.py: not wrong, only not checkable here
        return "unsupported-on-cpu"
    if names & {"CompilationError", "CompileTimeAssertionFailure", "OutOfResources", "InterpreterError"} \
            or module.startswith("triton"):
        return "compile-error"
    return "runtime-error"


def main() -> None:
    global REPLY_FD
    # Replies go to a private copy of stdout; the candidate's prints land on stderr.
    REPLY_FD = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    from .wire import read_message

    worker = Worker()
    _reply({"ok": True, "ready": True, "pid": os.getpid()})
    while True:
        try:
            h, blobs = read_message(requests, max_bytes=1 << 34)
        except EOFError:
            return
        op = h.get("op")
        if op == "load":
            _reply(worker.load(h, blobs))
        elif op == "call":
            header, out = worker.call(h, blobs)
            _reply(header, out)
        elif op == "bench":
            header, out = worker.bench(h, blobs)
            _reply(header, out)
        elif op == "configure":
            _reply(worker.configure(h))
        elif op == "predict":
            from .worker_predict import predict

            _reply(predict(h, _failure))
        elif op == "exit":
            _reply({"ok": True})
            return
        else:
            _reply({"ok": False, "reason": "protocol", "detail": f"unknown op {op!r}"})


if __name__ == "__main__":
    main()
    # Exit without running the candidate's atexit handlers or thread joins.
    os._exit(0)
