"""Launch capture: what an op's launcher would launch, typed the way Triton's launcher types it.

:func:`capture_launches` runs the op's launcher on CPU tensors with ``KernelInterface.__getitem__``
replaced, so each ``kernel[grid](...)`` records the JIT function, its bound arguments, the grid
and the launch options instead of launching (a :class:`KernelLaunch`). The signature and the
16-byte alignment of each argument follow Triton's own specialisation rule, so the request built
from a launch compiles to the code a real launch would run.

Also here, because both capture and compilation need them: the kernel source as a real file
(:func:`_source_file`, source text stored content-addressed), importing it under a private name
(:func:`_load_module`), unwrapping autotuner/heuristics wrappers (:func:`_base_jit`) and whether
the interpreter is on in this process (:func:`_interpreter_on`).
``harness.compile`` re-exports the public names.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from kernelagent.errors import BadInput

if TYPE_CHECKING:
    from .compile import CompileRequest


def _source_file(source: str | Path, cache_dir: Path) -> tuple[Path, str]:
    """(a file holding the source, its sha256). Source text is stored content-addressed, because
    Triton reads a JIT function's source through ``inspect`` and needs a real file."""
    if isinstance(source, Path) or ("\n" not in str(source) and str(source).endswith(".py")):
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"kernel source file not found: {path}")
        text = path.read_text()
        return path.resolve(), hashlib.sha256(text.encode()).hexdigest()
    text = str(source)
    sha = hashlib.sha256(text.encode()).hexdigest()
    path = cache_dir / "src" / f"kernel_{sha[:24]}.py"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path, sha


def _load_module(path: str | Path, sha: str, tag: str):
    """Import a kernel file under a private name (one per source hash and interpreter mode)."""
    name = f"_kernelagent_static_{tag}_{sha[:16]}"
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise BadInput(f"cannot import kernel source {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _base_jit(obj: Any) -> Any:
    """Unwrap Autotuner/Heuristics wrappers down to the JIT (or interpreted) function."""
    seen = 0
    while not hasattr(obj, "arg_names") and hasattr(obj, "fn") and seen < 8:
        obj, seen = obj.fn, seen + 1
    return obj

# ---------------------------------------------------------------------------------------------
# Capturing launches from a real call


@dataclass(frozen=True)
class KernelLaunch:
    """One ``kernel[grid](...)`` an op's launcher made, typed as Triton's launcher types it."""

    fn_name: str
    signature: Mapping[str, str]
    constexprs: Mapping[str, Any]
    aligned: tuple[str, ...]
    options: Mapping[str, Any]     # num_warps, num_stages, ... as passed at launch
    grid: tuple[int, int, int]

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def num_warps(self) -> int:
        return int(self.options.get("num_warps", 4))

    def request(self, source_path: str, source_sha: str, arch: int) -> CompileRequest:
        from .compile import CompileRequest  # compile.py imports this module

        return CompileRequest(source_path=source_path, source_sha=source_sha, fn_name=self.fn_name,
                              signature=dict(self.signature), constexprs=dict(self.constexprs), arch=arch,
                              options=dict(self.options), aligned=tuple(self.aligned))


def _is_constexpr_annotation(ann: Any) -> bool:
    if isinstance(ann, str):
        return "constexpr" in ann
    return getattr(ann, "__name__", "") == "constexpr" and "triton" in getattr(ann, "__module__", "")


def _names(spec: Iterable[Any] | None, params: Sequence[str]) -> set[str]:
    out = set()
    for x in spec or ():
        out.add(params[x] if isinstance(x, int) and 0 <= x < len(params) else str(x))
    return out


_TORCH_TO_TRITON = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float64": "fp64", "int8": "i8",
                    "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8", "bool": "u1",
                    "float8_e4m3fn": "fp8e4nv", "float8_e5m2": "fp8e5"}


