"""Performance drives the agent's search: verified candidates are raced (predicted by the model
here, on the CPU; measured on a GPU) against what the library already has, the prompt says
what to beat, parallel candidates take different approaches, the best attempt stays in the
context, and the fastest verified candidate is the one accepted. The candidate's launcher runs
only in a sandbox while it is timed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, python_reply

from kernelagent import cli
from kernelagent.agent import nodes
from kernelagent.agent.race import compare, describe_result, describe_target

REPO = Path(__file__).resolve().parents[1]
SOFTMAX = (REPO / "kernels" / "softmax" / "kernel.py").read_text()
DEFAULT_LINE = '    return {"BLOCK_N": block, "num_warps": 4 if block <= 2048 else 8 if block <= 4096 else 16,'
assert DEFAULT_LINE in SOFTMAX
# Correct, but loops over 4096 columns in tiles of 128 with one warp: predicted far slower.
SLOW_SOFTMAX = SOFTMAX.replace(DEFAULT_LINE, '    return {"BLOCK_N": 128, "num_warps": 1,')

SETUP = {"op": "softmax", "sku": "h100-sxm", "sku_name": "NVIDIA H100", "shape": "(4096, 4096) bf16",
         "backend": "model", "margin": 0.15, "roofline_us": 20.0, "pytorch_us": None,
         "to_beat": {"label": "kernel.py (default config)", "latency_us": 27.0}}


def test_compare_says_how_far_a_candidate_is_from_the_target():
    faster, same, slower = compare(SETUP, 20.0), compare(SETUP, 27.0), compare(SETUP, 54.0)
    assert faster["wins"] and faster["speedup_vs_best"] == pytest.approx(1.35) and faster["roofline_pct"] == 100.0
    assert not same["wins"] and not slower["wins"] and slower["speedup_vs_best"] == pytest.approx(0.5)
    assert not compare(SETUP, 25.0)["wins"]                 # 8 % faster is inside the model's ±15 %
    assert "predicted 54.0 µs" in describe_result(slower) and "0.50× as fast as the current best" in describe_result(slower)
    text = describe_target(SETUP)
    assert "27.0 µs" in text and "not measured" in text and "more than 15 % faster" in text
    assert describe_target({"error": "no bench cases"}) == ""


def test_the_fastest_verified_candidate_ranks_first():
    def verified(slot, latency, ratio):
        return {"round": 1, "slot": slot, "verified": True, "stage": "verify", "worst_error_ratio": ratio,
                "race": {"latency_us": latency}, "profile": {}}

    a, b = verified(0, 50.0, 0.01), verified(1, 20.0, 0.9)   # b is less accurate but faster
    unraced = dict(verified(2, None, 0.0), race=None)
    assert min([a, b, unraced], key=nodes.rank_key) is b
    assert sorted([unraced, a], key=nodes.rank_key)[0] is a


def test_improve_rounds_keep_going_until_a_win_or_the_rounds_are_spent():
    n = nodes.Nodes(nodes.Deps(llm=None, verifier=None))
    base = {"settings": {"improve_rounds": 2, "max_iters": 9, "budget_tokens": 10 ** 9, "parallel": 1,
                         "budget_seconds": 1e9}, "tokens_used": 0, "elapsed_s": 0.0}
    slow = {"round": 1, "slot": 0, "verified": True, "stage": "verify", "race": {"latency_us": 50.0, "wins": False}}
    assert n.decide(dict(base, round=1, attempts=[slow])) == "retry"
    assert n.decide(dict(base, round=3, attempts=[slow])) == "accept"
    win = dict(slow, round=2, race={"latency_us": 10.0, "wins": True})
    assert n.decide(dict(base, round=2, attempts=[slow, win])) == "accept"
    unraced = dict(slow, race=None)
    assert n.decide(dict(base, round=1, attempts=[unraced])) == "accept"   # nothing to race: as before
    assert n.decide(dict(base, round=1, attempts=[dict(slow, verified=False)])) == "retry"


def _slot(body) -> int:
    text = "\n".join(m["content"] for m in body["messages"])
    return 0 if "Yours: " + nodes.STRATEGIES[0] in text else 1


@pytest.mark.slow
def test_a_race_picks_the_faster_verified_candidate_and_the_prompts_say_what_to_beat(monkeypatch, capsys, tmp_path):
    def script(body, n):
        second_round = len(body["messages"]) > 2
        return python_reply(SOFTMAX if second_round and _slot(body) == 0 else SLOW_SOFTMAX)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(script) as srv:
        monkeypatch.setattr(sys, "argv", [
            "kernelagent", "generate", "softmax", "--sku", "h100", "--base-url", srv.base_url, "--model", "fake",
            "--parallel", "2", "--max-iters", "3", "--improve", "1", "--examples", "2", "--seed", "3",
            "--db", str(tmp_path / "agent.db"), "--out", str(tmp_path / "out"), "--json"])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        requests = srv.chat_requests()
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err[-3000:]
    res = json.loads(out)
    assert res["status"] == "accepted" and res["rounds"] == 2, res["stop_reason"]
    # Round 1: both slow (verified, not a win) → one improvement round; the copy of the
    # library's kernel (predicted as fast as it) beats the slow ones and is accepted.
    assert Path(res["kernel"]).read_text().strip() == SOFTMAX.strip()
    races = [a["race"] for a in res["attempts"]]
    assert all(r and r["measured"] is False and r["latency_us"] > 0 for r in races), races
    slow = [r["latency_us"] for a, r in zip(res["attempts"], races) if a["round"] == 1]
    assert res["best"]["race"]["latency_us"] < min(slow) / 1.5
    assert res["best"]["race"]["speedup_vs_best"] == pytest.approx(1.0, rel=0.01)

    prompts = ["\n".join(m["content"] for m in r["messages"]) for r in requests]
    assert len(prompts) == 4
    for p in prompts:
        assert "Current best: kernel.py (default config)" in p and "not measured" in p
    first = [p for r, p in zip(requests, prompts) if len(r["messages"]) == 2]
    assert len(first) == 2 and len({_slot(r) for r in requests if len(r["messages"]) == 2}) == 2
    second = [(r, p) for r, p in zip(requests, prompts) if len(r["messages"]) > 2]
    for r, p in second:
        assert "verified, but it is not faster than the current best" in p
        assert "race: predicted" in p and "× as fast as the current best (not faster by enough)" in p
        assert "Best attempt so far (round 1" in p
    assert "Keep to your approach" in second[0][1]
    report = json.loads(Path(res["outputs"]["report"]).read_text())
    assert report["race"]["to_beat"]["latency_us"] > 0 and report["race"]["backend"] == "model"
