"""One nightly run: re-verify every library entry, re-measure it, gate, record, report.

Steps (``run_nightly``):

1. Decide the mode. ``gpu``: a CUDA GPU with NVML; the entries checked are this GPU's SKU's,
   and they are re-measured. ``cpu``: every entry of every SKU (``--sku`` narrows), verified
   through Triton's interpreter; measurements only from a recording (``--measure replay:FILE``).
2. Read the library defensively (``inventory.scan``): a malformed file or entry, or an entry
   whose ``kernel_sha256`` is not the current ``kernel.py``'s, fails by name; the rest go on.
3. Verify each remaining item in the harness sandbox (``harness.verify`` with the op, the op's
   ``kernel.py`` source and the entry's config; one verification per distinct config).
4. Measure what verified, and gate latency and energy against the stored evidence
   (``gate.gate``: repeated samples, a noise floor, a confidence bound, a minimum effect).
5. With ``--retune``, re-tune each regressed entry (``tuner.tune``). A re-tune whose search
   measured fewer configs than asked while feasible ones remained (``TuneResult.shortfall``)
   is a failure of its own, as ``kernelagent tune`` treats it (exit 1): it is named in
   ``failures`` (reason ``retune-shortfall``), counted in ``summary.retune_shortfalls`` and
   printed on stderr.
6. Record the run in the history, write ``results.json``, ``summary.md``, ``report.html``
   (and ``samples.json`` after a GPU measurement, which ``--measure replay:`` reads back).

Exit: 0 healthy; 1 a failed item, a regression or a re-tune shortfall (named); 2 bad input;
3 environment.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput, EnvironmentProblem, KernelAgentError
from . import gate as gatelib
from .inventory import LibraryItem, current_kernel, scan

EXIT_HEALTHY, EXIT_FAILED = 0, 1


@dataclass
class NightlyOptions:
    out: Path = Path("nightly-report")
    history: Path | None = None                # None: ~/.cache/kernelagent/nightly.db
    ops: list[str] | None = None               # None: every registered op
    mode: str = "auto"                         # auto | gpu | cpu
    measure: str = "auto"                      # auto | none | gpu | replay:FILE
    library: Path | None = None                # only this folder (DIR/<op>/configs/<sku>.json)
    skus: list[str] | None = None              # CPU mode: only these SKU files
    examples: int | None = None                # property-based examples per verification
    seed: int | None = None                    # verification seed (default: fresh, recorded)
    timeout: float = 600.0                     # per verification, seconds
    include_default: bool = True               # also verify each op's default heuristic
    retune: bool = False
    retune_trials: int = 32                    # measurements per re-tuned entry
    sessions: int = 7                          # GPU: harness.measure calls per item (one energy window each)
    energy_window_s: float = 5.0               # GPU: each energy window, seconds (5 s: ~4 % quantisation)
    policy: gatelib.GatePolicy = field(default_factory=lambda: gatelib.GatePolicy(noise_floor=0.5))
    energy_noise_floor_uj: float = 0.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_nightly(opts: NightlyOptions, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Run the nightly; returns the ``results.json`` document (``exit_code`` inside)."""
    import secrets

    from ..kernels.registry import op_names

    started, t0 = _now(), time.monotonic()
    ops = opts.ops or op_names()
    unknown = [o for o in ops if o not in op_names()]
    if unknown:
        raise BadInput(f"unknown op(s) {', '.join(unknown)}; registered ops: {', '.join(op_names())}")
    if opts.examples is not None and opts.examples < 1:
        raise BadInput("--examples must be at least 1")

    mode, sku = _resolve_mode(opts.mode)
    if opts.retune and mode != "gpu":
        raise EnvironmentProblem("--retune re-tunes regressed entries by measuring on this machine's GPU: it needs "
                                 "the GPU mode (a CUDA GPU with NVML); regressions are still reported without it")
    measurer, measure_label = _measurer(opts, mode, sku)
    from .environment import environment

    env = environment(mode, measure_label, sku.id if sku else None)
    seed = opts.seed if opts.seed is not None else secrets.randbits(32)
    log(f"nightly: {mode} mode on {env['device']}; torch {env['versions']['torch']}, triton "
        f"{env['versions']['triton']}; measure: {measure_label}; verification seed {seed}")

    from .measure import case_bucket, default_dtype
    from ..kernels.registry import get_opspec

    default_cases = {}
    for op in ops:
        spec = get_opspec(op)
        if spec.bench_cases:
            dt = default_dtype(op)
            default_cases[op] = (dt, case_bucket(op, dict(spec.bench_cases[0]), dt))
    skus = [sku.id] if mode == "gpu" else opts.skus
    items = scan(ops, library=opts.library, skus=skus, include_default=opts.include_default,
                 default_cases=default_cases)
    bare = [op for op in ops if not any(i.op == op and i.kind != "default" for i in items)]
    log(f"nightly: {len(items)} item(s) to check over {len(ops)} op(s)" + (
        f"; no library entries for {', '.join(bare)}" + (": verifying their default heuristic"
                                                         if opts.include_default else "") if bare else ""))

    verdicts: dict[tuple, dict] = {}
    rows = []
    try:
        for i, item in enumerate(items, 1):
            row = _check_item(item, i, len(items), opts, seed, verdicts, measurer, sku, log)
            if opts.retune and row["status"] == "regression":
                row["retune"] = retune_item(item, row.get("_samples") or {}, opts, seed, log)
            rows.append(row)
    finally:
        if measurer is not None and hasattr(measurer, "close"):
            measurer.close()

    doc = _results(rows, env, opts, started, time.monotonic() - t0, seed, ops)
    from .history import History
    from .report import write_reports

    with History(opts.history) as hist:
        doc["run_id"] = hist.record(doc)
        doc["history_path"] = str(hist.path)
        write_reports(doc, Path(opts.out), hist)
    if measurer is not None and getattr(measurer, "backend", None) == "gpu":
        from .samples import MeasuredSamples, save_recording

        taken = [MeasuredSamples(**r["_samples"]) for r in rows if r.get("_samples")]
        save_recording(Path(opts.out) / "samples.json", taken, device=env["device"], sku=env["sku"], environment=env)
    return doc


