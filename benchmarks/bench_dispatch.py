"""Host overhead of a library call: what kernelagent.kernels adds before a kernel launches.

Usage: python benchmarks/bench_dispatch.py [--calls N] [--out FILE]

* CPU (any machine): the public op with its kernel replaced by a stub that returns at once,
  so what is timed is the library's own Python (the public wrapper, the hot path's signature
  lookup and bound launcher; the first call's decision is excluded), per call, median of 5 runs.
* GPU (when CUDA is present): a small rms_norm (8 × 4096 bf16) end to end per call —
  PyTorch eager (the reference), the library call, and the same call replayed by
  ``kernelagent.kernels.graphed`` — synchronised around each batch of calls.

Numbers are measured on the machine it runs on; nothing is predicted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def _per_call(fn, calls: int, sync=lambda: None) -> float:
    runs = []
    for _ in range(5):
        sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        runs.append((time.perf_counter() - t) / calls * 1e6)
    return statistics.median(runs)


def cpu_overhead(calls: int) -> dict:
    os.environ["KERNELAGENT_INTERPRET"] = "1"
    import torch

    import kernelagent.kernels as K
    from kernelagent.kernels import _dispatch

    x = torch.randn(4, 64)
    out = torch.empty_like(x)

    def stub(*args, config=None, **kwargs):
        return out

    _dispatch.kernel_entry = lambda op, variant="kernel", sha256=None: (stub, True)
    K.softmax(x)  # the decision
    return {"public_op_us": _per_call(lambda: K.softmax(x), calls),
            "dispatch_us": _per_call(lambda: _dispatch.dispatch("softmax", (x,), {}), calls),
            "note": "library Python only: the kernel is a stub (CPU, Triton interpreter mode)"}


def gpu_calls(calls: int) -> dict:
    import torch

    import kernelagent.kernels as K
    from kernelagent.kernels.rms_norm.spec import reference

    x = torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    g = K.graphed(K.rms_norm, x, w, 1e-6)
    sync = torch.cuda.synchronize
    return {"device": torch.cuda.get_device_name(), "case": "rms_norm 8x4096 bf16",
            "eager_us": _per_call(lambda: reference(x, w, 1e-6), calls, sync),
            "library_us": _per_call(lambda: K.rms_norm(x, w, 1e-6), calls, sync),
            "graphed_us": _per_call(lambda: g(x, w, 1e-6), calls, sync)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import torch

    res = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node(), "torch": torch.__version__,
           "cpu": cpu_overhead(a.calls) if not torch.cuda.is_available() else None,
           "gpu": gpu_calls(a.calls) if torch.cuda.is_available() else None}
    print(json.dumps(res, indent=2))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
