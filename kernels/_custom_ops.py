"""Each op as a ``torch.library`` custom op (``kernelagent::<op>``), so torch.compile traces it.

The schema is derived from the op's reference signature (type hints, else default values):
``Tensor`` / ``Tensor?`` for tensors and optional tensors, ``float``/``float?``, ``SymInt``,
``bool``, ``str``, ``ScalarType``, lists of those, keyword-only arguments after ``*``. The
return type comes from the return annotation (``Tensor`` when there is none; a
``tuple[Tensor, ...]`` of fixed length becomes ``(Tensor, Tensor)``).

* Real implementation: ``_dispatch.dispatch`` (kernel or reference), its outputs made fresh and
  contiguous, because a custom op may not return views of its inputs and its fake must predict
  the strides.
* Fake implementation: the reference itself run on the fake (or meta) tensors, then made
  contiguous the same way. Every reference here is shape-polymorphic torch code, so this gives
  the right shape and dtype for every op without per-op meta functions.
* Autograd: the backward is the reference's own, via ``torch.func.vjp`` on the saved inputs.
  A custom op is opaque to autograd otherwise, and the forward kernel's output has no graph.
"""

from __future__ import annotations

import inspect
import json
import logging
import types
import typing
from collections.abc import Sequence
from typing import Any, Callable

import torch

from . import _dispatch

NAMESPACE = "kernelagent"
logger = logging.getLogger("kernelagent.kernels")

_SCALARS = {torch.Tensor: "Tensor", float: "float", int: "SymInt", bool: "bool", str: "str",
            torch.dtype: "ScalarType"}
_registered: dict[str, Any] = {}


class SchemaError(TypeError):
    """A reference signature that cannot be written as a torch.library schema."""


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1 and len(members) < len(typing.get_args(hint)):
            return members[0], True
    return hint, False


def _type_of(hint: Any, default: Any, where: str) -> str:
    if hint is inspect.Parameter.empty:
        if default is inspect.Parameter.empty:
            return "Tensor"
        if default is None:
            return "Tensor?"
        hint = type(default)
        if hint in (list, tuple):
            hint = list[type(default[0])] if default else list[int]
    base, optional = _unwrap_optional(hint)
    suffix = "?" if optional else ""
    if base in _SCALARS:
        return _SCALARS[base] + suffix
    origin = typing.get_origin(base)
    if origin in (list, tuple, Sequence, typing.Sequence):
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        if args and all(a is args[0] for a in args) and args[0] in _SCALARS:
            return _SCALARS[args[0]] + "[]" + suffix
    raise SchemaError(f"{where}: no torch.library schema type for annotation {hint!r}")


def _default_text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_default_text(v) for v in value) + "]"
    if isinstance(value, torch.dtype):
        raise SchemaError(f"dtype default {value!r} is not expressible")
    raise SchemaError(f"default {value!r} is not expressible in a schema")


def _return_type(hint: Any, where: str) -> str:
    if hint is inspect.Parameter.empty or hint is torch.Tensor:
        return "Tensor"
    if typing.get_origin(hint) in (tuple, typing.Tuple):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis and args[0] is torch.Tensor:
            return "Tensor[]"
        if args and all(a is torch.Tensor for a in args):
            return "(" + ", ".join("Tensor" for _ in args) + ")"
    if typing.get_origin(hint) is list and typing.get_args(hint) == (torch.Tensor,):
        return "Tensor[]"
    raise SchemaError(f"{where}: return annotation {hint!r} is not a tensor or tuple of tensors")


