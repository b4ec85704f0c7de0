"""The ``replay`` measurement backend: answers from recorded measurements, deterministically.

Two file formats, plain or gzipped JSON:

* **Kernel Tuner cache files** (``kernel_tuner`` ``cache`` JSON, as in
  ``shared/data/autotuning``): ``tune_params_keys`` / ``tune_params`` give the parameters in
  order, ``cache`` maps ``"v1,v2,…"`` to a record whose ``time`` is milliseconds, or a string
  (``"InvalidConfig"``, ``"CompilationFailedConfig"``, ``"RuntimeFailedConfig"``) for a
  config that failed. A config absent from ``cache`` was outside the kernel's restrictions.
  Kernel Tuner appends to these files and may leave the closing brackets off; that is read too.
* **kernelagent recordings** (``"format": "kernelagent-recording"``), written by
  :class:`Recording` during a GPU run::

      {"format": "kernelagent-recording", "version": 1,
       "op": "softmax", "sku": "h100-sxm", "dtype": "bf16", "bucket": "cols=4096",
       "device": "NVIDIA H100 80GB HBM3", "versions": {"triton": "3.9.0", "torch": "…"},
       "params": [{"name": "BLOCK_N", "values": [1024, 2048]}, …],
       "measurements": [{"config": {…}, "latency_us": 12.5, "energy_uj": 830.0,
                         "energy_uncertainty_uj": 21.0, "feasible": true, "reason": null}, …]}

  ``params`` may be left out (the values seen in ``measurements`` are used, sorted).
  ``energy_uncertainty_uj`` (the energy's stated ≈95 % half-width) may be left out or null:
  recordings made before it existed load with no uncertainty (taken as 0 by the policies).

Both become a :class:`RecordedSpace`. A config not in the recording is infeasible (reason
``"not recorded"``); the search sees the recorded key set as the space's a-priori constraint,
like Kernel Tuner's restrictions, and the recorded configs as the candidates it samples from.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import BadInput
from .space import SearchSpace

RECORDING_FORMAT = "kernelagent-recording"
KT_FAILURES = ("InvalidConfig", "CompilationFailedConfig", "RuntimeFailedConfig")


@dataclass(frozen=True)
class ReplayMeasurement:
    """What the replay backend answers for one config (Measurement-like; times in seconds)."""

    config: dict
    latency_s: float | None
    energy_j: float | None
    feasible: bool
    reason: str | None = None
    backend: str = "replay"
    energy_uncertainty_j: float | None = None


@dataclass
class RecordedSpace:
    """Recorded measurements of one kernel on one device, and the space they cover."""

    source: str
    format: str
    params: dict[str, list]                        # name -> ordered values
    entries: dict[tuple, ReplayMeasurement]
    meta: dict[str, Any] = field(default_factory=dict)  # op, sku, dtype, bucket, device, versions, …

    def key(self, config: Mapping[str, Any]) -> tuple:
        return tuple(config[n] for n in self.params)

    def lookup(self, config: Mapping[str, Any]) -> ReplayMeasurement:
        try:
            hit = self.entries.get(self.key(config))
        except KeyError as e:
            raise BadInput(f"config {dict(config)} lacks parameter {e} of {self.source}") from None
        if hit is None:
            return ReplayMeasurement(dict(config), None, None, False, "not recorded (outside the space's restrictions)")
        return hit

    def feasible(self) -> list[ReplayMeasurement]:
        return [m for m in self.entries.values() if m.feasible]

    def optimum(self) -> ReplayMeasurement | None:
        return min(self.feasible(), key=lambda m: m.latency_s, default=None)

    def search_space(self) -> SearchSpace:
        """The recorded parameters; the recorded configs are the space's candidates (the search
        samples among them, not the raw product) and its constraint."""
        keys = set(self.entries)
        return SearchSpace.from_values(
            self.params, lambda c: None if self.key(c) in keys else "outside the recorded space",
            candidates=[dict(zip(self.params, k)) for k in self.entries])

    def top(self, n: int, min_distance: int = 1) -> list[dict]:
        """The ``n`` fastest configs; with ``min_distance`` > 1, each differs from every one
        kept before it in at least that many parameters (a warm start that spans basins)."""
        kept: list[dict] = []
        for m in sorted(self.feasible(), key=lambda m: m.latency_s):
            if len(kept) >= n:
                break
            if all(sum(m.config[k] != q[k] for k in q) >= min_distance for q in kept):
                kept.append(m.config)
        return kept


class ReplayBackend:
    """Measures by looking up a recording. ``calls`` counts every ``measure`` call."""

    name = "replay"

    def __init__(self, space: RecordedSpace):
        self.space = space
        self.calls = 0
        self.measured: list[dict] = []

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ReplayBackend":
        return cls(load(path))

    def measure(self, config: Mapping[str, Any]) -> ReplayMeasurement:
        self.calls += 1
        self.measured.append(dict(config))
        return self.space.lookup(config)

    def objective(self, config: Mapping[str, Any]) -> tuple[float | None, float | None, str | None, float | None]:
        """The search's ``measure`` callable: (latency_s | None, energy_j | None, reason, energy_uncertainty_j)."""
        m = self.measure(config)
        return m.latency_s, m.energy_j, m.reason, m.energy_uncertainty_j


