"""Writing the tuned-config library: the trusted parent's side of ``kernels/<op>/configs/``.

The tuner calls ``record_entry`` with a config it has re-verified and re-measured. The file
format, validation and the runtime lookup live in ``kernelagent.kernels._configs`` (the reader
side, which users import); this module only writes, so that serving the library never imports
the tuner and the tuner never hand-edits JSON.

Concurrency: many tuner processes (one per GPU, or one per op) may record into the same file.
Each write takes an exclusive ``fcntl.flock`` on a sibling lock file (``.<sku>.json.lock``),
re-reads the file under the lock, merges, and replaces the file atomically (temp file in the
same folder, fsync, ``os.replace``), so readers see the old file or the new one, never half of
one, and no writer's entry is lost. POSIX only (the GPU machines this targets).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from kernelagent.kernels import _configs, _device
from kernelagent.kernels._entries import LibraryEntry
from kernelagent.kernels.registry import UnknownOpError, op_names

ACTIONS = ("added", "replaced", "kept")


@dataclass(frozen=True)
class RecordOutcome:
    """Where an entry went and what happened: ``added``, ``replaced`` an older one, or ``kept``
    the existing one (a predicted entry never displaces a measured one)."""

    path: Path
    action: str


def kernel_sha256(op: str, variant: str = "kernel") -> str:
    """sha256 of the variant's file (``kernel``: ``kernels/<op>/kernel.py``): every entry records
    the kernel file it was tuned for."""
    sha = _configs.kernel_sha256(op, variant)
    if sha is None:
        raise ValueError(f"op {op} has no variant {variant!r}")
    return sha


def config_path(op: str, sku: str, library_dir: Path | str | None = None) -> Path:
    """``<library_dir or the user library>/<op>/configs/<sku>.json`` (``_configs.user_library_dir``:
    the folder ``kernelagent.kernels`` reads first)."""
    if op not in op_names():
        raise UnknownOpError(f"unknown op {op!r}; registered ops: {', '.join(op_names())}")
    if not _configs._SKU_ID.match(sku):
        raise ValueError(f"bad SKU id {sku!r}: letters, digits, '.', '_' and '-' only")
    base = Path(library_dir).expanduser() if library_dir is not None else _configs.user_library_dir()
    return base / op / "configs" / f"{sku}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _write_atomically(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _new_file(op: str, sku: str, sku_info: Mapping[str, Any] | None) -> dict:
    data: dict[str, Any] = {"schema": _configs.SCHEMA_VERSION, "op": op, "sku": sku}
    info = sku_info if sku_info is not None else _device.find_sku(sku)
    if info:
        if isinstance(info.get("family"), str):
            data["family"] = info["family"]
        if info.get("compute_capability") is not None:
            data["compute_capability"] = [int(v) for v in info["compute_capability"]]
    data["entries"] = []
    return data


def _sort_key(entry: Mapping[str, Any]) -> tuple:
    return entry["dtype"], json.dumps(entry["bucket"], sort_keys=True)


def record_entry(op: str, sku: str, entry: "LibraryEntry | Mapping[str, Any]", library_dir: Path | str | None = None,
                 *, sku_info: Mapping[str, Any] | None = None) -> RecordOutcome:
    """Merge one validated ``entry`` into ``<library_dir or the user library>/<op>/configs/<sku>.json``.

    The entry replaces one with the same dtype and bucket only if it is measured or the old
    one is predicted. ``sku_info`` (the SKU data: ``family``, ``compute_capability``) fills a new
    file's header; by default it is looked up in the SKU folder. Raises ``ConfigFileError`` for
    a malformed entry or a malformed existing file (which is left untouched).
    """
    path = config_path(op, sku, library_dir)
    if isinstance(entry, LibraryEntry):
        entry = entry.to_json()
    entry = copy.deepcopy(dict(entry))
    _configs.validate_entry(entry, f"entry for {op}/{sku}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise _configs.ConfigFileError(f"{path}: not valid JSON: {e}") from None
            _configs.validate_file(data, str(path), op=op, sku=sku)
        else:
            data = _new_file(op, sku, sku_info)
        slot = _configs.entry_slot(entry)
        entries = data["entries"]
        at = next((i for i, e in enumerate(entries) if _configs.entry_slot(e) == slot), None)
        if at is None:
            entries.append(entry)
            action = "added"
        elif entry["evidence"]["measured"] or not entries[at]["evidence"]["measured"]:
            entries[at] = entry
            action = "replaced"
        else:
            action = "kept"
        if action != "kept":
            entries.sort(key=_sort_key)
            _write_atomically(path, data)
    return RecordOutcome(path, action)