def schema_for(fn: Callable, where: str = "reference") -> tuple[str, list[str], list[str]]:
    """The schema ``(args) -> returns`` for ``fn``, its positional names and keyword-only names."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable string annotations: fall back to defaults only
        hints = {}
    parts, positional, keyword_only = [], [], []
    star_done = False
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SchemaError(f"{where}: *args/**kwargs cannot be expressed in a schema")
        if p.kind is p.KEYWORD_ONLY:
            if not star_done:
                parts.append("*")
                star_done = True
            keyword_only.append(p.name)
        else:
            positional.append(p.name)
        text = f"{_type_of(hints.get(p.name, p.empty), p.default, f'{where}({p.name})')} {p.name}"
        if p.default is not p.empty:
            text += f"={_default_text(p.default)}"
        parts.append(text)
    returns = _return_type(hints.get("return", inspect.Parameter.empty), where)
    return f"({', '.join(parts)}) -> {returns}", positional, keyword_only


def _fresh(out: Any, inputs: list[torch.Tensor]) -> Any:
    """``out`` as new contiguous tensors that share no memory with the inputs or each other."""
    if isinstance(out, (tuple, list)):
        done, seen = [], list(inputs)
        for t in out:
            t = _fresh(t, seen)
            seen.append(t)
            done.append(t)
        return type(out)(done) if isinstance(out, tuple) else done
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"expected a tensor output, got {type(out).__name__}")
    shares = any(out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
                 for t in inputs if t.device == out.device and t.numel() and out.numel())
    if shares or not out.is_contiguous():
        return out.clone(memory_format=torch.contiguous_format)
    return out


def _fake_fresh(out: Any) -> Any:
    if isinstance(out, (tuple, list)):
        done = [_fake_fresh(t) for t in out]
        return tuple(done) if isinstance(out, tuple) else done
    return out.clone(memory_format=torch.contiguous_format)


def register(op: str) -> Any:
    """Define ``kernelagent::<op>`` (once per process); returns its OpOverload, or None on failure."""
    if op in _registered:
        return _registered[op]
    reference = _dispatch.opspec(op).reference
    try:
        schema, positional, keyword_only = schema_for(reference, f"{op} reference")
    except SchemaError as e:
        logger.warning("%s: not registered as a torch custom op (%s); torch.compile will trace the "
                       "PyTorch reference instead", op, e)
        _registered[op] = None
        return None
    n_pos = len(positional)

    def split(values: tuple) -> tuple[tuple, dict]:
        return tuple(values[:n_pos]), dict(zip(keyword_only, values[n_pos:]))

    def real(*args, **kwargs):
        out = _dispatch.dispatch(op, args, kwargs)
        return _fresh(out, _dispatch._tensors(args, kwargs))

    def fake(*args, **kwargs):
        return _fake_fresh(reference(*args, **kwargs))

    def setup_context(ctx, inputs, output):
        tensor_at = [i for i, v in enumerate(inputs) if isinstance(v, torch.Tensor)]
        ctx.tensor_at = tensor_at
        ctx.others = [None if i in tensor_at else v for i, v in enumerate(inputs)]
        ctx.save_for_backward(*[inputs[i] for i in tensor_at])

    def backward(ctx, *grads):
        values = list(ctx.others)
        for i, t in zip(ctx.tensor_at, ctx.saved_tensors):
            values[i] = t
        wrt = [i for i in ctx.tensor_at if ctx.needs_input_grad[i] and values[i].is_floating_point()]

        def forward(*diff):
            current = list(values)
            for i, t in zip(wrt, diff):
                current[i] = t
            args, kwargs = split(tuple(current))
            return reference(*args, **kwargs)

        _, vjp_fn = torch.func.vjp(forward, *[values[i] for i in wrt])
        cotangent = grads[0] if len(grads) == 1 else tuple(grads)
        partial = vjp_fn(cotangent)
        result = [None] * len(values)
        for i, g in zip(wrt, partial):
            result[i] = g
        return tuple(result)

    qualname = f"{NAMESPACE}::{op}"
    try:
        custom = torch.library.custom_op(qualname, real, mutates_args=(), schema=schema)
        custom.register_fake(fake)
        custom.register_autograd(backward, setup_context=setup_context)
        overload = getattr(getattr(torch.ops, NAMESPACE), op).default
    except Exception as e:  # a schema torch rejects: the eager path does not need the custom op
        logger.warning("%s: torch.library rejected %s%s (%s: %s); torch.compile will trace the "
                       "PyTorch reference instead", op, qualname, schema, type(e).__name__, e)
        _registered[op] = None
        return None
    _registered[op] = overload
    logger.debug("registered %s%s", qualname, schema)
    return overload
