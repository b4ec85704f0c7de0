"""The ``model`` measurement backend: an analytical latency and energy estimate from a SKU's spec
sheet and the static compile report, for targeting a GPU before (or without) having one.

For one launch of ``P`` programs of ``W`` warps on a SKU with ``S`` SMs::

    k        = resident blocks per SM actually used = min(blocks_per_sm, ceil(P / S))
    active   = min(S, P)                      SMs with work
    imbalance= ceil(P / S) · active / P       the busiest SM's share over the average (≥ 1)
    compute  = flops / (peak · active/S · min(1, k·W / warps_needed) · lane_util · tile_eff) · imbalance
    operands = P · (BLOCK_M + BLOCK_N) · K · elem / (active · 128 B/clk · clock) · imbalance   (tiled K loops)
    memory   = (bytes + spill traffic) / min(0.9 · BW, active · min(k · inflight / LAT, 2·BW/S)) · imbalance
    latency  = max(compute, operands, memory) + launch overhead + per-wave overhead

``blocks_per_sm`` comes from the compile report (shared memory, registers, threads; see
``harness.compile.check_feasible``); ``inflight`` is what one block has outstanding to memory
(one tile of the kernel's BLOCK_* constexprs, at most its whole share of the bytes), so tiny
tiles or too few programs cannot hide DRAM latency (Little's law). ``tile_eff`` is the
tile-quantization waste (BLOCK_N = 8192 for 4100 columns does half its lanes for nothing);
``lane_util`` the threads left idle when a tile has fewer elements than the block has threads.
Spills add their local-memory traffic.

**Clocks and energy.** A ``system`` part (``sm_clock_mhz``, ``power_limit_w``; what
``tune --system`` searches) sets the SM clock as a fraction ``r = f / f_boost`` of the spec
sheet's boost clock (the clock its peaks are quoted at; ``DEFAULT_CLOCK_MHZ`` where it gives
none). What scales with ``r`` and what does not::

    compute, operands      ∝ 1/r            (FLOP/s and shared-memory bytes per SM clock)
    per-SM load rate cap   ∝ r              (load/store issue is per SM clock)
    DRAM round trip        = L · (1 − c + c/r), c = CLOCKED_LATENCY_FRACTION (its on-chip part)
    DRAM bandwidth         independent of r (the memory clock is not touched)
    per-wave overhead      ∝ 1/r;  launch overhead fixed

so a memory-bound kernel loses little time at a lower SM clock (until its few compute cycles or
its load issue rate become the bound) and a compute-bound one slows as ~1/f. Board power::

    P      = P_static + P_mem + P_sm
    P_static = IDLE_POWER_FRACTION · TDP                 (leakage, board, fans; taken as clock-independent)
    P_mem    = MEM_POWER_FRACTION · TDP · u_mem          (HBM and memory system; u_mem = achieved DRAM fraction)
    P_sm     = SM_POWER_FRACTION · TDP · (active/S) · (SM_MIN_ACTIVITY + (1 − SM_MIN_ACTIVITY) · u_sm) · r · v(r)²
    v(r)     = max(VOLTAGE_FLOOR, VOLTAGE_INTERCEPT + (1 − VOLTAGE_INTERCEPT) · r)   (V / V_boost)

(dynamic power ~ f·V², with V on an assumed straight DVFS line through the boost point; ``u_sm``
the compute side's busy fraction). TDP is the spec sheet's ``power_limit_w``; the fractions add up
to 1, so a fully busy board at boost draws its limit. A ``power_limit_w`` below what the kernel
would draw makes the board lower its clock (as its firmware does) to the highest ``r`` that fits,
and latency follows that clock (``power_capped``, ``sm_clock_mhz_effective`` in the breakdown).
Energy per call is ``P × latency``. Without a ``system`` part the clock is the boost clock and the
limit the spec sheet's. None of these constants is calibrated against a GPU.

Every result is labelled ``predicted: true`` with its breakdown; it is a ranking aid for configs
on one SKU, not a substitute for the ``gpu`` backend's measurements.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..kernels._configs import PREDICTION_UNCERTAINTY

# Model constants (assumptions, named so the breakdown can say what was assumed).
DRAM_LATENCY_S = 700e-9        # loaded DRAM round trip on HBM-class GPUs
ACHIEVABLE_BW_FRACTION = 0.9   # best streaming kernels reach ~90 % of the spec-sheet bandwidth
SM_BW_CAP = 2.0                # one SM can draw at most ~2× its even share of DRAM bandwidth
LAUNCH_OVERHEAD_S = 3e-6       # GPU-side launch and drain of one kernel
WAVE_OVERHEAD_S = 0.3e-6       # block retire and refill per wave
IDLE_POWER_FRACTION = 0.3      # board power at idle as a fraction of the power limit (static, clock-independent)
MEM_POWER_FRACTION = 0.2       # memory system's share of the limit at full DRAM bandwidth
SM_POWER_FRACTION = 0.5        # SMs' dynamic share of the limit, fully busy at the boost clock
SM_MIN_ACTIVITY = 0.35         # an SM with resident warps that mostly wait on memory, relative to fully busy
VOLTAGE_INTERCEPT = 0.4        # V(f)/V(boost) = 0.4 + 0.6 · f/f_boost: an assumed straight DVFS line
VOLTAGE_FLOOR = 0.65           # … that stops at the lowest voltage the board runs at
CLOCKED_LATENCY_FRACTION = 0.3 # share of a DRAM round trip spent in the SM clock domain (L1, L2, crossbar)
MIN_CLOCK_FRACTION = 0.2       # the lowest SM clock a power cap can push the board to, relative to boost
SMEM_BYTES_PER_CLOCK = 128     # shared-memory bandwidth per SM: 32 banks × 4 B per clock
DEFAULT_CLOCK_MHZ = 1500       # when a SKU publishes no boost clock
WARPS_TO_SATURATE = {"none": 8, "mma.sync": 4, "wgmma": 4, "tcgen05": 4}
# How far apart two configs' predictions must be before the model can tell them apart. Assumed,
# not calibrated: no GPU measurement has checked the model yet (the GPU lane records
# model-vs-measured pairs to calibrate it). The library's reader uses the same number.
RELATIVE_UNCERTAINTY = PREDICTION_UNCERTAINTY

# Shape-key names a BLOCK_<X> constexpr can tile, for the quantization term.
_DIM_ALIASES = {"N": ("n", "cols", "n_cols", "hidden", "dim", "d"), "M": ("m", "rows", "n_rows", "tokens"),
                "K": ("k",), "D": ("d", "head_dim", "dim")}


@dataclass(frozen=True)
class ModelEstimate:
    """A predicted latency/energy for one (op, call, config, SKU). Never a measurement."""

    sku: str
    feasible: bool
    latency_s: float
    energy_j: float | None
    reason: str | None = None
    warnings: tuple[str, ...] = ()
    breakdown: Mapping[str, Any] = field(default_factory=dict)
    predicted: bool = True
    backend: str = "model"

    def to_json(self) -> dict:
        return {"predicted": True, "backend": "model", "sku": self.sku, "feasible": self.feasible,
                "latency_s": self.latency_s if math.isfinite(self.latency_s) else None,
                "energy_j": self.energy_j, "reason": self.reason, "warnings": list(self.warnings),
                "breakdown": dict(self.breakdown),
                "conditions": _conditions(self.breakdown)}


def _conditions(breakdown: Mapping[str, Any]) -> str:
    clock = breakdown.get("sm_clock_mhz_effective")
    at = (f"at a predicted SM clock of {clock:.0f} MHz" + (" (power-capped)" if breakdown.get("power_capped") else "")
          + f" and a {breakdown.get('power_limit_w'):g} W limit") if clock else "at the boost clock"
    return ("analytical model from the spec sheet (peaks at boost clock, scaled to the SM clock) and the static "
            f"compile report, {at}; predicted, not measured")


def _infeasible(sku: Any, reason: str, warnings: Sequence[str] = (), **breakdown) -> ModelEstimate:
    return ModelEstimate(sku=sku.id, feasible=False, latency_s=math.inf, energy_j=None, reason=reason,
                         warnings=tuple(warnings), breakdown=breakdown)


def call_dtype(call: Any) -> str:
    """The dtype name of the call's first floating tensor (fp32 when there is none)."""
    import torch

    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
    for a in call.args:
        if isinstance(a, torch.Tensor) and a.dtype in names:
            return names[a.dtype]
        if isinstance(a, torch.Tensor) and "float8" in str(a.dtype):
            return "fp8"
    return "fp32"


