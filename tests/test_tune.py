"""`kernelagent tune` end to end on the CPU: the model and replay backends, resume, the library
write (labelled, re-verified, predicted never over measured), and errors."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernelagent import library
from kernelagent.tuner.tune import tune

# A real recorded space shipped with the repo (benchmark_hub, MIT; see benchmarks/data/).
DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def where(tmp_path):
    return {"library": tmp_path / "lib", "storage": f"sqlite:///{tmp_path / 'studies.db'}"}


def test_model_tune_writes_predicted_verified_entries_and_resumes(where):
    p = cli("tune", "--sku", "h100", "--op", "softmax", "--dtype", "bf16", "--trials", "3", "--max-cases", "1",
            "--seed", "3", "--library", str(where["library"]), "--storage", where["storage"], "--json",
            "--min-predicted-gain", "0")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "model" in p.stderr and "PREDICTED" in p.stderr  # said out loud on a CPU machine
    (res,) = json.loads(p.stdout)
    assert res["verified"] and res["backend"] == "model" and res["measured"] is False
    assert res["trials_used"] == 3 and res["library_action"] == "added"
    data = json.loads((where["library"] / "softmax" / "configs" / "h100-sxm.json").read_text())
    (entry,) = data["entries"]
    assert entry["evidence"]["backend"] == "model" and entry["evidence"]["measured"] is False
    assert entry["kernel_sha256"] == library.kernel_sha256("softmax")
    assert "predicted" in entry["provenance"]["device"] and entry["provenance"]["triton"]
    # Re-running with a larger budget on the same study continues it: 2 more, not 5.
    again = tune(sku_id="h100", ops=["softmax"], dtypes=["bf16"], trials=5, storage=where["storage"], seed=3,
                 library_dir=where["library"], max_cases=1, verify_examples=3, min_predicted_gain=0)
    assert again[0].trials_used == 5


def test_predicted_never_overwrites_a_measured_entry(where):
    first = tune(sku_id="h100", ops=["softmax"], dtypes=["bf16"], trials=2, storage=where["storage"], seed=1,
                 library_dir=where["library"], max_cases=1, verify_examples=3, measure="model", min_predicted_gain=0)
    path = Path(first[0].library_path)
    data = json.loads(path.read_text())
    entry = data["entries"][0]
    entry["evidence"].update(backend="gpu", measured=True, latency_us=1.0)
    path.write_text(json.dumps(data))
    second = tune(sku_id="h100", ops=["softmax"], dtypes=["bf16"], trials=3, storage=where["storage"], seed=1,
                  library_dir=where["library"], max_cases=1, verify_examples=3, measure="model", min_predicted_gain=0)
    assert second[0].library_action == "kept"
    assert json.loads(path.read_text())["entries"][0]["evidence"]["backend"] == "gpu"


def test_replay_of_a_recording_measures_from_it(where, tmp_path):
    from kernelagent.kernels import get_opspec
    from kernelagent.kernels._configs import bucket_of
    from kernelagent.kernels.spec import Case

    spec = get_opspec("softmax")
    case = dict(spec.bench_cases[0])
    bucket = bucket_of(spec.shape_key(spec.build(Case(params=case, dtype="bf16"))))
    measurements = []
    for block in (512, 1024, 2048, 4096, 8192):
        for warps in (4, 8):
            lat = 30.0 + abs(block - 2048) / 256 + (warps == 4) * 0.5  # optimum: 2048 × 8 warps
            measurements.append({"config": {"BLOCK_N": block, "num_warps": warps}, "latency_us": lat,
                                 "energy_uj": lat * 300, "feasible": True, "reason": None})
    rec = {"format": "kernelagent-recording", "version": 1, "op": "softmax", "sku": "h100-sxm", "dtype": "bf16",
           "bucket": ",".join(f"{k}={v}" for k, v in sorted(bucket.items())), "device": "NVIDIA H100 80GB HBM3",
           "versions": {"triton": "3.6.0"}, "measurements": measurements}
    path = tmp_path / "softmax.json.gz"
    path.write_bytes(gzip.compress(json.dumps(rec).encode()))
    (res,) = tune(sku_id="h100", ops=["softmax"], dtypes=["bf16"], trials=20, storage=where["storage"], seed=2,
                  library_dir=where["library"], measure=f"replay:{path}", verify_examples=3)
    assert res.backend == "replay" and res.measured
    assert res.best_config == {"BLOCK_N": 2048, "num_warps": 8}
    assert res.latency_us == pytest.approx(30.0)


@pytest.mark.parametrize("args, code, words", [
    (("--sku", "nope", "--op", "softmax"), 2, "unknown SKU 'nope'"),
    (("--sku", "h100", "--op", "nope"), 2, "unknown op 'nope'"),
    (("--sku", "h100"), 2, "--op"),
    (("--sku", "h100", "--op", "softmax", "--measure", "gpu"), 3, "needs a CUDA GPU"),
    (("--sku", "h100", "--op", "softmax", "--measure", "replay:/no/such/file"), 2, "replay file not found"),
    (("--replay", "/no/such/file.json.gz", "--trials", "3"), 2, "replay file not found"),
    (("--sku", "h100", "--op", "softmax", "--policy", "cheapest"), 2, "unknown --policy"),
])
def test_bad_input_is_a_clear_error(args, code, words):
    p = cli("tune", *args, timeout=120)
    assert p.returncode == code, (p.stdout, p.stderr)
    assert words in p.stderr and "Traceback" not in p.stderr


def test_malformed_replay_file_is_bad_input(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    p = cli("tune", "--replay", str(bad), "--trials", "3", timeout=120)
    assert p.returncode == 2 and "broken.json" in p.stderr and "Traceback" not in p.stderr


def test_replay_search_reports_best_optimum_and_ratio():
    p = cli("tune", "--replay", str(DATA / "convolution_A100.json.gz"), "--trials", "60", "--seed", "4", "--json")
    assert p.returncode == 0, p.stderr[-1500:]
    out = json.loads(p.stdout)
    assert out["trials_used"] == 60
    assert out["ratio_to_optimum"] >= 1.0
    assert out["optimum_latency_s"] <= out["best_latency_s"]
