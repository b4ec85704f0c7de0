"""``measure``: latency and energy of a candidate on this machine (the ``gpu`` backend).

The candidate runs in a sandboxed worker (the same one ``verify`` uses). The worker runs the
calls and reports times and output fingerprints, which the trusted parent treats as claims:

* Latency: K ≥ 8 input sets staged once, a compile call, a time-based warm-up, then N timed
  calls in a random order the parent picks, each after an L2 flush (on CUDA), each bracketed by
  CUDA events on the current stream (on CPU: the worker's wall clock). The parent times the
  whole batch with its own clock, subtracts the loop's overhead (calibrated in the same worker
  *before* the candidate is imported, so the candidate cannot touch the calibration), and flags
  a batch whose claimed total is under half of what it saw. Every timed output is
  fingerprinted; identical inputs must give identical bytes, and sampled outputs travel back
  and are compared with the reference.
* Energy: the parent reads the meter's energy counter at counter updates before and after a
  window of ≥ ``min_window_s`` of back-to-back calls, measures idle power the same way, and a
  thread samples power, clocks, temperature and throttle reasons every ~20 ms throughout.

See docs/MEASUREMENT.md ("GPU measurement method") for the method and everything it flags.
"""

from __future__ import annotations

import math
import random
import secrets
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from ..kernels.spec import Call, Case
from .compare import compare
from .energy import THROTTLE_MASK, MeterSample, NvmlPowerMeter, PowerMeter, read_sample, reason_names
from .sandbox import Limits, SandboxedWorker, WorkerDied
from .static_checks import check_candidate
from .verify import _load_request, resolve_target
from .wire import decode_tensor, encode_args
from .worker import fingerprint_hex, fingerprint_parts, fingerprint_weights

RECOMMENDED_GPU_WINDOW_S = 5.0   # ~4% counter-quantisation error at a 100 ms update period
WALL_RATIO_FLOOR = 0.5           # claimed time below this fraction of the parent's → flagged
ENERGY_FINGERPRINT_EVERY = 16    # energy windows fingerprint 1 call in 16: the hash costs energy too


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
    # energy (joules per call; None when not measured)
    energy_j_per_call: float | None = None
    dynamic_energy_j_per_call: float | None = None   # minus idle power × time per call
    energy_window_s: float | None = None
    energy_calls: int | None = None
    idle_power_w: float | None = None
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


@dataclass
class EnergyWindow:
    """The outcome of one energy window (see ``energy_window``)."""

    j_per_call: float | None = None
    dynamic_j_per_call: float | None = None
    window_s: float | None = None
    calls: int = 0
    idle_power_w: float | None = None
    avg_power_w: float | None = None
    t_start: float | None = None       # parent clock at the request, and at the reply
    t_end: float | None = None
    rejected: str | None = None
    notes: list[str] = field(default_factory=list)


def _wait_for_update(meter: PowerMeter, clock, sleep, timeout_s: float, poll_s: float):
    """(counter value, time seen) at the counter's next update, or None if it did not update."""
    e0 = meter.energy_mj()
    if e0 is None:
        return None
    t0 = clock()
    while clock() - t0 < timeout_s:
        sleep(poll_s)
        e = meter.energy_mj()
        if e is not None and e != e0:
            return e, clock()
    return None