# ------------------------------------------------------------------------------------------
# Reading.


def load(path: str | os.PathLike) -> RecordedSpace:
    """Read a Kernel Tuner cache file or a kernelagent recording (``.gz`` or plain)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BadInput(f"cannot read replay file {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # zlib.error: a valid header over a broken stream
            why = "the file ends mid-stream: truncated?" if isinstance(e, EOFError) else e
            raise BadInput(f"replay file {path}: corrupt gzip data ({why})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"replay file {path}: not UTF-8 text (expected JSON, optionally gzipped)") from None
    doc = _parse_json(text, path)
    if not isinstance(doc, dict):
        raise BadInput(f"replay file {path}: top level is {type(doc).__name__}, expected a JSON object")
    if doc.get("format") == RECORDING_FORMAT:
        return _from_recording(doc, path)
    if "cache" in doc and "tune_params_keys" in doc:
        return _from_kernel_tuner(doc, path)
    raise BadInput(f"replay file {path}: neither a Kernel Tuner cache (needs 'tune_params_keys' and 'cache') "
                   f"nor a kernelagent recording ('format': '{RECORDING_FORMAT}')")


def _parse_json(text: str, path: Path):
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        # Kernel Tuner appends '"key": {...},' per result and may not have closed the file yet.
        body = text.rstrip()
        if body.endswith(","):
            try:
                return json.loads(body[:-1] + "}}")
            except json.JSONDecodeError:
                pass
        raise BadInput(f"replay file {path}: invalid JSON at line {first.lineno} column {first.colno}: {first.msg}") from None


def _from_kernel_tuner(doc: dict, path: Path) -> RecordedSpace:
    names, values, cache = doc["tune_params_keys"], doc.get("tune_params"), doc["cache"]
    if not isinstance(names, list) or not names or not isinstance(cache, dict):
        raise BadInput(f"replay file {path}: 'tune_params_keys' must be a non-empty list and 'cache' an object")
    if not isinstance(values, dict) or any(not isinstance(values.get(n), list) or not values.get(n) for n in names):
        raise BadInput(f"replay file {path}: 'tune_params' must give a non-empty list of values for each of {names}")
    params = {n: list(values[n]) for n in names}
    entries: dict[tuple, ReplayMeasurement] = {}
    for k, rec in cache.items():
        if not isinstance(rec, dict):
            raise BadInput(f"replay file {path}: cache entry {k!r} is not an object")
        try:
            config = {n: rec[n] for n in names}
        except KeyError as e:
            raise BadInput(f"replay file {path}: cache entry {k!r} lacks parameter {e}") from None
        t = rec.get("time")
        if _number(t):
            energy = next((float(rec[e]) for e in ("nvml_energy", "ps_energy", "pmt_energy") if _number(rec.get(e))), None)
            m = ReplayMeasurement(config, float(t) / 1e3, energy, True, None)
        else:  # "InvalidConfig", "CompilationFailedConfig", "RuntimeFailedConfig", or anything not a number
            m = ReplayMeasurement(config, None, None, False, str(t) if t is not None else "no time recorded")
        entries[tuple(config[n] for n in names)] = m
    meta = {"device": doc.get("device_name") or "", "kernel": doc.get("kernel_name"),
            "problem_size": doc.get("problem_size"), "objective": doc.get("objective", "time")}
    return RecordedSpace(str(path), "kernel_tuner", params, entries, meta)


def _from_recording(doc: dict, path: Path) -> RecordedSpace:
    ms = doc.get("measurements")
    if not isinstance(ms, list):
        raise BadInput(f"replay file {path}: 'measurements' must be a list")
    entries_raw = []
    for i, m in enumerate(ms):
        if not isinstance(m, dict) or not isinstance(m.get("config"), dict):
            raise BadInput(f"replay file {path}: measurement {i} needs a 'config' object")
        lat, e = m.get("latency_us"), m.get("energy_uj")
        feasible = bool(m.get("feasible", lat is not None))
        if feasible and not _number(lat):
            raise BadInput(f"replay file {path}: measurement {i} is feasible but 'latency_us' is {lat!r}")
        if e is not None and not _number(e):
            raise BadInput(f"replay file {path}: measurement {i}: 'energy_uj' must be a number or null, got {e!r}")
        u = m.get("energy_uncertainty_uj")   # absent in recordings made before it existed
        if u is not None and not (_number(u) and u >= 0):
            raise BadInput(f"replay file {path}: measurement {i}: 'energy_uncertainty_uj' must be a non-negative "
                           f"number or null, got {u!r}")
        has_e = feasible and e is not None
        entries_raw.append((m["config"], float(lat) * 1e-6 if feasible else None,
                            float(e) * 1e-6 if has_e else None, feasible, m.get("reason"),
                            float(u) * 1e-6 if has_e and u is not None else None))
    if isinstance(doc.get("params"), list):
        try:
            params = {p["name"]: list(p["values"]) for p in doc["params"]}
        except (TypeError, KeyError):
            raise BadInput(f"replay file {path}: 'params' must be a list of {{'name', 'values'}} objects") from None
    else:
        names = list(entries_raw[0][0]) if entries_raw else []
        params = {n: sorted({c[n] for c, *_ in entries_raw}) for n in names}
    entries = {}
    for c, lat, e, ok, why, u in entries_raw:
        if set(c) != set(params):
            raise BadInput(f"replay file {path}: config {c} does not name exactly the parameters {list(params)}")
        entries[tuple(c[n] for n in params)] = ReplayMeasurement(dict(c), lat, e, ok, None if ok else (why or "failed"),
                                                                 energy_uncertainty_j=u)
    meta = {k: doc.get(k) for k in ("op", "sku", "dtype", "bucket", "device", "versions")}
    return RecordedSpace(str(path), "kernelagent", params, entries, meta)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------------------------------
# Writing the project's recordings.


class Recording:
    """Collects measurements during a run and writes them as a kernelagent recording.

    Wrap the search's measure callable with :meth:`wrap` so every measurement is kept.
    """

    def __init__(self, *, op: str, sku: str, dtype: str, bucket: str, device: str,
                 versions: Mapping[str, str] | None = None, params: Mapping[str, Sequence] | None = None):
        self.meta = {"op": op, "sku": sku, "dtype": dtype, "bucket": bucket, "device": device,
                     "versions": dict(versions or {})}
        self.params = {n: list(v) for n, v in (params or {}).items()}
        self.measurements: list[dict] = []

    def add(self, config: Mapping[str, Any], latency_s: float | None, energy_j: float | None = None,
            reason: str | None = None, energy_uncertainty_j: float | None = None) -> None:
        ok = latency_s is not None
        has_e = ok and energy_j is not None
        self.measurements.append({"config": dict(config), "latency_us": latency_s * 1e6 if ok else None,
                                  "energy_uj": energy_j * 1e6 if has_e else None,
                                  "energy_uncertainty_uj": energy_uncertainty_j * 1e6
                                  if has_e and energy_uncertainty_j is not None else None,
                                  "feasible": ok, "reason": None if ok else (reason or "failed")})

    def wrap(self, measure):
        def recorded(config):
            out = tuple(measure(config))
            self.add(config, out[0], out[1] if len(out) > 1 else None, out[2] if len(out) > 2 else None,
                     out[3] if len(out) > 3 else None)
            return out
        return recorded

    def to_json(self) -> dict:
        doc = {"format": RECORDING_FORMAT, "version": 1, **self.meta}
        if self.params:
            doc["params"] = [{"name": n, "values": v} for n, v in self.params.items()]
        doc["measurements"] = self.measurements
        return doc

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; ``.gz`` paths are gzipped."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_json(), indent=1, sort_keys=False).encode()
        if path.suffix == ".gz":
            data = gzip.compress(data, mtime=0)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path


# ------------------------------------------------------------------------------------------
# `kernelagent tune --replay FILE`: the search alone over a recorded space.


def run_replay_search(path: str | os.PathLike, trials: int, seed: int | None = None, *, storage=":memory:",
                      sampler: str = "auto", policy: str = "latency", warm_start: Sequence[Mapping] = (),
                      study_name: str | None = None, **search_kw) -> dict:
    """Search a recorded space with a budget of ``trials`` measurements; compare with its optimum.

    Returns a JSON-able dict: the best config found, its latency, the recorded optimum, their
    ratio (1.0 = found the optimum), measurements used and asked for, the sampler and the policy,
    ``shortfall`` (why fewer configs than asked were measured while feasible ones remained, or
    none at all; None otherwise) and ``ok`` (no shortfall and a best config found: what
    ``kernelagent tune --replay`` exits 0 on). The default storage is in memory so a replay
    never resumes or pollutes the user's study database.
    """
    import optuna

    from .search import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load(path)
    if trials < 1:
        raise BadInput(f"--trials must be at least 1, got {trials}")
    backend = ReplayBackend(space)
    name = study_name or f"replay/{Path(path).name}/seed-{seed}"
    res = run_search(space.search_space(), backend.objective, budget=trials, study_name=name, storage=storage,
                     seed=seed, sampler=sampler, policy=policy, warm_start=warm_start, **search_kw)
    opt = space.optimum()
    return {
        "file": str(path), "device": space.meta.get("device") or "", "format": space.format,
        "backend": "replay (recorded measurements)",
        "best_config": res.best_config, "best_latency_s": res.best_latency_s, "best_energy_j": res.best_energy_j,
        "optimum_config": opt.config if opt else None, "optimum_latency_s": opt.latency_s if opt else None,
        "ratio_to_optimum": (res.best_latency_s / opt.latency_s) if opt and res.best_latency_s else None,
        "trials_used": res.trials_used, "trials_asked": trials, "shortfall": res.shortfall,
        "ok": res.shortfall is None and res.best_config is not None,
        "measure_calls": backend.calls, "optuna_trials": res.optuna_trials,
        "sampler": res.sampler, "policy": res.policy, "seed": seed,
        "space_size": math.prod(len(v) for v in space.params.values()),
        "recorded_configs": len(space.entries), "feasible_configs": len(space.feasible()),
        "note": res.note,
    }


def describe_replay_result(r: Mapping[str, Any]) -> str:
    """The human-readable lines for ``kernelagent tune --replay`` without ``--json``."""
    lines = [f"replay of {r['file']} ({r['device'] or 'device not recorded'}; recorded measurements, no GPU used)"]
    if r["best_config"] is None:
        lines.append(f"best found  none: no feasible configuration among {r['trials_used']} measurements")
    else:
        lines.append(f"best found  {r['best_latency_s'] * 1e6:.2f} us  {json.dumps(r['best_config'])}")
    if r["optimum_config"] is not None:
        lines.append(f"optimum     {r['optimum_latency_s'] * 1e6:.2f} us  {json.dumps(r['optimum_config'])}")
    ratio = r.get("ratio_to_optimum")
    lines.append(f"ratio {'-' if ratio is None else f'{ratio:.3f}'} (best found / optimum) after {r['trials_used']} "
                 f"of {r['trials_asked']} measurements asked, {r['feasible_configs']} feasible of "
                 f"{r['recorded_configs']} recorded configs ({r['space_size']} in the raw product); "
                 f"sampler {r['sampler']}, policy {r['policy']}, seed {r['seed']}")
    if r.get("shortfall"):
        lines.append(f"SHORTFALL: {r['shortfall']}")
    if r.get("note"):
        lines.append(f"note: {r['note']}")
    return "\n".join(lines)
