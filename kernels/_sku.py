"""SKU data files, once for both layers: where they live, how they are read and checked, and
which SKU a device is.

A SKU file (``kernelagent/skus/<id>.json`` in the package, or the user folder
``$KERNELAGENT_SKU_DIR``, else ``~/.cache/kernelagent/skus``, where ``kernelagent sku add`` puts
them) is one JSON object describing a GPU model's spec sheet; ``FIELDS`` lists its fields and
``validate`` names every problem in one. Two readers build on this module and never disagree:

* ``kernelagent.sku`` (the CLI, tuner, nightly): every problem in any file is an error, and two
  files claiming one id or alias are an error.
* ``kernelagent.kernels._device`` (the runtime config lookup): only problems in the fields that
  matching reads (``MATCH_FIELDS``) disqualify a file, a user file replaces a shipped one of the
  same id, and a bad file is skipped with a warning rather than failing a user's kernel call.

Matching (``match``) is ``re.search(pattern, device_name, re.IGNORECASE)`` for any of a SKU's
``match`` patterns; among several matching SKUs the one whose compute capability equals the
device's wins, then the one whose pattern matched the longest span of the name (the most
specific), then the smallest id, so the answer never depends on file order.

Standard library only: ``kernelagent.kernels`` imports this without torch, and the CLI imports
it without paying for torch.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

SKU_DIR_ENV = "KERNELAGENT_SKU_DIR"

# Architectures the project knows how to name. NVIDIA ones can be compiled for statically
# (harness.compile); AMD ones are described for the model backend only.
NVIDIA_ARCHES = ("sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_100", "sm_103", "sm_110", "sm_120", "sm_121")
AMD_ARCHES = ("gfx90a", "gfx942", "gfx950")
KNOWN_ARCHES = NVIDIA_ARCHES + AMD_ARCHES
FAMILIES = ("ampere", "ada", "hopper", "blackwell", "blackwell-consumer", "cdna2", "cdna3", "cdna4")
VENDORS = ("nvidia", "amd")
PEAK_KEYS = ("fp32", "tf32", "fp16", "bf16", "fp8")

# (field, accepted types, required). bool is excluded from numbers explicitly below.
_INT = (int,)
_NUM = (int, float)
FIELDS: tuple[tuple[str, tuple, bool], ...] = (
    ("id", (str,), True),
    ("name", (str,), True),
    ("vendor", (str,), True),
    ("arch", (str,), True),
    ("family", (str,), True),
    ("compute_capability", (list,), True),
    ("match", (list,), True),
    ("sm_count", _INT, True),
    ("smem_per_block_bytes", _INT, True),
    ("smem_per_sm_bytes", _INT, True),
    ("registers_per_sm", _INT, True),
    ("max_registers_per_thread", _INT, True),
    ("l2_bytes", _INT, True),
    ("memory_gb", _NUM, True),
    ("mem_bandwidth_gbps", _NUM, True),
    ("peak_tflops", (dict,), True),
    ("power_limit_w", _NUM, True),
    ("boost_clock_mhz", _NUM + (type(None),), True),
    ("sources", (list,), True),
    ("notes", (str,), True),
    ("aliases", (list,), False),
    ("warp_size", _INT, False),
    ("max_threads_per_sm", _INT, False),
    ("max_blocks_per_sm", _INT, False),
    ("max_threads_per_block", _INT, False),
    ("static_compile", (bool,), False),
)
FIELD_NAMES = frozenset(f[0] for f in FIELDS)
# What device matching and the config lookup's tiers read; the runtime needs only these valid.
MATCH_FIELDS = frozenset({"id", "family", "compute_capability", "match"})
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class SkuProblem:
    """One thing wrong with a SKU file: which field, and what is wrong with it."""

    field: str
    message: str
    file: str | None = None
    # True when the problem stops the file from identifying a device (a matching field missing,
    # mistyped or unparsable); the runtime lookup skips only such files.
    blocks_matching: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.field}: {self.message}"


class SkuFileError(ValueError):
    """A SKU file that cannot be used; the message names the file and each problem."""

    def __init__(self, problems: Sequence[SkuProblem]):
        self.problems = tuple(problems)
        files = {p.file for p in self.problems}
        if len(files) == 1 and None not in files:  # one file: name it once
            text = f"{files.pop()}: " + "; ".join(f"{p.field}: {p.message}" for p in self.problems)
        else:
            text = "; ".join(str(p) for p in self.problems)
        super().__init__(text)


# ---------------------------------------------------------------------------------------------
# Where the files live


def shipped_sku_dir() -> Path:
    """The package's own SKU files: ``skus/`` inside the installed ``kernelagent`` package."""
    # kernelagent is already imported (it is this package's parent): this loads nothing new.
    for loc in importlib.import_module("kernelagent").__path__:
        candidate = Path(loc) / "skus"
        if candidate.is_dir():
            return candidate.resolve()
    return Path(importlib.import_module("kernelagent").__path__[0]) / "skus"


