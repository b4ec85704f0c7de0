"""What a new user meets first: --version, early and clear errors, --json that always answers,
bad files (binary, not UTF-8) at every entry point, an unreachable storage server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest


def run(*args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), cwd=cwd)


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("kernelagent ")


@pytest.mark.parametrize("args, needle", [
    (("tune", "--sku", "h100", "--op", "no_such_op"), "unknown op 'no_such_op'"),
    (("tune", "--sku", "no_such_gpu", "--op", "softmax"), "unknown SKU 'no_such_gpu'"),
])
def test_bad_names_fail_before_the_heavy_imports(args, needle):
    t0 = time.monotonic()
    p = run(*args, "--json")
    took = time.monotonic() - t0
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
    assert json.loads(p.stdout)["exit_code"] == 2  # --json answers on stdout even on failure
    assert "torch" not in p.stderr and took < 30  # no torch import needed to say so


BINARY = b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00"
LATIN1 = "x = 'caf\xe9'\n".encode("latin-1")


@pytest.mark.parametrize("content", [BINARY, LATIN1], ids=["binary", "latin1"])
def test_unreadable_files_are_bad_input_at_every_entry_point(tmp_path, content):
    bad = tmp_path / "bad.py"
    bad.write_bytes(content)
    bad_json = tmp_path / "bad.json"
    bad_json.write_bytes(content)
    for args in (("verify", "softmax", str(bad)), ("verify", str(bad), str(bad)),
                 ("sku", "add", str(bad_json)), ("tune", "--replay", str(bad_json), "--trials", "2"),
                 ("generate", str(bad), "--base-url", "http://127.0.0.1:9/v1", "--max-iters", "1")):
        p = run(*args, cwd=tmp_path)  # generate writes its run folder under the cwd
        assert p.returncode == 2, (args, p.returncode, p.stderr[-800:])
        assert "Traceback" not in p.stderr and "error:" in p.stderr, (args, p.stderr[-800:])


def test_unreachable_storage_is_an_environment_problem(tmp_path):
    p = run("tune", "--sku", "h100", "--op", "softmax", "--trials", "1", "--no-write",
            "--storage", "postgresql://nobody:x@127.0.0.1:1/none")
    assert p.returncode == 3, p.stderr[-800:]
    assert "cannot reach the Optuna storage" in p.stderr and "nobody:x" not in p.stderr