def _elem_size(dtype: str) -> int:
    return {"fp8": 1, "fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}.get(dtype, 4)


def peak_flops(sku: Any, dtype: str, mma: str) -> tuple[float, str]:
    """(FLOP/s, which peak) for the math the kernel does: tensor-core peak of the input dtype
    when the PTX uses mma instructions (fp32 inputs go through tf32), else the FP32 vector peak."""
    if mma != "none":
        key = {"fp32": "tf32", "fp64": "fp32"}.get(dtype, dtype)
        v = sku.peak(key)
        if v:
            return v * 1e12, key
    return sku.peak("fp32") * 1e12, "fp32"


def _block_constexprs(constexprs: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in constexprs.items()
            if re.match(r"^BLOCK(_SIZE)?(_[A-Z0-9]+)?$", k) and isinstance(v, int) and not isinstance(v, bool) and v > 0}


def _dim_size(suffix: str, shape: Mapping[str, Any]) -> int | None:
    lowered = {str(k).lower(): v for k, v in shape.items()}
    for c in (suffix.lower(),) + _DIM_ALIASES.get(suffix, ()):
        v = lowered.get(c)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def tile_efficiency(constexprs: Mapping[str, Any], shape: Mapping[str, Any]) -> float:
    """Useful fraction of the tiles: for each BLOCK_<X> that tiles a shape dim of size n,
    n / (ceil(n / BLOCK) · BLOCK). Dims are found by name (BLOCK_N ↔ cols/n/hidden, …)."""
    eff = 1.0
    for name, block in _block_constexprs(constexprs).items():
        n = _dim_size(name.split("_")[-1] if "_" in name else "", shape)
        if n:
            eff *= n / (math.ceil(n / block) * block)
    return eff


def estimate_launch(sku: Any, launch: Any, report: Any | None, feas: Any | None, flops: float, nbytes: float,
                    dtype: str, shape: Mapping[str, Any], system: Mapping[str, Any] | None = None) -> ModelEstimate:
    """The estimate for one captured launch (``harness.compile.KernelLaunch``) with its compile
    report and feasibility (both None for a SKU without a static compile target). ``system``:
    the SM clock (``sm_clock_mhz``) and power limit (``power_limit_w``) to predict at (default:
    the boost clock and the spec sheet's limit); see the module docstring."""
    warnings: list[str] = []
    num_warps = int(report.num_warps if report is not None else launch.num_warps)
    threads = num_warps * sku.warp_size
    if feas is not None and not feas.feasible:
        return _infeasible(sku, "; ".join(feas.reasons), feas.warnings, threads=threads)
    if feas is not None:
        bps, limited_by = feas.blocks_per_sm, feas.limited_by
        warnings += list(feas.warnings)
    else:
        if threads > sku.max_threads_per_block:
            return _infeasible(sku, f"{threads} threads per block exceed {sku.max_threads_per_block}")
        bps = max(0, min(sku.max_blocks_per_sm, sku.max_threads_per_sm // threads))
        limited_by = "threads (no compile report: registers and shared memory not known)"
        warnings.append(f"no static compile for {sku.arch}: occupancy from the thread count only")
        if bps < 1:
            return _infeasible(sku, "no block fits on an SM")

    S = sku.sm_count
    P = max(1, launch.programs)
    k = max(1, min(bps, math.ceil(P / S)))
    active = min(S, P)
    imbalance = math.ceil(P / S) * active / P
    waves = math.ceil(P / (S * bps))

    blocks = _block_constexprs(launch.constexprs)
    tile_elems = math.prod(blocks.values()) if blocks else threads
    lane_util = min(1.0, tile_elems / threads)
    t_eff = tile_efficiency(launch.constexprs, shape)
    esize = _elem_size(dtype)
    # What one block keeps in flight: with a reduction block (BLOCK_K) the operand tiles
    # (BLOCK_M + BLOCK_N) · BLOCK_K for each pipelined stage ahead; otherwise its whole tile.
    bk = blocks.get("BLOCK_K") or blocks.get("BLOCK_SIZE_K")
    if bk:
        others = [v for name, v in blocks.items() if name not in ("BLOCK_K", "BLOCK_SIZE_K")]
        stages = int(report.num_stages if report is not None else launch.options.get("num_stages", 3))
        load_elems = sum(others) * bk * max(1, stages - 1)
    else:
        load_elems = tile_elems

    mma = report.mma if report is not None else "none"
    peak, peak_key = peak_flops(sku, dtype, mma)
    warps_needed = WARPS_TO_SATURATE.get(mma, 8)
    comp_par = min(1.0, k * num_warps / warps_needed)
    k_dim = _dim_size("K", shape)
    operand_bytes = P * sum(others) * k_dim * esize if bk and k_dim else 0.0
    spill_per_thread = report.spill_bytes if report is not None else 0
    spill_traffic = float(spill_per_thread) * threads * P
    bw = sku.mem_bandwidth_gbps * 1e9
    inflight_block = min(nbytes / P, load_elems * t_eff * esize) if nbytes > 0 else 0.0
    total_bytes = nbytes + spill_traffic
    boost_hz = (sku.boost_clock_mhz or DEFAULT_CLOCK_MHZ) * 1e6
    if not sku.boost_clock_mhz and (system or {}).get("sm_clock_mhz") is not None:
        warnings.append(f"{sku.id} publishes no boost clock: {DEFAULT_CLOCK_MHZ} MHz assumed")
    r_set, limit_w, system_warnings = _system_point(sku, system)
    warnings += system_warnings

    def at(r: float) -> dict:
        """Latency and board power at the SM clock r · f_boost."""
        compute_rate = peak * r * (active / S) * comp_par * lane_util * t_eff
        t_compute = flops / compute_rate * imbalance if flops > 0 else 0.0
        # Tiled reductions (a BLOCK_K over a K dim) feed every k-step's operand tiles through shared
        # memory: P · (BLOCK_M + BLOCK_N) · K elements at SMEM_BYTES_PER_CLOCK per SM. Small tiles
        # reuse each operand little and are bound here, not by the tensor cores.
        t_operand = operand_bytes / (active * SMEM_BYTES_PER_CLOCK * boost_hz * r) * imbalance
        dram_latency = DRAM_LATENCY_S * (1 - CLOCKED_LATENCY_FRACTION + CLOCKED_LATENCY_FRACTION / r)
        per_sm_rate = min(k * inflight_block / dram_latency, SM_BW_CAP * bw / S * r)
        mem_rate = min(ACHIEVABLE_BW_FRACTION * bw, active * per_sm_rate)
        t_memory = total_bytes / mem_rate * imbalance if total_bytes > 0 and mem_rate > 0 else 0.0
        t_overhead = LAUNCH_OVERHEAD_S + WAVE_OVERHEAD_S * waves / r
        latency = max(t_compute, t_operand, t_memory) + t_overhead
        u_mem = min(1.0, nbytes / bw / latency)
        u_sm = min(1.0, max(t_compute, t_operand) / latency)
        volt = max(VOLTAGE_FLOOR, VOLTAGE_INTERCEPT + (1 - VOLTAGE_INTERCEPT) * r)
        tdp = sku.power_limit_w
        p_static = IDLE_POWER_FRACTION * tdp
        p_mem = MEM_POWER_FRACTION * tdp * u_mem
        p_sm = (SM_POWER_FRACTION * tdp * (active / S) * (SM_MIN_ACTIVITY + (1 - SM_MIN_ACTIVITY) * u_sm)
                * r * volt ** 2)
        return {"t_compute_s": t_compute, "t_operand_s": t_operand, "t_memory_s": t_memory,
                "t_overhead_s": t_overhead, "latency_s": latency, "memory_rate_Bps": mem_rate,
                "dram_latency_s": dram_latency, "u_mem": u_mem, "u_sm": u_sm, "voltage_ratio": volt,
                "power_static_w": p_static, "power_mem_w": p_mem, "power_sm_w": p_sm,
                "power_w": p_static + p_mem + p_sm}

    r, point = r_set, at(r_set)
    capped = point["power_w"] > limit_w * (1 + 1e-9)
    if capped:
        # The board's firmware lowers the clock until it is within its limit; power rises with r.
        lo, hi = MIN_CLOCK_FRACTION, r_set
        if at(lo)["power_w"] > limit_w:
            r = lo
            warnings.append(f"{limit_w:g} W is below what this kernel draws even at "
                            f"{MIN_CLOCK_FRACTION:.0%} of the boost clock: predicted at that clock")
        else:
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if at(mid)["power_w"] <= limit_w else (lo, mid)
            r = lo
        point = at(r)
    latency, power = point["latency_s"], point["power_w"]
    t_compute, t_operand, t_memory = point["t_compute_s"], point["t_operand_s"], point["t_memory_s"]
    util = min(1.0, max(flops / peak, nbytes / bw) / latency)
    if spill_per_thread:
        warnings.append(f"spills {spill_per_thread} B per thread: +{spill_traffic / 1e6:.2f} MB local-memory traffic")
    breakdown = {
        "flops": flops, "bytes": nbytes, "spill_bytes": spill_traffic, "dtype": dtype,
        "peak_flops": peak, "peak_kind": peak_key, "bandwidth_Bps": bw, "mma": mma,
        "programs": P, "threads_per_block": threads, "blocks_per_sm": bps, "limited_by": limited_by,
        "resident_blocks_used": k, "active_sms": active, "sm_imbalance": imbalance, "waves": waves,
        "lane_utilization": lane_util, "tile_efficiency": t_eff, "compute_parallelism": comp_par,
        "inflight_bytes_per_block": inflight_block, **point,
        "bound": max((("memory", t_memory), ("compute", t_compute), ("shared-memory operands", t_operand)),
                     key=lambda kv: kv[1])[0],
        "roofline_utilization": util,
        "sm_clock_mhz_set": r_set * boost_hz / 1e6, "sm_clock_mhz_effective": r * boost_hz / 1e6,
        "clock_ratio": r, "power_limit_w": limit_w, "power_capped": capped,
        "registers": report.registers if report is not None else None,
        "shared_bytes": report.shared_bytes if report is not None else None,
    }
    return ModelEstimate(sku=sku.id, feasible=True, latency_s=latency, energy_j=power * latency,
                         warnings=tuple(warnings), breakdown=breakdown)


def _system_point(sku: Any, system: Mapping[str, Any] | None) -> tuple[float, float, list[str]]:
    """(SM clock / boost clock, power limit in W, warnings) for a config's system part."""
    system = dict(system or {})
    unknown = sorted(set(system) - {"sm_clock_mhz", "power_limit_w"})
    if unknown:
        raise ValueError(f"unknown system settings {unknown}; the model knows sm_clock_mhz and power_limit_w")
    warnings = []
    boost = sku.boost_clock_mhz or DEFAULT_CLOCK_MHZ
    r = 1.0
    if system.get("sm_clock_mhz") is not None:
        f = float(system["sm_clock_mhz"])
        if not f > 0:
            raise ValueError(f"sm_clock_mhz must be positive, got {system['sm_clock_mhz']!r}")
        r = f / boost
        if r > 1.0:
            warnings.append(f"SM clock {f:g} MHz is above the spec sheet's boost clock ({boost:g} MHz): "
                            "predicted at the boost clock")
            r = 1.0
        elif r < MIN_CLOCK_FRACTION:
            raise ValueError(f"sm_clock_mhz {f:g} is below the model's range ({MIN_CLOCK_FRACTION:.0%} of "
                             f"{boost:g} MHz)")
    limit = float(sku.power_limit_w)
    if system.get("power_limit_w") is not None:
        limit = float(system["power_limit_w"])
        if not limit > 0:
            raise ValueError(f"power_limit_w must be positive, got {system['power_limit_w']!r}")
    return r, limit, warnings


def estimate(op: str | Any, call: Any, config: Mapping[str, Any] | None, sku: Any, *, cache_dir=None,
             isolate: bool | None = None, timeout: float = 120.0, source=None, capture=None,
             system: Mapping[str, Any] | None = None) -> ModelEstimate:
    """Predicted latency/energy of library op ``op`` (name or OpSpec) on ``call`` under ``config``
    for ``sku``: captures the launches, compiles them for the SKU's arch (cached), and models.
    ``source``: the kernel file (a variant's path; default the shipped kernel.py). ``capture``: a
    ``harness.predict.SandboxedCapture`` — required for code that is not the package's own
    (generated or user variants), which must not run in this process. ``system``: the SM clock
    and power limit to predict at (``tune --system``; nothing is set on any device)."""
    from ..harness import compile as hc
    from ..kernels import get_opspec, kernel_path

    spec = get_opspec(op) if isinstance(op, str) else op
    if capture is not None:
        from ..harness.predict import PredictError

        arch = hc.parse_arch(sku) if sku.static_compile else None
        got = capture.capture([(call.args, dict(call.kwargs), config)], arch, timeout=timeout)[0]
        if isinstance(got, PredictError):
            return _infeasible(sku, f"capture or compile failed: {str(got).strip().splitlines()[0][:300] if str(got).strip() else 'no message'}")
        launches = got.launches
        reports = got.reports if got.reports is not None else [None] * len(launches)
        feas = [hc.check_feasible(r, sku) if r is not None else None for r in reports]
    else:
        src = source if source is not None else kernel_path(spec.name)
        launches = hc.capture_launches(src, spec.name, call.args, dict(call.kwargs), config, cache_dir)
        if sku.static_compile:
            reports = hc.compile_launches(src, launches, sku, cache_dir, isolate=isolate, timeout=timeout)
            feas = [hc.check_feasible(r, sku) for r in reports]
        else:
            reports, feas = [None] * len(launches), [None] * len(launches)
    flops, nbytes = float(spec.flops(call)), float(spec.bytes(call))
    dtype, shape = call_dtype(call), spec.shape_key(call)
    # Several launches: the op's FLOPs and bytes are split by each launch's share of threads.
    weights = [ln.programs * ln.num_warps for ln in launches]
    total_w = sum(weights) or 1
    parts = [estimate_launch(sku, ln, rep, fe, flops * w / total_w, nbytes * w / total_w, dtype, shape, system)
             for ln, rep, fe, w in zip(launches, reports, feas, weights)]
    if len(parts) == 1:
        return parts[0]
    bad = [p for p in parts if not p.feasible]
    if bad:
        return _infeasible(sku, bad[0].reason or "infeasible launch", sum((p.warnings for p in parts), ()))
    latency = sum(p.latency_s for p in parts)
    energy = sum(p.energy_j or 0.0 for p in parts)
    first = parts[0].breakdown
    return ModelEstimate(sku=sku.id, feasible=True, latency_s=latency, energy_j=energy,
                         warnings=sum((p.warnings for p in parts), ()),
                         breakdown={"launches": [dict(p.breakdown) for p in parts], "flops": flops, "bytes": nbytes,
                                    "power_limit_w": first.get("power_limit_w"),
                                    "sm_clock_mhz_effective": min(p.breakdown["sm_clock_mhz_effective"] for p in parts),
                                    "power_capped": any(p.breakdown.get("power_capped") for p in parts)})


def rank(op: str | Any, call: Any, configs: Sequence[Mapping[str, Any]], sku: Any, **kw) -> list[tuple[dict, ModelEstimate]]:
    """Configs from best to worst predicted latency; infeasible ones last."""
    scored = [(dict(c), estimate(op, call, c, sku, **kw)) for c in configs]
    return sorted(scored, key=lambda ce: (not ce[1].feasible, ce[1].latency_s))
