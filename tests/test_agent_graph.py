"""The agent loop over real HTTP (a scripted OpenAI-compatible server) with a scripted verifier.

Each test checks that a failure's concrete feedback reaches the next prompt the server sees.
The real harness runs in test_agent_e2e.py.
"""

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Reply, ScriptedVerifier, SimulatedCrash, Sleep, Status, python_reply, softmax_sources

from kernelagent.agent import GenerateOptions, generate
from kernelagent.errors import BadInput

SRC = softmax_sources()
TUNING = {"BLOCK_N": [256, 1024, 4096], "num_warps": [4, 8]}


def run(tmp_path, server, verifier=None, **kw):
    opts = dict(target="softmax", base_url=server.base_url if server else None, model="fake-coder", api_key="sk-test",
                parallel=1, max_iters=4, out=tmp_path / "out", db=tmp_path / "agent.db", seed=1234, retries=0)
    opts.update(kw)
    return generate(GenerateOptions(**opts), verifier=verifier or ScriptedVerifier(), progress=None)


def last_user(req):
    return req["messages"][-1]["content"]


def test_syntax_error_then_fix(tmp_path):
    with FakeOpenAI([python_reply(SRC["syntax"]), python_reply(SRC["good"], TUNING)]) as srv:
        res = run(tmp_path, srv)
    assert res.status == "accepted" and res.exit_code == 0 and res.rounds == 2
    reqs = srv.chat_requests()
    assert len(reqs) == 2 and len(reqs[0]["messages"]) == 2
    fb = last_user(reqs[1])
    assert "SyntaxError" in fb and "def softmax(:x" in fb and "import-error" in fb
    assert reqs[1]["messages"][2]["role"] == "assistant" and "def softmax(:x" in reqs[1]["messages"][2]["content"]
    assert Path(res.kernel).read_text() == SRC["good"].strip() + "\n"
    assert json.loads(Path(res.outputs["verdict"]).read_text())["verified"] is True
    assert json.loads(Path(res.outputs["tuning_space"]).read_text()) == TUNING
    report = json.loads(Path(res.outputs["report"]).read_text())
    assert [a["reason"] for a in report["attempts"]] == ["import-error", None]
    assert report["usage"]["total_tokens"] == res.usage["total_tokens"] > 0


def test_sku_reaches_the_prompt_and_bounds_the_tuning_space(tmp_path):
    with FakeOpenAI([python_reply(SRC["good"], {"BLOCK_N": [1024], "num_warps": [4, 16, 64]})]) as srv:
        res = run(tmp_path, srv, sku="h100")
    assert res.status == "accepted"
    assert "Target GPU: NVIDIA H100 SXM5" in srv.chat_requests()[0]["messages"][1]["content"]
    assert json.loads(Path(res.outputs["tuning_space"]).read_text()) == {"BLOCK_N": [1024], "num_warps": [4, 16]}
    assert any("num_warps [64] dropped" in n for n in res.best["notes"])
    assert json.loads(Path(res.outputs["report"]).read_text())["sku"] == "h100-sxm"


def test_wrong_result_then_fix_uses_counterexample(tmp_path):
    verifier = ScriptedVerifier()
    with FakeOpenAI([python_reply(SRC["wrong"]), python_reply(SRC["good"])]) as srv:
        res = run(tmp_path, srv, verifier)
    assert res.status == "accepted" and res.rounds == 2
    fb = last_user(srv.chat_requests()[1])
    assert "(mismatch)" in fb and "minimal counterexample: batch=0 rows=1 cols=1" in fb
    assert '"cols": 1' in fb and "Worst error: 1.038e+04× the allowed error" in fb
    assert [c["seed"] for c in verifier.calls] == [1234, 1234]
    assert verifier.calls[0]["target"] == "softmax"