def retune_item(item, samples: dict, opts: NightlyOptions, seed: int, log: Callable[[str], None],
                tune_fn: Callable[..., Any] | None = None) -> dict:
    """Re-tune one regressed entry on this GPU at its recorded case; the library is updated
    only if the new config is verified (tune re-verifies before writing) and faster than the
    stored config re-measured today (the regressed samples' median)."""
    import statistics

    if tune_fn is None:
        from ..tuner.tune import tune as tune_fn
    case = samples.get("case") or (item.evidence or {}).get("case")
    if not case:
        return {"status": "skipped", "reason": "the entry records no case (shape) to tune at"}
    current_us = statistics.median(samples["latency_us"]) if samples.get("latency_us") else None
    if current_us is None:
        return {"status": "skipped", "reason": "no re-measured latency to beat"}

    def better(res) -> bool:
        return res.latency_us is not None and res.latency_us < current_us * (1 - opts.policy.min_effect)

    results = tune_fn(sku_id=item.sku, ops=[item.op], dtypes=[item.dtype], cases={item.op: [case]},
                      measure="gpu", write=True, accept=better, library_dir=opts.library, seed=seed,
                      trials=opts.retune_trials, verify_examples=opts.examples or 8)
    res = results[0]
    out = {"status": "updated" if res.library_action in ("added", "replaced") else "not-updated",
           "stored_config_today_us": current_us, "new_config": res.best_config, "new_latency_us": res.latency_us,
           "verified": res.verified, "library_action": res.library_action, "trials": res.trials_used,
           "shortfall": getattr(res, "shortfall", None), "note": res.note or res.verify_detail[:300]}
    log(f"  retune {item.name}: {out['status']} (today {current_us:.2f} us; new {res.latency_us} us, "
        f"config {res.best_config})" + (f"; SHORTFALL: {out['shortfall']}" if out["shortfall"] else ""))
    return out


