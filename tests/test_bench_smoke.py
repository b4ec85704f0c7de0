"""benchmarks/bench_ops.py runs on the CPU as a smoke test and writes its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ops.py"


def test_bench_ops_smoke_on_cpu(tmp_path):
    if torch.cuda.is_available():
        return  # the GPU run is a benchmark, not a test
    out = tmp_path / "ops.json"
    env = dict(os.environ, TRITON_INTERPRET="1", KERNELAGENT_INTERPRET="1")
    p = subprocess.run([sys.executable, str(SCRIPT), "--ops", "softmax,silu_mul", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads(out.read_text())
    assert "interpreter" in data["device"]
    assert {r["op"] for r in data["rows"]} == {"softmax", "silu_mul"}
    for r in data["rows"]:
        assert r["ours_us"] > 0 and r["eager_us"] > 0 and r["max_abs_err_vs_reference"] < 0.1
        assert r["fallback"] is None     # the library's kernel ran, not PyTorch


def test_bench_ops_keeps_to_its_budget_and_says_what_it_skipped(tmp_path):
    if torch.cuda.is_available():
        return
    out = tmp_path / "ops.json"
    env = dict(os.environ, TRITON_INTERPRET="1", KERNELAGENT_INTERPRET="1")
    p = subprocess.run([sys.executable, str(SCRIPT), "--ops", "softmax,rms_norm", "--budget-s", "0.01",
                        "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["rows"] == [] and {s["op"] for s in data["skipped"]} == {"softmax", "rms_norm"}
    assert all("budget" in s["why"] for s in data["skipped"])
