"""The GPU lane's plan and budget, checked on the CPU (the lane itself needs a GPU): the dry
run fits the default budget, a step that does not fit is skipped and said so, a step that runs
long is stopped at what is left, and the summary is always written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_lane  # noqa: E402


def test_the_dry_run_prints_a_plan_that_fits_the_default_budget():
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_lane.py"), "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for step in gpu_lane.steps():
        assert step.name in p.stdout
    total = float(p.stdout.split("estimated total: ")[1].split(" s")[0])
    assert 0 < total <= 480 and "skipped" not in p.stdout       # the default lane fits 8 minutes
    short = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_lane.py"), "--dry-run",
                            "--budget-s", "150"], capture_output=True, text=True, timeout=120)
    assert "bench-ops" in short.stdout and "skipped: needs ~" in short.stdout


def test_the_budget_skips_what_does_not_fit_and_stops_what_runs_long(tmp_path):
    sleep = lambda s: (lambda out, allowed: [sys.executable, "-c", f"import time; time.sleep({s})"])  # noqa: E731
    steps = [
        gpu_lane.Step("long", "sleeps past its limit", 0.5, 1.5, argv=sleep(60)),
        gpu_lane.Step("huge", "would need far more than the budget", 10_000, 10_000, argv=sleep(0)),
        gpu_lane.Step("quick", "fits", 0.5, 30, argv=sleep(0)),
        gpu_lane.Step("summary", "always", 0.1, 10, run=gpu_lane._summary),
    ]
    records = gpu_lane.execute(steps, tmp_path, gpu_lane.Budget(120.0), echo=lambda m: None)
    status = {r["step"]: r["status"] for r in records}
    assert status == {"long": "timed out", "huge": "skipped", "quick": "passed", "summary": "passed"}
    long = records[0]
    assert long["allowed_s"] == 1.5 and long["duration_s"] < 30
    assert "needs ~10000 s" in records[1]["why"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| long | timed out" in summary and "| huge | skipped" in summary
    assert json.loads((tmp_path / "lane.json").read_text())["steps"][2]["status"] == "passed"


def test_the_lane_refuses_to_run_without_a_gpu_and_names_unknown_steps():
    import torch

    if torch.cuda.is_available():
        return
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_lane.py"), "--budget-s", "5"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3 and "no CUDA GPU" in p.stderr
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_lane.py"), "--only", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown step" in p.stderr
