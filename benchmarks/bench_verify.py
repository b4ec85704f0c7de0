"""What the harness costs: one `verify`, the sandbox's fixed costs, and one tuning trial.

Usage: python benchmarks/bench_verify.py [--parts verify,overhead,trial] [--op softmax]
                                         [--examples N] [--repeat R] [--out FILE]

* ``verify``: wall time of one `verify` of a small op end to end through the public API
  (static checks, sandboxed worker start, candidate import, property-based examples, comparison),
  broken down with a profile of the parent.
* ``overhead``: sandboxed worker start (to its ready message), the round trip of one ``call`` of
  a trivial candidate on a 1×1 input, and the wire's throughput (a 64 MiB input into the shared
  file and back, parent side, MB/s).
* ``trial``: one tuning trial (``measure`` of one config) with a fresh worker per trial, and with
  a reused ``CandidateSession`` (skipped where the harness has no sessions: older commits), so the
  same script measures before and after.
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
    ap.add_argument("--parts", default="verify,overhead,trial")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    result = _context()
    if "overhead" in parts:
        result["overhead"] = _overhead(a.repeat)
    if "trial" in parts:
        result["trial"] = _trial(a.op, a.repeat)
    if "verify" in parts:
        result["verify"] = _verify(a)
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))


def _context() -> dict:
    import torch
    import triton

    from kernelagent.harness.sandbox import isolation_mode

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    return {"measured": True, "machine": f"{platform.node()} {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}", "load_1min": round(os.getloadavg()[0], 2),
            "device": "cpu (triton interpreter)", "sandbox": isolation_mode()[0], "commit": rev,
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


CONTROL = (Path(__file__).resolve().parents[1] / "tests" / "redteam" / "control_softmax_single_tile.py")


def _overhead(repeat: int) -> dict:
    import torch

    from kernelagent.harness.sandbox import Limits, SandboxedWorker
    from kernelagent.harness.verify import resolve_target
    from kernelagent.harness.wire import align, pack_shared
    try:
        from kernelagent.harness.protocol import load_request
    except ImportError:  # before the protocol module
        from kernelagent.harness.verify import _load_request as load_request

    starts, calls = [], []
    for _ in range(repeat):
        with SandboxedWorker(limits=Limits()) as w:
            t0 = time.perf_counter()
            w.start()
            starts.append(time.perf_counter() - t0)
            reply = w.request(*load_request(resolve_target("softmax"), CONTROL.read_text(), "c.py", None, "cpu", 1))[0]
            assert reply.get("ok"), reply
            x = torch.randn(1, 1)
            enc, metas, image = pack_shared([x])
            out_off = align(len(image))
            header = {"op": "call", "args": enc, "metas": metas, "kwargs_names": [], "kwargs_enc": [],
                      "shm_size": out_off + 4, "out_off": out_off, "out_capacity": 4, "poison_bytes": 64}
            for i in range(21):
                t0 = time.perf_counter()
                w.shm_write(image + b"\xff" * (out_off - len(image) + 4), 0)
                r, _ = w.request(dict(header, grad=False, poison=0.0), [], max_reply_bytes=0)
                w.shm_read(0, len(image))
                w.shm_read(out_off, 4)
                if i:
                    calls.append(time.perf_counter() - t0)
                assert r.get("ok"), r
    big = torch.randn(16 << 20)     # 64 MiB of float32
    with SandboxedWorker(limits=Limits()) as w:
        rates = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            _, _, image = pack_shared([big])
            w.shm_write(image, 0)
            back = w.shm_read(0, len(image))
            rates.append(2 * len(image) / (time.perf_counter() - t0) / 1e6)
            assert back == image
    return {"what": "sandboxed worker start (to ready); one call of a trivial candidate (1x1 softmax, "
                    "interpreter) through the shared file, parent round trip; 64 MiB input packed, written "
                    "to the shared file and read back (parent side)",
            "worker_start_s_median": round(statistics.median(starts), 3),
            "call_round_trip_ms_median": round(statistics.median(calls) * 1e3, 2),
            "call_round_trip_ms_p90": round(sorted(calls)[int(0.9 * (len(calls) - 1))] * 1e3, 2),
            "wire_mb_per_s_median": round(statistics.median(rates)),
            "calls_timed": len(calls)}


def _trial(op: str, repeat: int) -> dict:
    from kernelagent.harness.measure import measure
    from kernelagent.kernels import get_opspec, kernel_path

    src = kernel_path(op).read_text()
    spec = get_opspec(op)
    case = {"batch": 0, "rows": 8, "cols": 128} if op == "softmax" else dict(spec.bench_cases[0])
    configs = [{"BLOCK_N": b, "num_warps": 4} for b in (128, 256)] if op == "softmax" else [None, None]
    quick = dict(energy=False, meter=None, input_sets=8, min_calls=5, max_calls=20, rep_ms=10.0, warmup_ms=5.0,
                 seed=1)
    fresh = []
    for _ in range(repeat):
        for c in configs:
            t0 = time.perf_counter()
            m = measure(op, src, case, config=c, **quick)
            fresh.append(time.perf_counter() - t0)
            assert m.median_s, m.flags
    out = {"what": f"one tuning trial: measure({op}, {case}, one config; 8 input sets, <= 20 timed calls, "
                   "no energy) on the CPU interpreter",
           "fresh_worker_per_trial_s_median": round(statistics.median(fresh), 3)}
    try:
        from kernelagent.harness.session import CandidateSession
    except ImportError:
        out["reused_session"] = "not available at this commit"
        return out
    reused, first = [], None
    with CandidateSession(op, src) as s:
        for i in range(repeat * len(configs) + 1):
            t0 = time.perf_counter()
            m = measure(op, src, case, config=configs[i % len(configs)], session=s, **quick)
            dt = time.perf_counter() - t0
            assert m.median_s, m.flags
            if first is None:
                first = dt
            else:
                reused.append(dt)
        out.update(reused_session_first_trial_s=round(first, 3),
                   reused_session_later_trials_s_median=round(statistics.median(reused), 3),
                   workers_started=s.starts)
    return out


def _verify(a) -> dict:
    from kernelagent.harness import verify
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
    calls = cum("harness/verify.py", "_call")
    parent = cum("harness/verify.py", "_check_values") + cum("harness/verify.py", "reference")
    buckets = {
        "worker start + candidate import (sandbox, python, torch, triton)": total - search,
        "candidate calls in the worker (2 per example, Triton interpreter)": calls,
        "parent: float64 reference + native reference + comparison": parent,
        "hypothesis and encoding": max(0.0, search - calls - parent),
    }
    print(s.getvalue(), file=sys.stderr)
    return {
        "what": f"wall time of one `verify {a.op}` (its own kernel.py), end to end through the Python API",
        "examples_requested": a.examples or DEFAULT_EXAMPLES,
        "trials": trials, "wall_s": [round(w, 2) for w in walls], "median_wall_s": round(statistics.median(walls), 2),
        "python_torch_triton_import_s": round(import_s, 2),
        "breakdown_first_run_s": {k: round(v, 2) for k, v in buckets.items()},
    }


if __name__ == "__main__":
    main()
