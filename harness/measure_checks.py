"""What ``measure`` checks in the worker's claims: the timed batch, the energy window, the speed.

Each function adds ``flags`` (the numbers cannot be trusted: a tuner must not rank them) or
``warnings`` (advisory) to a ``Measurement``. The worker's reply arrives parsed
(``protocol.BenchReply``); its times, counts and fingerprints are claims, checked here against
the parent's clock, the parent's copy of sampled outputs and the float64 reference.
"""

from __future__ import annotations

import math
import statistics

from .compare import compare
from .energy_window import EnergyBaseline, energy_estimate
from .protocol import BenchReply
from .wire import decode_tensor
from .worker_bench import fingerprint_hex, fingerprint_parts, fingerprint_weights

RECOMMENDED_GPU_WINDOW_S = 5.0   # ~4% counter-quantisation error at a 100 ms update period
QUANTISATION_WARN_ABOVE = 0.04   # without an asked bound: warn above RECOMMENDED_GPU_WINDOW_S's ~4 %
WALL_RATIO_FLOOR = 0.5           # claimed time below this fraction of the parent's → flagged
ENERGY_FINGERPRINT_EVERY = 16    # energy windows fingerprint 1 call in 16: the hash costs energy too


def quantile(sorted_xs: list[float], q: float) -> float:
    pos = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def check_latency(m, b, reply: BenchReply, out_blobs, wall, n, order, plan) -> dict[int, str]:
    """Latency statistics and every check on the timed batch; returns set index → fingerprint."""
    times, fps = reply.times_s, reply.fingerprints
    m.clock, m.l2_flush_bytes, m.l2_persist_reset = reply.clock, reply.flush_bytes, reply.l2_persist_reset
    if reply.n != n or len(times) != n or len(fps) != n:
        m.flags.append(f"the worker's reply does not match the request: asked for {n} calls, got n={reply.n}, "
                       f"{len(times)} times and {len(fps)} fingerprints")
    if not all(math.isfinite(t) and t >= 0 for t in times):
        m.flags.append("the worker reported negative or non-finite call times")
        times = [t for t in times if math.isfinite(t) and t >= 0]
    m.samples_s = times[1:]
    if m.samples_s:
        xs = sorted(m.samples_s)
        m.n = len(xs)
        m.median_s, m.p20_s, m.p80_s = quantile(xs, 0.5), quantile(xs, 0.2), quantile(xs, 0.8)
        m.mean_s = statistics.fmean(xs)
        m.sem_s = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None
    # The parent's clock against the worker's.
    m.batch_wall_s, m.overhead_s, m.claimed_total_s = wall, b.overhead(n), sum(times)
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
        if not 0 <= j < len(order):
            m.flags.append(f"the worker reported a fingerprint for call {j!r}, which was not requested")
            continue
        by_set.setdefault(order[j], set()).add(fp)
        first_fp.setdefault(order[j], fp)
    varied = sorted(i for i, v in by_set.items() if len(v) > 1)
    if varied:
        m.flags.append(f"nondeterministic: identical inputs gave different output bytes across the timed calls "
                       f"(input sets {varied})")
    if reply.changed_after_return:
        m.flags.append(f"an output changed after its call returned (input sets {reply.changed_after_return[:16]}): "
                       "deferred or side-stream writes")
    # Sampled outputs: the bytes must be the fingerprinted ones, and match the reference.
    outs = {i: (meta, out_blobs[pos]) for pos, (i, meta) in enumerate(reply.outputs) if pos < len(out_blobs)}
    weights = None
    tgt = plan.target
    for i in plan.compare_idx:
        if i not in outs:
            m.flags.append(f"the worker did not return the output of input set {i}")
            continue
        try:
            out = decode_tensor(*outs[i])
        except Exception as e:
            m.flags.append(f"the worker returned a malformed output for input set {i}: {e}")
            continue
        weights = fingerprint_weights(plan.fp_seed) if weights is None else weights
        if first_fp.get(i) != fingerprint_hex(fingerprint_parts(out, weights)):
            m.flags.append(f"the output returned for input set {i} is not the one the worker fingerprinted")
        ref64, native = plan.refs[i]
        if tuple(out.shape) != tuple(ref64.shape) or out.dtype != native.dtype:
            m.flags.append(f"output of input set {i} is {tuple(out.shape)} {out.dtype}, expected "
                           f"{tuple(ref64.shape)} {native.dtype}")
            continue
        cmp = compare(out, ref64, native, tgt.tolerance, tgt.reduction_length(plan.calls[i]))
        if not cmp.ok:
            m.flags.append(f"output of input set {i} does not match the reference: {cmp.detail}")
    return {i: fp for i, fp in first_fp.items() if i not in varied}


