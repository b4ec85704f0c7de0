"""Library entries as types: ``LibraryEntry`` (op × SKU × dtype × bucket → variant + config),
with its ``Evidence`` (how well it ran, and how that was known) and ``Provenance`` (where and
with what it was tuned). Validated on write (``kernelagent.library.record_entry``) and on read
(``_configs.load_file``); the JSON form is schema 1 of ``_configs`` (``variant`` is optional
there: absent means the shipped ``kernel``). Torch-free.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

CONFIG_DTYPES = ("fp32", "fp16", "bf16", "fp64")
BACKENDS = ("gpu", "replay", "model")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VARIANT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_ENTRY_KEYS = {"dtype", "bucket", "config", "kernel_sha256", "evidence", "provenance"}
_OPTIONAL_KEYS = {"variant"}


class ConfigFileError(ValueError):
    """A config file or entry that breaks the schema; the message names the file and the field."""


def _fail(where: str, msg: str):
    raise ConfigFileError(f"{where}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def bucket_value(v: Any) -> Any:
    """An integer rounded up to a power of two (0 and negatives unchanged); anything else as is."""
    if _is_int(v):
        return v if v <= 1 else 1 << (v - 1).bit_length()
    return v


def bucket_of(shape_key: Mapping[str, Any]) -> dict:
    """The bucket a shape key falls in: ``{"cols": 1000}`` → ``{"cols": 1024}``."""
    return {str(k): bucket_value(v) for k, v in shape_key.items()}


def _scalar_map(m: Any, where: str, name: str, allow_none: bool) -> dict:
    if not isinstance(m, dict):
        _fail(where, f"{name!r} must be an object, got {type(m).__name__}")
    for k, v in m.items():
        if not (isinstance(v, (bool, int, float, str)) or (allow_none and v is None)):
            _fail(where, f"{name}.{k} must be a number, bool or string, got {type(v).__name__}")
    return dict(m)


@dataclass(frozen=True)
class Evidence:
    latency_us: float
    energy_uj: float | None
    backend: str                     # gpu | replay | model
    measured: bool                   # False: predicted (the model backend)
    trials: int
    speedup_vs_default: float | None
    extra: dict = field(default_factory=dict)   # more keys: policy, case, study, uncertainty_rel, …

    @classmethod
    def from_json(cls, ev: Any, where: str) -> "Evidence":
        if not isinstance(ev, dict):
            _fail(where, "evidence must be an object")
        for key in ("latency_us", "energy_uj", "backend", "measured", "trials", "speedup_vs_default"):
            if key not in ev:
                _fail(where, f"evidence.{key} is missing")
        if not _is_number(ev["latency_us"]) or ev["latency_us"] <= 0:
            _fail(where, f"evidence.latency_us must be a positive number, got {ev['latency_us']!r}")
        for key in ("energy_uj", "speedup_vs_default"):
            if ev[key] is not None and (not _is_number(ev[key]) or ev[key] < 0):
                _fail(where, f"evidence.{key} must be a non-negative number or null, got {ev[key]!r}")
        if ev["backend"] not in BACKENDS:
            _fail(where, f"evidence.backend must be one of {BACKENDS}, got {ev['backend']!r}")
        if not isinstance(ev["measured"], bool):
            _fail(where, f"evidence.measured must be true or false, got {ev['measured']!r}")
        if ev["backend"] == "model" and ev["measured"]:
            _fail(where, "evidence.backend 'model' is a prediction: measured must be false")
        if ev["backend"] == "gpu" and not ev["measured"]:
            _fail(where, "evidence.backend 'gpu' is a measurement: measured must be true")
        if not _is_int(ev["trials"]) or ev["trials"] < 0:
            _fail(where, f"evidence.trials must be a non-negative integer, got {ev['trials']!r}")
        core = {"latency_us", "energy_uj", "backend", "measured", "trials", "speedup_vs_default"}
        return cls(ev["latency_us"], ev["energy_uj"], ev["backend"], ev["measured"], ev["trials"],
                   ev["speedup_vs_default"], {k: v for k, v in ev.items() if k not in core})

    def to_json(self) -> dict:
        return {"latency_us": self.latency_us, "energy_uj": self.energy_uj, "backend": self.backend,
                "measured": self.measured, "trials": self.trials, "speedup_vs_default": self.speedup_vs_default,
                **self.extra}


@dataclass(frozen=True)
class Provenance:
    triton: str
    torch: str
    cuda: str | None
    device: str
    date: str                        # ISO-8601
    method: str                      # how the config was chosen
    extra: dict = field(default_factory=dict)   # python, platform, variant origin, …

    @classmethod
    def from_json(cls, pv: Any, where: str) -> "Provenance":
        if not isinstance(pv, dict):
            _fail(where, "provenance must be an object")
        for key in ("triton", "torch", "device", "date", "method"):
            if not isinstance(pv.get(key), str) or not pv[key]:
                _fail(where, f"provenance.{key} must be a non-empty string")
        if "cuda" not in pv or not (pv["cuda"] is None or isinstance(pv["cuda"], str)):
            _fail(where, "provenance.cuda must be a string or null")
        try:
            datetime.fromisoformat(pv["date"])
        except ValueError:
            _fail(where, f"provenance.date must be ISO-8601, got {pv['date']!r}")
        core = {"triton", "torch", "cuda", "device", "date", "method"}
        return cls(pv["triton"], pv["torch"], pv["cuda"], pv["device"], pv["date"], pv["method"],
                   {k: v for k, v in pv.items() if k not in core})

    def to_json(self) -> dict:
        return {"triton": self.triton, "torch": self.torch, "cuda": self.cuda, "device": self.device,
                "date": self.date, "method": self.method, **self.extra}


@dataclass(frozen=True)
class LibraryEntry:
    """The variant and config that won for one dtype × shape bucket on one SKU, with evidence."""

    dtype: str
    bucket: dict
    config: dict
    kernel_sha256: str               # sha256 of the variant's file it was tuned for
    evidence: Evidence
    provenance: Provenance
    variant: str = "kernel"

    @classmethod
    def from_json(cls, entry: Any, where: str = "entry") -> "LibraryEntry":
        """Raise ``ConfigFileError`` unless ``entry`` follows schema 1."""
        if not isinstance(entry, dict):
            _fail(where, f"an entry must be an object, got {type(entry).__name__}")
        missing = _ENTRY_KEYS - set(entry)
        if missing:
            _fail(where, f"missing field(s) {sorted(missing)}")
        extra = set(entry) - _ENTRY_KEYS - _OPTIONAL_KEYS
        if extra:
            _fail(where, f"unknown field(s) {sorted(extra)}")
        if entry["dtype"] not in CONFIG_DTYPES:
            _fail(where, f"dtype must be one of {CONFIG_DTYPES}, got {entry['dtype']!r}")
        bucket = _scalar_map(entry["bucket"], where, "bucket", allow_none=True)
        if not bucket:
            _fail(where, "bucket must not be empty")
        if bucket_of(bucket) != bucket:
            _fail(where, f"bucket {bucket} is not bucketed: integer values must be powers of two "
                         f"(expected {bucket_of(bucket)})")
        config = _scalar_map(entry["config"], where, "config", allow_none=False)
        sha = entry["kernel_sha256"]
        if not isinstance(sha, str) or not _SHA256.match(sha):
            _fail(where, "kernel_sha256 must be 64 lowercase hex digits")
        variant = entry.get("variant", "kernel")
        if not isinstance(variant, str) or not _VARIANT.match(variant):
            _fail(where, f"variant must be a variant name (a letter, then letters, digits or '_'), got {variant!r}")
        return cls(entry["dtype"], bucket, config, sha, Evidence.from_json(entry["evidence"], where),
                   Provenance.from_json(entry["provenance"], where), variant)

    def to_json(self) -> dict:
        out = {"dtype": self.dtype, "bucket": dict(self.bucket), "config": dict(self.config)}
        if self.variant != "kernel":
            out["variant"] = self.variant
        out.update(kernel_sha256=self.kernel_sha256, evidence=self.evidence.to_json(),
                   provenance=self.provenance.to_json())
        return out

    @property
    def slot(self) -> tuple:
        import json

        return self.dtype, json.dumps(self.bucket, sort_keys=True)
