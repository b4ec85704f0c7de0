"""The LLM behind a narrow interface: ``ChatModel.complete(messages, ...) -> ChatReply``.

``OpenAIChat`` talks to any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
Ollama, llama.cpp server) through the ``openai`` client. Retries are explicit rather than the
client's hidden ones (``max_retries=0`` on the client): 429, 5xx, timeouts and refused
connections are retried with exponential backoff (honouring ``Retry-After``); a bad key, a
missing model or a refused request fails at once. What still fails after the retries becomes
an :class:`~kernelagent.errors.EnvironmentProblem` (exit 3) naming the endpoint.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

from ..errors import EnvironmentProblem

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4.1"


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    usage_reported: bool          # False: the server sent no usage; the counts are estimates
    model: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ChatReply":
        return cls(text=str(d.get("text", "")), finish_reason=d.get("finish_reason"),
                   prompt_tokens=int(d.get("prompt_tokens", 0)),
                   completion_tokens=int(d.get("completion_tokens", 0)),
                   usage_reported=bool(d.get("usage_reported", False)), model=str(d.get("model", "")))


class ChatModel(Protocol):
    model: str

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                 seed: int | None) -> ChatReply: ...


def backoff_delays(retries: int, base_s: float, max_s: float) -> list[float]:
    """Delays before retry 1..retries: base, 2·base, 4·base, … capped at max_s."""
    return [min(max_s, base_s * (2 ** i)) for i in range(retries)]


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAIChat:
    """Chat completions over HTTP with explicit, bounded retries."""

    def __init__(self, *, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 300.0, retries: int = 4, backoff_base_s: float | None = None,
                 backoff_max_s: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> None:
        import openai

        self._openai = openai
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url.rstrip("/") == DEFAULT_BASE_URL:
                raise EnvironmentProblem("no API key: set OPENAI_API_KEY (or point --base-url at a "
                                         "local server such as vLLM or Ollama, which need none)")
            key = "EMPTY"   # local servers ignore the key; the client insists on one
        self.retries = max(0, int(retries))
        if backoff_base_s is None:
            backoff_base_s = float(os.environ.get("KERNELAGENT_LLM_BACKOFF_S", "1.0"))
        self.backoff_max_s = backoff_max_s
        self.delays = backoff_delays(self.retries, backoff_base_s, backoff_max_s)
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout_s)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                 seed: int | None) -> ChatReply:
        oa = self._openai
        params = {"model": self.model, "messages": messages, "max_tokens": int(max_tokens),
                  "temperature": float(temperature)}
        if seed is not None:
            params["seed"] = int(seed)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                response = self._client.chat.completions.create(**params)
                return self._reply(response, messages)
            except oa.AuthenticationError as e:
                raise EnvironmentProblem(f"the endpoint {self.base_url} rejected the API key (HTTP 401): "
                                         f"check OPENAI_API_KEY. Server said: {_said(e)}") from None
            except oa.PermissionDeniedError as e:
                raise EnvironmentProblem(f"the endpoint {self.base_url} refused access (HTTP 403): "
                                         f"{_said(e)}") from None
            except oa.NotFoundError as e:
                raise EnvironmentProblem(f"HTTP 404 from {self.base_url}: wrong --base-url (it usually "
                                         f"ends in /v1) or unknown --model {self.model!r}. Server said: "
                                         f"{_said(e)}") from None
            except (oa.RateLimitError, oa.InternalServerError, oa.APIConnectionError) as e:
                # APITimeoutError is an APIConnectionError: timeouts retry too.
                last = e
                if attempt >= self.retries:
                    break
                delay = self.delays[attempt]
                hinted = _retry_after(e)
                if hinted is not None:
                    delay = max(delay, min(hinted, self.backoff_max_s))
                self._sleep(delay)
            except oa.APIStatusError as e:
                raise EnvironmentProblem(f"the endpoint {self.base_url} refused the request "
                                         f"(HTTP {e.status_code}): {_said(e)}") from None
            except oa.APIError as e:  # e.g. a response the client could not read
                raise EnvironmentProblem(f"unreadable response from {self.base_url}: {_describe(e)}") from None
        assert last is not None
        raise EnvironmentProblem(f"the LLM endpoint {self.base_url} failed {self.retries + 1} times "
                                 f"(last: {_describe(last)}); is the server up and the URL right?")

    def _reply(self, response, messages) -> ChatReply:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise EnvironmentProblem(f"the endpoint {self.base_url} did not answer with a chat completion "
                                     f"(no 'choices' in the response); is --base-url an OpenAI-compatible "
                                     f"API (usually ending in /v1)?")
        text, finish = "", "empty"
        if choices:
            message = getattr(choices[0], "message", None)
            text = (getattr(message, "content", None) or "") if message is not None else ""
            finish = getattr(choices[0], "finish_reason", None)
        usage = getattr(response, "usage", None)
        if usage is not None and getattr(usage, "prompt_tokens", None) is not None:
            return ChatReply(text, finish, int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0),
                             True, str(getattr(response, "model", "") or self.model))
        from .state import estimate_tokens

        prompt = sum(estimate_tokens(m.get("content", "")) for m in messages)
        return ChatReply(text, finish, prompt, estimate_tokens(text), False, self.model)


def _said(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    return msg[:300]


def _describe(e: Exception) -> str:
    oa_name = type(e).__name__
    status = getattr(e, "status_code", None)
    return f"{oa_name}" + (f" HTTP {status}" if status else "") + f": {_said(e)}"
