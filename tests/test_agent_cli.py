"""`kernelagent generate` exit codes: 1 budget spent, 2 bad input, 3 endpoint problem; resume by id."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from fake_openai import FakeOpenAI, Reply, Sleep, Status, python_reply, softmax_sources

from kernelagent import cli

SRC = softmax_sources()


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setenv("KERNELAGENT_LLM_BACKOFF_S", "0.01")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def kernelagent(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["kernelagent", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def common(tmp_path, url):
    return ["--base-url", url, "--model", "fake-coder", "--db", tmp_path / "agent.db", "--out", tmp_path / "out",
            "--parallel", "1", "--seed", "5"]


def dead_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


def test_bad_target_and_sku_exit_2(tmp_path, monkeypatch, capsys):
    code, _, err = kernelagent(monkeypatch, capsys, "generate", "no_such_op", *common(tmp_path, dead_url()))
    assert code == 2 and "unknown target 'no_such_op'" in err
    code, _, err = kernelagent(monkeypatch, capsys, "generate", tmp_path / "missing.py", *common(tmp_path, dead_url()))
    assert code == 2 and "problem file not found" in err
    (tmp_path / "not_a_problem.py").write_text("import torch\n\nclass Foo:\n    pass\n")
    code, _, err = kernelagent(monkeypatch, capsys, "generate", tmp_path / "not_a_problem.py",
                               *common(tmp_path, dead_url()))
    assert code == 2 and "missing Model, get_inputs, get_init_inputs" in err and "--resume" not in err
    code, _, err = kernelagent(monkeypatch, capsys, "generate", "softmax", "--sku", "no-such-gpu",
                               *common(tmp_path, dead_url()))
    assert code == 2 and "unknown SKU 'no-such-gpu'" in err
    code, _, err = kernelagent(monkeypatch, capsys, "generate", "--resume", "nope", "--db", tmp_path / "agent.db")
    assert code == 2 and "no run 'nope'" in err
    code, _, err = kernelagent(monkeypatch, capsys, "generate", "softmax", "--max-iters", "0",
                               *common(tmp_path, dead_url()))
    assert code == 2 and "--max-iters must be at least 1" in err


def test_dead_endpoint_exit_3(tmp_path, monkeypatch, capsys):
    code, _, err = kernelagent(monkeypatch, capsys, "generate", "softmax", "--retries", "1",
                               *common(tmp_path, dead_url()))
    assert code == 3 and "failed 2 times" in err and "--resume" in err


def test_bad_key_exit_3(tmp_path, monkeypatch, capsys):
    with FakeOpenAI([Reply("never")], api_key="sk-other") as srv:
        code, _, err = kernelagent(monkeypatch, capsys, "generate", "softmax", *common(tmp_path, srv.base_url))
    assert code == 3 and "HTTP 401" in err and "OPENAI_API_KEY" in err
    assert len(srv.requests) == 1


def test_budget_spent_exit_1_with_every_reason(tmp_path, monkeypatch, capsys):
    replies = [python_reply(SRC["try_fallback"]), Reply("Let me explain the algorithm instead.")]
    with FakeOpenAI(replies) as srv:
        code, out, err = kernelagent(monkeypatch, capsys, "generate", "softmax", "--max-iters", "2", "--json",
                                     *common(tmp_path, srv.base_url))
    assert code == 1
    res = json.loads(out)
    assert res["verified"] is False and res["kernel"] is None and res["stop_reason"].startswith("round limit")
    assert [a["reason"] for a in res["attempts"]] == ["pytorch-fallback", "no-code"]
    assert res["best"]["reason"] == "pytorch-fallback"   # it got further than prose
    assert (tmp_path / "out" / "best_attempt.py").read_text().count("except Exception") == 1
    assert res["usage"]["total_tokens"] > 0 and "price" in res["usage"]["cost_note"]
    assert "round 1" in err  # progress goes to stderr, the JSON alone to stdout


def test_endpoint_dies_mid_run_then_resume_by_id(tmp_path, monkeypatch, capsys):
    with FakeOpenAI([Reply("no code, sorry"), Status(500)]) as srv:
        code, _, err = kernelagent(monkeypatch, capsys, "generate", "softmax", "--max-iters", "3", "--retries", "0",
                                   *common(tmp_path, srv.base_url))
    assert code == 3 and "HTTP 500" in err
    run_id = err.split("--resume ")[1].split("]")[0].strip()
    with FakeOpenAI([python_reply(SRC["try_fallback"])]) as srv2:
        code, out, err = kernelagent(monkeypatch, capsys, "generate", "--resume", run_id, "--base-url",
                                     srv2.base_url, "--db", tmp_path / "agent.db")
    assert code == 1, err
    assert "NO VERIFIED KERNEL for softmax: round limit reached (3 rounds)" in out
    assert "round 1 candidate 0: no-code" in out and "round 3 candidate 0: pytorch-fallback" in out
    # the resumed run picked up the feedback of the rounds before the crash
    assert len(srv2.chat_requests()) == 2
    assert "no ```python code block" in srv2.chat_requests()[0]["messages"][-1]["content"]
    lines = (tmp_path / "out" / "exchanges.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3  # header + one exchange per round, across both processes' sessions


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume_by_id(tmp_path, monkeypatch, capsys, sig, code):
    """A real process, interrupted (Ctrl-C or SIGTERM) while waiting on the model, says how to
    resume, and resumes by its id."""
    with FakeOpenAI([Reply("prose first"), Sleep(30, Reply("never seen")), python_reply(SRC["try_fallback"])]) as srv:
        env = dict(os.environ, OPENAI_API_KEY="sk-test")
        proc = subprocess.Popen([sys.executable, "-m", "kernelagent.cli", "generate", "softmax", "--max-iters", "2",
                                 *map(str, common(tmp_path, srv.base_url))],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while len(srv.chat_requests()) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(srv.chat_requests()) == 2, proc.communicate(timeout=5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code and "continue it with: kernelagent generate --resume" in err, err[-2000:]
        run_id = err.split("--resume ")[1].split()[0]
        code, out, err = kernelagent(monkeypatch, capsys, "generate", "--resume", run_id, "--db", tmp_path / "agent.db")
    assert code == 1, err
    assert f"run {run_id}: 2 round(s)" in out
    assert "round 1 candidate 0: no-code" in out and "round 2 candidate 0: pytorch-fallback" in out
    # round 1 was not asked again; round 2's interrupted call was
    assert len(srv.chat_requests()) == 3
    assert "no ```python code block" in srv.chat_requests()[2]["messages"][-1]["content"]
