"""Joules and seconds per token of a Llama-style decoder layer: library ops vs PyTorch.

Usage: python benchmarks/bench_decoder.py [--batch 1] [--seq 4096] [--layers-of 8b] [--train]
       [--compile] [--window-s 3] [--repeats 3] [--budget-s 240] [--out FILE]

On a CUDA GPU: the layer of kernelagent/examples/llama_layer.py (Llama-3-8B shapes, bf16) runs
three ways — the library's ops (its verified, tuned kernels), each op's PyTorch reference in
eager mode, and (``--compile``) the reference layer under torch.compile. For each: latency per
token from CUDA events (median of the repeats, a repeat = as many layer calls as fill
``--window-s``), energy per token from NVML's energy counter over the same window minus idle
power measured just before (the counter's ~100 ms update gives ≤ 2·0.1/window quantisation:
≤ 7 % at 3 s, stated in the output), GPU clocks and throttle reasons around each window. With
``--train`` the step adds the vocabulary projection and cross-entropy. The library's outputs
are checked against the eager layer first. Every number is measured on this GPU; nothing is
predicted. The budget skips the torch.compile row (minutes of compiling) when it has no room.

On a CPU: a short correctness run of the same layer at small sizes in the interpreter (what
tests/test_decoder_layer.py checks), with no timing claims.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _per_token(fn, tokens: int, window_s: float, repeats: int, meter) -> dict:
    import torch

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, int(window_s / one))
    idle_w = None
    if meter is not None:
        e0, t0 = meter.energy_mj(), time.perf_counter()
        time.sleep(0.5)
        e1, t1 = meter.energy_mj(), time.perf_counter()
        idle_w = (e1 - e0) / 1000.0 / (t1 - t0) if e0 is not None and e1 is not None else None
    lat, energy, clocks = [], [], []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0 = meter.energy_mj() if meter is not None else None
        w0 = time.perf_counter()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        w1 = time.perf_counter()
        e1 = meter.energy_mj() if meter is not None else None
        seconds = start.elapsed_time(end) / 1000.0
        lat.append(seconds / calls / tokens)
        if e0 is not None and e1 is not None:
            joules = (e1 - e0) / 1000.0 - (idle_w or 0.0) * (w1 - w0)
            energy.append(joules / calls / tokens)
        if meter is not None:
            clocks.append({"sm_clock_mhz": meter.clocks_mhz()[0], "reasons": meter.clock_event_reasons()})
    return {"s_per_token": statistics.median(lat), "j_per_token": statistics.median(energy) if energy else None,
            "calls_per_window": calls, "window_s": calls * one, "idle_w": idle_w,
            "energy_quantisation": 2 * 0.1 / max(calls * one, 1e-9), "clocks": clocks,
            "spread_s": [min(lat), max(lat)]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--window-s", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    started = time.monotonic()

    import torch
    import triton

    from kernelagent.examples.llama_layer import (LLAMA3_8B, SMALL, decoder_layer, library_ops, make_weights,
                                                  reference_ops, rope_tables, training_step_loss)

    cuda = torch.cuda.is_available()
    shape = LLAMA3_8B if cuda else SMALL
    b, s = (a.batch, a.seq) if cuda else (1, 16)
    dev = "cuda" if cuda else "cpu"
    if not cuda:
        import os

        os.environ.setdefault("KERNELAGENT_INTERPRET", "1")
    dtype = torch.bfloat16
    w = make_weights(shape, dtype=dtype, device=dev)
    x = torch.randn(b, s, shape.hidden, device=dev).to(dtype)
    cos, sin = rope_tables(s, shape.head_dim, dtype=dtype, device=dev)
    targets = torch.randint(0, shape.vocab, (b, s), device=dev)
    lib, ref = library_ops(), reference_ops()

    def step(ops):
        if a.train:
            return lambda: training_step_loss(ops, x, w, shape, cos, sin, targets)
        return lambda: decoder_layer(ops, x, w, shape, cos, sin)

    with torch.no_grad():
        ours, eager = step(lib)(), step(ref)()
    rel_err = float((ours.float() - eager.float()).abs().max() / eager.float().abs().max().clamp_min(1e-30))
    result = {"what": "Llama-style decoder layer" + (" + vocab projection + cross-entropy" if a.train else ""),
              "shape": vars(shape) if hasattr(shape, "__dict__") else shape.__dict__, "batch": b, "seq": s,
              "dtype": "bf16", "tokens": b * s, "rel_err_library_vs_eager": rel_err,
              "device": torch.cuda.get_device_name() if cuda else "cpu (interpreter: correctness only, no timing)",
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "triton": triton.__version__,
              "python": platform.python_version(), "measured": cuda, "rows": {}, "skipped": []}
    if cuda:
        meter = None
        try:
            from kernelagent.harness.energy import NvmlPowerMeter

            meter = NvmlPowerMeter.for_torch_device()
        except Exception as e:  # noqa: BLE001 - latency still measured, energy said missing
            result["skipped"].append(f"energy: no NVML ({e})")
        with torch.no_grad():
            for name, fn in (("library", step(lib)), ("eager", step(ref))):
                result["rows"][name] = _per_token(fn, b * s, a.window_s, a.repeats, meter)
            if a.compile:
                if a.budget_s - (time.monotonic() - started) < 120:
                    result["skipped"].append("torch.compile: not enough budget left")
                else:
                    comp = torch.compile(step(ref))
                    result["rows"]["compile"] = _per_token(comp, b * s, a.window_s, a.repeats, meter)
        base = result["rows"]["eager"]
        for name, row in result["rows"].items():
            row["speedup_vs_eager"] = base["s_per_token"] / row["s_per_token"]
            if row["j_per_token"] and base["j_per_token"]:
                row["energy_vs_eager"] = row["j_per_token"] / base["j_per_token"]
    print(json.dumps(result, indent=1, default=str))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
