"""New measurements of library entries: the GPU backend's output and the replay backend's input.

A GPU night writes every sample it took to ``<out>/samples.json``; ``--measure replay:FILE``
reads the same format back, so a night can be replayed anywhere (CPU CI included) and the gate
reaches the same decisions. Format (plain or gzipped JSON)::

    {"format": "kernelagent-nightly-samples", "version": 1,
     "device": "NVIDIA H100 80GB HBM3", "sku": "h100-sxm",
     "measurements": [
       {"op": "softmax", "sku": "h100-sxm", "dtype": "bf16", "bucket": {"cols": 4096},
        "config": {"BLOCK_N": 4096, "num_warps": 8},      # optional; null for the default heuristic
        "case": {"batch": 0, "rows": 4096, "cols": 4096}, # optional: the shape measured
        "latency_us": [12.4, 12.6, ...],                   # repeated samples, one per timed call
        "energy_uj": [810.0, 825.0, ...] | null,           # one per energy window (per call)
        "pytorch_latency_us": [20.1, ...] | null,          # the op's PyTorch reference, same case
        "flops": 8.4e7, "bytes": 6.7e7,                    # optional: for % of roofline
        "conditions": {"sm_clock_mhz": 1980, ...}}         # optional: what the GPU reported
     ]}

A measurement answers the item with the same op, SKU, dtype and bucket (the default-heuristic
item of an op: ``"sku": null``). When it names a ``config`` that differs from the entry's, it
measured something else and is not used (the report says so).
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..kernels._configs import bucket_of
from .inventory import LibraryItem

SAMPLES_FORMAT = "kernelagent-nightly-samples"


@dataclass
class MeasuredSamples:
    """Repeated measurements of one item under one set of conditions."""

    op: str
    sku: str | None
    dtype: str | None
    bucket: dict | None
    config: dict | None
    latency_us: list[float]
    energy_uj: list[float] | None = None
    pytorch_latency_us: list[float] | None = None
    case: dict | None = None
    flops: float | None = None
    bytes: float | None = None
    backend: str = "replay"
    conditions: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"op": self.op, "sku": self.sku, "dtype": self.dtype, "bucket": self.bucket, "config": self.config,
                "case": self.case, "latency_us": self.latency_us, "energy_uj": self.energy_uj,
                "pytorch_latency_us": self.pytorch_latency_us, "flops": self.flops, "bytes": self.bytes,
                "conditions": self.conditions}


def _numbers(v: Any, what: str, where: str, allow_none: bool = True) -> list[float] | None:
    if v is None and allow_none:
        return None
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                          and math.isfinite(x) and x > 0 for x in v):
        raise BadInput(f"{where}: {what} must be a list of positive numbers")
    return [float(x) for x in v]


def load_recording(path: Path | str) -> tuple[dict, list[MeasuredSamples]]:
    """(header, measurements) of a samples file; a malformed file is BadInput naming the field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BadInput(f"cannot read --measure replay file {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"replay file {path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SAMPLES_FORMAT:
        raise BadInput(f"replay file {path}: expected \"format\": \"{SAMPLES_FORMAT}\" (the samples.json a GPU "
                       "nightly writes; see docs/NIGHTLY.md)")
    if doc.get("version") != 1:
        raise BadInput(f"replay file {path}: unsupported version {doc.get('version')!r} (this build reads 1)")
    ms = doc.get("measurements")
    if not isinstance(ms, list):
        raise BadInput(f"replay file {path}: 'measurements' must be a list")
    out = []
    for i, m in enumerate(ms):
        where = f"replay file {path}: measurements[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("op"), str):
            raise BadInput(f"{where}: needs an 'op'")
        bucket = m.get("bucket")
        if bucket is not None and not isinstance(bucket, dict):
            raise BadInput(f"{where}: 'bucket' must be an object")
        config = m.get("config")
        if config is not None and not isinstance(config, dict):
            raise BadInput(f"{where}: 'config' must be an object or null")
        latency = _numbers(m.get("latency_us"), "latency_us", where, allow_none=False)
        out.append(MeasuredSamples(
            op=m["op"], sku=m.get("sku"), dtype=m.get("dtype"), bucket=bucket_of(bucket) if bucket else None,
            config=config, latency_us=latency, energy_uj=_numbers(m.get("energy_uj"), "energy_uj", where),
            pytorch_latency_us=_numbers(m.get("pytorch_latency_us"), "pytorch_latency_us", where),
            case=m.get("case") if isinstance(m.get("case"), dict) else None,
            flops=_positive(m.get("flops")), bytes=_positive(m.get("bytes")), backend="replay",
            conditions=m.get("conditions") if isinstance(m.get("conditions"), dict) else {}))
    header = {k: doc.get(k) for k in ("device", "sku", "environment")}
    return header, out


def _positive(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 else None


def save_recording(path: Path | str, samples: list[MeasuredSamples], *, device: str, sku: str | None,
                   environment: dict | None = None) -> Path:
    path = Path(path)
    doc = {"format": SAMPLES_FORMAT, "version": 1, "device": device, "sku": sku, "environment": environment,
           "measurements": [s.to_json() for s in samples]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


class ReplayMeasurer:
    """Answers items from a recording; ``why_not`` says why an item got no samples."""

    backend = "replay"

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.header, self.samples = load_recording(path)

    def measure(self, item: LibraryItem) -> tuple[MeasuredSamples | None, str]:
        for s in self.samples:
            if s.op != item.op:
                continue
            if item.kind == "default":
                if s.sku is None and (s.config is None or s.config == "default"):
                    return s, ""
                continue
            if s.sku == item.sku and s.dtype == item.dtype and s.bucket == item.bucket:
                if s.config is not None and s.config != item.config:
                    return None, (f"the recording measured config {s.config}, the entry's is {item.config}: "
                                  "not the same kernel launch")
                return s, ""
        return None, f"no recorded samples for this entry in {self.path}"
