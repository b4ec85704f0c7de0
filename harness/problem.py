"""KernelBench-format problem files as verification targets.

A problem file defines ``class Model(nn.Module)``, ``get_inputs()`` and ``get_init_inputs()``.
It is the user's own specification, so the trusted parent imports it (the candidate never
sees it). ``Model`` and the candidate's ``ModelNew`` are each built right after seeding torch
with the same secret seed, so their parameters match.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..kernels._inputs import fit_range
from ..kernels.spec import DISTRIBUTIONS, Call, Case, Tolerance, generator, values
from kernelagent.kernels._parse import parse

PROBLEM_TOLERANCE = Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=None)


def _require(tree: ast.Module, path: Path) -> None:
    names = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    missing = [n for n in ("Model", "get_inputs") if n not in names]
    if missing:
        raise BadInput(f"problem file {path} does not define {' and '.join(missing)} at module level "
                       "(a KernelBench problem needs class Model(nn.Module), get_inputs() and get_init_inputs())")
    if not isinstance(names["Model"], ast.ClassDef):
        raise BadInput(f"problem file {path}: Model (line {names['Model'].lineno}) must be a class")


@dataclass
class ProblemTarget:
    path: Path
    module: Any
    init_inputs: list

    kind = "problem"
    entry = "ModelNew"

    @property
    def name(self) -> str:
        return str(self.path)

    @classmethod
    def load(cls, path: Path) -> "ProblemTarget":
        if not path.is_file():
            raise BadInput(f"problem file not found: {path}")
        try:
            src = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInput(f"problem file {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as "
                           "UTF-8 Python source") from None
        if "\x00" in src:  # valid UTF-8 still, but no Python source holds NUL bytes
            raise BadInput(f"problem file {path} is a binary file (it holds NUL bytes), not Python source")
        try:
            tree = parse(src, filename=str(path))
        except (SyntaxError, ValueError) as e:
            line = getattr(e, "lineno", None)
            raise BadInput(f"problem file {path} does not parse: {getattr(e, 'msg', e)}"
                           + (f" at line {line}" if line else "")) from None
        _require(tree, path)
        name = "kernelagent_problem_" + hashlib.sha256(src.encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise BadInput(f"problem file {path} failed to import: {type(e).__name__}: {e}") from None
        init = list(module.get_init_inputs()) if hasattr(module, "get_init_inputs") else []
        return cls(path, module, init)

    # -- the property-based side -------------------------------------------------------------
    def strategy(self, max_numel: int):
        from hypothesis import strategies as st

        return st.builds(
            lambda dist, scale, seed: Case(params={}, dtype="native", dist=dist, scale=scale, seed=seed),
            st.sampled_from(("native",) + DISTRIBUTIONS[:4]),
            st.sampled_from([1.0, 1.0, 0.1, 4.0]),
            st.integers(0, 2**31 - 1),
        )

    def build(self, case: Case) -> Call:
        torch.manual_seed(case.seed)
        inputs = list(self.module.get_inputs())
        if case.dist != "native":
            gen = generator(case.seed ^ 0x5EED)
            inputs = [fit_range(values(t.shape, case.dist, case.scale, gen), t.dtype).to(t.dtype)
                      if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
        return Call(args=tuple(inputs))

    def models(self, init_seed: int):
        torch.manual_seed(init_seed)
        model = self.module.Model(*self.init_inputs).eval()
        return model

    def reference(self, call: Call, init_seed: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(float64 reference, native reference, whether float64 was possible)."""
        model = self.models(init_seed)
        with torch.no_grad():
            native = model(*call.args)
            try:
                m64 = copy.deepcopy(model).double()
            except (RuntimeError, TypeError):  # a module that cannot be cast
                return native.double(), native, False
            args64 = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in call.args]
            try:
                return m64(*args64), native, True
            except (RuntimeError, NotImplementedError, TypeError):  # an op without a float64 kernel
                return native.double(), native, False

    tolerance = PROBLEM_TOLERANCE

    def reduction_length(self, call: Call) -> int | None:
        return None


def is_problem_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or Path(target).is_file()