def test_transient_endpoint_errors_are_retried_inside_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELAGENT_LLM_BACKOFF_S", "0.01")
    script = [Status(500), Sleep(2.0, Reply("too late")), python_reply(SRC["wrong"]),
              Status(429, headers={"Retry-After": "0"}), python_reply(SRC["good"])]
    with FakeOpenAI(script) as srv:
        res = run(tmp_path, srv, retries=3, request_timeout=0.5)
    assert res.status == "accepted" and res.rounds == 2
    assert [a["reason"] for a in res.attempts] == ["mismatch", None]
    reqs = srv.chat_requests()
    assert len(reqs) == 5 and reqs[0] == reqs[1] == reqs[2]   # the same request, retried
    assert "(mismatch)" in last_user(reqs[3])


def test_pytorch_fallbacks_rejected_and_retried(tmp_path):
    replies = [python_reply(SRC["try_fallback"]), python_reply(SRC["torch_compute"]), python_reply(SRC["good"])]
    verifier = ScriptedVerifier()
    with FakeOpenAI(replies) as srv:
        res = run(tmp_path, srv, verifier)
    assert res.status == "accepted" and res.rounds == 3
    reqs = srv.chat_requests()
    assert "try/except is not allowed" in last_user(reqs[1]) and "(pytorch-fallback)" in last_user(reqs[1])
    # torch compute is refused by the static allowlist before any worker starts, and says why.
    assert "torch.softmax is not in the allowlist" in last_user(reqs[2]) and "(pytorch-fallback)" in last_user(reqs[2])
    assert len(verifier.calls) == 1  # neither the try/except file nor the torch one reached the harness


def test_garbage_replies_become_feedback(tmp_path):
    two_files = python_reply(SRC["good"]).content + "\nOr this one:\n" + python_reply(SRC["good"]).content
    replies = [
        Reply("The best approach is to tile each row and reduce with tl.max, then tl.sum."),
        Reply(two_files),
        Reply("```python\n" + SRC["good"][:800], finish_reason="length"),
        Reply(None, usage=False),
        python_reply(SRC["good"]),
    ]
    with FakeOpenAI(replies) as srv:
        res = run(tmp_path, srv, max_iters=5)
    assert res.status == "accepted" and res.rounds == 5
    assert [a["reason"] for a in res.attempts] == ["no-code", "several-blocks", "truncated", "no-code", None]
    reqs = srv.chat_requests()
    assert "no ```python code block (prose only)" in last_user(reqs[1])
    assert "2 python code blocks" in last_user(reqs[2])
    assert "cut off inside the code block" in last_user(reqs[3])
    assert "the reply was empty" in last_user(reqs[4])
    assert [a["tokens"]["estimated"] for a in res.attempts] == [False, False, False, True, False]
    assert res.usage["estimated"] is True   # one server reply had no usage block
    # the earlier failures are listed in the main prompt too
    assert "round 1, candidate 0: no-code" in reqs[4]["messages"][1]["content"]