def energy_window(meter: PowerMeter, run_calls: Callable[[float], int], *, min_window_s: float,
                  idle_power_w: float | None = None, idle_window_s: float = 1.0,
                  clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                  update_timeout_s: float = 0.5, poll_s: float = 0.002) -> EnergyWindow:
    """Energy per call over a window of ``run_calls(min_window_s)`` (which returns the calls made).

    Both ends are read just after a counter update, so the only energy outside the calls is
    the idle gap between that update and the request (and the reply and the next update);
    idle power × those gaps is taken off. Idle power is measured the same way over
    ``idle_window_s`` unless given.
    """
    res = EnergyWindow(idle_power_w=idle_power_w)
    if meter.energy_mj() is None:
        res.rejected = "this device has no energy counter (NVML's needs Volta or newer)"
        return res
    if res.idle_power_w is None:
        a = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
        sleep(idle_window_s)
        b = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
        if a and b and b[0] > a[0] and b[1] > a[1]:
            res.idle_power_w = (b[0] - a[0]) / 1e3 / (b[1] - a[1])
        else:
            res.notes.append("idle power could not be measured: the counter did not advance while idle")
    start = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
    if start is None:
        res.notes.append(f"the energy counter did not update within {update_timeout_s:g} s before the window; "
                         "its start is not aligned to an update")
        start = (meter.energy_mj(), clock())
    meter.mark_busy(True)
    res.t_start = clock()
    try:
        res.calls = int(run_calls(min_window_s))
    finally:
        res.t_end = clock()
        meter.mark_busy(False)
    end = _wait_for_update(meter, clock, sleep, update_timeout_s, poll_s)
    if end is None:
        res.notes.append(f"the energy counter did not update within {update_timeout_s:g} s after the window; "
                         "its end is not aligned to an update")
        end = (meter.energy_mj(), clock())
    res.window_s = res.t_end - res.t_start
    delta_j = ((end[0] or 0) - (start[0] or 0)) / 1e3
    if delta_j <= 0:
        res.rejected = (f"the energy counter did not advance during the {res.window_s:.3g} s window (a window "
                        "shorter than the counter's update period, or a stuck counter)")
        return res
    if res.calls <= 0:
        res.rejected = "no calls ran in the energy window"
        return res
    busy_j = delta_j
    if res.idle_power_w is not None:
        gaps = max(0.0, res.t_start - start[1]) + max(0.0, end[1] - res.t_end)
        busy_j -= res.idle_power_w * gaps
    else:
        res.notes.append("the window's energy includes the idle gaps at its ends (idle power unknown)")
    res.j_per_call = busy_j / res.calls
    res.avg_power_w = busy_j / res.window_s if res.window_s > 0 else None
    if res.idle_power_w is not None:
        res.dynamic_j_per_call = (busy_j - res.idle_power_w * res.window_s) / res.calls
        floor = res.idle_power_w * res.window_s / res.calls
        if res.j_per_call < 0.98 * floor:
            res.rejected = (f"energy per call {res.j_per_call:.4g} J is below idle power × time per call "
                            f"({floor:.4g} J): the work did not happen inside the window, or the counter is wrong")
    if res.window_s < 0.98 * min_window_s and res.rejected is None:
        res.rejected = (f"the window lasted {res.window_s:.3g} s by the parent's clock, less than the "
                        f"{min_window_s:g} s asked: the worker stopped early")
    return res


