"""benchmarks/bench_search.py --quick runs and reports every method it was asked for (smoke only:
the benchmark's numbers are a benchmark, not a test)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_search.py"
# The recorded spaces in ../shared beside the checkout (as CI has it), or where the variable points.
DATA = Path(os.environ.get("KERNELAGENT_AUTOTUNING_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "autotuning"))


@pytest.mark.skipif(not (DATA / "convolution_A100.json.gz").exists(), reason="recorded spaces not found")
def test_bench_search_quick(tmp_path):
    out = tmp_path / "search.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["family"] for r in rows} == {"convolution", "dedispersion"}
    has_kt = importlib.util.find_spec("kernel_tuner") is not None
    for r in rows:
        methods = set(r["methods"])
        assert {"kernelagent", "random", "optuna-tpe"} <= methods
        if has_kt:
            assert {"kt:genetic_algorithm", "kt:mls", "kt:random_sample"} <= methods
        for m, by_budget in r["methods"].items():
            s = by_budget["20"]
            assert len(s["runs"]) == 2 and all(1.0 <= x["ratio"] for x in s["runs"])
            assert all(x["measurements"] <= 20 for x in s["runs"])
            if not m.startswith("kt:"):
                assert all(x["measurements"] == 20 for x in s["runs"])  # ours spend the whole budget
    if not has_kt:
        assert "Kernel Tuner's strategies were not run" in p.stdout
    assert "### Targets (kernelagent)" in p.stdout and "geomean of medians" in p.stdout
