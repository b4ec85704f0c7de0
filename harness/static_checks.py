"""Static checks on candidate source, run in the trusted parent with ``ast`` and ``symtable``.

The candidate is never imported here. The check is an allowlist (``allowlist.py``): every
name a candidate references must be its own, an allowed builtin, or an import the allowlist
grants; every attribute of a module is resolved against the real module; attributes of values
may not be private, dunder, or one of the few that read data or memory. ``@triton.jit`` bodies
may call only the Triton language, the candidate's other jit functions and a few builtins.
Statements that hide failures or state (``try``, ``global``, home-made context managers,
decorators that replace functions, generators) are refused.

These checks are the first, trusted half of "the work is done in Triton and nothing is
tampered with". The worker's runtime audit is the second half; the parent's comparison of
outputs decides.
"""

from __future__ import annotations

import ast
import symtable

from .allowlist import (ALLOWED_BUILTINS, ALLOWED_CONTEXTS, ALLOWED_DECORATORS, BUILTIN_NAMES,
                        DENIED_TRITON_KWARGS, JIT_BUILTINS, JIT_DECORATORS, Unresolved, jit_value_attrs, resolve,
                        value_attr_problem)
from .verdict import Reason
from kernelagent.kernels._parse import parse

_FORBIDDEN_STATEMENTS = {
    ast.Global: "global statements (state kept across calls)",
    ast.Nonlocal: "nonlocal statements (state kept across calls)",
    ast.Yield: "generators", ast.YieldFrom: "generators", ast.Await: "async code",
    ast.AsyncFunctionDef: "async code", ast.AsyncWith: "async code", ast.AsyncFor: "async code",
}


def check_candidate(source: str, entry: str | None = None, *, model_class: str | None = None,
                    forbid_subclass_of: str | None = "Model") -> list[tuple[str, str]]:
    """Return every problem found as (reason, message); an empty list means the source passes.

    ``entry``: the function the op calls (e.g. ``softmax``); ``model_class``: for problem
    files, the class to define (``ModelNew``).
    """
    try:
        tree = parse(source)
        table = symtable.symtable(source, "candidate", "exec")
    except SyntaxError as e:
        return [(Reason.IMPORT_ERROR.value, f"does not parse: {e.msg} at line {e.lineno}")]
    checker = _Checker(tree, table, forbid_subclass_of)
    checker.run()
    problems = checker.problems
    if not checker.jit_defs:
        problems.append((Reason.NO_KERNEL.value, "no @triton.jit kernel is defined"))
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    top |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    if entry and entry not in top:
        problems.append((Reason.IMPORT_ERROR.value, f"does not define the entry point {entry}() at module level"))
    if model_class and model_class not in top:
        problems.append((Reason.IMPORT_ERROR.value, f"does not define class {model_class}"))
    return problems


