"""Re-measuring library entries on the local GPU, through the harness's ``gpu`` backend.

Runs in the trusted parent, after the entry's kernel has been re-verified. For each item:

* the shape: the entry's ``evidence.case`` when the tuner recorded one, else the op's first
  ``bench_cases`` entry that falls in the entry's bucket (the default-heuristic item uses the
  op's first bench case);
* the kernel: ``sessions`` calls of ``kernelagent.harness.measure.measure`` (sandboxed worker,
  L2 flushed before every timed call, CUDA events checked against the parent's clock, outputs
  fingerprinted and compared, one NVML energy window of at least ``min_window_s`` each). The
  latency samples of all sessions are pooled (µs); each session gives one energy sample (µJ
  per call), so the energy gate sees ``sessions`` repeated windows. A session with ``flags``
  (wrong output, nondeterminism, numbers the parent cannot confirm) fails the item;
* PyTorch's reference on the same inputs, timed here in the parent (trusted code) with CUDA
  events and the same L2 flush: the speedup vs PyTorch;
* the conditions: clocks, power, temperature and throttle reasons before and after, per session.

Nothing here sets clocks, power limits or modes: those are an operator's decision.
"""

from __future__ import annotations

import time

from ..errors import EnvironmentProblem
from ..kernels._configs import case_bucket  # noqa: F401 - re-exported for run.py
from ..kernels.registry import get_opspec
from ..kernels.spec import Case
from .inventory import LibraryItem, current_kernel
from .samples import MeasuredSamples

def representative_case(item: LibraryItem) -> tuple[dict | None, str]:
    """(Case params to measure the item at, or None with the reason)."""
    spec = get_opspec(item.op)
    case = item.evidence.get("case") if item.evidence else None
    if isinstance(case, dict) and case:
        return dict(case.get("params", case)), ""
    if not spec.bench_cases:
        return None, f"{item.op} has no bench_cases to measure at"
    if item.kind == "default" or item.bucket is None:
        return dict(spec.bench_cases[0]), ""
    for params in spec.bench_cases:
        if case_bucket(item.op, params, item.dtype or "fp32") == item.bucket:
            return dict(params), ""
    return None, (f"no bench case of {item.op} falls in bucket {item.bucket} and the entry's evidence has no "
                  "'case': nothing representative to measure")


def case_cost(op: str, params: dict, dtype: str) -> tuple[float, float]:
    """(flops, bytes) of one call at a Case, on meta tensors."""
    import torch

    spec = get_opspec(op)
    with torch.device("meta"):
        call = spec.build(Case(params=params, dtype=dtype))
    return float(spec.flops(call)), float(spec.bytes(call))


def default_dtype(op: str) -> str:
    dtypes = list(get_opspec(op).dtypes)
    return next((d for d in ("bf16", "fp16", "fp32") if d in dtypes), dtypes[0])


