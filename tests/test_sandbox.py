"""The sandbox holds on its own: these run with the static checks off, as a candidate that got
past them would, and check from the parent what the worker could and could not do."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from kernelagent.harness import verify
from kernelagent.harness.sandbox import isolation_mode

REPO = Path(__file__).resolve().parents[1]
CONTROL = (Path(__file__).parent / "redteam" / "control_softmax_single_tile.py").read_text()
KERNEL_ONLY = CONTROL.split("def softmax")[0]

needs_namespaces = pytest.mark.skipif(isolation_mode()[0] != "namespaces",
                                      reason=f"namespaces unavailable: {isolation_mode()[1]}")


def _run(source: str, **kw):
    kw.setdefault("examples", 2)
    kw.setdefault("timeout", 60.0)
    return verify("softmax", source, seed=7, static_checks=False, **kw)


def test_secrets_never_reach_the_worker_or_the_verdict(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-4f9a")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_77aa")
    src = "import os\n" + KERNEL_ONLY + "raise RuntimeError('ENV=' + repr(sorted(os.environ.items())))\n"
    verdict = _run(src)
    assert verdict.reason == "import-error"
    assert "ENV=" in verdict.detail  # the candidate did report its environment...
    dumped = verdict.dumps()
    assert "sk-test-secret-4f9a" not in dumped and "hf_secret_77aa" not in dumped  # ...without secrets


@needs_namespaces
def test_candidate_cannot_write_project_files_or_caches(tmp_path):
    target = REPO / "kernels" / "softmax" / "kernel.py"
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    new_file = REPO / "kernels" / "softmax" / "pwned.py"
    src = "import os\n" + KERNEL_ONLY + f"""
results = []
for path, mode in (({str(target)!r}, "a"), ({str(new_file)!r}, "w"), ({str(tmp_path / 'x')!r}, "w")):
    try:
        open(path, mode).write("# poisoned\\n")
        results.append("WROTE " + path)
    except OSError as e:
        results.append("denied " + path)
raise RuntimeError("; ".join(results))
"""
    verdict = _run(src)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    assert not new_file.exists()
    assert not (tmp_path / "x").exists()
    assert "WROTE" not in verdict.detail


@needs_namespaces
def test_candidate_has_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        for _ in range(60):
            try:
                accepted.append(server.accept())
                return
            except socket.timeout:
                continue

    t = threading.Thread(target=accept)
    t.start()
    src = "import socket\n" + KERNEL_ONLY + f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    verdict = _run(src)
    t.join()
    server.close()
    assert not accepted, "the worker reached a loopback server"
    assert verdict.reason == "import-error" and ("unreachable" in verdict.detail or "refused" in verdict.detail)


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return found


def test_nothing_the_candidate_starts_outlives_it():
    marker = "4242.123"
    src = "import subprocess\n" + KERNEL_ONLY + f"""
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
raise RuntimeError("left a daemon behind")
"""
    verdict = _run(src)
    assert not verdict.verified
    assert _processes_with(marker) == []


@needs_namespaces
def test_fork_bomb_is_contained_and_the_next_candidate_is_unaffected():
    src = "import os\n" + KERNEL_ONLY + """
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    verdict = _run(src, timeout=8.0)
    assert not verdict.verified and verdict.reason in {"timeout", "crash", "import-error"}
    after = _run(CONTROL, examples=3)
    assert after.verified, after.detail


def test_weak_mode_is_reported_never_silent(monkeypatch):
    monkeypatch.setenv("KERNELAGENT_SANDBOX", "weak")
    verdict = verify("softmax", CONTROL, examples=2, seed=3)
    assert verdict.verified
    assert verdict.sandbox.startswith("weak")
    assert any("weak" in w for w in verdict.warnings)


def test_namespaces_mode_is_reported_when_used():
    mode, detail = isolation_mode()
    verdict = verify("softmax", CONTROL, examples=2, seed=3)
    assert verdict.sandbox == ("namespaces" if mode == "namespaces" else f"weak: {detail}")


@needs_namespaces
def test_worker_is_unprivileged_and_leaves_nothing_in_shared_places():
    """Never uid 0 (a Python install under /root is re-exposed read-only, the rest of /root is
    hidden); /dev is minimal and read-only, with a private /dev/shm, so a file written there does
    not outlive the worker; /sys and /proc/sys are read-only."""
    marker = f"/dev/shm/kernelagent-probe-{os.getpid()}"
    src = "import os\n" + KERNEL_ONLY + (
        "def softmax(x, *, config=None):\n"
        f"    open({marker!r}, 'w').write('x')\n"
        "    facts = {'uid': os.getuid(), 'home': sorted(os.listdir(os.path.expanduser('~root'))),\n"
        "             'sys': os.access('/sys/kernel', os.W_OK), 'procsys': os.access('/proc/sys/kernel', os.W_OK),\n"
        "             'dev': sorted(os.listdir('/dev')), 'devw': os.access('/dev', os.W_OK),\n"
        "             'shmw': os.access('/dev/shm', os.W_OK)}\n"
        "    raise RuntimeError('FACTS=' + repr(facts))\n")
    verdict = _run(src)
    assert "FACTS=" in verdict.detail, verdict.detail[-1500:]
    facts = eval(verdict.detail.rsplit("FACTS=", 1)[1].splitlines()[0])  # our own repr of a dict
    assert facts["uid"] != 0
    assert facts["sys"] is False and facts["procsys"] is False
    assert set(facts["dev"]) <= {"null", "zero", "full", "random", "urandom", "shm", "fd", "stdin", "stdout",
                                 "stderr"}, facts["dev"]
    assert facts["devw"] is False and facts["shmw"] is True
    assert not set(facts["home"]) - {".pyenv", ".ka-expose", ".local"}, facts["home"]
    assert not os.path.exists(marker)
