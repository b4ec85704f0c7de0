"""Kernel variants: several self-contained implementations of one op, each a file.

An op's variants, in lookup order:

* ``kernel`` — the shipped ``kernels/<op>/kernel.py`` (the default heuristic's implementation);
* shipped extras — ``kernels/<op>/variants/<name>.py``;
* the user library's — ``<user library>/<op>/variants/<name>.py`` (``_configs.user_library_dir``:
  where ``kernelagent tune``, the agent and you put new ones).

Adding a variant is adding a file: it is a candidate file like ``kernel.py`` (it defines the op's
entry function ``<op>(*args, config=None)``), may declare its own tuning space as a literal
module-level ``TUNING_SPACE = {"BLOCK_N": [1024, 2048], ...}`` (else the op's spec's space is
used), and may have a sidecar ``<name>.json`` with its provenance (``origin``: ``shipped`` |
``generated`` | ``user``; for generated ones ``endpoint``, ``model``, ``prompt_version``,
``run_id``, ``date``). A library entry names the variant that won (``"variant"``; absent means
``kernel``) and the sha256 of that variant's file; an entry whose variant file changed is
stale and skipped with a warning naming it. A user variant may not reuse a shipped name.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import re
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .registry import KERNELS_DIR, kernel_path
from ._parse import parse

DEFAULT_VARIANT = "kernel"
VARIANT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
ORIGINS = ("shipped", "generated", "user")


class UnknownVariantError(LookupError):
    """No variant of that name for the op; the message lists the known ones."""


@dataclass(frozen=True)
class Variant:
    op: str
    name: str
    path: Path
    origin: str                      # shipped | generated | user
    sha256: str
    tuning_space: dict | None = None     # the file's literal TUNING_SPACE, if any
    provenance: dict = field(default_factory=dict)

    @property
    def module_name(self) -> str:
        """The one name the file is imported under (``kernel`` keeps its package name, which
        its spec.py imports helpers from)."""
        if self.name == DEFAULT_VARIANT:
            return f"kernelagent.kernels.{self.op}.kernel"
        return f"kernelagent_variant_{self.op}_{self.name}_{self.sha256[:12]}"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def literal_tuning_space(source: str) -> dict | None:
    """A literal module-level ``TUNING_SPACE = {name: [values…]}`` in ``source``, or None.
    Raises ``ValueError`` for one that is not a literal dict of non-empty lists."""
    try:
        tree = parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TUNING_SPACE"
                                                for t in node.targets):
            try:
                space = ast.literal_eval(node.value)
            except ValueError:
                raise ValueError("TUNING_SPACE must be a literal dict of name → list of values") from None
            if not (isinstance(space, dict) and space and all(
                    isinstance(k, str) and isinstance(v, (list, tuple)) and v for k, v in space.items())):
                raise ValueError("TUNING_SPACE must be a literal dict of name → non-empty list of values")
            return {k: list(v) for k, v in space.items()}
    return None


def _sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        warnings.warn(f"{side}: unreadable variant provenance ({e}); ignored", RuntimeWarning, stacklevel=3)
        return {}
    return data if isinstance(data, dict) else {}


_cache: dict[tuple, tuple[tuple, Variant]] = {}
_lock = threading.Lock()
_warned: set = set()


def _warn_once(key, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _variant(op: str, name: str, path: Path, origin: str) -> Variant | None:
    try:
        st = path.stat()
    except OSError:
        return None
    key = (op, name, str(path))
    stamp = (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    raw = path.read_bytes()
    try:
        space = literal_tuning_space(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        _warn_once(("bad", str(path), stamp), f"{path}: variant {name!r} of {op} skipped: {e}")
        return None
    prov = _sidecar(path)
    if origin != "shipped":
        origin = prov.get("origin") if prov.get("origin") in ORIGINS else "user"
    v = Variant(op, name, path, origin, hashlib.sha256(raw).hexdigest(), space, prov)
    with _lock:
        _cache[key] = (stamp, v)
    return v


def _user_root(library: Path | str | None) -> Path:
    from ._configs import user_library_dir

    return Path(library).expanduser() if library is not None else user_library_dir()


def variants(op: str, library: Path | str | None = None) -> list[Variant]:
    """Every variant of ``op``: ``kernel`` first, then shipped extras, then the user library's."""
    found = [_variant(op, DEFAULT_VARIANT, kernel_path(op), "shipped")]
    names = {DEFAULT_VARIANT}
    folders = [(KERNELS_DIR / op / "variants", "shipped"), (_user_root(library) / op / "variants", "user")]
    for folder, origin in folders:
        if not folder.is_dir() or (origin == "user" and folder.resolve() == folders[0][0].resolve()):
            continue
        for path in sorted(folder.glob("*.py")):
            name = path.stem
            if name.startswith("_"):
                continue
            if not VARIANT_NAME.match(name):
                _warn_once(("name", str(path)), f"{path}: not a variant name (a letter, then letters, digits or "
                                                "'_'); skipped")
                continue
            if name in names:
                _warn_once(("dup", str(path)), f"{path}: variant {name!r} of {op} already exists (shipped); "
                                               "skipped — rename it")
                continue
            v = _variant(op, name, path, origin)
            if v is not None:
                names.add(name)
                found.append(v)
    return [v for v in found if v is not None]


def get_variant(op: str, name: str | None = None, library: Path | str | None = None) -> Variant:
    name = name or DEFAULT_VARIANT
    for v in variants(op, library):
        if v.name == name:
            return v
    known = ", ".join(v.name for v in variants(op, library))
    raise UnknownVariantError(f"op {op} has no variant {name!r} (known: {known}); add one as "
                              f"<library>/{op}/variants/{name}.py")


_modules: dict[tuple[str, str], Any] = {}


def import_file(module_name: str, path: Path):
    """Execute ``path`` as the module ``module_name`` (registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_module(v: Variant):
    """Import the variant's file once per content (``kernel`` under its package name)."""
    key = (str(v.path), v.sha256)
    with _lock:
        hit = _modules.get(key)
    if hit is not None:
        return hit
    module = importlib.import_module(v.module_name) if v.name == DEFAULT_VARIANT else import_file(v.module_name, v.path)
    with _lock:
        _modules[key] = module
    return module


def entry_function(v: Variant) -> Callable:
    fn = getattr(load_module(v), v.op, None)
    if not callable(fn):
        raise AttributeError(f"{v.path} defines no entry function {v.op!r}")
    return fn


def clear_caches() -> None:
    with _lock:
        _cache.clear()
        _warned.clear()
