"""The kernel library: ``from kernelagent.kernels import softmax, rms_norm``.

Each op is a plain function with its PyTorch reference's signature. On CUDA tensors it runs the
op's verified Triton kernel with the best tuned config for the GPU and the input's shape bucket;
on anything the kernel does not cover it runs the reference (see ``_dispatch``). Under
``torch.compile`` (and when autograd needs a graph) the call goes through the custom op
``torch.ops.kernelagent.<op>``, whose fake implementation lets the compiler trace it.

CPU tensors run the reference unless ``KERNELAGENT_INTERPRET=1``, in which case the kernel runs
through Triton's interpreter; importing this package with that set also sets
``TRITON_INTERPRET=1`` (Triton reads it when a kernel is defined).

Importing this package loads the standard library only (so ``kernelagent.kernels._sku``, the
SKU files' reader that the CLI shares, costs nothing); torch comes with the first op looked up,
triton with the first kernel call (or with an op whose spec.py reuses its kernel module's
helpers). Verification, tuning and the agent live elsewhere and are never imported from here:
no hypothesis, optuna, langgraph or openai.

When a kernel raises, the call falls back to the reference with a ``KernelDispatchFailure``
warning naming the op, kernel file, config and error (once per op, kernel, config and error
type); ``dispatch_failures()`` counts such failures per op, and ``KERNELAGENT_STRICT=1`` makes
the call raise ``KernelDispatchError`` instead. A kernel that does not apply (an unsupported
dtype or device, an input its launcher declines) is not a failure: see ``_failures``.

``graphed(op, *example_args)`` captures a small, static call into a CUDA graph that replays it
without the Python launch overhead (``_graphs``).

The name of each op is also the name of its folder (``kernels/softmax/``). The attribute is the
function: ``import kernelagent.kernels.softmax.spec`` still works through ``sys.modules``, but
``kernelagent.kernels.softmax`` is the callable.
"""

import functools
import inspect
import sys
import types

from ._failures import KernelDispatchError, KernelDispatchFailure, KernelFallbackWarning, dispatch_failures
from ._graphs import GraphedCall, graphed
from ._interpreter import prepare_interpreter
from ._modules import UnknownModuleError, load_module, module_names
from .registry import UnknownOpError, get_opspec, kernel_path, op_names

prepare_interpreter()

__all__ = ["GraphedCall", "KernelDispatchError", "KernelDispatchFailure", "KernelFallbackWarning",
           "UnknownModuleError", "UnknownOpError", "dispatch_failures", "get_opspec", "graphed", "kernel_path",
           "load_module", "module_names", "op_names"]
__all__ += op_names()


def _make_public(op: str):
    import torch

    from . import _custom_ops, _dispatch

    def _needs_grad(args: tuple, kwargs: dict) -> bool:
        return any(isinstance(v, torch.Tensor) and v.requires_grad for v in (*args, *kwargs.values()))

    spec = _dispatch.opspec(op)
    reference = spec.reference
    overload = _custom_ops.register(op)

    def public(*args, **kwargs):
        if torch.compiler.is_compiling():
            # No custom op (unsupported signature): trace the reference rather than break.
            return overload(*args, **kwargs) if overload is not None else reference(*args, **kwargs)
        if overload is not None and torch.is_grad_enabled() and _needs_grad(args, kwargs):
            return overload(*args, **kwargs)  # carries the reference's backward
        return _dispatch.dispatch(op, args, kwargs)

    public.__name__ = public.__qualname__ = op
    public.__module__ = __name__
    public.__signature__ = inspect.signature(reference)
    public.__annotations__ = dict(getattr(reference, "__annotations__", {}))
    public.__doc__ = (f"{spec.doc}\n\nThe tuned Triton kernel for this GPU where one covers the input, "
                      f"else PyTorch's reference (same signature and result).")
    prefix = f"{__name__}.{op}."
    for name, module in list(sys.modules.items()):   # spec, kernel, …: reachable through the function
        if name.startswith(prefix) and "." not in name[len(prefix):] and module is not None:
            setattr(public, name[len(prefix):], module)
    return public


@functools.lru_cache(maxsize=None)
def _public(op: str):
    return _make_public(op)


class _OpPackage(types.ModuleType):
    """An op's folder (``kernels/<op>/``): each submodule the import system binds on it (``spec``,
    ``kernel``) is bound on the op's public function too, so ``import
    kernelagent.kernels.softmax.kernel as m`` reaches the module through the function."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            fn = sys.modules[__name__].__dict__.get(self.__name__.rsplit(".", 1)[1])
            if callable(fn) and not isinstance(fn, types.ModuleType):
                setattr(fn, name, value)


class _KernelsModule(types.ModuleType):
    """Keeps ``kernelagent.kernels.<op>`` the function when the import system loads the
    ``<op>/`` subpackage and tries to bind the submodule to the same name (the function carries
    the subpackage's submodules instead: see ``_OpPackage``)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}" \
                and name in op_names():
            if type(value) is types.ModuleType:
                value.__class__ = _OpPackage
            return
        super().__setattr__(name, value)


def __getattr__(name):
    if not name.startswith("_") and name in op_names():
        fn = _public(name)
        globals()[name] = fn
        return fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


sys.modules[__name__].__class__ = _KernelsModule