class _Sampler:
    """Polls the meter every ``period_s`` from a parent thread."""

    def __init__(self, meter: PowerMeter, period_s: float):
        self.meter, self.period_s = meter, period_s
        self.samples: list[MeterSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kernelagent-meter-sampler", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(read_sample(self.meter))
            except Exception:  # a meter read failing mid-run must not kill the measurement
                pass
            self._stop.wait(self.period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, t0: float, t1: float) -> list[MeterSample]:
        return [s for s in list(self.samples) if t0 <= s.t <= t1]


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


def _quantile(sorted_xs: list[float], q: float) -> float:
    pos = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


class _Session:
    """One worker, its calibration and the parent's bookkeeping for one ``measure`` call."""

    def __init__(self, worker: SandboxedWorker, m: Measurement, meter: PowerMeter | None, timeout: float):
        self.worker, self.m, self.meter, self.timeout = worker, m, meter, timeout
        self.fixed_s = 0.0
        self.per_call_s = 0.0

    def request(self, header: dict, blobs=(), *, busy: bool = False, extra_s: float = 0.0):
        if busy and self.meter is not None:
            self.meter.mark_busy(True)
        t0 = time.perf_counter()
        try:
            reply, out = self.worker.request(header, list(blobs), timeout=self.timeout + extra_s)
        except WorkerDied as e:
            raise MeasureError(e.reason, e.detail) from None
        finally:
            wall = time.perf_counter() - t0
            if busy and self.meter is not None:
                self.meter.mark_busy(False)
        if not reply.get("ok"):
            raise MeasureError(str(reply.get("reason", "runtime-error")), str(reply.get("detail", ""))[:4000])
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
            config: dict | None = None, meter: PowerMeter | str | None = "auto", min_window_s: float = 1.0,
            warmup_ms: float = 25.0, rep_ms: float = 100.0, input_sets: int = 8, min_calls: int = 10,
            max_calls: int = 200, dtype: str = "fp32", seed: int | None = None, energy: bool = True,
            idle_power_w: float | None = None, idle_window_s: float = 1.0, energy_flush_l2: bool = False,
            compare_sets: int = 1, reference_latency_s: float | None = None, peak_flops: float | None = None,
            peak_bytes_per_s: float | None = None, timeout: float = 300.0, static_checks: bool = True,
            candidate_name: str = "candidate.py", sample_period_s: float = 0.02) -> Measurement:
    """Measure ``candidate_source`` on ``case`` (Case params, a Case, a Call or a list of Calls).

    ``meter``: a PowerMeter, ``"auto"`` (NVML on a CUDA machine, none on CPU) or None (no
    energy). ``min_window_s``: the energy window; 1 s is the floor, 5 s
    (``RECOMMENDED_GPU_WINDOW_S``) is recommended on a real GPU. ``reference_latency_s`` and
    the peaks enable the speedup and roofline checks. Raises ``MeasureError`` when the
    candidate cannot be measured at all; otherwise returns a Measurement, whose ``flags`` say
    whether its numbers can be trusted. ``static_checks=False`` exists only for tests.
    """
    t_begin = time.monotonic()
    tgt = resolve_target(target)
    if input_sets < 1 or min_calls < 1 or max_calls < min_calls:
        raise ValueError("need input_sets ≥ 1 and 1 ≤ min_calls ≤ max_calls")
    if static_checks:
        problems = check_candidate(candidate_source, entry=tgt.entry if tgt.kind == "op" else None,
                                   model_class="ModelNew" if tgt.kind == "problem" else None)
        if problems:
            raise MeasureError(problems[0][0], "static check: " + "; ".join(p for _, p in problems))
    seed = secrets.randbits(32) if seed is None else int(seed)
    rng = random.Random(seed)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    init_seed = rng.randrange(2**31 - 1)
    calls, warnings = _input_calls(tgt, case, input_sets, dtype, rng)
    k = len(calls)
    case_desc = case.to_json() if isinstance(case, Case) else dict(case) if isinstance(case, Mapping) else {"calls": k}
    m = Measurement(target=tgt.name, device=torch.cuda.get_device_name() if cuda else "cpu (triton interpreter)",
                    case=case_desc, config=config, input_sets=k, warnings=warnings)
    if not cuda:
        m.warnings.append("CPU run: the times are of the Triton interpreter, not of a GPU")
    if k < 8:
        m.warnings.append(f"{k} input sets: fewer than 8 lets caches and branch history favour the candidate")

    owned_meter = None
    if meter == "auto":
        meter = None
        if cuda and energy:
            try:
                meter = owned_meter = NvmlPowerMeter.for_torch_device()
            except Exception as e:  # EnvironmentProblem, or a driver without the calls we need
                m.warnings.append(f"no energy: {e}")
    if meter is not None and energy:
        m.energy_source = ("simulated: " if meter.simulated else "nvml: ") + meter.device_name()
        if meter.simulated:
            m.warnings.append("energy and conditions come from a SimulatedPowerMeter (a test device), not hardware")
    elif energy:
        m.energy_rejected = "no power meter on this machine: energy not measured"

    compare_idx = sorted(rng.sample(range(k), min(max(1, compare_sets), k)))
    refs = {}
    with torch.no_grad():
        for i in compare_idx:
            ref64, native, _ = tgt.reference(calls[i], init_seed)
            refs[i] = (ref64, native)
    out_shape, out_dtype = list(refs[compare_idx[0]][1].shape), refs[compare_idx[0]][1].dtype

    limits = Limits(wall_s=timeout, reply_s=min(timeout, 120.0))
    if cuda:
        limits.memory_bytes = None
    fp_seed = rng.randrange(2**31)
    try:
        with SandboxedWorker(device=device, limits=limits) as worker:
            m.sandbox = worker.mode if worker.mode == "namespaces" else f"weak: {worker.mode_detail}"
            if worker.mode != "namespaces":
                m.warnings.append(f"sandbox is weak ({worker.mode_detail})")
            try:
                worker.start()
            except WorkerDied as e:
                raise MeasureError(e.reason, e.detail) from None
            s = _Session(worker, m, meter, limits.reply_s)
            _run(s, tgt, calls, candidate_source, candidate_name, config, device, init_seed, rng, fp_seed,
                 out_shape, out_dtype, compare_idx, refs, warmup_ms, rep_ms, min_calls, max_calls,
                 energy and meter is not None, min_window_s, idle_power_w, idle_window_s, energy_flush_l2,
                 sample_period_s)
    finally:
        if owned_meter is not None:
            owned_meter.close()
    _judge_speed(m, tgt, calls[0], reference_latency_s, peak_flops, peak_bytes_per_s)
    m.duration_s = time.monotonic() - t_begin
    return m


