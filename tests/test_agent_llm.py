"""The OpenAI-compatible client: explicit retries with backoff, clear errors, usage counting."""

import socket

import pytest
from fake_openai import FakeOpenAI, Reply, Sleep, Status

from kernelagent.agent.llm import OpenAIChat, backoff_delays
from kernelagent.errors import EnvironmentProblem

MSGS = [{"role": "system", "content": "You write kernels."}, {"role": "user", "content": "softmax please"}]


def client(url, sleeps, **kw):
    kw.setdefault("retries", 3)
    return OpenAIChat(model="fake-coder", base_url=url, api_key="sk-test", backoff_base_s=0.5,
                      sleep=sleeps.append, **kw)


def ask(chat):
    return chat.complete(MSGS, max_tokens=512, temperature=0.2, seed=7)


def test_backoff_is_exponential_and_capped():
    assert backoff_delays(5, 1.0, 6.0) == [1.0, 2.0, 4.0, 6.0, 6.0]
    assert backoff_delays(0, 1.0, 6.0) == []


def test_server_errors_are_retried_with_backoff():
    sleeps = []
    with FakeOpenAI([Status(500), Status(503), Reply("ok", prompt_tokens=11, completion_tokens=3)]) as srv:
        reply = ask(client(srv.base_url, sleeps))
    assert reply.text == "ok" and (reply.prompt_tokens, reply.completion_tokens) == (11, 3) and reply.usage_reported
    assert sleeps == [0.5, 1.0] and len(srv.chat_requests()) == 3
    req = srv.chat_requests()[0]
    assert req["model"] == "fake-coder" and req["max_tokens"] == 512 and req["seed"] == 7
    assert req["messages"] == MSGS
    assert srv.headers[0]["authorization"] == "Bearer sk-test"


def test_rate_limit_honours_retry_after():
    sleeps = []
    with FakeOpenAI([Status(429, headers={"Retry-After": "2"}), Reply("ok")]) as srv:
        assert ask(client(srv.base_url, sleeps)).text == "ok"
    assert sleeps == [2.0]


def test_timeout_is_retried():
    sleeps = []
    with FakeOpenAI([Sleep(3.0, Reply("late")), Reply("on time")]) as srv:
        reply = ask(client(srv.base_url, sleeps, timeout_s=0.5))
    assert reply.text == "on time" and sleeps == [0.5] and len(srv.chat_requests()) == 2


def test_persistent_failure_is_an_environment_problem():
    sleeps = []
    with FakeOpenAI([Status(502)]) as srv:
        with pytest.raises(EnvironmentProblem, match="failed 3 times .*InternalServerError HTTP 502"):
            ask(client(srv.base_url, sleeps, retries=2))
    assert sleeps == [0.5, 1.0] and len(srv.chat_requests()) == 3


def test_bad_key_fails_at_once():
    sleeps = []
    with FakeOpenAI([Reply("never")], api_key="sk-right") as srv:
        with pytest.raises(EnvironmentProblem, match="rejected the API key \\(HTTP 401\\)"):
            ask(client(srv.base_url, sleeps))
    assert sleeps == [] and len(srv.requests) == 1


def test_wrong_url_or_model_fails_at_once():
    sleeps = []
    with FakeOpenAI([Status(404, body={"error": {"message": "model 'x' not found"}})]) as srv:
        with pytest.raises(EnvironmentProblem, match="404 .*wrong --base-url"):
            ask(client(srv.base_url, sleeps))
    with FakeOpenAI([Status(400, body={"error": {"message": "context length exceeded"}})]) as srv:
        with pytest.raises(EnvironmentProblem, match="HTTP 400.*context length exceeded"):
            ask(client(srv.base_url, sleeps))
    assert sleeps == []


def test_dead_endpoint_is_retried_then_reported():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    sleeps = []
    with pytest.raises(EnvironmentProblem, match=f"127.0.0.1:{port}/v1 failed 2 times .*APIConnectionError"):
        ask(client(f"http://127.0.0.1:{port}/v1", sleeps, retries=1))
    assert sleeps == [0.5]


def test_missing_usage_is_estimated_and_flagged():
    with FakeOpenAI([Reply("x" * 400, usage=False)]) as srv:
        reply = ask(client(srv.base_url, []))
    assert not reply.usage_reported and reply.completion_tokens == 100 and reply.prompt_tokens > 0


def test_no_key_for_openai_itself_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(EnvironmentProblem, match="OPENAI_API_KEY"):
        OpenAIChat(model="gpt-4.1")
    local = OpenAIChat(model="qwen", base_url="http://127.0.0.1:11434/v1")  # local servers need no key
    assert local.base_url.endswith("/v1")


def test_a_server_that_does_not_speak_the_protocol_is_an_environment_problem():
    with FakeOpenAI([Status(200, body={"hello": "this is not a chat completion"})]) as srv:
        with pytest.raises(EnvironmentProblem, match="did not answer with a chat completion"):
            ask(client(srv.base_url, []))
    with FakeOpenAI([Status(200, body={"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0}})]) as srv:
        reply = ask(client(srv.base_url, []))   # no choice at all (e.g. filtered): an empty reply, not a crash
    assert reply.text == "" and reply.finish_reason == "empty" and reply.prompt_tokens == 5
