"""What a candidate may reference: the allowlist behind ``static_checks``.

A candidate is a Triton kernel plus the host code that allocates its output and launches it.
It needs the Triton DSL, tensor metadata and allocation, ``math`` on Python numbers, and for
problem files ``torch.nn`` to hold parameters. Everything else is either compute outside
Triton (a fallback), a way to reach the process (``os``, ``sys``, ``gc``, frames, storages) or
a way to see its surroundings (grad mode, thread counts, the module's own name, the Triton
runtime) and behave differently inside the worker than in a user's process. So the rule is
an allowlist: a name or attribute not listed here is rejected, whatever it is called.

Module attributes are checked by resolving them against the real modules in the trusted
parent (``resolve``); attributes of values (tensors, configs, the candidate's own objects)
cannot be typed statically, so they follow ``value_attr_problem``.
"""

from __future__ import annotations

import builtins
import importlib
import types
from functools import lru_cache

# Top-level modules a candidate may import. Submodules are reached only through the per-module
# rules below (``torch.utils`` is not ``torch``).
IMPORT_ROOTS = {"torch", "triton", "math", "typing", "__future__"}

# torch.<name>: dtypes, metadata types, allocation, the RNG that builds problem-file weights,
# no-grad context managers, and nn. Not listed (and so rejected): compute (softmax, matmul…),
# Python-data constructors (tensor, as_tensor, from_numpy, frombuffer), serialisation (load,
# save), global state (manual_seed, set_num_threads, use_deterministic_algorithms,
# is_grad_enabled, get_num_threads, backends, cuda), and every extension point (ops, library,
# utils, _C, compile, autograd, overrides).
TORCH_ATTRS = frozenset({
    "float32", "float16", "bfloat16", "float64", "float", "half", "double", "int8", "int16",
    "int32", "int64", "int", "long", "uint8", "bool", "float8_e4m3fn", "float8_e5m2",
    "Tensor", "Size", "device", "dtype", "finfo", "iinfo",
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "arange",
    "randn", "rand", "randint", "randn_like", "rand_like",
    "no_grad", "inference_mode",
    "promote_types", "result_type", "broadcast_shapes", "is_tensor", "is_floating_point", "numel",
    "nn",
})

# triton.<name>: the decorators, launch-config helpers and the DSL. Not listed: runtime,
# compiler, testing, knobs, JITFunction (isinstance on it tells the interpreter from a GPU).
TRITON_ATTRS = frozenset({"jit", "autotune", "heuristics", "Config", "cdiv", "next_power_of_2",
                          "language", "constexpr_function", "tools"})

# triton.tools: only the host-side TMA descriptor (a plain record of a tensor's base, shape,
# strides and block shape that a launch turns into a tensor map; no compute, no I/O). The rest
# of triton.tools (disassemblers, compile and link helpers) stays out.
TRITON_TOOLS = {"triton.tools": frozenset({"tensor_descriptor"}),
                "triton.tools.tensor_descriptor": frozenset({"TensorDescriptor"})}

# typing.<name>: annotations only (``get_type_hints`` evaluates strings: an ``eval``).
TYPING_ATTRS = frozenset({"Any", "Optional", "Union", "Tuple", "List", "Dict", "Sequence", "Mapping",
                          "Callable", "Iterable", "Literal", "Final", "TYPE_CHECKING"})

# Keyword arguments of triton.autotune / triton.Config that run candidate Python inside the
# launch (hooks, pruning, a custom benchmark) or read files (ir_override).
DENIED_TRITON_KWARGS = frozenset({"pre_hook", "post_hook", "prune_configs_by", "do_bench", "ir_override"})

# torch.nn submodules a candidate may reach (``nn.Linear`` and other classes are allowed too).
NN_MODULES = frozenset({"torch.nn.functional", "torch.nn.init"})

# Builtins a candidate may name. Not listed: exec, eval, compile, __import__, open, globals,
# locals, vars, dir, getattr/hasattr with a computed name, setattr, delattr, type, id, hash,
# object, memoryview, breakpoint, input, help, exit, quit, iter/next (host iteration).
ALLOWED_BUILTINS = frozenset({
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float", "frozenset",
    "int", "isinstance", "issubclass", "len", "list", "map", "max", "min", "pow", "print",
    "range", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    "super", "property", "staticmethod", "classmethod", "getattr", "hasattr",
    "True", "False", "None", "NotImplemented", "Ellipsis",
    "Exception", "ValueError", "TypeError", "RuntimeError", "NotImplementedError",
    "AssertionError", "IndexError", "KeyError", "ArithmeticError", "OverflowError",
    "ZeroDivisionError",
})

# Builtins a @triton.jit body may call (besides tl.* and the candidate's other jit functions).
JIT_BUILTINS = frozenset({"range", "float", "int", "min", "max", "len", "isinstance", "print"})

# Public attributes of values that read data to the host, expose memory, change grad state or
# tell a user's tensors from the harness's: rejected on any object.
DENIED_VALUE_ATTRS = frozenset({
    "item", "tolist", "numpy", "data_ptr", "untyped_storage", "storage", "typed_storage",
    "apply_", "map_", "map2_", "share_memory_", "new_tensor", "set_", "pin_memory", "record_stream",
    "register_hook", "retain_grad", "requires_grad", "requires_grad_", "grad", "grad_fn",
    "is_leaf", "is_inference", "format", "format_map", "fn", "handle", "mro",
    "f_back", "f_locals", "f_globals", "f_code", "gi_frame", "gi_code", "cr_frame", "tb_frame",
})