class _Checker:
    def __init__(self, tree: ast.Module, table: symtable.SymbolTable, forbid_subclass_of: str | None):
        self.tree, self.table, self.forbid_subclass_of = tree, table, forbid_subclass_of
        self.problems: list[tuple[str, str]] = []
        self.imports: dict[str, tuple[str, ...]] = {}     # bound name → module path it names
        self.parents: dict[ast.AST, ast.AST] = {}
        self.own_classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        self.jit_defs: set[str] = set()
        self.self_names: set[int] = set()                 # id() of Name nodes that are a method's self

    def bad(self, reason: Reason, msg: str, node: ast.AST | None = None) -> None:
        where = f" (line {node.lineno})" if node is not None and hasattr(node, "lineno") else ""
        entry = (reason.value, msg + where)
        if entry not in self.problems:
            self.problems.append(entry)

    # -- passes ----------------------------------------------------------------------------------
    def run(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self._collect_imports()
        self._check_scopes(self.table)
        self._mark_self_names()
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef) and self._is_jit(node):
                self.jit_defs.add(node.name)
        self.constants = self._module_constants()
        for node in ast.walk(self.tree):
            bound = node.id if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) else \
                node.name if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not self._is_jit_def(node) else None
            if bound in self.jit_defs:
                self.bad(Reason.FORBIDDEN, f"the @triton.jit function {bound} is re-bound (a kernel calling it "
                         "would run whatever replaced it)", node)
        for node in ast.walk(self.tree):
            self._visit(node)

    def _collect_imports(self) -> None:
        for node in ast.walk(self.tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if self.parents.get(node) is not self.tree:
                self.bad(Reason.FORBIDDEN, "imports belong at the top level of the candidate", node)
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    self.bad(Reason.FORBIDDEN, "relative import: a candidate must be self-contained", node)
                    continue
                base = tuple((node.module or "").split("."))
                for a in node.names:
                    if a.name == "*":
                        self.bad(Reason.FORBIDDEN, f"from {node.module} import *: name what you import", node)
                        continue
                    if base == ("__future__",):
                        continue
                    self._bind_import(a.asname or a.name, base + (a.name,), node)
            else:
                for a in node.names:
                    path = tuple(a.name.split("."))
                    self._bind_import(a.asname or path[0], path if a.asname else path[:1], node, full=path)

    def _bind_import(self, name: str, path: tuple[str, ...], node: ast.AST, full: tuple[str, ...] | None = None) -> None:
        try:
            resolve(full or path)
        except Unresolved as e:
            self.bad(Reason.FORBIDDEN, f"import not allowed: {e}", node)
            return
        if name in self.imports and self.imports[name] != path:
            self.bad(Reason.FORBIDDEN, f"{name!r} is imported twice as different things", node)
        self.imports[name] = path

    def _check_scopes(self, table: symtable.SymbolTable) -> None:
        """Names resolve exactly as Python resolves them (symtable): a name that reaches the
        builtins must be an allowed builtin; an imported name is never re-bound."""
        module_bound = {s.get_name() for s in self.table.get_symbols() if s.is_local()}
        is_module = table.get_type() == "module"
        for sym in table.get_symbols():
            name = sym.get_name()
            if name.startswith("__") and name.endswith("__"):
                continue  # checked on the ast (symtable also lists the implicit __class__ of super())
            if name in self.imports:
                rebound = (sym.is_assigned() or sym.is_parameter()) if not is_module else sym.is_assigned()
                if rebound:
                    self.bad(Reason.FORBIDDEN, f"{name!r} is imported and then re-bound (an alias of a module "
                             "could be patched or replaced)")
            if not sym.is_referenced():
                continue
            reaches_global = (not sym.is_local()) if is_module else (sym.is_global() and not sym.is_local())
            if reaches_global and name not in module_bound:
                if name in BUILTIN_NAMES:
                    if name not in ALLOWED_BUILTINS:
                        self.bad(Reason.FORBIDDEN, f"builtin {name}() is not allowed in a candidate")
                elif name not in {"__name__", self.forbid_subclass_of}:  # inheriting Model: reported on the class
                    self.bad(Reason.FORBIDDEN, f"name {name!r} is not defined by the candidate or an import")
        for child in table.get_children():
            self._check_scopes(child)

    def _mark_self_names(self) -> None:
        """``self``/``cls`` of the candidate's own methods may use their private attributes."""
        for cls in (n for n in ast.walk(self.tree) if isinstance(n, ast.ClassDef)):
            for fn in cls.body:
                if not isinstance(fn, ast.FunctionDef) or not fn.args.args:
                    continue
                first = fn.args.args[0].arg
                if first not in {"self", "cls"}:
                    continue
                names = [n for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == first]
                if any(isinstance(n.ctx, (ast.Store, ast.Del)) for n in names):
                    self.bad(Reason.FORBIDDEN, f"{first} is re-bound inside {cls.name}.{fn.name}", fn)
                    continue
                self.self_names |= {id(n) for n in names}

    # -- nodes -----------------------------------------------------------------------------------
    def _visit(self, node: ast.AST) -> None:
        for kind, what in _FORBIDDEN_STATEMENTS.items():
            if isinstance(node, kind):
                self.bad(Reason.FORBIDDEN, f"{what} are not allowed in a candidate", node)
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            self.bad(Reason.PYTORCH_FALLBACK, "try/except is not allowed in a candidate: a fallback path "
                     "hides a failing kernel (let errors surface)", node)
        elif isinstance(node, ast.With):
            for item in node.items:
                ctx = item.context_expr
                path = self._path_of(ctx.func if isinstance(ctx, ast.Call) else ctx)
                if path not in ALLOWED_CONTEXTS:
                    self.bad(Reason.FORBIDDEN, "with-statements may use only torch.no_grad()/inference_mode() "
                             "(a context manager can swallow exceptions)", node)
        elif isinstance(node, ast.Name):
            self._visit_name(node)
        elif isinstance(node, ast.Attribute):
            parent = self.parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                self._visit_chain(node)
        elif isinstance(node, ast.Call):
            self._visit_call(node)
        elif isinstance(node, ast.FunctionDef):
            self._visit_def(node)
        elif isinstance(node, ast.ClassDef):
            self._visit_class(node)

    def _visit_name(self, node: ast.Name) -> None:
        if node.id.startswith("__") and node.id.endswith("__") and node.id != "__name__":
            self.bad(Reason.FORBIDDEN, f"name {node.id} is not allowed (module internals)", node)
            return
        if node.id == "__name__":
            parent = self.parents.get(node)
            main_test = (isinstance(parent, ast.Compare) and len(parent.comparators) == 1
                         and isinstance(parent.ops[0], (ast.Eq, ast.NotEq))
                         and isinstance(parent.comparators[0], ast.Constant) and parent.comparators[0].value == "__main__")
            if not main_test:
                self.bad(Reason.FORBIDDEN, "__name__ may only be compared with '__main__' (the module's name "
                         "tells the sandbox from a user's process)", node)
            return
        if node.id in self.imports and isinstance(node.ctx, ast.Load):
            self._check_module_use(node, self.imports[node.id])

    def _visit_chain(self, node: ast.Attribute) -> None:
        attrs: list[str] = []
        root: ast.AST = node
        while isinstance(root, ast.Attribute):
            attrs.append(root.attr)
            root = root.value
        attrs.reverse()
        if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(root, ast.Name) and root.id in self.imports:
            self.bad(Reason.FORBIDDEN, f"assigning to {root.id}.{'.'.join(attrs)} patches a module", node)
            return
        if isinstance(root, ast.Name) and root.id in self.imports:
            full = self.imports[root.id] + tuple(attrs)
            try:
                prefix, _ = resolve(full)
            except Unresolved as e:
                self.bad(_unresolved_reason(full), str(e), node)
                return
            rest = full[len(prefix.split(".")):]
            self._value_attrs(rest, node, on_self=rest == ("__init__",) and prefix == "torch.nn.Module")
            if not rest:
                self._check_module_use(node, full)
        else:
            on_self = (isinstance(root, ast.Name) and id(root) in self.self_names) or _is_super_call(root)
            self._value_attrs(tuple(attrs), node, on_self=on_self)
            if isinstance(node.ctx, (ast.Store, ast.Del)) and not on_self:
                self.bad(Reason.FORBIDDEN, f"assigning to .{node.attr} changes an object the candidate does "
                         "not own (only self.<name> = … inside its own classes)", node)

    def _value_attrs(self, attrs: tuple[str, ...], node: ast.AST, *, on_self: bool) -> None:
        for i, attr in enumerate(attrs):
            why = value_attr_problem(attr, on_self=on_self and i == 0)
            if why:
                self.bad(Reason.FORBIDDEN, why, node)

    def _check_module_use(self, node: ast.AST, path: tuple[str, ...]) -> None:
        """A module may appear only as ``module.name``: never as a value (``w = torch``)."""
        try:
            _, is_module = resolve(path)
        except Unresolved:
            return  # reported where it was imported or referenced
        parent = self.parents.get(node)
        literal_getattr = (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name)
                           and parent.func.id in {"getattr", "hasattr"} and parent.args and parent.args[0] is node)
        if is_module and not literal_getattr and not (isinstance(parent, ast.Attribute) and parent.value is node):
            self.bad(Reason.FORBIDDEN, f"the module {'.'.join(path)} is used as a value; a candidate may only "
                     "use module.name", node)

    def _visit_call(self, node: ast.Call) -> None:
        if self._path_of(node.func) in {"triton.autotune", "triton.Config"}:
            for kw in node.keywords:
                if kw.arg in DENIED_TRITON_KWARGS:
                    self.bad(Reason.FORBIDDEN, f"{self._path_of(node.func)}({kw.arg}=…) runs candidate Python inside "
                             "the launch; use reset_to_zero / restore_value", node)
        if isinstance(node.func, ast.Name) and node.func.id in {"getattr", "hasattr"}:
            if len(node.args) < 2 or not (isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                self.bad(Reason.FORBIDDEN, f"{node.func.id}() needs a literal attribute name", node)
                return
            obj, attr = node.args[0], node.args[1].value
            if isinstance(obj, ast.Name) and obj.id in self.imports:
                try:
                    resolve(self.imports[obj.id] + (attr,))
                except Unresolved as e:
                    self.bad(Reason.FORBIDDEN, str(e), node)
            else:
                why = value_attr_problem(attr, on_self=isinstance(obj, ast.Name) and id(obj) in self.self_names)
                if why:
                    self.bad(Reason.FORBIDDEN, why, node)

    def _path_of(self, expr: ast.AST) -> str | None:
        """The dotted path an expression names, resolved through imports (None if not one)."""
        attrs: list[str] = []
        while isinstance(expr, ast.Attribute):
            attrs.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        base = self.imports.get(expr.id, (expr.id,) if expr.id in BUILTIN_NAMES else None)
        return ".".join(base + tuple(reversed(attrs))) if base else None

    def _decorator_path(self, dec: ast.expr) -> str | None:
        return self._path_of(dec.func if isinstance(dec, ast.Call) else dec)

    def _is_jit_def(self, node: ast.AST) -> bool:
        return isinstance(node, ast.FunctionDef) and self.parents.get(node) is self.tree and self._is_jit(node)

    def _module_constants(self) -> set[str]:
        """Module-level names bound once to a literal (``LOG2E: tl.constexpr = 1.44``)."""
        counts: dict[str, int] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                counts[node.id] = counts.get(node.id, 0) + 1
        consts = set()
        for stmt in self.tree.body:
            target, value = None, None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                target, value = stmt.target.id, stmt.value
            if target and counts.get(target) == 1 and _is_literal(value, self):
                consts.add(target)
        return consts

    def _is_jit(self, fn: ast.FunctionDef) -> bool:
        return any(self._decorator_path(d) in JIT_DECORATORS for d in fn.decorator_list)

    def _visit_def(self, node: ast.FunctionDef) -> None:
        if node.name.startswith("__") and node.name.endswith("__") and node.name != "__init__":
            self.bad(Reason.FORBIDDEN, f"defining {node.name} is not allowed (protocol hooks such as "
                     "__torch_function__, __exit__ or __del__ change how Python treats the object)", node)
        for dec in node.decorator_list:
            path = self._decorator_path(dec)
            if path not in ALLOWED_DECORATORS:
                self.bad(Reason.FORBIDDEN, f"decorator {ast.unparse(dec)} is not allowed (allowed: "
                         f"{', '.join(sorted(ALLOWED_DECORATORS))})", node)
        if self._is_jit(node):
            if self.parents.get(node) is not self.tree:
                self.bad(Reason.FORBIDDEN, f"@triton.jit function {node.name} must be defined at module level", node)
            self._check_jit_body(node)

    def _visit_class(self, node: ast.ClassDef) -> None:
        if node.keywords or node.decorator_list:
            self.bad(Reason.FORBIDDEN, f"class {node.name}: metaclasses and class decorators are not allowed", node)
        for base in node.bases:
            path = self._path_of(base)
            name = ast.unparse(base)
            if path in {"torch.Tensor"} or name in {"Tensor", "torch.Tensor"}:
                self.bad(Reason.FORBIDDEN, f"class {node.name} subclasses torch.Tensor (lazy/deferred results)", node)
            elif self.forbid_subclass_of and name == self.forbid_subclass_of:
                self.bad(Reason.PYTORCH_FALLBACK, f"class {node.name} inherits the reference {name}", node)
            elif not (path == "torch.nn.Module" or (isinstance(base, ast.Name) and base.id in self.own_classes)
                      or path == "object"):
                self.bad(Reason.FORBIDDEN, f"class {node.name} may derive only from torch.nn.Module or the "
                         f"candidate's own classes, not {name}", node)

    def _check_jit_body(self, fn: ast.FunctionDef) -> None:
        """A jit body is Triton: tl.*, the candidate's jit functions, a few builtins. In the
        interpreter any Python would run here, outside the runtime audit's reach."""
        allowed_attrs = jit_value_attrs()
        local = {a.arg for a in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs}
        local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        for node in ast.walk(ast.Module(body=fn.body, type_ignores=[])):
            if isinstance(node, (ast.FunctionDef, ast.Lambda, ast.ClassDef)):
                self.bad(Reason.FORBIDDEN, f"@triton.jit {fn.name}: nested functions are not Triton", node)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local \
                    and node.id not in self.imports and node.id not in self.jit_defs and node.id not in JIT_BUILTINS \
                    and node.id not in self.constants and node.id not in {"True", "False", "None"}:
                self.bad(Reason.FORBIDDEN, f"@triton.jit {fn.name} uses the global {node.id}: a kernel may use only "
                         "its arguments, tl.*, other jit functions and module-level literal constants", node)
            elif isinstance(node, ast.Call):
                f = node.func
                if not isinstance(f, (ast.Name, ast.Attribute)):
                    self.bad(Reason.FORBIDDEN, f"@triton.jit {fn.name} calls {ast.unparse(f)}: not a Triton call", node)
                elif isinstance(f, ast.Name):
                    ok = (f.id in self.jit_defs or f.id in JIT_BUILTINS
                          or self.imports.get(f.id, ())[:2] == ("triton", "language"))
                    if not ok:
                        self.bad(Reason.FORBIDDEN, f"@triton.jit {fn.name} calls {f.id}(): a jit body may call only "
                                 "tl.*, the candidate's other @triton.jit functions and range/min/max/float/int", node)
            elif isinstance(node, ast.Attribute) and not (isinstance(self.parents.get(node), ast.Attribute)
                                                          and self.parents[node].value is node):
                attrs, root = [], node
                while isinstance(root, ast.Attribute):
                    attrs.append(root.attr)
                    root = root.value
                if isinstance(root, ast.Name) and root.id in self.imports:
                    if self.imports[root.id][:2] != ("triton", "language") and \
                            self.imports[root.id] + tuple(reversed(attrs))[:1] != ("triton", "language"):
                        self.bad(Reason.FORBIDDEN, f"@triton.jit {fn.name} uses {ast.unparse(node)}: only the Triton "
                                 "language is available inside a kernel", node)
                else:
                    for a in attrs:
                        if a not in allowed_attrs:
                            self.bad(Reason.FORBIDDEN, f"@triton.jit {fn.name} takes .{a} of a value: not part of "
                                     "the Triton language", node)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in self.imports:
                path = self.imports[node.id]
                parent = self.parents.get(node)
                via_language = isinstance(parent, ast.Attribute) and path + (parent.attr,) == ("triton", "language")
                if path[:2] != ("triton", "language") and not via_language:
                    self.bad(Reason.FORBIDDEN, f"@triton.jit {fn.name} uses {node.id}: only the Triton language "
                             "is available inside a kernel", node)


def _is_literal(node: ast.AST, checker: "_Checker") -> bool:
    """A literal, arithmetic on literals, or tl.constexpr(literal)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, bool, str)) or node.value is None
    if isinstance(node, ast.UnaryOp):
        return _is_literal(node.operand, checker)
    if isinstance(node, ast.BinOp):
        return _is_literal(node.left, checker) and _is_literal(node.right, checker)
    if isinstance(node, ast.Call) and checker._path_of(node.func) == "triton.language.constexpr":
        return len(node.args) == 1 and not node.keywords and _is_literal(node.args[0], checker)
    return False


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _unresolved_reason(path: tuple[str, ...]) -> Reason:
    """torch.<compute op> is a PyTorch fallback; anything else not granted is forbidden."""
    if len(path) >= 2 and path[0] == "torch" and not path[1].startswith("_"):
        import torch

        state = path[1].startswith(("is_", "get_", "set_", "use_", "are_"))
        if not state and (hasattr(torch.ops.aten, path[1]) or hasattr(torch.Tensor, path[1])):
            return Reason.PYTORCH_FALLBACK
    return Reason.FORBIDDEN