def _run(s: _Session, tgt, calls, source, candidate_name, config, device, init_seed, rng, fp_seed,
         out_shape, out_dtype, compare_idx, refs, warmup_ms, rep_ms, min_calls, max_calls, do_energy,
         min_window_s, idle_power_w, idle_window_s, energy_flush_l2, sample_period_s) -> None:
    from .wire import WIRE_NAMES

    m, k, cuda = s.m, len(calls), device != "cpu"
    flat: list = []
    layout = []
    for c in calls:
        flat += list(c.args) + list(c.kwargs.values())
        layout.append([len(c.args), list(c.kwargs)])
    enc, (metas, blobs) = encode_args(flat)
    s.request({"op": "bench", "sets": layout, "args": enc, "metas": metas, "device": device}, blobs)
    base = {"op": "bench", "mode": "calls", "flush_l2": cuda, "fingerprint_every": 1, "fingerprint_seed": fp_seed,
            "order": _order(rng, k, 64), "return_outputs": compare_idx}
    s.calibrate(base, out_shape, WIRE_NAMES[out_dtype], k, max_calls)
    load = _load_request(tgt, source, candidate_name, config, device, init_seed)
    s.request(*load)

    meter = s.meter
    sampler = _Sampler(meter, sample_period_s) if meter is not None else None
    if meter is not None:
        m.before = read_sample(meter).conditions()
        m.power_limit_w = meter.power_limit_w()
        violations_before = meter.violation_ns()
    try:
        if sampler:
            sampler.__enter__()
        warm = {"op": "bench", "mode": "warmup", "flush_l2": cuda, "order": _order(rng, k, 8 * k)}
        m.first_call_s = s.request(dict(warm, duration_s=0.0, min_calls=1, max_calls=1), busy=True)[2]
        extra = rng.randrange(k)   # a warm-up length the candidate cannot predict from call counts
        reply, _, wall = s.request(dict(warm, duration_s=warmup_ms / 1e3, min_calls=1 + extra, max_calls=100_000),
                                   busy=True)
        m.warmup_calls = 1 + int(reply.get("n", 0))
        est = max((wall - s.fixed_s) / max(1, int(reply.get("n", 1))), 1e-7)
        n = min(max(math.ceil(rep_ms / 1e3 / est), min_calls, k), max_calls) + 1   # +1: the first is discarded
        order = _order(rng, k, n)
        reply, out_blobs, wall = s.request(dict(base, calls=n, order=order), busy=True)
        set_fps = _check_latency(m, s, reply, out_blobs, wall, n, order, compare_idx, refs, tgt, calls, fp_seed)
        if do_energy:
            _measure_energy(m, s, rng, k, set_fps, fp_seed, min_window_s, idle_power_w, idle_window_s,
                            energy_flush_l2, cuda, sampler)
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


