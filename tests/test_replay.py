"""The replay backend: reading Kernel Tuner caches and kernelagent recordings, and errors."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from kernelagent.errors import BadInput
from kernelagent.tuner.replay import Recording, ReplayBackend, load, run_replay_search

# The recorded spaces in ../shared beside the checkout (as CI has it), or where the variable points.
DATA = Path(os.environ.get("KERNELAGENT_AUTOTUNING_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "autotuning"))
needs_data = pytest.mark.skipif(not (DATA / "convolution_A100.json.gz").exists(),
                                reason=f"recorded tuning spaces not found under {DATA}")


def kt_doc(cache: dict) -> dict:
    return {"device_name": "Test GPU", "kernel_name": "k", "problem_size": [8], "objective": "time",
            "tune_params_keys": ["bx", "tile"], "tune_params": {"bx": [32, 64, 128], "tile": [1, 2]},
            "cache": cache}


def rec(bx, tile, time):
    return {"bx": bx, "tile": tile, "time": time, "times": [time] if isinstance(time, float) else []}


SMALL = {"32,1": rec(32, 1, 2.0), "64,1": rec(64, 1, 1.0), "128,1": rec(128, 1, "RuntimeFailedConfig"),
         "32,2": rec(32, 2, 1.5), "64,2": rec(64, 2, "CompilationFailedConfig")}  # 128,2 absent: restricted


@needs_data
def test_reads_gzipped_kernel_tuner_cache():
    space = load(DATA / "convolution_A100.json.gz")
    assert list(space.params)[:2] == ["block_size_x", "block_size_y"]
    assert space.params["block_size_y"] == [1, 2, 4, 8, 16]
    assert len(space.entries) == 4362 and len(space.feasible()) == 4201
    failed = [m for m in space.entries.values() if not m.feasible]
    assert {m.reason for m in failed} == {"RuntimeFailedConfig", "CompilationFailedConfig"}
    best = space.optimum()
    assert best.config["block_size_x"] == 32 and best.latency_s == pytest.approx(0.5536e-3, rel=1e-3)


def test_plain_json_cache_infeasible_and_absent(tmp_path):
    f = tmp_path / "small.json"
    f.write_text(json.dumps(kt_doc(SMALL)))
    space = load(f)
    b = ReplayBackend(space)
    m = b.measure({"bx": 64, "tile": 1})
    assert (m.latency_s, m.feasible, m.backend) == (pytest.approx(1e-3), True, "replay")
    assert b.measure({"bx": 128, "tile": 1}).reason == "RuntimeFailedConfig"
    absent = b.measure({"bx": 128, "tile": 2})
    assert not absent.feasible and "not recorded" in absent.reason
    assert b.measure({"bx": 64, "tile": 1}) == m  # deterministic
    assert space.search_space().check({"bx": 128, "tile": 2}) is not None
    assert space.search_space().check({"bx": 128, "tile": 1}) is None  # failed, but in the space


def test_unterminated_append_only_cache(tmp_path):
    head = {k: v for k, v in kt_doc(SMALL).items() if k != "cache"}
    # Kernel Tuner appends '"key": {...},' per result; the closing brackets come at the end.
    text = json.dumps(head)[:-1] + ', "cache": {\n' + "".join(f'"{k}": {json.dumps(v)},\n' for k, v in SMALL.items())
    f = tmp_path / "partial.json"
    f.write_text(text)
    assert len(load(f).entries) == len(SMALL)


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_recording_round_trip(tmp_path, suffix):
    r = Recording(op="softmax", sku="h100-sxm", dtype="bf16", bucket="cols=4096", device="NVIDIA H100",
                  versions={"triton": "3.9"}, params={"BLOCK_N": [1024, 2048, 4096], "num_warps": [4, 8]})
    measure = r.wrap(lambda c: (1e-5 * c["BLOCK_N"] / 1024, 2e-3, None) if c["num_warps"] == 4 else (None, None, "out of resources"))
    for bn in (1024, 2048):
        for w in (4, 8):
            measure({"BLOCK_N": bn, "num_warps": w})
    path = r.save(tmp_path / f"rec{suffix}")
    space = load(path)
    assert space.format == "kernelagent" and space.meta["op"] == "softmax" and space.meta["versions"] == {"triton": "3.9"}
    assert space.params == {"BLOCK_N": [1024, 2048, 4096], "num_warps": [4, 8]}
    hit = space.lookup({"BLOCK_N": 1024, "num_warps": 4})
    assert hit.latency_s == pytest.approx(1e-5) and hit.energy_j == pytest.approx(2e-3)
    assert space.lookup({"BLOCK_N": 2048, "num_warps": 8}).reason == "out of resources"
    assert not space.lookup({"BLOCK_N": 4096, "num_warps": 4}).feasible
    if suffix.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "invalid JSON"),
    (b"[1, 2]", "top level is list"),
    (json.dumps({"cache": {}}).encode(), "neither a Kernel Tuner cache"),
    (json.dumps({**kt_doc(SMALL), "tune_params": {"bx": [32]}}).encode(), "tune_params"),
    (json.dumps(kt_doc({"32,1": {"bx": 32, "time": 1.0}})).encode(), "lacks parameter"),
    (json.dumps({"format": "kernelagent-recording", "measurements": [{"config": {"a": 1}, "feasible": True,
                                                                      "latency_us": "fast"}]}).encode(), "latency_us"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
])
def test_malformed_file_is_bad_input_naming_file(tmp_path, content, problem):
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    with pytest.raises(BadInput) as e:
        load(f)
    assert str(f) in str(e.value) and problem in str(e.value)
    assert e.value.exit_code == 2


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot read replay file"):
        run_replay_search(tmp_path / "nope.json.gz", trials=10, seed=0)


def test_run_replay_search_reports_ratio(tmp_path):
    f = tmp_path / "small.json.gz"
    f.write_bytes(gzip.compress(json.dumps(kt_doc(SMALL)).encode()))
    out = run_replay_search(f, trials=10, seed=3)
    assert out["sampler"] == "exhaustive"  # 5 configs in the space, budget 10
    assert out["best_config"] == {"bx": 64, "tile": 1} and out["ratio_to_optimum"] == 1.0
    assert out["trials_used"] == out["measure_calls"] == 5
    json.dumps(out)
