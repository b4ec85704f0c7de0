"""Which GPU is this: device identity and SKU matching for the library's config lookup.

A SKU data file (``kernelagent/skus/<id>.json``) has at least::

    {"id": "h100-sxm", "family": "hopper", "arch": "sm_90", "compute_capability": [9, 0],
     "match": ["H100.*(SXM|HBM3)", ...]}

``match`` holds regular expressions searched (case-insensitively) in the name the driver
reports (``torch.cuda.get_device_name``). SKU files come from the ``skus/`` folder of the
installed ``kernelagent`` package plus the user folder (``$KERNELAGENT_SKU_DIR``, else
``~/.cache/kernelagent/skus``, where ``kernelagent sku add`` puts them). It is read with plain
``json``: ``kernelagent.kernels`` imports no other kernelagent module.

Device identity is injectable, for tests and for targeting a GPU that is not present:
``override_device(name, cc)`` (a context manager, process-wide) or the env pair
``KERNELAGENT_DEVICE_NAME`` / ``KERNELAGENT_DEVICE_CC`` (``"9.0"``). On a CUDA tensor without
an override, the identity is what the driver reports. On a CPU tensor (interpreter mode) there
is no identity unless one is injected, and the op's default config is used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

SKU_DIR_ENV = "KERNELAGENT_SKU_DIR"
DEVICE_NAME_ENV = "KERNELAGENT_DEVICE_NAME"
DEVICE_CC_ENV = "KERNELAGENT_DEVICE_CC"


class SkuFileError(ValueError):
    """A SKU data file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class DeviceIdentity:
    """What the config lookup knows about a device: its reported name and compute capability."""

    name: str
    compute_capability: tuple[int, int]

    def describe(self) -> str:
        return f"{self.name} (cc {self.compute_capability[0]}.{self.compute_capability[1]})"


_lock = threading.Lock()
_override: DeviceIdentity | None = None
_sku_cache: dict[Path, tuple[list[dict], list[SkuFileError]]] = {}
_warned: set[str] = set()
_cuda_identities: dict[int, DeviceIdentity] = {}


def user_sku_dir() -> Path:
    """User SKU files (as ``kernelagent sku add`` writes them): ``$KERNELAGENT_SKU_DIR``, else
    ``~/.cache/kernelagent/skus``. Searched in addition to the shipped ones, and wins on equal id."""
    env = os.environ.get(SKU_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kernelagent" / "skus"


def sku_dir() -> Path | None:
    """The shipped SKU data files, ``kernelagent/skus``."""
    # find_spec of the parent package imports nothing new: kernelagent is already imported
    # as the parent of kernelagent.kernels.
    spec = importlib.util.find_spec("kernelagent")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / "skus"
        if candidate.is_dir():
            return candidate
    return None


def _check_sku(data: object, path: Path) -> dict:
    if not isinstance(data, dict):
        raise SkuFileError(f"{path}: expected a JSON object at the top level")
    for key, kind in (("id", str), ("family", str), ("match", list), ("compute_capability", list)):
        if not isinstance(data.get(key), kind):
            raise SkuFileError(f"{path}: field {key!r} must be a {kind.__name__}")
    cc = data["compute_capability"]
    if len(cc) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in cc):
        raise SkuFileError(f"{path}: 'compute_capability' must be [major, minor] integers, got {cc!r}")
    for pattern in data["match"]:
        try:
            re.compile(pattern, re.IGNORECASE)
        except (re.error, TypeError) as e:
            raise SkuFileError(f"{path}: bad 'match' pattern {pattern!r}: {e}") from None
    return data


def load_skus(directory: Path | str | None = None, strict: bool = True) -> list[dict]:
    """Every SKU data file in ``directory`` (default: the shipped folder plus the user folder,
    the user's file winning on equal id), sorted by id; cached.

    A malformed file raises ``SkuFileError``; with ``strict=False`` (the runtime lookup, which
    must not fail a user's call over a broken spec sheet) it is skipped with one warning.
    """
    if directory is None:
        merged = {s["id"]: s for s in _load_dir(sku_dir(), strict)}
        merged.update({s["id"]: s for s in _load_dir(user_sku_dir(), strict)})
        return [merged[k] for k in sorted(merged)]
    return _load_dir(Path(directory), strict)


