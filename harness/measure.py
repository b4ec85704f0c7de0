"""``measure``: latency and energy of a candidate on this machine (the ``gpu`` backend).

The candidate runs in a sandboxed worker (a ``CandidateSession``, the same kind ``verify``
uses; a tuner passes one so every trial reuses one worker, its staged inputs and calibration). The worker runs the
calls and reports times and output fingerprints, which the trusted parent treats as claims:

* Latency: K ≥ 8 input sets staged once, a compile call, a time-based warm-up, then N timed
  calls in a random order the parent picks, each after an L2 flush (on CUDA), each bracketed by
  CUDA events on the current stream (on CPU: the worker's wall clock). The parent times the
  whole batch with its own clock, subtracts the loop's overhead (calibrated in the same worker
  *before* the candidate is imported, so the candidate cannot touch the calibration), and flags
  a batch whose claimed total is under half of what it saw. Every timed output is
  fingerprinted; identical inputs must give identical bytes, and sampled outputs travel back
  and are compared with the reference.
* Energy: after a cooldown to the device's idle baseline and an idle-power reading, the parent
  reads the meter's energy counter at counter updates around ``energy_repeats`` windows of
  back-to-back calls, each long enough for the asked quantisation bound and started at a random
  phase of the counter's update period; the figure carries its uncertainty. A thread samples
  power, clocks, temperature and throttle reasons every ~20 ms throughout.

See docs/MEASUREMENT.md ("GPU measurement method") for the method and everything it flags.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch

from ..kernels.spec import Call, Case
from .energy import THROTTLE_MASK, NvmlPowerMeter, PowerMeter, read_sample, reason_names
from .energy_window import (DEFAULT_QUANTISATION_BOUND, DEFAULT_REPEATS, MAX_WINDOW_S,  # noqa: F401 - re-exported
                            Cooldown, EnergyBaseline, EnergyEstimate, EnergyWindow, Sampler, energy_estimate,
                            energy_window)
from .measure_checks import RECOMMENDED_GPU_WINDOW_S, check_latency, judge_speed, measure_energy  # noqa: F401
from .protocol import BenchReply, Malformed, failure
from .sandbox import Limits, SandboxedWorker, WorkerDied
from .session import CandidateSession, SessionError, tensor_nbytes
from .wire import WIRE_NAMES, encode_args

__all__ = ["Cooldown", "EnergyBaseline", "EnergyEstimate", "EnergyWindow", "MeasureError", "MeasureOptions",
           "Measurement", "RECOMMENDED_GPU_WINDOW_S", "energy_estimate", "energy_window", "measure"]


class MeasureError(Exception):
    """The candidate could not be measured at all (rejected statically, failed to load, crashed,
    timed out). ``reason`` is a Verdict Reason value."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Measurement:
    """Latency and energy samples of one candidate on one case, with the conditions they were
    taken under. ``flags`` list what makes the numbers untrustworthy (a tuner must not rank a
    measurement that has any); ``warnings`` are advisory."""

    target: str
    device: str
    case: dict
    config: dict | None
    backend: str = "gpu"
    measured: bool = True
    sandbox: str = ""
    # latency (seconds; the first timed call is discarded)
    samples_s: list[float] = field(default_factory=list)
    n: int = 0
    median_s: float | None = None
    p20_s: float | None = None
    p80_s: float | None = None
    mean_s: float | None = None
    sem_s: float | None = None
    clock: str = ""                       # "cuda-events" or "perf_counter" (the worker's claim)
    input_sets: int = 0
    l2_flush_bytes: int = 0
    l2_persist_reset: bool = False
    first_call_s: float | None = None     # parent wall time of the first (compiling) call
    warmup_calls: int = 0
    batch_wall_s: float | None = None     # parent clock: the timed batch, request to reply
    overhead_s: float | None = None       # calibrated harness overhead for that batch
    claimed_total_s: float | None = None  # sum of the worker's per-call times in that batch
    wall_per_call_s: float | None = None  # (batch_wall - overhead) / calls: the parent's own view
    # energy (joules per call; None when not measured): the energy_windows windows' energy over their
    # calls, each figure with a ≈95 % uncertainty (half-width; docs/MEASUREMENT.md, "The error model")
    energy_j_per_call: float | None = None
    energy_uncertainty_j: float | None = None
    dynamic_energy_j_per_call: float | None = None   # minus idle power × time per call
    dynamic_energy_uncertainty_j: float | None = None
    energy_repeats_j: list[float] = field(default_factory=list)   # each window's energy per call
    energy_error: dict | None = None                  # the uncertainty's parts: quantisation, repeat, idle
    energy_windows: int = 0
    energy_window_s: float | None = None              # all windows together
    energy_calls: int | None = None                   # all windows together
    energy_phases_s: list[float] = field(default_factory=list)    # each window's random start phase
    energy_update_period_s: float | None = None       # the counter's update period, and whether the
    energy_update_period_source: str | None = None    # meter declared it or it was measured
    energy_quantisation_bound: float | None = None    # achieved per window: 2·T_update / T_window
    cooldown_s: float | None = None                   # waited before the batch for the idle baseline
    cooldown_reached: bool | None = None
    idle_power_w: float | None = None
    idle_power_uncertainty_w: float | None = None
    avg_power_w: float | None = None                  # window energy / window time
    sampled_power_w: float | None = None              # mean of the power samples in the window
    energy_source: str | None = None                  # "nvml: <name>" | "simulated: <name>" | None
    energy_rejected: str | None = None                # why the window's energy was not accepted
    # conditions
    before: dict | None = None
    after: dict | None = None
    power_limit_w: float | None = None
    throttled: bool = False
    throttle_reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.flags

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------