def user_sku_dir(override: Path | str | None = None) -> Path:
    """Where user SKU files live: the argument, else ``$KERNELAGENT_SKU_DIR``, else
    ``~/.cache/kernelagent/skus``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(SKU_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kernelagent" / "skus"


# ---------------------------------------------------------------------------------------------
# The one validator


def _is_num(v: Any, types: tuple) -> bool:
    return isinstance(v, types) and not isinstance(v, bool)


_Make = Callable[..., SkuProblem]


def _check_fields(data: dict, P: _Make) -> list[SkuProblem]:
    problems = []
    for name, types, required in FIELDS:
        if name not in data:
            if required:
                problems.append(P(name, "missing required field", name in MATCH_FIELDS))
            continue
        v = data[name]
        if v is None:
            ok = type(None) in types
        elif types == (bool,):
            ok = isinstance(v, bool)
        elif int in types or float in types:
            ok = _is_num(v, tuple(t for t in types if t is not type(None)))
        else:
            ok = isinstance(v, types)
        if not ok:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(P(name, f"wrong type: expected {want}, got {type(v).__name__} ({v!r})",
                              name in MATCH_FIELDS))
            continue
        if _is_num(v, _NUM):
            if not math.isfinite(v):
                problems.append(P(name, f"must be a finite number, got {v!r}"))
            elif v <= 0:
                problems.append(P(name, f"must be positive, got {v!r}"))
    for k in data:
        if k not in FIELD_NAMES:
            problems.append(P(k, "unknown field (typo?); known fields: " + ", ".join(sorted(FIELD_NAMES))))
    return problems


def _check_identity(data: dict, P: _Make) -> list[SkuProblem]:
    problems = []
    sid = data.get("id")
    if isinstance(sid, str) and not ID_RE.match(sid):
        problems.append(P("id", f"{sid!r} must be lowercase letters, digits, '.', '_' or '-' (e.g. 'h100-sxm')"))
    if isinstance(data.get("vendor"), str) and data["vendor"] not in VENDORS:
        problems.append(P("vendor", f"unknown vendor {data['vendor']!r}; expected one of {', '.join(VENDORS)}"))
    if isinstance(data.get("arch"), str) and data["arch"] not in KNOWN_ARCHES:
        problems.append(P("arch", f"unknown arch {data['arch']!r}; expected one of {', '.join(KNOWN_ARCHES)}"))
    if isinstance(data.get("family"), str) and data["family"] not in FAMILIES:
        problems.append(P("family", f"unknown family {data['family']!r}; expected one of {', '.join(FAMILIES)}"))
    vendor, arch = data.get("vendor"), data.get("arch")
    if vendor == "nvidia" and arch in AMD_ARCHES or vendor == "amd" and arch in NVIDIA_ARCHES:
        problems.append(P("arch", f"arch {arch!r} does not belong to vendor {vendor!r}"))

    cc = data.get("compute_capability")
    if isinstance(cc, list):
        if len(cc) != 2 or not all(_is_num(x, _INT) and x >= 0 for x in cc):
            problems.append(P("compute_capability", f"must be [major, minor], two non-negative ints; got {cc!r}",
                              True))
        elif vendor == "nvidia" and isinstance(arch, str) and arch.startswith("sm_") and arch[3:].isdigit() \
                and int(arch[3:]) != cc[0] * 10 + cc[1]:
            problems.append(P("compute_capability", f"{cc!r} disagrees with arch {arch!r}"))

    pats = data.get("match")
    if isinstance(pats, list):
        if not pats:
            problems.append(P("match", "needs at least one pattern (matched against the NVML/torch device name)"))
        for i, p in enumerate(pats):
            if not isinstance(p, str) or not p:
                problems.append(P(f"match[{i}]", f"must be a non-empty string, got {p!r}", True))
                continue
            try:
                re.compile(p, re.IGNORECASE)
            except re.error as e:
                problems.append(P(f"match[{i}]", f"bad regex {p!r}: {e}", True))

    aliases = data.get("aliases")
    if isinstance(aliases, list):
        for i, a in enumerate(aliases):
            if not isinstance(a, str) or not ID_RE.match(a.lower()):
                problems.append(P(f"aliases[{i}]", f"must be an id-like string, got {a!r}"))
    return problems


def _check_figures(data: dict, P: _Make) -> list[SkuProblem]:
    problems = []
    peaks = data.get("peak_tflops")
    if isinstance(peaks, dict):
        for k in PEAK_KEYS:
            if k not in peaks:
                problems.append(P(f"peak_tflops.{k}", "missing (use null where the GPU lacks the format)"))
        for k, v in peaks.items():
            if k not in PEAK_KEYS:
                problems.append(P(f"peak_tflops.{k}", f"unknown precision; expected {', '.join(PEAK_KEYS)}"))
            elif v is None:
                if k in ("fp32", "fp16"):
                    problems.append(P(f"peak_tflops.{k}", "must be a number (every supported GPU has it)"))
            elif not _is_num(v, _NUM):
                problems.append(P(f"peak_tflops.{k}", f"wrong type: expected number or null, got {type(v).__name__}"))
            elif not math.isfinite(v) or v <= 0:
                problems.append(P(f"peak_tflops.{k}", f"must be positive, got {v!r}"))

    srcs = data.get("sources")
    if isinstance(srcs, list):
        if not srcs:
            problems.append(P("sources", "name where the figures come from (datasheet, whitepaper, CUDA guide table)"))
        for i, s in enumerate(srcs):
            if not isinstance(s, str) or not s.strip():
                problems.append(P(f"sources[{i}]", f"must be a non-empty string, got {s!r}"))

    a, b = data.get("smem_per_block_bytes"), data.get("smem_per_sm_bytes")
    if _is_num(a, _INT) and _is_num(b, _INT) and a > b:
        problems.append(P("smem_per_block_bytes", f"{a} exceeds smem_per_sm_bytes {b}"))
    return problems


def validate(data: Any, file: str | None = None) -> list[SkuProblem]:
    """Every problem in one SKU document (empty list when valid)."""
    def P(f: str, m: str, blocks: bool = False) -> SkuProblem:
        return SkuProblem(f, m, file, blocks)

    if not isinstance(data, dict):
        return [P("(file)", f"expected a JSON object, got {type(data).__name__}", True)]
    return _check_fields(data, P) + _check_identity(data, P) + _check_figures(data, P)


def matching_problems(problems: Iterable[SkuProblem]) -> list[SkuProblem]:
    """The problems that stop a file from identifying a device: a matching field
    (``MATCH_FIELDS``) missing, of the wrong type or unparsable, or the file unreadable. An
    unknown family name, an id in capitals or a missing spec-sheet figure is a problem for the
    registry (``kernelagent sku add`` refuses it) but not for matching."""
    return [p for p in problems if p.blocks_matching]


# ---------------------------------------------------------------------------------------------
# The one loader


@dataclass(frozen=True)
class SkuFile:
    """One SKU file as read: its document (None when unreadable) and every problem in it."""

    path: Path
    origin: str  # "shipped" | "user"
    data: dict | None
    problems: tuple[SkuProblem, ...] = field(default=())

    @property
    def id(self) -> str | None:
        sid = self.data.get("id") if self.data is not None else None
        return sid if isinstance(sid, str) else None

    @property
    def aliases(self) -> tuple[str, ...]:
        found = self.data.get("aliases") if self.data is not None else None
        return tuple(a.lower() for a in found if isinstance(a, str)) if isinstance(found, list) else ()


def read_file(path: Path | str, origin: str = "user") -> SkuFile:
    """Parse and validate one SKU file; never raises for what is in the file."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        return SkuFile(path, origin, None, (SkuProblem("(file)", f"cannot read: {e.strerror or e}", where, True),))
    except UnicodeDecodeError as e:
        return SkuFile(path, origin, None, (SkuProblem(
            "(file)", f"not UTF-8 text (byte {e.start}): a SKU file is JSON", where, True),))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return SkuFile(path, origin, None, (SkuProblem("(file)", f"not valid JSON: {e}", where, True),))
    problems = tuple(validate(data, where))
    return SkuFile(path, origin, data if isinstance(data, dict) else None, problems)