def _specialize(value: Any, specialize: bool, align: bool) -> tuple[str, str | None]:
    """(type, "D" when 16-byte divisible) for a runtime argument — Triton's own rule when its
    native helper is there (triton >= 3.5), else the same rule written out."""
    try:
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.compiler import BaseBackend

        ty, desc = native_specialize_impl(BaseBackend, value, False, specialize, align)
        return ty, desc if isinstance(desc, str) else None
    except ImportError:
        pass
    if value is None:
        return "constexpr", None
    if isinstance(value, bool):
        return "u1", None
    if isinstance(value, int):
        if specialize and value == 1:
            return "constexpr", None
        ty = "i32" if -2**31 <= value < 2**31 else "u64" if value >= 2**63 else "i64"
        return ty, "D" if specialize and align and value % 16 == 0 else ""
    if isinstance(value, float):
        return "fp32", None
    if hasattr(value, "data_ptr") and hasattr(value, "dtype"):
        name = str(value.dtype).split(".")[-1]
        if name not in _TORCH_TO_TRITON:
            raise BadInput(f"tensor dtype {value.dtype} has no Triton pointer type here")
        return "*" + _TORCH_TO_TRITON[name], "D" if align and value.data_ptr() % 16 == 0 else ""
    raise BadInput(f"cannot type kernel argument {value!r} ({type(value).__name__}) for static compilation")


def _describe_launch(kernel: Any, grid: Any, args: tuple, kwargs: dict) -> KernelLaunch:
    base = _base_jit(kernel)
    raw = getattr(base, "fn", None)
    if raw is None or not callable(raw):
        raise BadInput(f"cannot read the Python function behind {kernel!r}")
    params = inspect.signature(raw).parameters
    names = list(params)
    bound: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if len(args) > len(names):
        raise BadInput(f"{raw.__name__} takes {len(names)} arguments, the launcher passed {len(args)}")
    bound.update(zip(names, args))
    for k, v in kwargs.items():
        (bound if k in params else options)[k] = v
    for n, p in params.items():
        if n not in bound:
            if p.default is inspect.Parameter.empty:
                raise BadInput(f"{raw.__name__}: no value for {n!r} (an autotuned kernel needs its config "
                               f"passed explicitly for static compilation)")
            bound[n] = p.default
    extra = getattr(base, "kwargs", {}) if isinstance(getattr(base, "kwargs", None), dict) else {}
    dns = _names(getattr(base, "do_not_specialize", None) or extra.get("do_not_specialize"), names)
    dns_align = _names(getattr(base, "do_not_specialize_on_alignment", None)
                       or extra.get("do_not_specialize_on_alignment"), names)
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    aligned: list[str] = []
    for n in names:
        v = bound[n]
        if _is_constexpr_annotation(params[n].annotation):
            signature[n] = "constexpr"
            constexprs[n] = getattr(v, "value", v) if type(v).__name__ == "constexpr" else v
            continue
        ty, desc = _specialize(v, n not in dns, n not in dns_align)
        signature[n] = ty
        if ty == "constexpr":
            constexprs[n] = v
        elif desc and "D" in desc:
            aligned.append(n)
    if callable(grid):
        grid = grid(dict(bound, **options))
    g = tuple(int(x) for x in (grid if isinstance(grid, (tuple, list)) else (grid,)))
    g = (g + (1, 1, 1))[:3]
    options = {k: v for k, v in options.items() if isinstance(v, (bool, int, float, str)) or v is None}
    options.setdefault("num_warps", 4)
    return KernelLaunch(fn_name=raw.__name__, signature=signature, constexprs=constexprs, aligned=tuple(aligned),
                        options=options, grid=g)


@contextlib.contextmanager
def _capturing(into: list):
    from triton.runtime.jit import KernelInterface

    original = KernelInterface.__getitem__

    def record(self, grid):
        def launch(*args, **kwargs):
            into.append(_describe_launch(self, grid, args, kwargs))
            return None
        return launch

    KernelInterface.__getitem__ = record
    try:
        yield
    finally:
        KernelInterface.__getitem__ = original


def capture_launches(source: str | Path, entry: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                     config: Mapping[str, Any] | None = None, cache_dir: Path | None = None) -> list[KernelLaunch]:
    """Run ``entry(*args, **kwargs, config=config)`` from the kernel source on CPU tensors, with
    every ``kernel[grid](...)`` recorded instead of launched. Not thread-safe (it patches a
    Triton class attribute for the duration of the call)."""
    from .compile import default_cache_dir  # compile.py imports this module

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path, sha = _source_file(source, cache_dir)
    mod = _load_module(path, sha, "interp" if _interpreter_on() else "jit")
    fn = getattr(mod, entry, None)
    if fn is None:
        raise BadInput(f"{path} defines no entry function {entry!r}")
    kw = dict(kwargs or {})
    if config is not None:
        kw["config"] = dict(config)
    launches: list[KernelLaunch] = []
    with _capturing(launches):
        fn(*args, **kw)
    if not launches:
        raise BadInput(f"{entry}() launched no Triton kernel for this call (nothing to compile)")
    return launches