def _resolve_mode(requested: str):
    import torch

    if requested not in ("auto", "gpu", "cpu"):
        raise BadInput(f"mode must be auto, gpu or cpu, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return "cpu", None
    if not torch.cuda.is_available():
        raise EnvironmentProblem("--gpu: torch sees no CUDA GPU (torch.cuda.is_available() is False); run in CPU "
                                 "mode (--cpu) or on the GPU runner")
    from ..sku import detect

    sku, _ = detect()
    return "gpu", sku


def _measurer(opts: NightlyOptions, mode: str, sku):
    m = opts.measure
    if m == "auto":
        m = "gpu" if mode == "gpu" else "none"
    if m == "none":
        return None, "none"
    if m == "gpu":
        if mode != "gpu":
            raise EnvironmentProblem("--measure gpu needs the GPU mode (a CUDA GPU with NVML)")
        from .measure import GpuMeasurer

        return GpuMeasurer(sessions=opts.sessions, min_window_s=opts.energy_window_s, sku=sku,
                           timeout=opts.timeout), "gpu"
    if m.startswith("replay:") and len(m) > len("replay:"):
        from .samples import ReplayMeasurer

        return ReplayMeasurer(m[len("replay:"):]), m
    raise BadInput(f"--measure must be auto, none, gpu or replay:FILE, got {opts.measure!r}")


def _check_item(item: LibraryItem, i: int, n: int, opts: NightlyOptions, seed: int, verdicts: dict,
                measurer, sku, log) -> dict:
    row: dict[str, Any] = item.to_json()
    row.update(status="ok", failure=None, verification=None, measurement=None, measurement_note=None)
    if item.problem:
        row.update(status="failed", failure={"reason": item.problem, "detail": item.problem_detail})
        log(f"[{i}/{n}] {item.name}: FAILED ({item.problem}) {item.problem_detail}")
        return row
    key = (item.op, item.variant, json.dumps(item.config, sort_keys=True))
    shared = key in verdicts
    if not shared:
        log(f"[{i}/{n}] {item.name}: verifying config {item.config or 'default heuristic'} …")
        verdicts[key] = _verify(item, opts, seed)
    ver = dict(verdicts[key], shared=shared)
    row["verification"] = ver
    if not ver["verified"]:
        row.update(status="failed", failure={"reason": ver.get("reason") or "rejected",
                                             "detail": ver.get("detail", "")})
        log(f"[{i}/{n}] {item.name}: FAILED verification ({ver.get('reason')}): {ver.get('detail', '')[:300]}")
        return row
    note = "verified" + (" (same config as an item above)" if shared else f" ({ver['trials']} examples, "
                                                                          f"{ver['duration_s']:.1f}s)")
    if measurer is None:
        row["measurement_note"] = ("not measured: no measurement backend in this mode "
                                   "(CPU without --measure replay:FILE)")
        log(f"[{i}/{n}] {item.name}: {note}")
        return row
    from .measure import MeasurementFailed

    try:
        samples, why = measurer.measure(item)
    except MeasurementFailed as e:
        row.update(status="failed", failure={"reason": e.reason, "detail": e.detail})
        log(f"[{i}/{n}] {item.name}: {note}; FAILED measurement ({e.reason}): {e.detail[:300]}")
        return row
    if samples is None:
        row["measurement_note"] = f"not measured: {why}"
        log(f"[{i}/{n}] {item.name}: {note}; {row['measurement_note']}")
        return row
    row["measurement"] = _gate_item(item, samples, opts, sku)
    row["_samples"] = samples.to_json() | {"backend": samples.backend}
    flagged = [k for k in ("latency", "energy")
               if (row["measurement"].get(k) or {}).get("verdict") == gatelib.REGRESSION]
    if flagged:
        row["status"] = "regression"
        row["failure"] = {"reason": "regression", "detail": "; ".join(
            f"{k}: {row['measurement'][k]['reason']}" for k in flagged)}
    lat = row["measurement"].get("latency") or {}
    log(f"[{i}/{n}] {item.name}: {note}; latency {lat.get('verdict', 'n/a')}: {lat.get('reason', '')}")
    return row


def _verify(item: LibraryItem, opts: NightlyOptions, seed: int) -> dict:
    from ..harness.verify import verify

    source, sha = current_kernel(item.op, item.variant)
    try:
        v = verify(item.op, source, examples=opts.examples, seed=seed, timeout=opts.timeout, config=item.config,
                   candidate_name="kernel.py" if item.variant == "kernel" else f"{item.variant}.py")
    except KernelAgentError as e:
        return {"verified": False, "reason": "verify-error", "detail": str(e), "trials": 0, "duration_s": 0.0,
                "seed": seed, "kernel_sha256": sha}
    out = {k: getattr(v, k) for k in ("verified", "reason", "detail", "trials", "duration_s", "seed", "device",
                                      "sandbox", "worst_error_ratio", "counterexample", "warnings")}
    out["kernel_sha256"] = sha
    return out


def _stored_samples(evidence: dict, samples_key: str, median_key: str) -> list[float] | None:
    s = evidence.get(samples_key)
    if isinstance(s, list) and s:
        return [float(x) for x in s if isinstance(x, (int, float)) and not isinstance(x, bool)]
    v = evidence.get(median_key)
    return [float(v)] if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def _gate_item(item: LibraryItem, samples, opts: NightlyOptions, sku) -> dict:
    ev = item.evidence or {}
    out: dict[str, Any] = {"backend": samples.backend, "case": samples.case, "flops": samples.flops,
                           "bytes": samples.bytes, "conditions": samples.conditions,
                           "latency_samples_us": samples.latency_us, "energy_samples_uj": samples.energy_uj,
                           "latency_median_us": statistics.median(samples.latency_us),
                           "energy_median_uj": statistics.median(samples.energy_uj) if samples.energy_uj else None,
                           "pytorch_latency_us": (statistics.median(samples.pytorch_latency_us)
                                                  if samples.pytorch_latency_us else None)}
    if out["pytorch_latency_us"]:
        out["speedup_vs_pytorch"] = out["pytorch_latency_us"] / out["latency_median_us"]
    out["roofline_pct"] = _roofline_pct(item, samples, sku)
    if item.kind == "default" or not ev:
        out["gate_note"] = "no stored evidence to compare with (the default heuristic has none)"
        return out
    if not ev.get("measured", False):
        out["gate_note"] = f"stored evidence is predicted (backend {ev.get('backend')}), not measured: not gated"
        return out
    lat_policy = opts.policy
    en_policy = gatelib.GatePolicy(min_effect=lat_policy.min_effect, confidence=lat_policy.confidence,
                                   min_samples=lat_policy.min_samples, noise_floor=opts.energy_noise_floor_uj,
                                   resamples=lat_policy.resamples, seed=lat_policy.seed)
    out["latency"] = gatelib.gate(_stored_samples(ev, "latency_samples_us", "latency_us"), samples.latency_us,
                                  lat_policy).to_json()
    stored_energy = _stored_samples(ev, "energy_samples_uj", "energy_uj")
    if stored_energy and samples.energy_uj:
        out["energy"] = gatelib.gate(stored_energy, samples.energy_uj, en_policy).to_json()
    return out


def _roofline_pct(item: LibraryItem, samples, sku) -> float | None:
    """Attainable time at the spec-sheet peaks / measured time, in %."""
    if not samples.flops and not samples.bytes:
        return None
    sku_id = item.sku or samples.sku or (sku.id if sku else None)
    if sku_id is None:
        return None
    from ..sku import get_sku

    try:
        spec = get_sku(sku_id)
    except KernelAgentError:
        return None
    dtype = samples.dtype or item.dtype or "fp32"
    # Triton's tl.dot takes fp32 inputs through tf32 by default: the attainable peak is tf32's.
    peak = spec.peak("tf32") if dtype == "fp32" and spec.peak("tf32") else spec.peak(dtype if dtype != "fp64" else "fp32")
    t_compute = (samples.flops or 0.0) / (peak * 1e12) if peak else 0.0
    t_memory = (samples.bytes or 0.0) / (spec.mem_bandwidth_gbps * 1e9)
    t_measured = statistics.median(samples.latency_us) * 1e-6
    return 100.0 * max(t_compute, t_memory) / t_measured if t_measured > 0 else None


def _results(rows: list[dict], env: dict, opts: NightlyOptions, started: str, duration: float, seed: int,
             ops: list[str]) -> dict:
    failed = [r for r in rows if r["status"] == "failed"]
    regressed = [r for r in rows if r["status"] == "regression"]
    verified = [r for r in rows if (r.get("verification") or {}).get("verified")]
    # A re-tune that measured fewer configs than asked while feasible ones remained fails the run,
    # as it fails `kernelagent tune` (exit 1), whatever it wrote.
    short = [r for r in rows if (r.get("retune") or {}).get("shortfall")]
    exit_code = EXIT_FAILED if failed or regressed or short else EXIT_HEALTHY
    status = "failed" if failed else "regression" if regressed else "failed" if short else "healthy"
    items = [{k: v for k, v in r.items() if k != "_samples"} for r in rows]
    return {
        "schema": 1, "kind": "kernelagent-nightly", "status": status, "exit_code": exit_code,
        "started_at": started, "finished_at": _now(), "duration_s": round(duration, 3),
        "environment": env,
        "options": {"ops": ops, "mode": env["mode"], "measure": env["measure"],
                    "library": str(opts.library) if opts.library else None, "skus": opts.skus,
                    "examples": opts.examples, "verification_seed": seed, "timeout_s": opts.timeout,
                    "include_default": opts.include_default, "retune": opts.retune, "sessions": opts.sessions,
                    "energy_window_s": opts.energy_window_s},
        "gate_policy": {"latency": opts.policy.to_json(), "energy_noise_floor_uj": opts.energy_noise_floor_uj},
        "summary": {"items": len(rows), "verified": len(verified), "failed": len(failed),
                    "regressions": len(regressed),
                    "improvements": sum(1 for r in rows if ((r.get("measurement") or {}).get("latency") or {})
                                        .get("verdict") == gatelib.IMPROVEMENT),
                    "measured": sum(1 for r in rows if r.get("measurement")),
                    "retune_shortfalls": len(short)},
        # ops with no library entry (of this SKU, in GPU mode): only their default heuristic was checked
        "ops_without_entries": [op for op in ops if not any(r["op"] == op and r["kind"] != "default" for r in rows)],
        "failures": [{"name": r["name"], "file": r.get("file"), **r["failure"]} for r in failed]
        + [{"name": r["name"], "file": r.get("file"), "reason": "retune-shortfall",
            "detail": f"re-tune SHORTFALL (the search measured fewer configs than asked while feasible ones remained; "
                      f"its result was {r['retune'].get('status')}): {r['retune']['shortfall']}"} for r in short],
        "regressions": [{"name": r["name"], "file": r.get("file"), **r["failure"]} for r in regressed],
        "items": items,
        "out_dir": str(Path(opts.out).resolve()),
    }