def _check_latency(m: Measurement, s: _Session, reply, out_blobs, wall, n, order, compare_idx, refs, tgt, calls,
                   fp_seed) -> dict[int, str]:
    """Latency statistics and every check on the timed batch; returns set index → fingerprint."""
    times = [float(t) for t in reply.get("times_s") or []]
    fps = reply.get("fingerprints") or []
    m.clock = str(reply.get("clock", ""))
    m.l2_flush_bytes = int(reply.get("flush_bytes", 0) or 0)
    m.l2_persist_reset = bool(reply.get("l2_persist_reset"))
    if int(reply.get("n", -1)) != n or len(times) != n or len(fps) != n:
        m.flags.append(f"the worker's reply does not match the request: asked for {n} calls, got n={reply.get('n')}, "
                       f"{len(times)} times and {len(fps)} fingerprints")
    if not all(math.isfinite(t) and t >= 0 for t in times):
        m.flags.append("the worker reported negative or non-finite call times")
        times = [t for t in times if math.isfinite(t) and t >= 0]
    m.samples_s = times[1:]
    if m.samples_s:
        xs = sorted(m.samples_s)
        m.n = len(xs)
        m.median_s, m.p20_s, m.p80_s = _quantile(xs, 0.5), _quantile(xs, 0.2), _quantile(xs, 0.8)
        m.mean_s = statistics.fmean(xs)
        m.sem_s = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None
    # The parent's clock against the worker's.
    m.batch_wall_s, m.overhead_s, m.claimed_total_s = wall, s.overhead(n), sum(times)
    budget = wall - m.overhead_s
    m.wall_per_call_s = budget / n if budget > 0 else None
    if budget > 0 and m.claimed_total_s < WALL_RATIO_FLOOR * budget:
        what = "event time" if m.clock == "cuda-events" else "the worker's own clock"
        m.flags.append(f"{what} ≪ wall time: the worker claims {m.claimed_total_s:.4g} s for {n} calls, the parent "
                       f"saw {budget:.4g} s beyond the calibrated overhead (side-stream work, or a patched timer?)")
    # Identical inputs must give identical bytes, in every timed call.
    by_set: dict[int, set[str]] = {}
    first_fp: dict[int, str] = {}
    for j, fp in fps:
        if not (isinstance(j, int) and 0 <= j < len(order)):
            m.flags.append(f"the worker reported a fingerprint for call {j!r}, which was not requested")
            continue
        by_set.setdefault(order[j], set()).add(str(fp))
        first_fp.setdefault(order[j], str(fp))
    varied = sorted(i for i, v in by_set.items() if len(v) > 1)
    if varied:
        m.flags.append(f"nondeterministic: identical inputs gave different output bytes across the timed calls "
                       f"(input sets {varied})")
    if reply.get("changed_after_return"):
        m.flags.append(f"an output changed after its call returned (input sets {reply['changed_after_return']}): "
                       "deferred or side-stream writes")
    # Sampled outputs: the bytes must be the fingerprinted ones, and match the reference.
    outs = {int(i): (meta, out_blobs[pos]) for pos, (i, meta) in enumerate(reply.get("outputs") or [])
            if pos < len(out_blobs)}
    weights = None
    for i in compare_idx:
        if i not in outs:
            m.flags.append(f"the worker did not return the output of input set {i}")
            continue
        try:
            out = decode_tensor(*outs[i])
        except Exception as e:
            m.flags.append(f"the worker returned a malformed output for input set {i}: {e}")
            continue
        weights = fingerprint_weights(fp_seed) if weights is None else weights
        if first_fp.get(i) != fingerprint_hex(fingerprint_parts(out, weights)):
            m.flags.append(f"the output returned for input set {i} is not the one the worker fingerprinted")
        ref64, native = refs[i]
        if tuple(out.shape) != tuple(ref64.shape) or out.dtype != native.dtype:
            m.flags.append(f"output of input set {i} is {tuple(out.shape)} {out.dtype}, expected "
                           f"{tuple(ref64.shape)} {native.dtype}")
            continue
        k_red = tgt.reduction_length(calls[i])
        cmp = compare(out, ref64, native, tgt.tolerance, k_red)
        if not cmp.ok:
            m.flags.append(f"output of input set {i} does not match the reference: {cmp.detail}")
    return {i: fp for i, fp in first_fp.items() if i not in varied}