def test_hostile_code_is_rejected_before_it_runs(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    evil = "import os\nimport subprocess\n" + SRC["good"] + f"\nos.remove({str(canary)!r})\n" \
        "subprocess.run(['rm', '-rf', '/'])\n"
    verifier = ScriptedVerifier()
    with FakeOpenAI([python_reply(evil), python_reply(SRC["good"])]) as srv:
        res = run(tmp_path, srv, verifier)
    assert res.status == "accepted" and [a["reason"] for a in res.attempts] == ["forbidden", None]
    assert canary.read_text() == "intact"
    assert len(verifier.calls) == 1 and "import os" not in verifier.calls[0]["source"]
    fb = last_user(srv.chat_requests()[1])
    assert "module 'os' is not allowed" in fb and "module 'subprocess' is not allowed" in fb


def test_parallel_candidates_best_verified_wins(tmp_path):
    seed = 1234
    by_slot = {0: python_reply(SRC["wrong"]), 1: python_reply(SRC["good"]),
               2: python_reply(SRC["good"] + "\n# TIGHT\n")}

    def script(body, n):
        return by_slot[(body["seed"] - seed - 7919 * 1) % (2 ** 31)]

    verifier = ScriptedVerifier()
    with FakeOpenAI(script) as srv:
        res = run(tmp_path, srv, verifier, parallel=3, seed=seed)
    assert res.status == "accepted" and res.rounds == 1
    assert sorted(r["seed"] for r in srv.chat_requests()) == [seed + 7919, seed + 7920, seed + 7921]
    assert len(verifier.calls) == 3 and len(res.attempts) == 3
    assert res.best["candidate"] == 2 and res.best["worst_error_ratio"] == 0.1
    assert "# TIGHT" in Path(res.kernel).read_text()


def test_round_limit_ends_the_run_with_the_reasons(tmp_path):
    with FakeOpenAI([Reply("I cannot write that kernel.")]) as srv:
        res = run(tmp_path, srv, max_iters=2)
    assert res.status == "exhausted" and res.exit_code == 1
    assert res.stop_reason.startswith("round limit reached (2 rounds)")
    assert [a["reason"] for a in res.attempts] == ["no-code", "no-code"] and res.kernel is None
    assert res.usage["estimated"] is False
    assert len(srv.chat_requests()) == 2
    report = json.loads(Path(res.outputs["report"]).read_text())
    assert report["status"] == "exhausted" and len(report["attempts"]) == 2


def test_token_budget_is_enforced(tmp_path):
    wrong = python_reply(SRC["wrong"])
    wrong.prompt_tokens, wrong.completion_tokens = 1500, 1000   # as the server reports them
    with FakeOpenAI([wrong]) as srv:
        res = run(tmp_path, srv, max_iters=5, budget_tokens=5000, price_prompt_per_1k=0.5,
                  price_completion_per_1k=1.0)
    reqs = srv.chat_requests()
    # round 1 may spend what is left after its prompt; round 2's longer prompt (it carries the
    # failed code and the feedback) no longer fits in the 2500 tokens left
    assert reqs[0]["max_tokens"] == 5000 - sum(max(1, len(m["content"]) // 4) for m in reqs[0]["messages"])
    assert len(reqs) == 1 and res.status == "exhausted" and res.rounds == 2
    assert [a["reason"] for a in res.attempts] == ["mismatch", "token-budget"]
    assert res.stop_reason == "token budget spent (2500 of 5000 tokens; the next prompt would not fit)"
    u = res.usage
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (1500, 1000, 2500)
    assert u["cost_usd"] == pytest.approx(1.5 * 0.5 + 1.0 * 1.0)


def test_wall_clock_budget_is_enforced(tmp_path):
    with FakeOpenAI([python_reply(SRC["wrong"])]) as srv:
        res = run(tmp_path, srv, max_iters=5, budget_seconds=0.001)
    assert len(srv.chat_requests()) == 1 and res.status == "exhausted"
    assert res.stop_reason.startswith("wall-clock budget spent")


def test_recorded_run_replays_without_a_server(tmp_path):
    two_files = python_reply(SRC["good"]).content + python_reply(SRC["wrong"]).content
    plan = {(1, 0): python_reply(SRC["wrong"]), (1, 1): Reply("thinking..."),
            (2, 0): Reply(two_files), (2, 1): python_reply(SRC["good"], TUNING)}

    def script(body, n):
        for (rnd, slot), reply in plan.items():
            if body["seed"] == 1234 + 7919 * rnd + slot:
                return reply
        raise AssertionError(body["seed"])

    with FakeOpenAI(script) as srv:
        first = run(tmp_path / "a", srv, max_iters=4, parallel=2)
    assert first.status == "accepted" and first.rounds == 2
    recording = Path(first.recording)
    lines = [json.loads(x) for x in recording.read_text().splitlines()]
    assert lines[0]["kind"] == "header" and lines[0]["run"]["seed"] == 1234 and lines[0]["run"]["parallel"] == 2
    assert [x["kind"] for x in lines[1:]] == ["exchange"] * 4 and "sk-test" not in recording.read_text()
    # no server now: the replay must be served entirely from the file (the header restores
    # the seed and fan-out width; the dead URL proves nothing goes out)
    again = generate(GenerateOptions(replay=recording, out=tmp_path / "b", db=tmp_path / "b.db", max_iters=9,
                                     base_url="http://127.0.0.1:9/v1"),
                     verifier=ScriptedVerifier(), progress=None)
    assert again.status == "accepted" and again.rounds == first.rounds == 2
    assert [(a["round"], a["candidate"], a["reason"]) for a in again.attempts] == \
        [(a["round"], a["candidate"], a["reason"]) for a in first.attempts] == \
        [(1, 0, "mismatch"), (1, 1, "no-code"), (2, 0, "several-blocks"), (2, 1, None)]
    assert Path(again.kernel).read_text() == Path(first.kernel).read_text()
    assert again.usage["total_tokens"] == first.usage["total_tokens"]
    with pytest.raises(BadInput, match="is of 'softmax'"):
        generate(GenerateOptions(target=str(Path(__file__).parents[1] / "kernelagent/examples/relu_problem.py"),
                                 replay=recording, db=tmp_path / "c.db", out=tmp_path / "c"), progress=None)


def test_replay_that_diverges_is_an_error(tmp_path):
    with FakeOpenAI([python_reply(SRC["wrong"]), python_reply(SRC["good"])]) as srv:
        first = run(tmp_path / "a", srv)
    # a verifier that now accepts the first candidate changes the run: fewer rounds, still served
    same = generate(GenerateOptions(replay=Path(first.recording), out=tmp_path / "b", db=tmp_path / "b.db"),
                    verifier=ScriptedVerifier(rules={}), progress=None)
    assert same.rounds == 1
    # one that reports a different failure asks for a request the recording never saw
    other = ScriptedVerifier(rules={"# WRONG": dict(verified=False, reason="timeout", detail="ran past 120 s")})
    with pytest.raises(BadInput, match="diverged"):
        generate(GenerateOptions(replay=Path(first.recording), out=tmp_path / "c", db=tmp_path / "c.db"),
                 verifier=other, progress=None)


def test_interrupted_run_resumes_by_id(tmp_path):
    replies = [python_reply(SRC["wrong"]), python_reply(SRC["good"])]
    with FakeOpenAI(replies) as srv:
        crashing = ScriptedVerifier(crash_on_call=2)   # dies verifying round 2's candidate
        with pytest.raises(SimulatedCrash):
            run(tmp_path, srv, crashing)
        assert len(srv.chat_requests()) == 2
        run_id = Path(json.loads(Path(tmp_path / "out" / "exchanges.jsonl").read_text().splitlines()[0])["run"]
                      ["run_id"]).name
        resumed = generate(GenerateOptions(resume=run_id, db=tmp_path / "agent.db", api_key="sk-test", retries=0),
                           verifier=ScriptedVerifier(), progress=None)
        assert resumed.run_id == run_id and resumed.resumed and resumed.status == "accepted"
        assert resumed.rounds == 2 and [a["reason"] for a in resumed.attempts] == ["mismatch", None]
        # nothing was asked again: round 1 is checkpointed, and so is round 2's reply (the
        # candidate subgraph resumes at its verify step)
        assert len(srv.chat_requests()) == 2
        # resuming a finished run just reports it
        done = generate(GenerateOptions(resume=run_id, db=tmp_path / "agent.db", api_key="sk-test"),
                        verifier=ScriptedVerifier(), progress=None)
        assert done.status == "accepted" and len(srv.chat_requests()) == 2
    with pytest.raises(BadInput, match="no run 'nope'"):
        generate(GenerateOptions(resume="nope", db=tmp_path / "agent.db"), progress=None)