def _load_dir(d: Path | None, strict: bool) -> list[dict]:
    if d is None or not d.is_dir():
        return []
    d = d.resolve()
    with _lock:
        hit = _sku_cache.get(d)
    if hit is None:
        skus, errors = [], []
        for path in sorted(d.glob("*.json")):
            try:
                try:
                    data = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as e:
                    raise SkuFileError(f"{path}: not readable JSON: {e}") from None
                skus.append(_check_sku(data, path))
            except SkuFileError as e:
                errors.append(e)
        skus.sort(key=lambda s: s["id"])
        hit = (skus, errors)
        with _lock:
            _sku_cache[d] = hit
    skus, errors = hit
    if errors:
        if strict:
            raise errors[0]
        with _lock:
            fresh = [e for e in errors if str(e) not in _warned]
            _warned.update(str(e) for e in fresh)
        for e in fresh:
            warnings.warn(f"{e}; SKU file skipped", RuntimeWarning, stacklevel=2)
    return skus


def find_sku(sku_id: str, directory: Path | str | None = None, strict: bool = True) -> dict | None:
    """The SKU data with this id, or None."""
    for sku in load_skus(directory, strict):
        if sku["id"] == sku_id:
            return dict(sku)
    return None


def match_sku(device_name: str, compute_capability: tuple[int, int],
              directory: Path | str | None = None, strict: bool = True) -> dict | None:
    """The SKU whose ``match`` patterns fit ``device_name``, or None.

    When several SKUs match, the one whose compute capability equals the device's wins, then
    the one whose pattern matched the longest span of the name (the most specific), then the
    smallest id, so the answer does not depend on file order.
    """
    cc = tuple(int(v) for v in compute_capability)
    best: tuple | None = None
    for sku in load_skus(directory, strict):
        span = 0
        for pattern in sku["match"]:
            m = re.search(pattern, device_name, re.IGNORECASE)
            if m is not None:
                span = max(span, m.end() - m.start(), 1)
        if span == 0:
            continue
        rank = (tuple(sku["compute_capability"]) == cc, span)
        if best is None or rank > best[0]:
            best = (rank, sku)
    return dict(best[1]) if best is not None else None


@contextlib.contextmanager
def override_device(name: str, compute_capability: tuple[int, int]) -> Iterator[DeviceIdentity]:
    """Pretend every device is ``name`` with ``compute_capability`` inside the block."""
    global _override
    previous = _override
    _override = DeviceIdentity(str(name), (int(compute_capability[0]), int(compute_capability[1])))
    try:
        yield _override
    finally:
        _override = previous


def _env_identity() -> DeviceIdentity | None:
    name = os.environ.get(DEVICE_NAME_ENV)
    if not name:
        return None
    cc_text = os.environ.get(DEVICE_CC_ENV, "0.0")
    try:
        major, minor = (int(v) for v in cc_text.split("."))
    except ValueError:
        raise ValueError(f"{DEVICE_CC_ENV}={cc_text!r}: expected MAJOR.MINOR, e.g. 9.0") from None
    return DeviceIdentity(name, (major, minor))


def injected_identity() -> DeviceIdentity | None:
    """The identity set by ``override_device`` or the env pair, if any."""
    return _override if _override is not None else _env_identity()


def identify(device: torch.device) -> DeviceIdentity | None:
    """The identity of ``device``: injected if set, else the driver's report for CUDA, else None."""
    injected = injected_identity()
    if injected is not None:
        return injected
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    found = _cuda_identities.get(index)
    if found is None:
        major, minor = torch.cuda.get_device_capability(index)
        found = DeviceIdentity(torch.cuda.get_device_name(index), (int(major), int(minor)))
        _cuda_identities[index] = found
    return found


def clear_caches() -> None:
    with _lock:
        _sku_cache.clear()
        _cuda_identities.clear()
        _warned.clear()