class MeasurementFailed(Exception):
    """The harness could not measure the item, or flagged its numbers as untrustworthy."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class GpuMeasurer:
    """The ``gpu`` backend of the nightly. Construct only where a CUDA GPU and NVML exist."""

    backend = "gpu"

    def __init__(self, sessions: int = 7, min_window_s: float = 1.0, reference_repeats: int = 30, sku=None,
                 timeout: float = 600.0):
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem("no CUDA GPU visible to torch: the gpu measurement backend needs one")
        from ..harness.energy import NvmlPowerMeter

        self.meter = NvmlPowerMeter.for_torch_device()  # EnvironmentProblem without NVML
        self.torch, self.sku, self.timeout = torch, sku, timeout
        self.sessions, self.min_window_s, self.reference_repeats = sessions, min_window_s, reference_repeats
        self.device = torch.device("cuda", torch.cuda.current_device())
        l2 = int(getattr(torch.cuda.get_device_properties(self.device), "L2_cache_size", 0) or (64 << 20))
        self._flush = torch.empty(max(256 << 20, 2 * l2) // 4, dtype=torch.float32, device=self.device)

    def close(self) -> None:
        self.meter.close()

    def _peaks(self, dtype: str) -> tuple[float | None, float | None]:
        if self.sku is None:
            return None, None
        peak = self.sku.peak("tf32") if dtype == "fp32" and self.sku.peak("tf32") else self.sku.peak(dtype)
        return (peak * 1e12 if peak else None), self.sku.mem_bandwidth_gbps * 1e9

    def _reference_samples(self, op: str, params: dict, dtype: str) -> list[float]:
        """PyTorch's own op on the case's inputs: CUDA events, L2 flushed before each call, µs."""
        torch = self.torch
        spec = get_opspec(op)
        call = spec.build(Case(params=params, dtype=dtype))
        move = lambda v: v.to(self.device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        args, kwargs = [move(a) for a in call.args], {k: move(v) for k, v in call.kwargs.items()}
        fn = lambda: spec.reference(*args, **kwargs)  # noqa: E731
        with torch.no_grad():
            t0 = time.perf_counter()
            while True:  # warm-up: allocator, cuBLAS/cuDNN heuristics, clocks
                fn()
                torch.cuda.synchronize(self.device)
                if time.perf_counter() - t0 >= 0.05:
                    break
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(self.reference_repeats)]
            for start, end in events:
                self._flush.zero_()
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) * 1000.0 for start, end in events]

    def measure(self, item: LibraryItem) -> tuple[MeasuredSamples | None, str]:
        from ..harness.measure import MeasureError, measure

        params, why = representative_case(item)
        if params is None:
            return None, why
        dtype = item.dtype or default_dtype(item.op)
        flops, nbytes = case_cost(item.op, params, dtype)
        reference = self._reference_samples(item.op, params, dtype)
        reference.sort()
        peak_flops, peak_bytes = self._peaks(dtype)
        source, _ = current_kernel(item.op, item.variant)
        latency, energy, sessions = [], [], []
        for _ in range(self.sessions):
            try:
                # One window of min_window_s per session and no cooldown: the nightly's repeats
                # are its sessions (their spread is what it reports), not windows within one.
                m = measure(item.op, source, params, config=item.config, meter=self.meter, dtype=dtype,
                            min_window_s=self.min_window_s, energy_bound=None, energy_repeats=1, cooldown=None, reference_latency_s=reference[len(reference) // 2] * 1e-6,
                            peak_flops=peak_flops, peak_bytes_per_s=peak_bytes, timeout=self.timeout,
                            candidate_name="kernel.py")
            except MeasureError as e:
                raise MeasurementFailed(e.reason, e.detail) from None
            if m.flags:
                raise MeasurementFailed("measurement-flagged", "; ".join(m.flags))
            latency += [s * 1e6 for s in m.samples_s]
            if m.energy_j_per_call is not None:
                energy.append(m.energy_j_per_call * 1e6)
            sessions.append({"median_us": m.median_s * 1e6 if m.median_s else None, "n": m.n,
                             "energy_uj": m.energy_j_per_call * 1e6 if m.energy_j_per_call is not None else None,
                             "energy_rejected": m.energy_rejected, "throttled": m.throttled,
                             "throttle_reasons": m.throttle_reasons, "warnings": m.warnings,
                             "before": m.before, "after": m.after, "l2_flush_bytes": m.l2_flush_bytes})
        return MeasuredSamples(
            op=item.op, sku=item.sku, dtype=dtype, bucket=item.bucket or case_bucket(item.op, params, dtype),
            config=item.config,
            latency_us=latency, energy_uj=energy or None, pytorch_latency_us=reference, case=params, flops=flops,
            bytes=nbytes, backend="gpu",
            conditions={"sessions": sessions, "throttled_sessions": sum(1 for s in sessions if s["throttled"]),
                        "min_window_s": self.min_window_s, "reference_repeats": self.reference_repeats}), ""
