"""Record and replay LLM exchanges as JSONL, keyed by a hash of the request.

The first line of a recording is a header (``{"kind": "header", "run": {...}}``) with the
settings that make a rerun deterministic (target, model, seed, fan-out width, budgets). Every
later line is one exchange: ``{"kind": "exchange", "key": sha256(model + messages + params),
"request": ..., "reply": ...}``. Replaying serves the recorded reply for each request's key
(in recorded order when the same request was made more than once), with no network. A
request the recording lacks means the run diverged; that is an error, not a guess.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .llm import ChatModel, ChatReply


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _params(max_tokens: int, temperature: float, seed: int | None) -> dict[str, Any]:
    return {"max_tokens": int(max_tokens), "temperature": float(temperature), "seed": seed}


class RecordingChat:
    """Wraps a ChatModel and appends every exchange to a JSONL file (thread-safe)."""

    def __init__(self, inner: ChatModel, path: Path, header: dict[str, Any] | None = None) -> None:
        self.inner = inner
        self.model = inner.model
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if header is not None and not (self.path.exists() and self.path.stat().st_size > 0):
            self._append({"kind": "header", "run": header, "at": time.time()})

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, ensure_ascii=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def complete(self, messages, *, max_tokens, temperature, seed) -> ChatReply:
        reply = self.inner.complete(messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
        params = _params(max_tokens, temperature, seed)
        self._append({"kind": "exchange", "key": request_key(self.model, messages, params),
                      "request": {"model": self.model, "messages": messages, "params": params},
                      "reply": reply.to_json(), "at": time.time()})
        return reply


def read_header(path: Path) -> dict[str, Any]:
    """The run settings a recording starts with (BadInput if the file is not a recording)."""
    for record in _records(path):
        if record.get("kind") == "header" and isinstance(record.get("run"), dict):
            return record["run"]
        break
    raise BadInput(f"{path}: not a kernelagent recording (its first line is not a header)")


def _records(path: Path):
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recording not found: {path}")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BadInput(f"recording {path} is not UTF-8 text (byte {e.start}: {e.reason}); a recording is "
                       "one JSON object per line") from None
    except OSError as e:
        raise BadInput(f"cannot read recording {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{n}: not JSON ({e.msg}); a recording is one JSON object per line") from None
        if not isinstance(record, dict):
            raise BadInput(f"{path}:{n}: expected a JSON object")
        yield record


class ReplayChat:
    """Serves recorded replies by request key; no network."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        header = read_header(self.path)
        self.model = str(header.get("model", ""))
        self._replies: dict[str, deque[ChatReply]] = defaultdict(deque)
        for record in _records(self.path):
            if record.get("kind") == "exchange":
                self._replies[str(record.get("key"))].append(ChatReply.from_json(record.get("reply") or {}))
        self._lock = threading.Lock()
        self.served = 0

    def complete(self, messages, *, max_tokens, temperature, seed) -> ChatReply:
        key = request_key(self.model, messages, _params(max_tokens, temperature, seed))
        with self._lock:
            queue = self._replies.get(key)
            if not queue:
                raise BadInput(f"replay {self.path}: no recorded reply for request {key[:16]} "
                               f"(after {self.served} served); the run diverged from the recording "
                               f"(different prompts, code version or verification result)")
            self.served += 1
            return queue.popleft()
