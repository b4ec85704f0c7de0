"""Every library op against PyTorch eager and torch.compile, with % of a measured roofline.

Usage: python benchmarks/bench_ops.py [--ops softmax,rms_norm] [--dtype bf16] [--out FILE]

On a CUDA GPU: each op at its ``bench_cases`` sizes, timed with ``triton.testing.do_bench``
(L2 flushed between calls, median), against the op's PyTorch reference in eager mode and under
``torch.compile``; the roofline is max(bytes / measured copy bandwidth, FLOPs / measured
``torch.matmul`` peak), both measured here, on this GPU, in this run. Results are checked
against the reference before timing.

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
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time torch.compile(reference) (default: on a GPU only)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    CUDA = torch.cuda.is_available()
    if not CUDA:
        os.environ.setdefault("KERNELAGENT_INTERPRET", "1")
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import triton

    import kernelagent.kernels as lib
    from kernelagent.kernels import get_opspec, op_names
    from kernelagent.kernels.spec import DTYPES, Call, Case

    use_compile = CUDA if a.compile is None else a.compile
    ops = [o for o in (a.ops.split(",") if a.ops else op_names()) if o]
    bw = _copy_bandwidth()
    peak = _matmul_peak(DTYPES[a.dtype])
    dev = torch.cuda.get_device_name() if CUDA else "cpu (triton interpreter: smoke test, not a GPU timing)"
    rows = []
    for op in ops:
        spec = get_opspec(op)
        dtype = a.dtype if a.dtype in spec.dtypes else spec.dtypes[0]
        for params in spec.bench_cases:
            params = dict(params) if CUDA else _small(dict(params))
            call = spec.build(Case(params=params, dtype=dtype, seed=0))
            if CUDA:
                call = Call(tuple(x.cuda() if isinstance(x, torch.Tensor) else x for x in call.args),
                            {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in call.kwargs.items()})
            fn = getattr(lib, op)
            ours = fn(*call.args, **call.kwargs)
            ref = spec.reference(*call.args, **call.kwargs)
            max_err = float((ours.double() - ref.double()).abs().max())
            t_ours = _bench(lambda: fn(*call.args, **call.kwargs))
            t_eager = _bench(lambda: spec.reference(*call.args, **call.kwargs))
            t_comp = None
            if use_compile:
                comp = torch.compile(spec.reference)
                comp(*call.args, **call.kwargs)
                t_comp = _bench(lambda: comp(*call.args, **call.kwargs))
            floor = max(spec.bytes(call) / bw, spec.flops(call) / peak)
            rows.append({"op": op, "dtype": dtype, "case": params, "ours_us": t_ours * 1e6, "eager_us": t_eager * 1e6,
                         "compile_us": None if t_comp is None else t_comp * 1e6,
                         "speedup_vs_eager": t_eager / t_ours, "roofline_floor_us": floor * 1e6,
                         "pct_of_roofline": 100 * floor / t_ours, "max_abs_err_vs_reference": max_err})
            print(f"{op:14s} {json.dumps(params):52s} ours {t_ours*1e6:10.1f}us eager {t_eager*1e6:10.1f}us "
                  f"roofline {100*floor/t_ours:6.1f}%", file=sys.stderr)
    result = {"what": "library ops vs PyTorch eager / torch.compile; % of measured roofline",
              "measured": True, "device": dev, "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
              "copy_bandwidth_GBps": bw / 1e9, f"matmul_peak_TFLOPs_{a.dtype}": peak / 1e12,
              "method": "do_bench median, L2 flushed" if CUDA else "wall clock median of 5, interpreter",
              "rows": rows}
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
