"""End to end with the real harness: the agent's candidates are verified in the sandbox.

The LLM is the scripted local server; the verdicts are real (Triton's interpreter on CPU).
"""

import json
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, python_reply

from kernelagent import cli

PROBLEM = Path(__file__).resolve().parents[1] / "kernelagent" / "examples" / "relu_problem.py"

RELU = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu_kernel(x_ptr, y_ptr, n_elements, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    y = tl.where(x > THRESHOLD, x, 0.0)
    tl.store(y_ptr + offs, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor, *, config: dict | None = None) -> torch.Tensor:
        if not x.is_contiguous():
            raise ValueError("expected a contiguous input")
        block = int((config or {}).get("BLOCK", 1024))
        y = torch.empty_like(x)
        n = x.numel()
        _relu_kernel[(triton.cdiv(n, block),)](x, y, n, BLOCK=block)
        return y
'''
WRONG = RELU.replace("THRESHOLD", "0.5")
GOOD = RELU.replace("THRESHOLD", "0")


def kernelagent(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["kernelagent", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.slow
def test_wrong_result_then_fix_verified_by_the_real_harness_and_replayed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    replies = [python_reply(WRONG), python_reply(GOOD, {"BLOCK": [256, 1024, 4096]})]
    with FakeOpenAI(replies) as srv:
        code, out, err = kernelagent(monkeypatch, capsys, "generate", PROBLEM, "--base-url", srv.base_url,
                                     "--model", "fake-coder", "--parallel", "1", "--max-iters", "3", "--examples", "2",
                                     "--seed", "11", "--db", tmp_path / "agent.db", "--out", tmp_path / "out", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["verified"] and res["rounds"] == 2
    assert [a["reason"] for a in res["attempts"]] == ["mismatch", None]
    kernel = Path(res["kernel"])
    assert kernel == tmp_path / "out" / "relu_problem_new.py" and "x > 0, x" in kernel.read_text()
    verdict = json.loads((tmp_path / "out" / "relu_problem_new.verdict.json").read_text())
    assert verdict["verified"] is True and verdict["trials"] >= 1 and "interpreter" in verdict["device"]
    # the harness's own evidence (its counterexample and error vs budget) reached the second prompt
    feedback = srv.chat_requests()[1]["messages"][-1]["content"]
    assert "(mismatch)" in feedback and "minimal counterexample" in feedback and "× the budget" in feedback

    # Replay: no server, same verdicts (same seed), same kernel.
    code, out, err = kernelagent(monkeypatch, capsys, "generate", "--replay", tmp_path / "out" / "exchanges.jsonl",
                                 "--db", tmp_path / "agent.db", "--out", tmp_path / "replayed", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert [a["reason"] for a in again["attempts"]] == ["mismatch", None]
    assert Path(again["kernel"]).read_text() == kernel.read_text()
    assert again["usage"]["total_tokens"] == res["usage"]["total_tokens"]


@pytest.mark.slow
def test_a_compile_error_is_summarised_by_its_last_line_and_the_run_replays(tmp_path, monkeypatch, capsys):
    """The compile error's own line leads the feedback, with the candidate's line; no host or
    sandbox path appears, so the recorded requests match on replay, byte for byte."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    bad = GOOD.replace("BLOCK=block)", "BLOCK=48)")
    replies = [python_reply(bad), python_reply(GOOD)]
    with FakeOpenAI(replies) as srv:
        code, out, err = kernelagent(monkeypatch, capsys, "generate", PROBLEM, "--base-url", srv.base_url,
                                     "--model", "fake-coder", "--parallel", "1", "--max-iters", "2", "--examples", "2",
                                     "--seed", "3", "--db", tmp_path / "agent.db", "--out", tmp_path / "out", "--json")
    assert code == 0, err
    res = json.loads(out)
    first = res["attempts"][0]
    assert first["reason"] == "compile-error"
    assert first["message"].startswith("ValueError: arange's range must be a power of 2"), first["message"]
    feedback = srv.chat_requests()[1]["messages"][-1]["content"]
    assert "in the candidate: candidate_r1_c0.py, line" in feedback and "tl.arange(0, BLOCK)" in feedback
    for noise in ("/tmp/", "kernelagent-sbx-", "site-packages/", str(Path(__file__).resolve().parents[1])):
        assert noise not in feedback, noise
    code, out, err = kernelagent(monkeypatch, capsys, "generate", "--replay", tmp_path / "out" / "exchanges.jsonl",
                                 "--db", tmp_path / "agent.db", "--out", tmp_path / "replayed", "--json")
    assert code == 0, err
    assert [a["reason"] for a in json.loads(out)["attempts"]] == ["compile-error", None]
