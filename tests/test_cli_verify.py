"""`kernelagent verify` as a user runs it: exit codes, --json, messages, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
CONTROL = HERE / "redteam" / "control_softmax_single_tile.py"
ZEROS = HERE / "redteam" / "zeros.py"
PROBLEMS = HERE / "problems"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_verified_candidate_exits_0_with_json():
    p = run("verify", "softmax", str(CONTROL), "--json", "--examples", "4", "--seed", "5")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["verified"] is True and out["reason"] is None and out["trials"] >= 1
    assert {"detail", "duration_s", "sandbox", "device", "seed"} <= out.keys()


def test_rejected_candidate_exits_1_with_reason_and_counterexample():
    p = run("verify", "softmax", str(ZEROS), "--json", "--examples", "4", "--seed", "5")
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["verified"] is False and out["reason"] == "mismatch"
    assert out["counterexample"]["params"]["cols"] >= 1
    assert "budget" in out["detail"]


def test_shipped_example_verifies_in_human_mode():
    p = run("verify", "softmax", str(HERE.parent / "kernels" / "softmax" / "kernel.py"), "--examples", "4")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("VERIFIED: softmax")


def test_unknown_op_exits_2_naming_the_known_ops():
    p = run("verify", "sofmax", str(CONTROL))
    assert p.returncode == 2
    assert "unknown op 'sofmax'" in p.stderr and "softmax" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_candidate_file_exits_2():
    p = run("verify", "softmax", "does/not/exist.py")
    assert p.returncode == 2 and "candidate file not found" in p.stderr and "Traceback" not in p.stderr


def test_problem_file_missing_get_inputs_exits_2_saying_which():
    p = run("verify", str(PROBLEMS / "no_get_inputs.py"), str(CONTROL))
    assert p.returncode == 2
    assert "does not define get_inputs" in p.stderr and "no_get_inputs.py" in p.stderr


def test_problem_file_that_does_not_parse_exits_2_with_line(tmp_path):
    bad = tmp_path / "broken_problem.py"
    bad.write_text("class Model(nn.Module)\n    pass\n")
    p = run("verify", str(bad), str(CONTROL))
    assert p.returncode == 2 and "does not parse" in p.stderr and "line 1" in p.stderr


def test_missing_problem_file_exits_2():
    p = run("verify", "nowhere/problem.py", str(CONTROL))
    assert p.returncode == 2 and "problem file not found" in p.stderr


def test_bad_config_json_exits_2():
    p = run("verify", "softmax", str(CONTROL), "--config", "{BLOCK_N: 3")
    assert p.returncode == 2 and "--config is not valid JSON" in p.stderr


def test_help_is_fast_and_lists_verify():
    p = run("--help", timeout=30)
    assert p.returncode == 0 and "verify" in p.stdout


def test_a_weak_sandbox_is_said_on_stderr_and_in_json():
    env = dict(os.environ, TRITON_INTERPRET="1", KERNELAGENT_SANDBOX="weak")
    p = subprocess.run([sys.executable, "-m", "kernelagent.cli", "verify", "softmax", str(CONTROL), "--json",
                        "--examples", "2", "--seed", "5"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["sandbox"].startswith("weak: ") and "KERNELAGENT_SANDBOX=weak" in out["sandbox"]
    assert "warning: sandbox is weak" in p.stderr
    assert out["cpu_s"] > 0


def test_a_problem_counterexample_names_its_input_shapes():
    from kernelagent.harness import verify

    v = verify(str(PROBLEMS / "relu_scale.py"), (HERE / "redteam" / "problem_wrong_init.py").read_text(),
               examples=3, seed=2)
    assert v.reason == "mismatch"
    assert v.counterexample["inputs"] == ["(16, 96) float32"] and "inputs: (16, 96) float32" in v.detail