def _measure_energy(m: Measurement, s: _Session, rng, k, set_fps, fp_seed, min_window_s, idle_power_w,
                    idle_window_s, flush_l2, cuda, sampler) -> None:
    order = _order(rng, k, 64 * k)
    phase = rng.randrange(ENERGY_FINGERPRINT_EVERY)
    replies = []

    def run_calls(duration_s: float) -> int:
        reply, _, _ = s.request({"op": "bench", "mode": "duration", "duration_s": duration_s, "min_calls": 1,
                                 "max_calls": 1 << 31, "order": order, "flush_l2": bool(cuda and flush_l2),
                                 "fingerprint_every": ENERGY_FINGERPRINT_EVERY, "fingerprint_phase": phase,
                                 "fingerprint_seed": fp_seed, "sync_every": 64}, extra_s=duration_s)
        replies.append(reply)
        return int(reply.get("n", 0))

    w = energy_window(s.meter, run_calls, min_window_s=min_window_s, idle_power_w=idle_power_w,
                      idle_window_s=idle_window_s)
    m.energy_window_s, m.energy_calls, m.idle_power_w = w.window_s, w.calls or None, w.idle_power_w
    m.warnings += w.notes
    if replies:
        bad = sorted({order[j % len(order)] for j, fp in replies[0].get("fingerprints") or []
                      if isinstance(j, int) and j >= 0 and order[j % len(order)] in set_fps
                      and set_fps[order[j % len(order)]] != fp})
        if bad:
            m.flags.append(f"outputs in the energy window differ from the latency phase's for the same inputs "
                           f"(input sets {bad})")
    if w.rejected:
        m.energy_rejected = w.rejected
        if "stopped early" in w.rejected:
            m.flags.append(w.rejected)
        return
    m.energy_j_per_call, m.dynamic_energy_j_per_call, m.avg_power_w = w.j_per_call, w.dynamic_j_per_call, w.avg_power_w
    powers = [x.power_w for x in sampler.between(w.t_start, w.t_end) if x.power_w is not None] if sampler else []
    if powers:
        m.sampled_power_w = statistics.fmean(powers)
        if m.avg_power_w and not 0.7 <= m.sampled_power_w / m.avg_power_w <= 1.3:
            m.warnings.append(f"sampled power ({m.sampled_power_w:.1f} W) and the energy counter "
                              f"({m.avg_power_w:.1f} W) disagree by more than 30%")
    if m.median_s and w.window_s and w.calls and w.window_s / w.calls < 0.5 * m.median_s:
        m.warnings.append(f"the energy window's calls took {w.window_s / w.calls:.3g} s each, under half the latency "
                          f"median ({m.median_s:.3g} s): is the call count over-reported?")
    if w.window_s is not None and w.window_s < RECOMMENDED_GPU_WINDOW_S and not (s.meter and s.meter.simulated):
        m.warnings.append(f"energy window of {w.window_s:.2f} s: {RECOMMENDED_GPU_WINDOW_S:g} s or more is recommended "
                          "(counter quantisation is about 2·T_update/T_window)")


def _judge_speed(m: Measurement, tgt, call: Call, reference_latency_s, peak_flops, peak_bytes_per_s) -> None:
    if not m.median_s or m.median_s <= 0:
        return
    if reference_latency_s:
        speedup = reference_latency_s / m.median_s
        if speedup > 10:
            m.warnings.append(f"speedup > 10× the reference ({speedup:.1f}×): check the candidate before trusting it")
    spec = getattr(tgt, "spec", None)
    if spec is not None and (peak_flops or peak_bytes_per_s):
        floor = max(spec.flops(call) / peak_flops if peak_flops else 0.0,
                    spec.bytes(call) / peak_bytes_per_s if peak_bytes_per_s else 0.0)
        if m.median_s < floor:
            m.flags.append(f"faster than the roofline floor: median {m.median_s:.4g} s < {floor:.4g} s "
                           "(max of FLOPs/peak and bytes/peak bandwidth)")