def measure_energy(m, b, rng, k, set_fps, fp_seed, opts, cuda, sampler, order_fn) -> None:
    """The energy batch (``energy_window.energy_estimate``) and its checks, written into ``m``."""
    order = order_fn(rng, k, 64 * k)
    phase = rng.randrange(ENERGY_FINGERPRINT_EVERY)
    replies: list[BenchReply] = []

    def run_calls(duration_s: float) -> int:
        reply, _, _ = b.request({"op": "bench", "mode": "duration", "duration_s": duration_s, "min_calls": 1,
                                 "max_calls": 1 << 31, "order": order, "flush_l2": bool(cuda and opts.energy_flush_l2),
                                 "fingerprint_every": ENERGY_FINGERPRINT_EVERY, "fingerprint_phase": phase,
                                 "fingerprint_seed": fp_seed, "sync_every": 64}, extra_s=duration_s)
        replies.append(reply)
        return reply.n

    baseline = opts.energy_baseline
    if baseline is None:   # no shared baseline: this call's own idle state, read before its latency phase
        before = m.before or {}
        baseline = EnergyBaseline(before.get("temperature_c"), before.get("power_w"), taken=True)
    est = energy_estimate(b.meter, run_calls, bound=opts.energy_bound, repeats=opts.energy_repeats,
                          min_window_s=opts.min_window_s, max_window_s=opts.max_energy_window_s,
                          idle_power_w=opts.idle_power_w, idle_window_s=opts.idle_window_s, cooldown=opts.cooldown,
                          baseline=baseline, rng=rng)
    ws = est.windows
    m.energy_windows = len(ws)
    m.energy_window_s = sum(w.window_s for w in ws if w.window_s is not None) if ws else None
    m.energy_calls = sum(w.calls for w in ws) or None
    m.idle_power_w, m.idle_power_uncertainty_w = est.idle_power_w, est.idle_power_uncertainty_w
    m.energy_update_period_s, m.energy_update_period_source = est.update_period_s, est.update_period_source
    m.energy_quantisation_bound = est.quantisation_rel
    m.energy_phases_s = [w.phase_s for w in ws]
    m.cooldown_s, m.cooldown_reached = est.cooldown_s, est.cooldown_reached
    m.warnings += est.notes
    bad = sorted({order[j % len(order)] for r in replies for j, fp in r.fingerprints
                  if j >= 0 and order[j % len(order)] in set_fps and set_fps[order[j % len(order)]] != fp})
    if bad:
        m.flags.append(f"outputs in the energy window differ from the latency phase's for the same inputs "
                       f"(input sets {bad})")
    if est.rejected:
        m.energy_rejected = est.rejected
        if "stopped early" in est.rejected:
            m.flags.append(est.rejected)
        return
    m.energy_j_per_call, m.dynamic_energy_j_per_call = est.j_per_call, est.dynamic_j_per_call
    m.energy_uncertainty_j, m.dynamic_energy_uncertainty_j = est.uncertainty_j, est.dynamic_uncertainty_j
    m.energy_repeats_j = list(est.repeats_j)
    m.energy_error = {"quantisation_j": est.quantisation_j, "repeat_j": est.repeat_j, "idle_j": est.idle_j,
                      "combined": "root-sum-square of ≈95 % half-widths"}
    m.avg_power_w = sum(w.avg_power_w * w.window_s for w in ws) / m.energy_window_s
    powers = [x.power_w for w in ws for x in (sampler.between(w.t_start, w.t_end) if sampler else [])
              if x.power_w is not None]
    if powers:
        m.sampled_power_w = statistics.fmean(powers)
        if m.avg_power_w and not 0.7 <= m.sampled_power_w / m.avg_power_w <= 1.3:
            m.warnings.append(f"sampled power ({m.sampled_power_w:.1f} W) and the energy counter "
                              f"({m.avg_power_w:.1f} W) disagree by more than 30%")
    per_call_s = m.energy_window_s / m.energy_calls
    if m.median_s and per_call_s < 0.5 * m.median_s:
        m.warnings.append(f"the energy window's calls took {per_call_s:.3g} s each, under half the latency "
                          f"median ({m.median_s:.3g} s): is the call count over-reported?")
    asked = opts.energy_bound if opts.energy_bound is not None else QUANTISATION_WARN_ABOVE
    if est.quantisation_rel is not None and est.quantisation_rel > asked * 1.001 and not (b.meter and b.meter.simulated):
        m.warnings.append(f"energy windows of {est.window_s:.2f} s bound the counter's quantisation only to "
                          f"{est.quantisation_rel:.1%} (2·T_update/T_window at {est.update_period_s * 1e3:.0f} ms "
                          "updates)")


def judge_speed(m, tgt, call, reference_latency_s, peak_flops, peak_bytes_per_s) -> None:
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
