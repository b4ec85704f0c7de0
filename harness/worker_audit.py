"""What a candidate did during one call, as seen from inside the worker (``_Audit``).

Lives in the sandboxed worker, next to the candidate: everything it records is a claim the
parent uses only to reject (see ``harness/judge.py``), never to accept.
"""

from __future__ import annotations

import sys
import threading


class Audit:
    """What the candidate did during one call, as seen from inside its process.

    * Triton launches of the candidate's own ``@triton.jit`` kernels, and the storages of every
      tensor argument each launch got (the output must be one of them, or a view of one).
    * Every aten op dispatched during the call, *including inside Triton launches*: there is no
      exemption for the launch window, because the candidate's code runs there too (the grid
      callable, pre-run hooks, ``data_ptr`` of argument objects, and under the interpreter the
      ``@triton.jit`` body and any Python it calls). Triton's own work there is only
      allocation, views and copies (the interpreter's argument copies), which ``ALLOWED`` admits
      everywhere. A callable grid is evaluated by the hook itself, under this audit, before
      Triton is called with the resulting tuple.
    * Host reads: any value of a tensor reaching Python (``.item()``, ``float()``, ``int()``,
      ``bool()``, iteration, ``.tolist()``, ``.numpy()``, ``__array__``, DLPack, pickling, raw
      storage or pointer access from the candidate's code) and tensors built from Python data
      (``torch.tensor``, ``as_tensor``, ``scalar_tensor``). During a call, values flow only
      through Triton kernels.

    All of it is a claim the parent uses only to reject: the candidate shares this process.
    """

    # aten ops that allocate, view, copy or cast: not compute on the inputs.
    ALLOWED = {
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
        "new_zeros", "ones", "ones_like", "full", "full_like", "new_full", "fill_", "zero_", "fill",
        "view", "_unsafe_view", "reshape", "as_strided", "alias", "t", "transpose", "permute", "expand",
        "squeeze", "unsqueeze", "slice", "select", "narrow", "split", "split_with_sizes", "unbind",
        "chunk", "flatten", "unflatten", "contiguous", "clone", "copy_", "_to_copy", "to", "detach",
        "resolve_conj", "resolve_neg",
        "arange", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
        "view_as", "expand_as", "_reshape_alias", "movedim", "swapaxes", "mT", "set_", "record_stream",
        "empty_permuted", "_has_compatible_shallow_copy_type", "as_strided_",
        "promote_types", "result_type", "can_cast",
    }
    # aten ops that move tensor values into Python, or Python values into a new tensor.
    HOST_OPS = {
        "_local_scalar_dense": "a tensor value read into Python (.item(), float(), int(), bool(), iteration, "
                               "printing a scalar, bytes() of a storage)",
        "lift_fresh": "a tensor built from Python data (torch.tensor, torch.as_tensor, new_tensor, from_numpy)",
        "lift_fresh_copy": "a tensor built from Python data (torch.tensor, torch.as_tensor, new_tensor)",
        "scalar_tensor": "a tensor built from a Python number (torch.scalar_tensor)",
    }
    # Tensor methods that hand values to Python without dispatching an aten op.
    HOST_METHODS = ("tolist", "numpy", "__array__", "__dlpack__", "__reduce_ex__", "__cuda_array_interface__")
    # Raw access (storage, pointers) is Triton's business; from the candidate's own code it is a
    # way around both the dispatcher and the kernels.
    RAW_METHODS = ("untyped_storage", "storage", "_typed_storage", "data_ptr")

    def __init__(self, module_name: str, path: str):
        self.module_name = module_name
        self.path = path
        self.active = False
        self.launches = 0
        self.kernels: set[str] = set()
        self.bad_ops: dict[str, int] = {}
        self.host_reads: dict[str, int] = {}
        self.launched: set[tuple[str, int]] = set()   # (device, storage data_ptr) given to a launch
        self.threads_started = 0
        self._signatures: dict = {}

    def reset(self):
        self.launches, self.kernels, self.bad_ops, self.host_reads = 0, set(), {}, {}
        self.launched, self.threads_started = set(), 0

    def _count(self, table: dict, name: str):
        table[name] = table.get(name, 0) + 1

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

    def install_host_read_hooks(self):
        import torch

        audit = self
        for name in self.HOST_METHODS:
            original = torch.Tensor.__dict__.get(name, getattr(torch.Tensor, name, None))
            if original is None:
                continue
            if isinstance(original, property):
                def fget(t, _fget=original.fget, _name=name):
                    if audit.active:
                        audit._count(audit.host_reads, f"Tensor.{_name}")
                    return _fget(t)

                setattr(torch.Tensor, name, property(fget))
                continue

            def method(*a, _original=original, _name=name, **k):
                if audit.active:
                    audit._count(audit.host_reads, f"Tensor.{_name}")
                return _original(*a, **k)

            setattr(torch.Tensor, name, method)
        for name in self.RAW_METHODS:
            original = getattr(torch.Tensor, name, None)
            if original is None:
                continue

            def raw(*a, _original=original, _name=name, **k):
                if audit.active and sys._getframe(1).f_code.co_filename == audit.path:
                    audit._count(audit.host_reads, f"Tensor.{_name} (from the candidate's code)")
                return _original(*a, **k)

            setattr(torch.Tensor, name, raw)
        for name in ("__repr__", "__str__"):
            original = getattr(torch.Tensor, name)

            def hidden(t, *a, _original=original, **k):  # printing is allowed; values are not shown
                if audit.active:
                    return f"tensor(<values hidden during verification>, shape={tuple(t.shape)}, dtype={t.dtype})"
                return _original(t, *a, **k)

            setattr(torch.Tensor, name, hidden)

    def _grid_meta(self, fn, args, kwargs) -> dict:
        """What Triton passes a grid callable: the kernel's arguments by name, defaults applied."""
        import inspect

        params = self._signatures.get(fn)
        if params is None:
            params = self._signatures[fn] = inspect.signature(fn).parameters
        meta = dict(zip(params, args))
        meta.update((k, v) for k, v in kwargs.items() if k in params and k not in ("grid", "warmup"))
        for name, p in params.items():
            if name not in meta and p.default is not inspect.Parameter.empty:
                meta[name] = p.default
        return meta

    def _record_launch(self, values):
        import torch

        for v in values:
            base = getattr(v, "base", None)  # TensorWrapper, TensorDescriptor
            if isinstance(v, (tuple, list)):
                self._record_launch(v)
            elif isinstance(v, torch.Tensor):
                self.launched.add((str(v.device), torch._C.TensorBase.untyped_storage(v).data_ptr()))
            elif isinstance(base, torch.Tensor):
                self.launched.add((str(base.device), torch._C.TensorBase.untyped_storage(base).data_ptr()))

    def output_launched(self, out) -> bool:
        import torch

        if out.numel() == 0:
            return True
        return (str(out.device), torch._C.TensorBase.untyped_storage(out).data_ptr()) in self.launched

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
                warmup = kwargs.get("warmup")
                if getattr(fn, "__module__", None) == audit.module_name and not warmup:
                    audit.launches += 1
                    audit.kernels.add(fn.__name__)
                    audit._record_launch(list(args) + list(kwargs.values()))
                grid = kwargs.get("grid")
                if callable(grid) and not warmup and fn is not None:
                    # The grid is the candidate's code: run it here, audited like any other.
                    kwargs["grid"] = grid(audit._grid_meta(fn, args, kwargs))
                return _original(self, *args, **kwargs)

            cls.run = run

    def dispatch_mode(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        audit = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if name in audit.HOST_OPS:
                    audit._count(audit.host_reads, f"aten.{name}")
                elif name not in audit.ALLOWED:
                    audit._count(audit.bad_ops, name)
                return func(*args, **(kwargs or {}))

        return Mode()
