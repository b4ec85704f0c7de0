"""What the nightly checks: every library entry (and each op's default heuristic), read defensively.

The runtime loader (``kernels/_configs.py``) rejects a whole file for one bad entry, which is
right when serving; the nightly instead reports each broken entry by name and keeps checking
the rest. A file that is not JSON, or whose header is wrong, is one failed item; inside a good
file each entry is validated on its own, and an entry tuned for a different ``kernel.py``
(``kernel_sha256`` mismatch) is a failed item too. Nothing here writes the library.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..kernels import _configs
from ..kernels.registry import kernel_path


@dataclass
class LibraryItem:
    """One row of the nightly: a library entry, a file that could not be read, or an op's default."""

    kind: str                          # "entry" | "file" | "default"
    op: str
    name: str                          # stable, human-readable: "softmax/h100-sxm bf16 cols=4096"
    sku: str | None = None
    dtype: str | None = None
    bucket: dict | None = None
    config: dict | None = None         # None: the kernel's own default heuristic per call
    file: str | None = None
    index: int | None = None           # position in the file's "entries"
    evidence: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    kernel_sha256: str | None = None
    variant: str = "kernel"            # the kernel file the entry is for (kernels/_variants.py)
    problem: str | None = None         # set: fails without being verified ("malformed" | "stale")
    problem_detail: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "op": self.op, "sku": self.sku, "dtype": self.dtype,
                "bucket": self.bucket, "config": self.config, "file": self.file, "index": self.index,
                "kernel_sha256": self.kernel_sha256, "variant": self.variant, "evidence": self.evidence or None,
                "provenance": self.provenance or None}


def bucket_label(bucket: dict | None) -> str:
    if not bucket:
        return ""
    return ",".join(f"{k}={v}" for k, v in bucket.items())


def current_kernel(op: str, variant: str = "kernel") -> tuple[str, str]:
    """(source text, sha256 of its bytes) of the op's variant file (``kernel``: the shipped
    ``kernel.py``), read once together."""
    from ..kernels import _variants

    path = kernel_path(op) if variant == "kernel" else _variants.get_variant(op, variant).path
    raw = path.read_bytes()
    return raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()


def library_dirs(op: str, library: Path | None) -> list[tuple[Path, str]]:
    """(configs folder, origin) pairs to scan. ``--library DIR`` alone replaces the search;
    otherwise the folders the runtime reads, in its order (``_configs.library_roots``)."""
    if library is not None:
        return [(Path(library).expanduser() / op / "configs", "library")]
    return [(root / op / "configs", origin) for root, origin in _configs.library_roots()]


def scan(ops: Sequence[str], *, library: Path | None = None, skus: Iterable[str] | None = None,
         include_default: bool = True, default_cases: dict[str, tuple[str, dict]] | None = None) -> list[LibraryItem]:
    """Every item to check for ``ops``; ``skus`` limits entries to those SKU files (GPU mode).

    ``default_cases`` maps an op to the (dtype, bucket) its default-heuristic item is measured
    at (only used to label and key that item).
    """
    wanted = set(skus) if skus is not None else None
    items: list[LibraryItem] = []
    for op in ops:
        _, sha = current_kernel(op)
        if include_default:
            dtype, bucket = (default_cases or {}).get(op, (None, None))
            items.append(LibraryItem("default", op, f"{op}/default", dtype=dtype, bucket=bucket, config=None,
                                     kernel_sha256=sha))
        for folder, origin in library_dirs(op, library):
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                if wanted is not None and path.stem not in wanted:
                    continue
                items.extend(_scan_file(path, op, sha, origin))
    seen: set[str] = set()
    for item in items:  # names key the history: keep them unique (a repeated slot, say)
        if item.name in seen:
            item.name = f"{item.name} (entries[{item.index}])"
        seen.add(item.name)
    return items


def _scan_file(path: Path, op: str, sha: str, origin: str) -> list[LibraryItem]:
    sku = path.stem
    suffix = " [user]" if origin == "user" else ""
    file_name = f"{op}/{path.name}{suffix}"

    def broken(detail: str) -> list[LibraryItem]:
        return [LibraryItem("file", op, file_name, sku=sku, file=str(path), problem="malformed",
                            problem_detail=detail)]

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        return broken(f"cannot read: {e}")
    except json.JSONDecodeError as e:
        return broken(f"not valid JSON: {e}")
    if not isinstance(data, dict):
        return broken("expected a JSON object at the top level")
    try:  # the header alone, with the entries checked one by one below
        _configs.validate_file({**data, "entries": []}, str(path), op=op, sku=sku)
    except _configs.ConfigFileError as e:
        return broken(str(e))
    if not isinstance(data.get("entries"), list):
        return broken(f"{path}: entries must be a list")

    items, seen = [], set()
    for i, raw in enumerate(data["entries"]):
        label = _entry_label(raw, i)
        item = LibraryItem("entry", op, f"{op}/{sku} {label}{suffix}", sku=sku, file=str(path), index=i)
        try:
            e = _configs.validate_entry(raw, f"{path}: entries[{i}]")
        except _configs.ConfigFileError as err:
            item.problem, item.problem_detail = "malformed", str(err)
            items.append(item)
            continue
        item.dtype, item.bucket, item.config = e.dtype, dict(e.bucket), dict(e.config)
        item.evidence, item.provenance = e.evidence.to_json(), e.provenance.to_json()
        item.kernel_sha256, item.variant = e.kernel_sha256, e.variant
        current = sha if item.variant == "kernel" else _configs.kernel_sha256(op, item.variant)
        slot = _configs.entry_slot(raw)
        if slot in seen:
            item.problem, item.problem_detail = "malformed", (f"{path}: entries[{i}] repeats dtype {raw['dtype']} "
                                                              f"bucket {raw['bucket']}")
        elif current is None:
            item.problem = "stale"
            item.problem_detail = (f"{path}: entries[{i}] is for variant {item.variant!r} of {op}, which is not in the "
                                   f"library (no {op}/variants/{item.variant}.py); re-tune {op} for {sku}")
        elif e.kernel_sha256 != current:
            what = f"kernels/{op}/kernel.py" if item.variant == "kernel" else f"variant {item.variant!r}"
            item.problem = "stale"
            item.problem_detail = (f"{path}: entries[{i}] was tuned for {what} sha256 {e.kernel_sha256[:12]}…, "
                                   f"the current file is {current[:12]}…; re-tune {op} for {sku}")
        seen.add(slot)
        items.append(item)
    return items


def _entry_label(raw: Any, i: int) -> str:
    """dtype and bucket when they can be read, else the entry's position."""
    if isinstance(raw, dict) and isinstance(raw.get("dtype"), str) and isinstance(raw.get("bucket"), dict):
        return f"{raw['dtype']} {bucket_label(raw['bucket'])}".strip()
    return f"entries[{i}]"