def _input_calls(tgt, case, k: int, dtype: str, rng: random.Random) -> tuple[list[Call], list[str]]:
    if isinstance(case, Call):
        return [case] * k, ["one Call given: the input sets share values (distinct memory only)"]
    if isinstance(case, Sequence) and not isinstance(case, (str, bytes)) and case and isinstance(case[0], Call):
        return list(case), []
    if isinstance(case, Case):
        base = case
    elif tgt.kind == "problem":
        base = Case(params={}, dtype="native", dist="native")
    else:
        base = Case(params=dict(case or {}), dtype=dtype)
    return [tgt.build(replace(base, seed=rng.randrange(2**31))) for _ in range(k)], []


def _order(rng: random.Random, k: int, n: int) -> list[int]:
    """n set indices: back-to-back random permutations, so every set is visited evenly."""
    out: list[int] = []
    while len(out) < n:
        perm = list(range(k))
        rng.shuffle(perm)
        out += perm
    return out[:n]


@dataclass
class MeasureOptions:
    """How to measure: everything but the target, the candidate, the case and the config.

    ``measure(..., options=MeasureOptions(...))``, or the same names as keyword arguments."""

    meter: Any = "auto"                 # a PowerMeter, "auto" (NVML on CUDA, none on CPU) or None
    energy: bool = True
    energy_bound: float | None = DEFAULT_QUANTISATION_BOUND   # per window, 2·T_update/T_window; None: min_window_s
    energy_repeats: int = DEFAULT_REPEATS                     # windows, each at a random start phase
    min_window_s: float = 1.0           # each energy window lasts at least this (and what the bound needs)
    max_energy_window_s: float = MAX_WINDOW_S
    cooldown: Cooldown | None = field(default_factory=Cooldown)   # None: no wait for the idle baseline
    energy_baseline: EnergyBaseline | None = None   # shared by the batches compared (a tuner's); None: this call's
    idle_power_w: float | None = None   # measured over idle_window_s (after the cooldown) when None
    idle_window_s: float = 1.0
    energy_flush_l2: bool = False
    sample_period_s: float = 0.02
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    input_sets: int = 8
    min_calls: int = 10
    max_calls: int = 200
    compare_sets: int = 1
    dtype: str = "fp32"
    seed: int | None = None
    reference_latency_s: float | None = None   # enables the > 10× speedup warning
    peak_flops: float | None = None            # with peak_bytes_per_s: the roofline check
    peak_bytes_per_s: float | None = None
    timeout: float = 300.0              # CPU seconds for the whole measurement (sandbox.Limits.cpu_s)
    static_checks: bool = True          # tests only
    candidate_name: str = "candidate.py"