# Decorators allowed on functions (resolved paths); anything else could replace the function.
ALLOWED_DECORATORS = frozenset({"triton.jit", "triton.autotune", "triton.heuristics",
                                "staticmethod", "classmethod", "property", "torch.no_grad",
                                "torch.inference_mode"})
JIT_DECORATORS = frozenset({"triton.jit", "triton.autotune", "triton.heuristics"})

# Context managers a ``with`` may use (a home-made one could swallow exceptions like ``try``).
ALLOWED_CONTEXTS = frozenset({"torch.no_grad", "torch.inference_mode"})

BUILTIN_NAMES = frozenset(dir(builtins))


class Unresolved(Exception):
    """A module attribute the allowlist does not grant; the message says which and why."""


@lru_cache(maxsize=None)
def resolve(path: tuple[str, ...]) -> tuple[str, bool]:
    """Check ``a.b.c`` rooted at an imported module against the allowlist.

    Walks the real objects (in the trusted parent: the candidate is never imported) while they
    are modules; returns (the longest module-prefix path, whether the whole path is a module).
    Attributes past the first non-module object are value attributes, checked separately.
    Raises ``Unresolved`` naming the first attribute that is not allowed.
    """
    root = path[0]
    if root not in IMPORT_ROOTS:
        raise Unresolved(f"module {root!r} is not allowed (allowed: {', '.join(sorted(IMPORT_ROOTS))})")
    obj = importlib.import_module(root)
    for i, name in enumerate(path[1:], start=1):
        if not isinstance(obj, types.ModuleType):
            return ".".join(path[:i]), False
        where = obj.__name__
        if name.startswith("_"):
            raise Unresolved(f"{where}.{name}: private and dunder attributes are not allowed")
        if where == "torch" and name not in TORCH_ATTRS:
            raise Unresolved(f"torch.{name} is not in the allowlist (a candidate may use tensor "
                             "allocation, dtypes and metadata from torch; compute belongs in Triton)")
        if where == "typing" and name not in TYPING_ATTRS:
            raise Unresolved(f"typing.{name} is not in the allowlist (annotations only: "
                             f"{', '.join(sorted(TYPING_ATTRS))})")
        if where == "triton" and name not in TRITON_ATTRS:
            raise Unresolved(f"triton.{name} is not in the allowlist (allowed: "
                             f"{', '.join(sorted(TRITON_ATTRS))})")
        if where in TRITON_TOOLS and name not in TRITON_TOOLS[where]:
            raise Unresolved(f"{where}.{name} is not in the allowlist (from triton.tools only "
                             "triton.tools.tensor_descriptor.TensorDescriptor)")
        try:
            nxt = getattr(obj, name)
        except AttributeError:
            nxt = _submodule(where, name)
        if isinstance(nxt, types.ModuleType) and not _module_allowed(where, nxt.__name__):
            raise Unresolved(f"{where}.{name} is the module {nxt.__name__}, which a candidate may not reach")
        if where.startswith("triton.language") and not isinstance(nxt, types.ModuleType) \
                and callable(nxt) and not (getattr(nxt, "__module__", None) or "triton").startswith("triton"):
            raise Unresolved(f"{where}.{name} is not part of the Triton language")
        obj = nxt
    return ".".join(path), isinstance(obj, types.ModuleType)


def _submodule(where: str, name: str):
    """A Triton-language submodule that is loaded only on import (``extra.libdevice``), or the
    one allowed ``triton.tools`` module."""
    if where.startswith("triton.language") or name in TRITON_TOOLS.get(where, ()):
        try:
            return importlib.import_module(f"{where}.{name}")
        except ImportError:
            pass
    raise Unresolved(f"{where}.{name} does not exist")


def _module_allowed(parent: str, child: str) -> bool:
    if child.startswith("triton.language"):
        return parent.startswith("triton")
    if (parent, child) in (("triton", "triton.tools"), ("triton.tools", "triton.tools.tensor_descriptor")):
        return True
    if parent == "torch":
        return child == "torch.nn"
    if parent == "torch.nn":
        return child in NN_MODULES
    return False


def value_attr_problem(attr: str, *, on_self: bool) -> str | None:
    """Why ``<value>.attr`` is not allowed, or None. ``on_self``: the object is ``self``/``cls``
    of a class the candidate defines (its own private attributes are fine, dunders are not)."""
    if attr.startswith("__") and attr.endswith("__"):
        if attr == "__init__" and on_self:
            return None
        return f".{attr}: dunder attributes reach the interpreter's internals"
    if attr.startswith("_") and not on_self:
        return f".{attr}: private attributes of objects the candidate does not own are not allowed"
    if attr in DENIED_VALUE_ATTRS:
        return f".{attr} is not allowed (host reads, raw memory, grad state or introspection)"
    return None


@lru_cache(maxsize=1)
def jit_value_attrs() -> frozenset[str]:
    """Attributes a @triton.jit body may take of its values: the DSL's tensor, dtype and
    constexpr API, nothing else (in the interpreter ``x.handle`` is a numpy array)."""
    import triton.language as tl

    names: set[str] = {"dtype", "shape", "type", "numel", "element_ty", "value", "primitive_bitwidth"}
    for cls in (tl.tensor, tl.dtype, tl.pointer_type, tl.constexpr):
        names |= {n for n in dir(cls) if not n.startswith("_")}
    return frozenset(names - {"handle"})
