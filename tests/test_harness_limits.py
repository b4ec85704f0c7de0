"""Limits that mean what they say: "too slow" is CPU time the worker used, so a correct
candidate verifies on a busy machine, and a timeout verdict says what ran and for how long."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelagent.harness import verify
from kernelagent.harness.limits import Limits, session_cpu_seconds
from kernelagent.kernels import kernel_path

CONTROL = (Path(__file__).parent / "redteam" / "control_softmax_single_tile.py").read_text()
KERNEL_ONLY = CONTROL.split("def softmax")[0]
ENTRY = "def softmax" + CONTROL.split("def softmax", 1)[1]


@pytest.fixture
def busy_machine():
    """Four busy-loop processes: load 4+ on this machine's cores while the test runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    time.sleep(0.5)
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def test_correct_candidates_verify_on_a_loaded_machine(busy_machine):
    """The shipped kernels, each with a CPU budget about 3x what it needs on an idle machine:
    under four busy loops their wall time stretches, their CPU time does not."""
    for op in ("softmax", "rms_norm", "silu_mul"):
        v = verify(op, kernel_path(op).read_text(), examples=3, seed=11, timeout=45)
        assert v.verified, (op, v.reason, v.detail[-800:])
        assert v.cpu_s is not None and 0 < v.cpu_s < 45


def test_the_budget_counts_cpu_seconds_not_wall_seconds(busy_machine):
    """A candidate that burns 2.5 CPU-seconds at import, with a 12 CPU-second budget: under
    load its wall time is several times its CPU time, and it still verifies."""
    burn = "import time\n_t0 = time.process_time()\nwhile time.process_time() - _t0 < 2.5:\n    pass\n"
    t0 = time.monotonic()
    v = verify("softmax", burn + CONTROL, examples=2, seed=3, timeout=12, static_checks=False)
    wall = time.monotonic() - t0
    assert v.verified, (v.reason, v.detail[-800:])
    assert v.cpu_s >= 2.5
    print(f"cpu {v.cpu_s:.1f} s, wall {wall:.1f} s under load")


def test_a_busy_loop_is_stopped_by_cpu_time_and_the_verdict_says_what_ran():
    """The second case loops forever: the verdict names the cases that passed, the slow case,
    the CPU seconds used, and that this was the interpreter."""
    src = KERNEL_ONLY + "_calls = [0]\n\n\n" + ENTRY.replace(
        "    x2 = x.reshape", "    _calls[0] += 1\n    while _calls[0] > 3:\n        pass\n    x2 = x.reshape", 1)
    v = verify("softmax", src, examples=4, seed=3, timeout=8, static_checks=False)
    assert not v.verified and v.reason == "timeout", (v.reason, v.detail[-800:])
    assert "1 case(s) passed before it" in v.detail
    assert "the slow case:" in v.detail and "CPU-seconds" in v.detail
    assert "Triton interpreter" in v.detail
    assert v.cpu_s is not None and v.cpu_s >= 8


def test_a_worker_that_makes_no_progress_is_stopped_by_the_stall_limit():
    src = "import time\ntime.sleep(3600)\n" + CONTROL
    t0 = time.monotonic()
    v = verify("softmax", src, examples=2, seed=3, timeout=5, static_checks=False)
    assert not v.verified and v.reason == "timeout"
    assert "no progress" in v.detail
    assert time.monotonic() - t0 < 60


def test_limits_defaults_follow_the_cpu_budget():
    assert Limits(cpu_s=5).stall() == 5 and Limits(cpu_s=600).stall() == 60
    assert Limits(cpu_s=30).wall() > 30 * 5
    assert Limits(cpu_s=30, stall_s=2, wall_s=40).stall() == 2 and Limits(cpu_s=30, wall_s=40).wall() == 40


def test_session_cpu_counts_children_and_grandchildren():
    """A worker's CPU includes the processes it starts (they share its session)."""
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time\\nt=time.process_time()\\n"
            "while time.process_time()-t < 1.0: pass\\ntime.sleep(30)'])\n"
            "time.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while session_cpu_seconds(p.pid) < 1.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session_cpu_seconds(p.pid) >= 1.0
    finally:
        import os
        import signal

        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