@dataclass
class _Plan:
    """The parent's side of a case's benchmark: kept in the session, reused by every trial."""

    calls: list
    refs: dict
    compare_idx: list[int]
    out_shape: list[int]
    out_dtype: torch.dtype
    fp_seed: int
    warnings: list[str]
    target: Any = None
    pin: Any = None          # the caller's case object, kept alive so its id() is not reused


class _Bench:
    """One worker's bench requests, with the overhead calibration measured in it."""

    def __init__(self, worker: SandboxedWorker, meter: PowerMeter | None):
        self.worker, self.meter = worker, meter
        self.fixed_s = 0.0
        self.per_call_s = 0.0

    def request(self, header: dict, blobs=(), *, busy: bool = False, extra_s: float = 0.0, parse: bool = True):
        if busy and self.meter is not None:
            self.meter.mark_busy(True)
        t0 = time.perf_counter()
        try:
            reply, out = self.worker.request(header, list(blobs), extra_wall_s=extra_s)
        except WorkerDied as e:
            raise MeasureError(e.reason, e.detail) from None
        finally:
            wall = time.perf_counter() - t0
            if busy and self.meter is not None:
                self.meter.mark_busy(False)
        if reply.get("ok") is not True:
            reason, detail = failure(reply)
            raise MeasureError(reason or "runtime-error", detail)
        if parse:
            try:
                reply = BenchReply.parse(reply)
            except Malformed as e:
                self.worker.close_quietly()
                raise MeasureError("crash", f"the worker sent a malformed bench reply: {e}") from None
        return reply, out, wall

    def overhead(self, calls: int) -> float:
        return self.fixed_s + calls * self.per_call_s

    def calibrate(self, base: dict, shape, dtype: str, k: int, max_calls: int) -> None:
        """Harness overhead of a batch: per request (round trip, final sync, re-reading and
        returning outputs) and per call (flush, fingerprint, loop), timed with a harness function
        in place of the candidate, before the candidate is imported. Two batch sizes, both
        visiting every input set, separate the two parts; the larger is as long as the longest
        timed batch, so the overhead of a real batch is interpolated, not extrapolated."""
        cal = dict(base, calibrate={"shape": list(shape), "dtype": dtype})
        self.request(dict(cal, calls=k))   # allocates the flush buffer and the fingerprint weights
        n1, n2 = k, k + max(24, max_calls)
        w1 = min(self.request(dict(cal, calls=n1))[2] for _ in range(2))
        w2 = min(self.request(dict(cal, calls=n2))[2] for _ in range(2))
        self.per_call_s = max(0.0, (w2 - w1) / (n2 - n1))
        self.fixed_s = max(0.0, w1 - n1 * self.per_call_s)


def measure(target, candidate_source: str, case: Mapping | Case | Call | Sequence[Call], *,
            config: dict | None = None, options: MeasureOptions | None = None,
            session: CandidateSession | None = None, **overrides) -> Measurement:
    """Measure ``candidate_source`` on ``case`` (Case params, a Case, a Call or a list of Calls).

    ``options`` (or the same names as keyword arguments, see ``MeasureOptions``) say how.
    ``session``: a ``CandidateSession`` for this target and source; a tuner passes one so that
    every trial reuses one worker, one Triton cache, the staged input sets, their references
    and the overhead calibration (only the config changes). Raises ``MeasureError`` when the
    candidate cannot be measured at all; otherwise returns a Measurement, whose ``flags`` say
    whether its numbers can be trusted.
    """
    opts = replace(options or MeasureOptions(), **overrides)
    if opts.input_sets < 1 or opts.min_calls < 1 or opts.max_calls < opts.min_calls:
        raise ValueError("need input_sets ≥ 1 and 1 ≤ min_calls ≤ max_calls")
    if session is None:
        with CandidateSession(target, candidate_source, candidate_name=opts.candidate_name,
                              static_checks=opts.static_checks) as own:
            return _measure(own, case, config, opts)
    if not session.matches(target, candidate_source):
        raise ValueError("the session is for another target or candidate source")
    return _measure(session, case, config, opts)


