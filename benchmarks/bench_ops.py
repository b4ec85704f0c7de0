"""Every library op against PyTorch eager and torch.compile, with % of a measured roofline.

Usage: python benchmarks/bench_ops.py [--ops softmax,rms_norm] [--dtype bf16] [--budget-s 150] [--compile]
       [--out FILE]

On a CUDA GPU: each op at its ``bench_cases`` sizes, timed with ``triton.testing.do_bench``
(L2 flushed between calls, median), against the op's PyTorch reference in eager mode and under
``torch.compile``; the roofline is max(bytes / measured copy bandwidth, FLOPs / measured
``torch.matmul`` peak), both measured here, on this GPU, in this run. Results are checked
against the reference before timing.

Inputs are built on the GPU (a cross_entropy case in float64 on the host was 17 GB). Each row
says what the library actually ran (``_dispatch.decide``): a case where it ran PyTorch instead
of its kernel (a documented fallback such as GQA attention, or a failed dispatch) is flagged
``fallback`` and its speedup is not the kernel's. ``--budget-s`` bounds the run: a case is
started only while the budget has room for it (estimated from the cases before it), and the
ones left out are listed under ``skipped``. torch.compile is opt-in (``--compile``: minutes of
compilation) and also skipped for a case when the budget has no room for it.

On a CPU (no GPU): a smoke test in Triton's interpreter at small sizes: it proves every op
runs through the public API and writes the same JSON, but its times are interpreter times and
say nothing about GPU performance (reported as such).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

CUDA = False


def _bench(fn, reps: int = 5) -> float:
    """Median seconds per call (CUDA: do_bench with L2 flush; CPU: wall clock)."""
    if CUDA:
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _copy_bandwidth() -> float:
    import torch

    n = (1 << 30) if CUDA else (1 << 24)
    src = torch.empty(n, dtype=torch.uint8, device="cuda" if CUDA else "cpu")
    dst = torch.empty_like(src)
    t = _bench(lambda: dst.copy_(src))
    return 2 * n / t


def _matmul_peak(dtype) -> float:
    import torch

    n = 8192 if CUDA else 512
    a = torch.randn(n, n, device="cuda" if CUDA else "cpu").to(dtype)
    b = torch.randn(n, n, device="cuda" if CUDA else "cpu").to(dtype)
    t = _bench(lambda: torch.matmul(a, b))
    return 2 * n ** 3 / t


def _small(params: dict) -> dict:
    """Bench sizes shrunk for the interpreter smoke test (head_dim and flags kept)."""
    return {k: (min(v, 128) if isinstance(v, int) and not isinstance(v, bool) and k not in ("head_dim",) else v)
            for k, v in params.items()}


def main() -> None:
    global CUDA
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", default="")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                    help="also time torch.compile(reference) (minutes of compiling; default off)")
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting cases after this many seconds")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    started = time.monotonic()

    import contextlib

    import torch

    CUDA = torch.cuda.is_available()
    if not CUDA:
        os.environ.setdefault("KERNELAGENT_INTERPRET", "1")
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import triton

    import kernelagent.kernels as lib
    from kernelagent.kernels import _dispatch, get_opspec, op_names
    from kernelagent.kernels.spec import DTYPES, Case

    ops = [o for o in (a.ops.split(",") if a.ops else op_names()) if o]
    bw = _copy_bandwidth()
    peak = _matmul_peak(DTYPES[a.dtype])
    dev = torch.cuda.get_device_name() if CUDA else "cpu (triton interpreter: smoke test, not a GPU timing)"
    rows, skipped, case_s = [], [], []
    for op in ops:
        spec = get_opspec(op)
        dtype = a.dtype if a.dtype in spec.dtypes else spec.dtypes[0]
        for params in spec.bench_cases:
            params = dict(params) if CUDA else _small(dict(params))
            left = None if a.budget_s is None else a.budget_s - (time.monotonic() - started)
            guess = max(case_s) if case_s else 5.0
            if left is not None and left < guess:
                skipped.append({"op": op, "case": params, "why": f"budget: {left:.0f} s left, a case takes ~{guess:.0f} s"})
                continue
            t_case = time.monotonic()
            with torch.device("cuda") if CUDA else contextlib.nullcontext():
                call = spec.build(Case(params=params, dtype=dtype, seed=0))
            fn = getattr(lib, op)
            failures_before = dict(lib.dispatch_failures())
            decision = _dispatch.decide(op, call.args, call.kwargs)
            ours = fn(*call.args, **call.kwargs)
            ref = spec.reference(*call.args, **call.kwargs)
            failed = lib.dispatch_failures().get(op, 0) > failures_before.get(op, 0)
            fallback = None if decision.use_kernel and not failed else (
                "dispatch failed: PyTorch ran" if failed else f"PyTorch ran: {decision.reason}")
            max_err = float((ours.double() - ref.double()).abs().max())
            t_ours = _bench(lambda: fn(*call.args, **call.kwargs))
            t_eager = _bench(lambda: spec.reference(*call.args, **call.kwargs))
            t_comp, comp_note = None, None
            if a.compile:
                left = None if a.budget_s is None else a.budget_s - (time.monotonic() - started)
                if left is not None and left < 90:
                    comp_note = f"torch.compile skipped: {left:.0f} s of budget left"
                else:
                    comp = torch.compile(spec.reference)
                    comp(*call.args, **call.kwargs)
                    t_comp = _bench(lambda: comp(*call.args, **call.kwargs))
            floor = max(spec.bytes(call) / bw, spec.flops(call) / peak)
            res = decision.resolution
            rows.append({"op": op, "dtype": dtype, "case": params, "ours_us": t_ours * 1e6, "eager_us": t_eager * 1e6,
                         "compile_us": None if t_comp is None else t_comp * 1e6, "compile_note": comp_note,
                         "speedup_vs_eager": t_eager / t_ours, "roofline_floor_us": floor * 1e6,
                         "pct_of_roofline": 100 * floor / t_ours, "max_abs_err_vs_reference": max_err,
                         "fallback": fallback, "variant": getattr(res, "variant", None) if res else None,
                         "config": dict(res.config) if res is not None and getattr(res, "config", None) else None})
            call = ours = ref = None  # free the GPU memory before the next case
            case_s.append(time.monotonic() - t_case)
            print(f"{op:14s} {json.dumps(params):52s} ours {t_ours*1e6:10.1f}us eager {t_eager*1e6:10.1f}us "
                  f"roofline {100*floor/t_ours:6.1f}%" + (f"  FALLBACK ({fallback})" if fallback else ""), file=sys.stderr)
    result = {"what": "library ops vs PyTorch eager / torch.compile; % of measured roofline",
              "measured": True, "device": dev, "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
              "copy_bandwidth_GBps": bw / 1e9, f"matmul_peak_TFLOPs_{a.dtype}": peak / 1e12,
              "method": "do_bench median, L2 flushed" if CUDA else "wall clock median of 5, interpreter",
              "budget_s": a.budget_s, "elapsed_s": time.monotonic() - started, "rows": rows, "skipped": skipped,
              "fallbacks": [f"{r['op']} {r['case']}: {r['fallback']}" for r in rows if r["fallback"]]}
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
