"""A scripted OpenAI-compatible chat-completions server on loopback, for the agent's tests.

It speaks the real protocol (``POST /v1/chat/completions`` → JSON with ``choices`` and
``usage``) over real HTTP, so the ``openai`` client, its error mapping and our retries are
exercised end to end. A script is a list of actions, served in order (the last one repeats);
or a function ``(request_json, n) -> action`` for replies that depend on the request.
Every request the server received is kept in ``server.requests`` for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union


@dataclass
class Reply:
    content: str | None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None      # None: count len(prompt)//4 like a tokenizer would roughly
    completion_tokens: int | None = None
    usage: bool = True


@dataclass
class Status:
    code: int
    body: dict[str, Any] = field(default_factory=lambda: {"error": {"message": "scripted error", "type": "server_error"}})
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Sleep:
    seconds: float
    then: "Action"


Action = Union[Reply, Status, Sleep]


def python_reply(source: str, tuning: dict | None = None, prose: str = "Here is the kernel.") -> Reply:
    text = f"{prose}\n\n```python\n{source.strip()}\n```\n"
    if tuning is not None:
        text += f"\n```json\n{json.dumps(tuning)}\n```\n"
    return Reply(text)


class FakeOpenAI:
    def __init__(self, script: list[Action] | Callable[[dict, int], Action], api_key: str | None = None) -> None:
        self.script = script
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if "messages" in r]

    def _next_action(self, body: dict) -> Action:
        with self._lock:
            n = len(self.requests)
            self.requests.append(body)
        if callable(self.script):
            return self.script(body, n)
        return self.script[min(n, len(self.script) - 1)]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(raw or b"{}")
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    with fake._lock:
                        fake.requests.append(body)
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                    return
                action = fake._next_action(body)
                while isinstance(action, Sleep):
                    time.sleep(action.seconds)
                    action = action.then
                if isinstance(action, Status):
                    self._send(action.code, action.body, action.headers)
                    return
                prompt_chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
                content = action.content
                payload: dict[str, Any] = {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": action.finish_reason,
                                 "message": {"role": "assistant", "content": content}}],
                }
                if action.usage:
                    pt = action.prompt_tokens if action.prompt_tokens is not None else max(1, prompt_chars // 4)
                    ct = action.completion_tokens if action.completion_tokens is not None else max(1, len(content or "") // 4)
                    payload["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
                self._send(200, payload)

        return Handler


# ---------------------------------------------------------------------------------------------
# Scripted candidates and a scripted stand-in for the harness, for graph tests that should not
# pay for real verification (the e2e tests use the real harness).

def softmax_sources() -> dict[str, str]:
    """Real Triton softmax files: the library's kernel and broken variants of it."""
    from kernelagent.kernels import kernel_path

    good = kernel_path("softmax").read_text()

    def edit(old: str, new: str) -> str:
        assert old in good, f"kernels/softmax/kernel.py no longer contains {old!r}; update the test variants"
        return good.replace(old, new, 1)

    return {
        "good": good,
        "syntax": edit("def softmax(x", "def softmax(:x"),
        "wrong": edit("y = num / tl.sum(num, axis=1)[:, None]", "y = num / (tl.sum(num, axis=1)[:, None] * 1.01)  # WRONG"),
        "try_fallback": edit("    if x.dim() == 0:", "    try:\n        pass\n    except Exception:\n"
                             "        return torch.softmax(x, dim=-1)\n    if x.dim() == 0:"),
        "torch_compute": edit("    if x.dim() == 0:", "    return torch.softmax(x, dim=-1)  # TORCH\n    if x.dim() == 0:"),
    }


class ScriptedVerifier:
    """Same signature as kernelagent.harness.verify; decides by markers in the candidate's text."""

    def __init__(self, rules=None, crash_on_call: int | None = None):
        from kernelagent.harness import Verdict

        self.Verdict = Verdict
        self.rules = rules if rules is not None else {
            "# WRONG": dict(verified=False, reason="mismatch",
                            detail="1 of 1 outputs over budget; worst at index (0, 0): got 0.990099, expected 1 "
                                   "(1.04e+04× the budget)\nminimal counterexample: batch=0 rows=1 cols=1 dtype=fp32",
                            counterexample={"params": {"batch": 0, "rows": 1, "cols": 1}, "dtype": "fp32"},
                            worst_error_ratio=10381.9),
            "# TORCH": dict(verified=False, reason="pytorch-fallback",
                            detail="the candidate called aten::_softmax on the inputs"),
        }
        self.crash_on_call = crash_on_call
        self.calls: list[dict] = []

    def __call__(self, target, candidate_source, **kwargs):
        self.calls.append({"target": target, "source": candidate_source, **kwargs})
        if self.crash_on_call is not None and len(self.calls) == self.crash_on_call:
            raise SimulatedCrash("the machine went down mid-verification")
        for marker, verdict in self.rules.items():
            if marker in candidate_source:
                return self.Verdict(**verdict, target=str(target))
        ratio = 0.1 if "# TIGHT" in candidate_source else 0.5
        return self.Verdict(verified=True, detail=f"8 examples passed; worst error {ratio}× the budget", trials=8,
                            worst_error_ratio=ratio, target=str(target))


class SimulatedCrash(RuntimeError):
    pass