def _measure(session: CandidateSession, case, config, opts: MeasureOptions) -> Measurement:
    t_begin = time.monotonic()
    tgt = session.target
    problems = session.problems()
    if problems:
        raise MeasureError(problems[0][0], "static check: " + "; ".join(p for _, p in problems))
    rng = random.Random(secrets.randbits(32) if opts.seed is None else int(opts.seed))
    cuda = session.device == "cuda"
    case_desc = case.to_json() if isinstance(case, Case) else dict(case) if isinstance(case, Mapping) else \
        {"calls": len(case) if isinstance(case, Sequence) else 1}
    m = Measurement(target=tgt.name, device=torch.cuda.get_device_name() if cuda else "cpu (triton interpreter)",
                    case=case_desc, config=config)
    if not cuda:
        m.warnings.append("CPU run: the times are of the Triton interpreter, not of a GPU")
    meter, owned_meter = _meter(opts, cuda, m)
    try:
        try:
            plan, bench = _prepare(session, case, config, opts, rng, meter)
        except WorkerDied as e:
            raise MeasureError(e.reason, e.detail) from None
        except SessionError as e:
            raise MeasureError(e.reason, e.detail) from None
        m.input_sets = len(plan.calls)
        m.warnings += plan.warnings
        if m.input_sets < 8:
            m.warnings.append(f"{m.input_sets} input sets: fewer than 8 lets caches and branch history favour "
                              "the candidate")
        w = session.worker
        m.sandbox = w.mode if w.mode == "namespaces" else f"weak: {w.mode_detail}"
        if w.mode != "namespaces":
            m.warnings.append(f"sandbox is weak ({w.mode_detail})")
        _run(bench, m, plan, rng, opts, cuda, do_energy=opts.energy and meter is not None)
    finally:
        if owned_meter is not None:
            owned_meter.close()
    judge_speed(m, tgt, plan.calls[0], opts.reference_latency_s, opts.peak_flops, opts.peak_bytes_per_s)
    m.duration_s = time.monotonic() - t_begin
    return m


def _meter(opts: MeasureOptions, cuda: bool, m: Measurement):
    """(the meter to use, the one this call opened and must close)."""
    meter, owned = opts.meter, None
    if meter == "auto":
        meter = None
        if cuda and opts.energy:
            try:
                meter = owned = NvmlPowerMeter.for_torch_device()
            except Exception as e:  # EnvironmentProblem, or a driver without the calls we need
                m.warnings.append(f"no energy: {e}")
    if meter is not None and opts.energy:
        m.energy_source = ("simulated: " if meter.simulated else "nvml: ") + meter.device_name()
        if meter.simulated:
            m.warnings.append("energy and conditions come from a SimulatedPowerMeter (a test device), not hardware")
    elif opts.energy:
        m.energy_rejected = "no power meter on this machine: energy not measured"
    return meter, owned


def _plan_key(case, opts: MeasureOptions):
    if isinstance(case, (Case, Mapping)):
        what = repr(case) if isinstance(case, Case) else json.dumps(dict(case), sort_keys=True, default=str)
    else:
        what = ("object", id(case))     # a Call or list of Calls: the plan pins the object
    return ("measure", what, opts.dtype, opts.input_sets, opts.compare_sets)


