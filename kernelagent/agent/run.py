"""Run the agent for one target: a new run, a replay of a recording, or the resumption of a run.

Every run is checkpointed (LangGraph's SQLite saver; thread id = run id) in
``~/.cache/kernelagent/agent.db`` unless ``db`` / ``KERNELAGENT_AGENT_DB`` says otherwise, so a
run that was interrupted (Ctrl-C, a dead endpoint, a crash) continues with ``resume=RUN_ID``
from the last completed step. Every LLM exchange is recorded to the output folder's
``exchanges.jsonl``; ``replay=FILE`` reruns that recording with no network.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput, EnvironmentProblem
from ..prompts import PROMPT_VERSION
from .context import resolve_target, sku_facts
from .llm import DEFAULT_MODEL, ChatModel, OpenAIChat
from .outputs import attempt_summary, sorted_attempts, usage
from .record import RecordingChat, ReplayChat, read_header

# Settings that must match for a replay to reproduce its recording.
REPLAYED_SETTINGS = ("model", "parallel", "max_iters", "budget_tokens", "budget_seconds", "max_reply_tokens",
                     "temperature", "seed", "examples", "verify_timeout", "race", "improve_rounds")


def default_db() -> Path:
    env = os.environ.get("KERNELAGENT_AGENT_DB")
    return Path(env) if env else Path.home() / ".cache" / "kernelagent" / "agent.db"


@dataclass
class GenerateOptions:
    target: str | None = None
    sku: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None          # default: OPENAI_API_KEY; never stored in state or recordings
    parallel: int = 2
    max_iters: int = 4
    budget_tokens: int = 200_000
    budget_seconds: float = 3600.0
    max_reply_tokens: int = 8192
    temperature: float = 0.7
    seed: int | None = None
    examples: int | None = None         # property-based examples per verification (harness default)
    verify_timeout: float = 120.0
    request_timeout: float = 300.0
    retries: int = 4
    out: Path | None = None
    replay: Path | None = None
    resume: str | None = None
    db: Path | None = None
    price_prompt_per_1k: float = 0.0
    price_completion_per_1k: float = 0.0
    race: bool = True                   # time verified candidates (an op with --sku; race.py)
    improve_rounds: int = 0             # rounds after the first verified one, to beat the race's target


@dataclass
class RunResult:
    run_id: str
    status: str                         # "accepted" | "exhausted"
    stop_reason: str
    target: str
    kernel: str | None
    outputs: dict[str, str]
    best: dict[str, Any] | None
    attempts: list[dict[str, Any]]
    usage: dict[str, Any]
    recording: str | None
    rounds: int
    resumed: bool = False
    db: str = ""
    verdict: dict[str, Any] | None = field(default=None)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "accepted" else 1

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "verified": self.status == "accepted",
                "stop_reason": self.stop_reason, "target": self.target, "kernel": self.kernel,
                "verdict": self.verdict, "outputs": self.outputs, "best": self.best, "attempts": self.attempts,
                "rounds": self.rounds, "usage": self.usage, "recording": self.recording,
                "resumed": self.resumed, "db": self.db}


_PRINT_LOCK = threading.Lock()


def _stderr(msg: str) -> None:
    # One write per line under a lock: parallel candidates report from their own threads, and
    # print()'s separate writes of the text and the newline interleaved their lines.
    with _PRINT_LOCK:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _validate(opts: GenerateOptions) -> None:
    for name, low in (("parallel", 1), ("max_iters", 1), ("budget_tokens", 1), ("max_reply_tokens", 64),
                      ("improve_rounds", 0)):
        if int(getattr(opts, name)) < low:
            raise BadInput(f"--{name.replace('_', '-')} must be at least {low}")
    if opts.budget_seconds <= 0:
        raise BadInput("--budget-seconds must be positive")
    if opts.resume and opts.replay:
        raise BadInput("--resume and --replay do not combine: a resumed run continues with its own endpoint")


def _open_checkpointer(db: Path):
    from langgraph.checkpoint.sqlite import SqliteSaver

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db), check_same_thread=False)
    except (OSError, sqlite3.Error) as e:
        raise EnvironmentProblem(f"cannot open the checkpoint database {db}: {e}") from None
    return conn, SqliteSaver(conn)


def _default_verifier(*args, **kwargs):
    # The submodule, not ``kernelagent.harness.verify``: once the submodule is imported, the
    # package attribute of that name is the module, not the function.
    from ..harness.verify import verify

    return verify(*args, **kwargs)


def generate(opts: GenerateOptions, *, llm: ChatModel | None = None, verifier: Callable[..., Any] | None = None,
             progress: Callable[[str], None] | None = _stderr, racer: Any = "default") -> RunResult:
    """Run (or resume, or replay) the agent; returns the result, raises BadInput/EnvironmentProblem."""
    from .graph import build_graph
    from .nodes import Deps

    _validate(opts)
    progress = progress or (lambda msg: None)
    verifier = verifier or _default_verifier
    db = Path(opts.db) if opts.db else default_db()
    conn, saver = _open_checkpointer(db)
    try:
        if opts.resume:
            run_id, initial, settings = opts.resume, None, _resumable_settings(opts, saver, build_graph, Deps)
            progress(f"resuming run {run_id} (checkpoints: {db}; output folder: {settings['out_dir']})")
            if opts.out:
                progress("note: --out is ignored on resume; the run keeps its output folder")
        else:
            run_id = _new_run_id()
            initial = _initial_state(opts, run_id)
            settings = initial["settings"]
            progress(f"run {run_id}: {initial['target']} → {settings['out_dir']}"
                     + (f" (replaying {settings['replay']})" if settings.get("replay") else ""))
        chat = llm or _make_llm(opts, settings)
        if settings.get("recording") and not isinstance(chat, ReplayChat):
            chat = RecordingChat(chat, Path(settings["recording"]), header=_header(initial or {}, settings))
        if racer == "default":
            from .race import Racer

            racer = Racer(timeout=max(60.0, float(settings.get("verify_timeout", 120.0))))
        graph = build_graph(Deps(llm=chat, verifier=verifier, progress=progress, racer=racer), checkpointer=saver)
        config = {"configurable": {"thread_id": run_id}, "recursion_limit": 4 * int(settings["max_iters"]) + 20}
        if opts.resume and not graph.get_state(config).next:
            progress(f"run {run_id} had already finished")
        else:
            try:
                graph.invoke(initial, config)
            except EnvironmentProblem as e:
                raise EnvironmentProblem(f"{e} [run {run_id} is checkpointed; continue it with "
                                         f"--resume {run_id}]") from None
            except BadInput:
                raise
            except BaseException:
                progress(f"run {run_id} stopped; continue it with: kernelagent generate --resume {run_id}")
                raise
        values = graph.get_state(config).values
        return _result(values, db, resumed=bool(opts.resume))
    finally:
        conn.close()


def _initial_state(opts: GenerateOptions, run_id: str) -> dict[str, Any]:
    header = read_header(Path(opts.replay)) if opts.replay else None
    target = opts.target or (header or {}).get("target")
    if not target:
        raise BadInput("give a TARGET (a registered op or a problem file), --replay FILE or --resume RUN_ID")
    kind, target, entry = resolve_target(str(target))
    if header and header.get("target") != target:
        raise BadInput(f"the recording {opts.replay} is of {header.get('target')!r}, not {target!r}")
    sku = opts.sku or (header or {}).get("sku")
    if sku:
        sku = sku_facts(sku)["id"]  # an alias becomes the id; unknown SKU: exit 2 before any network
    out_dir = Path(opts.out) if opts.out else Path("kernelagent-out") / run_id
    settings: dict[str, Any] = {
        "model": opts.model or os.environ.get("KERNELAGENT_MODEL") or DEFAULT_MODEL,
        "base_url": opts.base_url or os.environ.get("OPENAI_BASE_URL"),
        "parallel": int(opts.parallel), "max_iters": int(opts.max_iters), "budget_tokens": int(opts.budget_tokens),
        "budget_seconds": float(opts.budget_seconds), "max_reply_tokens": int(opts.max_reply_tokens),
        "temperature": float(opts.temperature),
        "seed": int(opts.seed) if opts.seed is not None else secrets.randbelow(2 ** 31),
        "examples": opts.examples, "verify_timeout": float(opts.verify_timeout),
        "out_dir": str(out_dir.resolve()), "prompt_version": PROMPT_VERSION,
        "price_prompt_per_1k": float(opts.price_prompt_per_1k),
        "price_completion_per_1k": float(opts.price_completion_per_1k),
        "race": bool(opts.race), "improve_rounds": int(opts.improve_rounds),
        "recording": None if opts.replay else str((out_dir / "exchanges.jsonl").resolve()),
        "replay": str(Path(opts.replay).resolve()) if opts.replay else None,
    }
    if header:
        if header.get("prompt_version") != PROMPT_VERSION:
            raise BadInput(f"the recording was made with prompts {header.get('prompt_version')}, this is "
                           f"{PROMPT_VERSION}; its requests would not match")
        settings.update({k: header[k] for k in REPLAYED_SETTINGS if k in header})
    return {"run_id": run_id, "target": target, "target_kind": kind, "entry": entry, "sku": sku,
            "settings": settings, "tokens_used": 0, "prompt_tokens": 0, "completion_tokens": 0, "attempts": []}


def _header(initial: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    head = {k: settings.get(k) for k in REPLAYED_SETTINGS}
    head.update(target=initial.get("target"), target_kind=initial.get("target_kind"), sku=initial.get("sku"),
                prompt_version=settings["prompt_version"], run_id=initial.get("run_id"))
    return head


def _resumable_settings(opts: GenerateOptions, saver, build_graph, Deps) -> dict[str, Any]:
    reader = build_graph(Deps(llm=None, verifier=None), checkpointer=saver)  # type: ignore[arg-type]
    values = reader.get_state({"configurable": {"thread_id": opts.resume}}).values
    if not values or "settings" not in values:
        raise BadInput(f"no run {opts.resume!r} in the checkpoint database (see --db)")
    if opts.target:
        _, target, _ = resolve_target(opts.target)
        if target != values["target"]:
            raise BadInput(f"run {opts.resume} is of {values['target']!r}, not {target!r}")
    settings = dict(values["settings"])
    if opts.model:
        settings["model"] = opts.model
    if opts.base_url:
        settings["base_url"] = opts.base_url
    return settings


def _make_llm(opts: GenerateOptions, settings: dict[str, Any]) -> ChatModel:
    if settings.get("replay"):
        return ReplayChat(Path(settings["replay"]))
    return OpenAIChat(model=settings["model"], base_url=settings.get("base_url"), api_key=opts.api_key,
                      timeout_s=opts.request_timeout, retries=opts.retries)


def _result(values: dict[str, Any], db: Path, *, resumed: bool) -> RunResult:
    best = values.get("best")
    accepted = values.get("status") == "accepted"
    outputs = dict(values.get("outputs") or {})
    return RunResult(
        run_id=values["run_id"], status=values.get("status", "running"), stop_reason=values.get("stop_reason", ""),
        target=values["target"], kernel=outputs.get("kernel") if accepted else None, outputs=outputs,
        best=attempt_summary(best) if best else None,
        attempts=[attempt_summary(a) for a in sorted_attempts(values)], usage=usage(values),
        recording=values["settings"].get("recording") or values["settings"].get("replay"),
        rounds=int(values.get("round", 0)), resumed=resumed, db=str(db),
        verdict=best.get("verdict") if best else None)
