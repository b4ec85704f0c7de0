"""Static checks on candidate source, run in the trusted parent with ``ast`` only.

The candidate is never imported here. These checks are the trusted half of the "work must be
done in Triton" and "no tampering" rules; the worker's runtime audit (launch counting, aten op
log) is the other half, and a worker can only use it to convict itself, never to acquit.
"""

from __future__ import annotations

import ast

from .verdict import Reason

# Modules a Triton candidate may import. Everything else (os, sys, ctypes, subprocess, socket,
# gc, inspect, importlib, threading, numpy, pickle, ...) is a way to escape the audit, reach
# the filesystem or network, or compute outside Triton.
ALLOWED_IMPORTS = {
    "torch", "triton", "triton.language", "math", "typing", "functools", "itertools",
    "dataclasses", "operator", "collections", "enum", "abc", "__future__", "torch.nn",
    "torch.nn.functional",  # importable for nn.Module; compute through it is caught at run time
}
FORBIDDEN_IMPORT_PREFIXES = ("torch.utils.cpp_extension", "torch._C", "torch.library", "torch._dynamo",
                             "torch.ops", "triton.runtime", "triton.testing", "triton.compiler")
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "open", "globals", "locals", "vars",
                   "setattr", "delattr", "breakpoint", "input", "memoryview"}
FORBIDDEN_ATTRS = {
    "__class__", "__subclasses__", "__globals__", "__dict__", "__code__", "__builtins__",
    "__closure__", "__bases__", "__mro__", "__getattribute__", "__torch_function__",
    "__torch_dispatch__", "_make_subclass", "data_ptr", "untyped_storage", "storage", "tolist",
    "numpy", "__array__", "cpp_extension", "load_inline", "_C", "ops", "Stream", "set_stream",
    "__setattr__", "f_back", "f_locals", "f_globals", "gi_frame",
}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_triton_jit(dec: ast.expr) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    name = _dotted(target)
    return name in {"triton.jit", "jit", "triton.autotune", "triton.heuristics"} or name.endswith(".jit")


def check_candidate(source: str, entry: str | None = None, *, model_class: str | None = None,
                    forbid_subclass_of: str | None = "Model") -> list[tuple[str, str]]:
    """Return every problem found as (reason, message); an empty list means the source passes.

    ``entry``: the function the op calls (e.g. ``softmax``); ``model_class``: for problem
    files, the class to define (``ModelNew``).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [(Reason.IMPORT_ERROR.value, f"does not parse: {e.msg} at line {e.lineno}")]

    problems: list[tuple[str, str]] = []
    imported_modules: set[str] = set()
    jit_defs: list[str] = []

    def bad(reason: Reason, msg: str, node: ast.AST | None = None) -> None:
        where = f" (line {node.lineno})" if node is not None and hasattr(node, "lineno") else ""
        problems.append((reason.value, msg + where))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                _check_import(a.name, node, bad)
                imported_modules.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            mod = "." * node.level + (node.module or "")
            if node.level:
                bad(Reason.FORBIDDEN, f"relative import {mod!r}: a candidate must be self-contained", node)
            else:
                _check_import(mod, node, bad)
                for a in node.names:
                    _check_import(f"{mod}.{a.name}", node, bad, allow_missing=True)
                    imported_modules.add(a.asname or a.name)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            bad(Reason.PYTORCH_FALLBACK, "try/except is not allowed in a candidate: a fallback path "
                "hides a failing kernel (let errors surface)", node)
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in FORBIDDEN_CALLS:
                bad(Reason.FORBIDDEN, f"call to {name}() is not allowed", node)
        elif isinstance(node, ast.Attribute):
            if node.attr in FORBIDDEN_ATTRS:
                bad(Reason.FORBIDDEN, f"attribute .{node.attr} is not allowed", node)
        elif isinstance(node, ast.Name):
            if node.id in {"__builtins__", "__import__", "__loader__", "__spec__"}:
                bad(Reason.FORBIDDEN, f"name {node.id} is not allowed", node)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute):
                        root = _dotted(sub).split(".")[0]
                        if root in imported_modules:
                            bad(Reason.FORBIDDEN, f"assigning to {_dotted(sub)} patches a module", node)
        elif isinstance(node, ast.FunctionDef):
            if any(_is_triton_jit(d) for d in node.decorator_list):
                jit_defs.append(node.name)
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                bname = _dotted(base)
                if bname in {"torch.Tensor", "Tensor"}:
                    bad(Reason.FORBIDDEN, f"class {node.name} subclasses torch.Tensor (lazy/deferred results)", node)
                if forbid_subclass_of and bname == forbid_subclass_of:
                    bad(Reason.PYTORCH_FALLBACK, f"class {node.name} inherits the reference {bname}", node)

    if not jit_defs:
        bad(Reason.NO_KERNEL, "no @triton.jit kernel is defined")
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    top |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    if entry and entry not in top:
        bad(Reason.IMPORT_ERROR, f"does not define the entry point {entry}() at module level")
    if model_class and model_class not in top:
        bad(Reason.IMPORT_ERROR, f"does not define class {model_class}")
    return problems


def _check_import(name: str, node: ast.AST, bad, allow_missing: bool = False) -> None:
    if any(name == p or name.startswith(p + ".") for p in FORBIDDEN_IMPORT_PREFIXES):
        bad(Reason.FORBIDDEN, f"import of {name} is not allowed", node)
        return
    if name in ALLOWED_IMPORTS or allow_missing:
        return
    root = name.split(".")[0]
    if root in ALLOWED_IMPORTS and name not in ALLOWED_IMPORTS and root not in {"torch", "triton"}:
        return
    if name.startswith("triton.language") or name.startswith("torch.nn"):
        return
    bad(Reason.FORBIDDEN, f"import of {name} is not allowed (allowed: {', '.join(sorted(ALLOWED_IMPORTS))})", node)
