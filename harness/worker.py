"""The sandboxed worker: imports one candidate and runs it on inputs the parent sends.

Runs as ``python -I -m kernelagent.harness.worker`` inside the sandbox (see sandbox.py). It
never sees a reference output, a seed it could exploit, or the comparison. What it reports
besides the output bytes (launch counts, aten ops seen, mutated inputs) is used by the parent
only to reject: a candidate could tamper with this process, so nothing here can acquit it.

Protocol (wire.py messages on stdin → private stdout copy):
  {"op": "load", ...}  → {"ok": true} | {"ok": false, "reason", "detail"}
  {"op": "call", ...}  → {"ok": true, "out": meta, audit…} + output bytes | {"ok": false, …}
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

REPLY_FD = None


def _reply(header, blobs=()):
    from .wire import write_message

    write_message(REPLY_FD, header, list(blobs))


def _tail(text: str, n: int = 1500) -> str:
    return text if len(text) <= n else "…" + text[-n:]


class _Audit:
    """Counts the candidate's Triton launches and logs aten ops it runs outside them."""

    # aten ops that allocate, view, copy or cast: not compute on the inputs.
    ALLOWED = {
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
        "new_zeros", "ones", "ones_like", "full", "full_like", "new_full", "fill_", "zero_", "fill",
        "view", "_unsafe_view", "reshape", "as_strided", "alias", "t", "transpose", "permute", "expand",
        "squeeze", "unsqueeze", "slice", "select", "narrow", "split", "split_with_sizes", "unbind",
        "chunk", "flatten", "unflatten", "contiguous", "clone", "copy_", "_to_copy", "to", "detach",
        "lift_fresh", "lift_fresh_copy", "resolve_conj", "resolve_neg", "_local_scalar_dense",
        "arange", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
        "view_as", "expand_as", "_reshape_alias", "movedim", "swapaxes", "mT", "set_", "record_stream",
        "empty_permuted", "_has_compatible_shallow_copy_type", "as_strided_", "scalar_tensor",
    }

    def __init__(self, module_name: str):
        self.module_name = module_name
        self.launches = 0
        self.kernels: set[str] = set()
        self.bad_ops: dict[str, int] = {}
        self.in_launch = 0
        self.threads_started = 0

    def install_thread_hooks(self):
        """Count threads started during a call: work in another thread escapes the aten audit."""
        import _thread

        audit = self
        for mod, name in ((_thread, "start_new_thread"), (threading, "_start_new_thread"),
                          (_thread, "start_joinable_thread"), (threading, "_start_joinable_thread")):
            original = getattr(mod, name, None)
            if original is None:
                continue

            def counted(*a, _original=original, **k):
                audit.threads_started += 1
                return _original(*a, **k)

            setattr(mod, name, counted)

    def install_launch_hooks(self):
        import triton.runtime.jit as jit

        classes = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except ImportError:  # pragma: no cover - older triton
            pass
        audit = self
        for cls in classes:
            original = cls.run

            def run(self, *args, _original=original, **kwargs):
                fn = getattr(self, "fn", None)
                if getattr(fn, "__module__", None) == audit.module_name and not kwargs.get("warmup"):
                    audit.launches += 1
                    audit.kernels.add(fn.__name__)
                audit.in_launch += 1
                try:
                    return _original(self, *args, **kwargs)
                finally:
                    audit.in_launch -= 1

            cls.run = run

    def dispatch_mode(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        audit = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if not audit.in_launch:
                    name = func.overloadpacket.__name__
                    if name not in audit.ALLOWED:
                        audit.bad_ops[name] = audit.bad_ops.get(name, 0) + 1
                return func(*args, **(kwargs or {}))

        return Mode()


class Worker:
    def __init__(self):
        self.entry = None
        self.audit: _Audit | None = None
        self.device = "cpu"
        self.previous_outputs: list = []  # kept alive so a fresh output can never share their memory

    def load(self, h, blobs):
        import torch

        self.device = h.get("device", "cpu")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = "candidate_" + hashlib.sha256(h["source"].encode()).hexdigest()[:12]
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), h.get("filename", "candidate.py"))
        with open(path, "w") as f:
            f.write(h["source"])
        self.audit = _Audit(name)
        self.audit.install_launch_hooks()
        self.audit.install_thread_hooks()
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except BaseException as e:  # noqa: BLE001 - any failure of untrusted code is a verdict
            if isinstance(e, SystemExit):
                return {"ok": False, "reason": "import-error", "detail": f"the candidate called exit() at import ({e.code!r})"}
            return {"ok": False, "reason": "import-error", "detail": _tail(traceback.format_exc())}
        if h["kind"] == "op":
            fn = getattr(module, h["entry"], None)
            if not callable(fn):
                return {"ok": False, "reason": "import-error", "detail": f"the candidate does not define {h['entry']}()"}
            config = h.get("config")
            self.entry = (lambda *a, **k: fn(*a, config=config, **k)) if config else fn
        else:
            from .wire import decode_args

            cls = getattr(module, h["entry"], None)
            if not isinstance(cls, type):
                return {"ok": False, "reason": "import-error", "detail": f"the candidate does not define class {h['entry']}"}
            init = decode_args(h["init_args"], h["metas"], blobs)
            try:
                torch.manual_seed(h["init_seed"])
                model = cls(*init)
                model = model.to(self.device).eval()
            except BaseException:  # noqa: BLE001
                return {"ok": False, "reason": "runtime-error", "detail": "constructing ModelNew failed:\n" + _tail(traceback.format_exc())}
            self.entry = model
        return {"ok": True}

    def call(self, h, blobs):
        import torch

        from .wire import decode_args, encode_tensor

        names = list(h.get("kwargs_names") or [])
        values = decode_args(list(h["args"]) + list(h.get("kwargs_enc") or []), h["metas"], blobs)
        if self.device != "cpu":
            values = [v.to(self.device) if isinstance(v, torch.Tensor) else v for v in values]
        args = values[:len(values) - len(names)] if names else values
        kwargs = dict(zip(names, values[len(values) - len(names):])) if names else {}
        if self.device != "cpu":
            # Poison the caching allocator: freed blocks the candidate may get back hold garbage.
            poison = torch.empty(int(h.get("poison_bytes", 1 << 22)) // 4 + 1024, dtype=torch.float32, device=self.device)
            poison.fill_(float(h.get("poison", float("nan"))))
            torch.cuda.synchronize()
            del poison
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        digests_before = [_digest(t) for t in tensors]
        threads_before = threading.active_count()
        audit = self.audit
        audit.launches, audit.kernels, audit.bad_ops, audit.threads_started = 0, set(), {}, 0
        t0 = time.perf_counter()
        try:
            with torch.no_grad(), audit.dispatch_mode():
                out = self.entry(*args, **kwargs)
            if self.device != "cpu":
                torch.cuda.synchronize()
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, SystemExit):
                return {"ok": False, "reason": "crash", "detail": f"the candidate called exit() ({e.code!r})"}, []
            return {"ok": False, "reason": _classify(e), "detail": _tail(traceback.format_exc())}, []
        elapsed = time.perf_counter() - t0
        result = {"ok": True, "launches": audit.launches, "kernels": sorted(audit.kernels),
                  "bad_ops": audit.bad_ops, "wall_s": elapsed}
        if type(out) is not torch.Tensor:
            result["out_type"] = f"{type(out).__module__}.{type(out).__qualname__}"
            return result, []
        result["out_type"] = "torch.Tensor"
        out_meta, out_raw = encode_tensor(out, keep_strides=False)
        result["out"] = out_meta
        # Deferred writes: the output must not change after the call returned.
        time.sleep(0.002)
        if self.device != "cpu":
            torch.cuda.synchronize()
        result["changed_after_return"] = encode_tensor(out, keep_strides=False)[1] != out_raw
        result["threads_added"] = max(threading.active_count() - threads_before, audit.threads_started)
        result["mutated_inputs"] = [i for i, (t, d) in enumerate(zip(tensors, digests_before)) if _digest(t) != d]
        result["aliases_input"] = any(_overlaps(out, t) for t in tensors)
        result["reuses_previous_output"] = any(_overlaps(out, p) for p in self.previous_outputs)
        self.previous_outputs.append(out)
        return result, [out_raw]


def _digest(t) -> str:
    import torch

    c = t.detach()
    if c.device.type != "cpu":
        c = c.cpu()
    return hashlib.sha256(bytes(c.untyped_storage())).hexdigest() if c.numel() else "empty"


def _overlaps(a, b) -> bool:
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    sa, sb = a.untyped_storage(), b.untyped_storage()
    a0, b0 = sa.data_ptr(), sb.data_ptr()
    return a0 < b0 + sb.nbytes() and b0 < a0 + sa.nbytes()


def _classify(e: BaseException) -> str:
    names = {c.__name__ for c in type(e).__mro__}
    module = type(e).__module__ or ""
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
        elif op == "exit":
            _reply({"ok": True})
            return
        else:
            _reply({"ok": False, "reason": "protocol", "detail": f"unknown op {op!r}"})


if __name__ == "__main__":
    main()
    # Exit without running the candidate's atexit handlers or thread joins.
    os._exit(0)
