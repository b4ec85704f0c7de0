"""Wall time of one `verify` of a small op, and what dominates it.

Usage: python benchmarks/bench_verify.py [--op softmax] [--examples N] [--repeat R] [--out FILE]

Measures, on this machine, end to end through the public API (static checks, sandboxed worker
start, candidate import, property-based examples with two calls each, comparison), and breaks
the time down with a profile of the parent plus the worker's own start-up time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--op", default="softmax")
    ap.add_argument("--examples", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch
    import triton

    from kernelagent.harness import verify
    from kernelagent.harness.sandbox import isolation_mode
    from kernelagent.harness.verify import DEFAULT_EXAMPLES
    from kernelagent.kernels import kernel_path

    src = kernel_path(a.op).read_text()
    # Worker start alone: interpreter + torch + triton import inside the sandbox.
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-c", "import torch, triton"], check=True, env={"TRITON_INTERPRET": "1", "PATH": os.environ["PATH"]})
    import_s = time.perf_counter() - t0

    walls, trials = [], []
    prof = cProfile.Profile()
    for i in range(a.repeat):
        t0 = time.perf_counter()
        if i == 0:
            prof.enable()
        v = verify(a.op, src, examples=a.examples, seed=1000 + i)
        if i == 0:
            prof.disable()
        walls.append(time.perf_counter() - t0)
        trials.append(v.trials)
        assert v.verified, v.detail
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(12)
    stats = pstats.Stats(prof)

    def cum(file_suffix: str, func: str) -> float:
        return sum(ct for (f, _, fn), (_, _, _, ct, _) in stats.stats.items() if f.endswith(file_suffix) and fn == func)

    total = cum("harness/verify.py", "verify")
    search = cum("harness/verify.py", "_property_search")
    calls = cum("harness/sandbox.py", "request") - cum("harness/verify.py", "_load_request")
    parent = cum("harness/verify.py", "_judge") + cum("harness/verify.py", "reference")
    buckets = {
        "worker start + candidate import (sandbox, python, torch, triton)": total - search,
        "candidate calls in the worker (2 per example, Triton interpreter)": calls,
        "parent: float64 reference + native reference + comparison": parent,
        "hypothesis and encoding": max(0.0, search - calls - parent),
    }
    result = {
        "what": f"wall time of one `verify {a.op}` (its own kernel.py), end to end through the Python API",
        "measured": True, "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "device": "cpu (triton interpreter)", "sandbox": isolation_mode()[0],
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "examples_requested": a.examples or DEFAULT_EXAMPLES,
        "trials": trials, "wall_s": [round(w, 2) for w in walls], "median_wall_s": round(statistics.median(walls), 2),
        "python_torch_triton_import_s": round(import_s, 2),
        "breakdown_first_run_s": {k: round(v, 2) for k, v in buckets.items()},
    }
    print(json.dumps(result, indent=2))
    print(s.getvalue(), file=sys.stderr)
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