def read_dir(folder: Path | str | None, origin: str) -> list[SkuFile]:
    """Every ``*.json`` in ``folder`` (sorted by name); a missing folder holds none."""
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [read_file(p, origin) for p in sorted(folder.glob("*.json"))]


def sku_files(user_dir: Path | str | None = None) -> list[SkuFile]:
    """The shipped files, then the user folder's (``user_sku_dir(user_dir)``)."""
    return read_dir(shipped_sku_dir(), "shipped") + read_dir(user_sku_dir(user_dir), "user")


def duplicate_problems(items: Iterable[Any]) -> list[SkuProblem]:
    """An id or alias claimed by two items (anything with ``id``, ``aliases`` and ``path``)."""
    problems: list[SkuProblem] = []
    seen: dict[str, Any] = {}
    for s in items:
        if s.id is None:
            continue
        for key, what in [(s.id, "id")] + [(a.lower(), "alias") for a in s.aliases]:
            other = seen.get(key)
            if other is not None and other is not s:
                problems.append(SkuProblem(what, f"duplicate {what} {key!r}: also claimed by "
                                                 f"{other.path or other.id}", str(s.path) if s.path else None))
            elif other is None:
                seen[key] = s
    return problems


# ---------------------------------------------------------------------------------------------
# The one matching rule

T = TypeVar("T")


def match(device_name: str, compute_capability: Sequence[int] | None, skus: Iterable[T],
          doc: Callable[[T], Mapping[str, Any]] = lambda s: s) -> T | None:
    """The SKU whose ``match`` patterns find ``device_name`` (see the module docstring), or None.

    ``doc`` reads the SKU document out of each item (identity for plain dicts).
    """
    cc = tuple(int(x) for x in compute_capability) if compute_capability is not None else None
    best: tuple | None = None
    for s in sorted(skus, key=lambda s: doc(s)["id"]):
        d = doc(s)
        span = 0
        for p in d["match"]:
            m = re.search(p, device_name, re.IGNORECASE)
            if m is not None:
                span = max(span, m.end() - m.start(), 1)
        if span == 0:
            continue
        rank = (cc is not None and tuple(d["compute_capability"]) == cc, span)
        if best is None or rank > best[0]:
            best = (rank, s)
    return best[1] if best is not None else None
