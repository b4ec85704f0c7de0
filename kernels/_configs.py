"""Tuned configs as data: the file format, its validation, and the runtime lookup.

Files
-----
``<user library>/<op>/configs/<sku>.json`` (consulted first; ``user_library_dir()``: the folder
``$KERNELAGENT_LIBRARY`` names, else ``~/.cache/kernelagent/library``), then
``kernels/<op>/configs/<sku>.json`` (shipped with the package). ``<sku>`` is a SKU id (``kernelagent/skus/<sku>.json``).
Only the trusted parent writes them (``kernelagent.library.record_entry``). Schema 1::

    {
      "schema": 1,
      "op": "softmax",                       # must equal the folder's op
      "sku": "h100-sxm",                     # must equal the file name's stem
      "family": "hopper",                    # optional; else taken from the SKU data file
      "compute_capability": [9, 0],          # optional; else taken from the SKU data file
      "entries": [
        {
          "dtype": "bf16",                   # fp32 | fp16 | bf16 | fp64
          "bucket": {"cols": 4096},          # the op's shape_key, bucketed (see below)
          "config": {"BLOCK_N": 4096, "num_warps": 8},   # launch parameters for the variant
          "variant": "kernel",               # optional; the kernel file (kernels/_variants.py)
          "kernel_sha256": "<64 hex>",       # sha256 of that variant's file it was tuned for
          "evidence": {
            "latency_us": 12.5,              # > 0; median of the timed runs
            "energy_uj": 830.0 | null,       # null where no energy counter was read
            "backend": "gpu" | "replay" | "model",
            "measured": true | false,        # false = predicted (the model backend)
            "trials": 64,                    # tuner trials behind this choice, >= 0
            "speedup_vs_default": 1.31 | null    # default-config latency / this latency
          },
          "provenance": {
            "triton": "3.6.0", "torch": "2.11.0", "cuda": "12.8" | null,
            "device": "NVIDIA H100 80GB HBM3",
            "date": "2026-11-26T07:30:00+00:00",  # ISO-8601
            "method": "optuna-tpe"           # how the config was chosen
          }
        }
      ]
    }

``evidence`` and ``provenance`` may carry more keys (clocks, driver, spread); the ones above are
required. ``backend: "model"`` implies ``measured: false``; ``backend: "gpu"`` implies
``measured: true``. Two entries with the same dtype and bucket in one file are an error.

Buckets
-------
``bucket_of(shape_key)``: every integer value is rounded up to a power of two (0 stays 0; 1000
becomes 1024); any other value (a bool such as ``causal``, a string, a float) is kept as is and
must match exactly.

Lookup
------
``resolve(op, dtype, shape_key, identity)`` walks the tiers exact SKU → same family (other SKUs
whose ``family`` equals the device's) → same compute capability → the op's default heuristic
(``OPSPEC.default_config``). Within a tier the override folder comes before the package, and
within a folder the entry with the same dtype and the nearest bucket wins: same non-integer
values, smallest sum over integer keys of ``|log2 a - log2 b|`` (0 for the same bucket), ties by
SKU id. Measured entries are searched through every tier first; predicted ones
(``measured: false``) are used only when no tier has a measured entry for the dtype. Entries
whose ``kernel_sha256`` differs from the current ``kernel.py`` are stale: skipped, with one
warning per file. A missing file is not an error (the next tier answers); a malformed file raises
``ConfigFileError`` naming the file and what is wrong. Files and answers are cached for the
life of the process; ``clear_caches()`` forgets them.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import _device, _variants
from ._entries import (BACKENDS, CONFIG_DTYPES, ConfigFileError, LibraryEntry, _fail, _is_int,  # noqa: F401
                       _is_number, bucket_of, bucket_value)  # re-exported: the schema's names live here too
from .registry import KERNELS_DIR, get_opspec, kernel_path  # noqa: F401 - kernel_path: the shipped variant

__all__ = ["BACKENDS", "CONFIG_DTYPES", "ConfigFileError", "LibraryEntry", "PREDICTION_UNCERTAINTY", "Resolution",
           "SCHEMA_VERSION", "TIERS", "best_recorded", "bucket_distance", "bucket_of", "bucket_value", "case_bucket",
           "clear_caches", "config_dirs", "entry_slot", "kernel_path", "kernel_sha256", "library_roots", "load_file",
           "predicted_win_is_clear", "resolve", "user_library_dir", "validate_entry", "validate_file"]

SCHEMA_VERSION = 1
LIBRARY_ENV = "KERNELAGENT_LIBRARY"
TIERS = ("sku", "family", "compute_capability", "default")
_SKU_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A predicted entry replaces the op's default heuristic only when it predicts a win larger than
# the model's relative uncertainty (``evidence.uncertainty_rel``, this value when absent):
# within it, the model's "winner" is a tie-break. Assumed (±15 %), not yet calibrated on a GPU.
PREDICTION_UNCERTAINTY = 0.15
_FILE_KEYS = {"schema", "op", "sku", "family", "compute_capability", "entries"}


# ---------------------------------------------------------------------------------------------
# Buckets


def bucket_distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """log2 distance between two buckets, or None when they cannot stand in for each other."""
    if set(a) != set(b):
        return None
    total = 0.0
    for k, va in a.items():
        vb = b[k]
        if _is_int(va) and _is_int(vb):
            total += abs(math.log2(max(va, 1)) - math.log2(max(vb, 1)))
        elif va != vb or type(va) is not type(vb):
            return None
    return total


# ---------------------------------------------------------------------------------------------
# Validation


def validate_entry(entry: Any, where: str = "entry") -> LibraryEntry:
    """The typed entry, or ``ConfigFileError`` unless ``entry`` follows schema 1."""
    return LibraryEntry.from_json(entry, where)


def validate_file(data: Any, where: str, op: str | None = None, sku: str | None = None) -> tuple[LibraryEntry, ...]:
    """The file's typed entries; ``ConfigFileError`` unless ``data`` is a schema-1 config file for
    ``op`` and ``sku``."""
    if not isinstance(data, dict):
        _fail(where, "expected a JSON object at the top level")
    if data.get("schema") != SCHEMA_VERSION:
        _fail(where, f"schema must be {SCHEMA_VERSION}, got {data.get('schema')!r}")
    extra = set(data) - _FILE_KEYS
    if extra:
        _fail(where, f"unknown top-level field(s) {sorted(extra)}")
    if not isinstance(data.get("op"), str) or (op is not None and data["op"] != op):
        _fail(where, f"op must be {op!r}, got {data.get('op')!r}")
    if not isinstance(data.get("sku"), str) or not _SKU_ID.match(data["sku"]) \
            or (sku is not None and data["sku"] != sku):
        _fail(where, f"sku must be {sku!r} (the file name), got {data.get('sku')!r}")
    if "family" in data and not isinstance(data["family"], str):
        _fail(where, "family must be a string")
    if "compute_capability" in data:
        cc = data["compute_capability"]
        if not (isinstance(cc, list) and len(cc) == 2 and all(_is_int(v) for v in cc)):
            _fail(where, f"compute_capability must be [major, minor], got {cc!r}")
    if not isinstance(data.get("entries"), list):
        _fail(where, "entries must be a list")
    seen, typed = set(), []
    for i, entry in enumerate(data["entries"]):
        typed.append(validate_entry(entry, f"{where}: entries[{i}]"))
        slot = entry_slot(entry)
        if slot in seen:
            _fail(where, f"entries[{i}] repeats dtype {entry['dtype']} bucket {entry['bucket']}")
        seen.add(slot)
    return tuple(typed)


def entry_slot(entry: Mapping[str, Any]) -> tuple:
    """The (dtype, bucket) an entry answers for; one entry per slot in a file."""
    return entry["dtype"], json.dumps(entry["bucket"], sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Files

_lock = threading.Lock()
_file_cache: dict[Path, tuple[tuple[int, int], tuple[dict, tuple]]] = {}
_sha_cache: dict[str, str] = {}
_resolve_cache: dict[tuple, "Resolution"] = {}
_warned: set = set()


def kernel_sha256(op: str, variant: str = _variants.DEFAULT_VARIANT) -> str | None:
    """sha256 of the variant's file (``kernel``: the shipped ``kernel.py``): the identity an
    entry is tuned against; None for a variant the op does not have."""
    key = (op, variant)
    with _lock:
        if key in _sha_cache:
            return _sha_cache[key]
    try:
        digest = _variants.get_variant(op, variant).sha256
    except _variants.UnknownVariantError:
        return None
    with _lock:
        _sha_cache[key] = digest
    return digest


def user_library_dir() -> Path:
    """The one answer to "where does the library live": where the tuner and nightly write and
    what ``kernelagent.kernels`` reads first. ``$KERNELAGENT_LIBRARY`` if set, else
    ``$XDG_CACHE_HOME/kernelagent/library`` (``~/.cache/kernelagent/library``)."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "kernelagent" / "library"


