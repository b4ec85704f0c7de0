"""Which GPU is this: device identity and SKU matching for the library's config lookup.

SKU files are read, checked and matched by ``_sku`` (shared with ``kernelagent.sku``, the CLI's
registry). What the runtime needs of a file is its matching fields (``_sku.MATCH_FIELDS``)::

    {"id": "h100-sxm", "family": "hopper", "compute_capability": [9, 0],
     "match": ["H100.*(SXM|HBM3)", ...]}

``match`` holds regular expressions searched (case-insensitively) in the name the driver
reports (``torch.cuda.get_device_name``). SKU files come from the ``skus/`` folder of the
installed ``kernelagent`` package plus the user folder (``$KERNELAGENT_SKU_DIR``, else
``~/.cache/kernelagent/skus``, where ``kernelagent sku add`` puts them); a user file replaces a
shipped one of the same id. ``kernelagent.kernels`` imports no kernelagent module outside itself.

Device identity is injectable, for tests and for targeting a GPU that is not present:
``override_device(name, cc)`` (a context manager, process-wide) or the env pair
``KERNELAGENT_DEVICE_NAME`` / ``KERNELAGENT_DEVICE_CC`` (``"9.0"``). On a CUDA tensor without
an override, the identity is what the driver reports. On a CPU tensor (interpreter mode) there
is no identity unless one is injected, and the op's default config is used.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from . import _sku
from ._sku import SKU_DIR_ENV, SkuFileError

__all__ = ["SKU_DIR_ENV", "SkuFileError", "DeviceIdentity", "user_sku_dir", "sku_dir", "load_skus", "find_sku",
           "match_sku", "override_device", "injected_identity", "identify", "clear_caches"]
if TYPE_CHECKING:  # torch is imported by identify() only: the config files' reader needs none
    import torch

DEVICE_NAME_ENV = "KERNELAGENT_DEVICE_NAME"
DEVICE_CC_ENV = "KERNELAGENT_DEVICE_CC"


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
    return _sku.user_sku_dir()


def sku_dir() -> Path | None:
    """The shipped SKU data files, ``kernelagent/skus``."""
    d = _sku.shipped_sku_dir()
    return d if d.is_dir() else None


def load_skus(directory: Path | str | None = None, strict: bool = True) -> list[dict]:
    """Every SKU data file in ``directory`` (default: the shipped folder plus the user folder,
    the user's file winning on equal id), sorted by id; cached.

    A file with a problem in a field that matching reads (``_sku.MATCH_FIELDS``) raises
    ``SkuFileError``; with ``strict=False`` (the runtime lookup, which must not fail a user's
    call over a broken spec sheet) it is skipped with one warning.
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
        for f in _sku.read_dir(d, "user"):
            problems = _sku.matching_problems(f.problems)
            if problems:
                errors.append(SkuFileError(problems))
            else:
                skus.append(f.data)
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
    """The SKU whose ``match`` patterns fit ``device_name``, or None (``_sku.match``: equal
    compute capability first, then the most specific pattern, then the smallest id)."""
    found = _sku.match(device_name, compute_capability, load_skus(directory, strict))
    return dict(found) if found is not None else None


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
    import torch

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