def _prepare(session: CandidateSession, case, config, opts: MeasureOptions, rng, meter) -> tuple[_Plan, _Bench]:
    """Input sets and references (once per case, kept in the session), staged in a worker and
    calibrated before the candidate is imported (once per worker), then the config bound."""
    tgt = session.target
    key = _plan_key(case, opts)
    limits = Limits(cpu_s=opts.timeout)
    plan = session.refs.get(key)
    staged = session.bench
    if plan is not None and staged is not None and staged[0] == key and session.alive() and session.loaded:
        session.begin(limits)
        session.load(config)
        return plan, staged[1]
    if plan is None:
        calls, warnings = _input_calls(tgt, case, opts.input_sets, opts.dtype, rng)
        k = len(calls)
        compare_idx = sorted(rng.sample(range(k), min(max(1, opts.compare_sets), k)))
        refs = {}
        with torch.no_grad():
            for i in compare_idx:
                ref64, native, _ = tgt.reference(calls[i], session.init_seed)
                refs[i] = (ref64, native)
        first = refs[compare_idx[0]][1]
        plan = _Plan(calls, refs, compare_idx, list(first.shape), first.dtype, rng.randrange(2**31), warnings,
                     target=tgt, pin=case)
        session.refs.put(key, plan, tensor_nbytes(*(t for r in refs.values() for t in r)) + sum(
            tensor_nbytes(*c.args, *c.kwargs.values()) for c in calls))
    if session.alive() and session.loaded:
        session.reset()   # the calibration must run before the candidate is imported
    worker = session.begin(limits)
    bench = _Bench(worker, meter)
    flat: list = []
    layout = []
    for c in plan.calls:
        flat += list(c.args) + list(c.kwargs.values())
        layout.append([len(c.args), list(c.kwargs)])
    enc, (metas, blobs) = encode_args(flat)
    bench.request({"op": "bench", "sets": layout, "args": enc, "metas": metas, "device": session.device}, blobs,
                  parse=False)
    cuda = session.device == "cuda"
    base = {"op": "bench", "mode": "calls", "flush_l2": cuda, "fingerprint_every": 1, "fingerprint_seed": plan.fp_seed,
            "order": _order(rng, len(plan.calls), 64), "return_outputs": plan.compare_idx}
    bench.calibrate(base, plan.out_shape, WIRE_NAMES[plan.out_dtype], len(plan.calls), opts.max_calls)
    session.load(config)
    session.bench = (key, bench)
    return plan, bench


def _run(b: _Bench, m: Measurement, plan: _Plan, rng, opts: MeasureOptions, cuda: bool, *, do_energy: bool) -> None:
    k = len(plan.calls)
    meter = b.meter
    sampler = Sampler(meter, opts.sample_period_s) if meter is not None else None
    if meter is not None:
        before = read_sample(meter)
        m.before = before.conditions()
        if opts.energy_baseline is not None and not opts.energy_baseline.taken:
            opts.energy_baseline.capture(before)   # the idle state before the first batch's work
        m.power_limit_w = meter.power_limit_w()
        violations_before = meter.violation_ns()
    base = {"op": "bench", "mode": "calls", "flush_l2": cuda, "fingerprint_every": 1, "fingerprint_seed": plan.fp_seed,
            "return_outputs": plan.compare_idx}
    try:
        if sampler:
            sampler.__enter__()
        warm = {"op": "bench", "mode": "warmup", "flush_l2": cuda, "order": _order(rng, k, 8 * k)}
        m.first_call_s = b.request(dict(warm, duration_s=0.0, min_calls=1, max_calls=1), busy=True)[2]
        extra = rng.randrange(k)   # a warm-up length the candidate cannot predict from call counts
        reply, _, wall = b.request(dict(warm, duration_s=opts.warmup_ms / 1e3, min_calls=1 + extra,
                                        max_calls=100_000), busy=True)
        m.warmup_calls = 1 + reply.n
        est = max((wall - b.fixed_s) / max(1, reply.n), 1e-7)
        n = min(max(math.ceil(opts.rep_ms / 1e3 / est), opts.min_calls, k), opts.max_calls) + 1   # +1: first discarded
        order = _order(rng, k, n)
        reply, out_blobs, wall = b.request(dict(base, calls=n, order=order), busy=True)
        set_fps = check_latency(m, b, reply, out_blobs, wall, n, order, plan)
        if do_energy:
            measure_energy(m, b, rng, k, set_fps, plan.fp_seed, opts, cuda, sampler, _order)
    finally:
        if sampler:
            sampler.__exit__(None, None, None)
    if meter is not None:
        m.after = read_sample(meter).conditions()
        reasons = 0
        for smp in sampler.samples:
            reasons |= (smp.reasons or 0) & THROTTLE_MASK
        m.throttle_reasons = reason_names(reasons)
        after = meter.violation_ns()
        if violations_before and after:
            for name, ns in after.items():
                d = ns - violations_before.get(name, ns)
                if d > 0:
                    m.throttle_reasons.append(f"{name}_violation_{d / 1e6:.0f}ms")
        m.throttled = bool(m.throttle_reasons)
        if m.throttled:
            m.warnings.append("the clocks were throttled during the measurement (" + ", ".join(m.throttle_reasons)
                              + "): samples are not comparable with unthrottled ones")