def library_roots(library: Path | str | None = None) -> list[tuple[Path, str]]:
    """(root, origin) in lookup order: the user library (``library`` when given, as from a
    ``--library`` flag, else ``user_library_dir()``), then the package's shipped configs."""
    user = Path(library).expanduser() if library is not None else user_library_dir()
    roots = [(user, "user")]
    if user.resolve() != KERNELS_DIR.resolve():
        roots.append((KERNELS_DIR, "package"))
    return roots


def config_dirs(op: str) -> list[Path]:
    """Folders searched for ``<sku>.json``: the user library first, then the package's."""
    return [root / op / "configs" for root, _ in library_roots()]


def load_file(path: Path, op: str | None = None) -> dict | None:
    """The validated contents of a config file, or None if it does not exist. Cached by mtime."""
    loaded = _load(path, op)
    return None if loaded is None else loaded[0]


def _load(path: Path, op: str | None) -> tuple[dict, tuple[LibraryEntry, ...]] | None:
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _file_cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigFileError(f"{path}: not valid JSON: {e}") from None
    entries = validate_file(data, str(path), op=op, sku=path.stem)
    with _lock:
        _file_cache[path] = (stamp, (data, entries))
    return data, entries


def _warn_once(key: Any, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------
# Lookup


@dataclass(frozen=True)
class Resolution:
    """The config a call will use and where it came from."""

    config: dict
    tier: str  # one of TIERS
    source: str  # the config file, or "OPSPEC.default_config"
    sku: str | None = None  # the SKU id whose file answered
    measured: bool | None = None
    bucket: dict | None = None  # the entry's bucket (may differ from the call's: nearest)
    variant: str = _variants.DEFAULT_VARIANT   # the kernel file the config is for
    entry: LibraryEntry | None = None

    def describe(self) -> str:
        if self.tier == "default":
            return f"default heuristic ({self.source})"
        kind = "measured" if self.measured else "predicted"
        which = f" variant {self.variant}" if self.variant != _variants.DEFAULT_VARIANT else ""
        return f"{self.tier} match {self.sku} ({kind}, bucket {self.bucket}){which} from {self.source}"


@dataclass(frozen=True)
class _ConfigFile:
    path: Path
    sku: str
    family: str | None
    cc: tuple[int, int] | None
    dir_index: int
    data: dict
    entries: tuple = ()      # the file's entries, typed


def _config_files(op: str, sku_dir: Path | None, extra_dirs: tuple[Path, ...] = ()) -> list[_ConfigFile]:
    files = []
    for i, d in enumerate([*extra_dirs, *config_dirs(op)]):
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.json")):
            loaded = _load(path, op)
            if loaded is None:
                continue
            data, entries = loaded
            known = _device.find_sku(path.stem, sku_dir, strict=False) or {}
            family = data.get("family", known.get("family"))
            cc = data.get("compute_capability", known.get("compute_capability"))
            files.append(_ConfigFile(path, path.stem, family, tuple(cc) if cc else None, i, data, entries))
    return files


def _tiers(files: list[_ConfigFile], identity: _device.DeviceIdentity | None,
           sku_dir: Path | None) -> list[tuple[str, list[_ConfigFile]]]:
    if identity is None:
        return []
    sku = _device.match_sku(identity.name, identity.compute_capability, sku_dir, strict=False)
    used: set[Path] = set()
    tiers = []
    if sku is not None:
        exact = [f for f in files if f.sku == sku["id"]]
        used.update(f.path for f in exact)
        family = [f for f in files if f.path not in used and f.family and f.family == sku["family"]]
        used.update(f.path for f in family)
        tiers += [("sku", exact), ("family", family)]
    cc = [f for f in files if f.path not in used and f.cc == tuple(identity.compute_capability)]
    tiers.append(("compute_capability", cc))
    return tiers


def _fresh_entries(f: _ConfigFile, op: str) -> list[LibraryEntry]:
    """Entries whose variant exists and whose file still hashes to what they were tuned for;
    the others are skipped with one warning per file and variant that names them."""
    fresh, stale, missing = [], {}, {}
    for e in f.entries:
        sha = kernel_sha256(op, e.variant)
        if sha is None:
            missing[e.variant] = missing.get(e.variant, 0) + 1
        elif e.kernel_sha256 != sha:
            stale[e.variant] = (stale.get(e.variant, (0, sha))[0] + 1, sha)
        else:
            fresh.append(e)
    for variant, (n, sha) in stale.items():
        what = "kernel.py" if variant == _variants.DEFAULT_VARIANT else f"variant {variant!r}"
        _warn_once(("stale", f.path, variant, sha),
                   f"{f.path}: {n} entr{'y' if n == 1 else 'ies'} tuned for a different {what} of {op} "
                   f"(kernel_sha256 != {sha[:12]}…: the file changed) skipped as stale; re-tune {op} for {f.sku}")
    for variant, n in missing.items():
        _warn_once(("missing", f.path, variant),
                   f"{f.path}: {n} entr{'y' if n == 1 else 'ies'} for variant {variant!r} of {op}, which is not in "
                   f"the library (no {op}/variants/{variant}.py), skipped")
    return fresh


def predicted_win_is_clear(evidence: Mapping[str, Any]) -> bool:
    """Does a predicted entry beat the default by more than the model's own uncertainty?"""
    speedup = evidence.get("speedup_vs_default")
    u = evidence.get("uncertainty_rel", PREDICTION_UNCERTAINTY)
    return _is_number(speedup) and _is_number(u) and speedup >= 1.0 + u


def _best_in_tier(tier_files: list[_ConfigFile], op: str, dtype: str, bucket: dict,
                  measured: bool, variant: str | None = None) -> tuple[_ConfigFile, LibraryEntry] | None:
    best = None
    for f in tier_files:
        for e in _fresh_entries(f, op):
            if e.dtype != dtype or e.evidence.measured is not measured or variant not in (None, e.variant):
                continue
            if not measured and not predicted_win_is_clear(e.evidence.to_json()):
                continue
            dist = bucket_distance(bucket, e.bucket)
            if dist is None:
                continue
            rank = (f.dir_index, dist, f.sku)
            if best is None or rank < best[0]:
                best = (rank, f, e)
    return None if best is None else (best[1], best[2])


def arch_of(identity: _device.DeviceIdentity | None) -> str | None:
    """``sm_90`` for compute capability 9.0; None without a device (the CPU interpreter)."""
    if identity is None:
        return None
    major, minor = identity.compute_capability
    return f"sm_{major}{minor}"


def arch_default(op: str, arch: str | None, sm_count: int | None) -> tuple[str, dict] | None:
    """The op's default variant on ``arch`` (``OPSPEC.arch_variants``) and the config it runs
    with there: the variant's own defaults, but a persistent grid (``NUM_PROGRAMS`` in its
    tuning space) gets one program per SM of the device (the variant's own default assumes an
    H100 SXM's 132; an H100 PCIe has 114). None where the op has no default for ``arch``.
    Dispatch, ``kernelagent compile`` and the tuner's baseline all take it from here."""
    variant = get_opspec(op).arch_variants.get(arch) if arch else None
    if variant is None:
        return None
    config = {}
    if "NUM_PROGRAMS" in (_variants.get_variant(op, variant).tuning_space or {}) \
            and isinstance(sm_count, int) and sm_count > 0:
        config["NUM_PROGRAMS"] = sm_count
    return variant, config


def default_resolution(op: str, shape_key: Mapping[str, Any], identity: _device.DeviceIdentity | None = None,
                       use_arch: bool = True) -> Resolution:
    """The default when no library entry answers: the op's arch variant on that architecture
    (``arch_default``), else ``kernel.py`` with ``OPSPEC.default_config``."""
    found = None
    if use_arch and identity is not None:
        sku = _device.match_sku(identity.name, identity.compute_capability, strict=False) or {}
        found = arch_default(op, arch_of(identity), sku.get("sm_count"))
    if found is not None:
        variant, config = found
        return Resolution(config, "default", f"variants/{variant}.py default_config ({arch_of(identity)} default)",
                          variant=variant)
    return Resolution(dict(get_opspec(op).default_config(dict(shape_key))), "default", "OPSPEC.default_config")


def resolve(op: str, dtype: str, shape_key: Mapping[str, Any],
            identity: _device.DeviceIdentity | None, sku_dir: Path | str | None = None) -> Resolution:
    """The config for ``op`` on ``identity`` for this dtype and shape key (see the docstring)."""
    bucket = bucket_of(shape_key)
    sku_dir = Path(sku_dir) if sku_dir is not None else None
    cache_key = (op, dtype, json.dumps(bucket, sort_keys=True, default=str), identity,
                 str(user_library_dir()), str(sku_dir) if sku_dir else os.environ.get(_device.SKU_DIR_ENV))
    with _lock:
        hit = _resolve_cache.get(cache_key)
    if hit is not None:
        return hit
    result = None
    tiers = _tiers(_config_files(op, sku_dir), identity, sku_dir) if identity is not None else []
    for measured in (True, False):
        for tier, tier_files in tiers:
            found = _best_in_tier(tier_files, op, dtype, bucket, measured)
            if found is not None:
                f, e = found
                result = Resolution(dict(e.config), tier, str(f.path), f.sku, measured, dict(e.bucket),
                                    variant=e.variant, entry=e)
                break
        if result is not None:
            break
    if result is None:
        result = default_resolution(op, shape_key, identity)
    with _lock:
        _resolve_cache[cache_key] = result
    return result


def case_bucket(op: str, params: Mapping[str, Any], dtype: str) -> dict:
    """The bucket a Case of ``op`` lands in, computed on meta tensors (no memory, no values)."""
    import torch

    from .spec import Case

    spec = get_opspec(op)
    with torch.device("meta"):
        call = spec.build(Case(params=dict(params), dtype=dtype))
    return bucket_of(spec.shape_key(call))


def best_recorded(op: str, sku: str, dtype: str, bucket: Mapping[str, Any],
                  extra_dirs: tuple[Path, ...] = (), variant: str | None = None) -> LibraryEntry | None:
    """The entry ``resolve`` would pick from ``sku``'s own files (measured before predicted,
    nearest bucket, stale kernel hashes skipped), or None. For warm starts across SKUs."""
    files = [f for f in _config_files(op, None, extra_dirs) if f.sku == sku]
    for measured in (True, False):
        found = _best_in_tier(files, op, dtype, dict(bucket), measured, variant)
        if found is not None:
            return found[1]
    return None


def clear_caches() -> None:
    """Forget loaded files, answers, kernel hashes and one-time warnings (tests, after a re-tune)."""
    with _lock:
        _file_cache.clear()
        _sha_cache.clear()
        _resolve_cache.clear()
        _warned.clear()
    _device.clear_caches()
    _variants.clear_caches()
