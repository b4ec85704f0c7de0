"""The agent's state: small typed dicts of plain JSON-able values (the SQLite checkpoint holds them).

``AgentState`` is the run; ``CandidateState`` is what one parallel worker gets through
``Send`` and carries through generate → static checks → verify → analyse. Budgets (rounds,
tokens, wall-clock seconds) are part of the state so that the routing that enforces them is
visible in the graph and survives a resume.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Optional, TypedDict


class Settings(TypedDict, total=False):
    model: str
    base_url: Optional[str]
    parallel: int                 # candidates per round (fan-out width)
    max_iters: int                # rounds
    budget_tokens: int            # prompt + completion tokens, all calls together
    budget_seconds: float         # wall-clock seconds spent in rounds (downtime between resumes excluded)
    max_reply_tokens: int
    temperature: float
    seed: int                     # verification seed and base of per-candidate sampling seeds
    examples: Optional[int]       # property-based examples per verification
    verify_timeout: float
    out_dir: str
    recording: Optional[str]      # JSONL of this run's exchanges (None when replaying)
    replay: Optional[str]         # the recording a replayed run reads
    prompt_version: str
    race: bool                    # time verified candidates (op target with a SKU; see race.py)
    improve_rounds: int           # rounds after the first verified one spent trying to beat the race's target
    price_prompt_per_1k: float
    price_completion_per_1k: float


class AgentState(TypedDict, total=False):
    run_id: str
    target: str                   # registered op name, or absolute path of a problem file
    target_kind: str              # "op" | "problem"
    entry: str                    # entry function name (op) or "ModelNew" (problem)
    sku: Optional[str]
    settings: Settings
    context: dict[str, Any]       # what the prompts show: reference, SKU facts, example kernels
    round: int
    elapsed_s: float
    tokens_used: Annotated[int, operator.add]
    prompt_tokens: Annotated[int, operator.add]
    completion_tokens: Annotated[int, operator.add]
    attempts: Annotated[list[dict[str, Any]], operator.add]
    feedback: dict[str, dict[str, Any]]   # slot (as str) -> what that slot's next prompt reflects on
    status: str                   # "running" | "accepted" | "exhausted"
    stop_reason: str
    best: Optional[dict[str, Any]]
    outputs: dict[str, str]       # written files: kernel, verdict, tuning space, report


class CandidateState(TypedDict, total=False):
    # input (from the fan-out)
    run_id: str
    target: str
    target_kind: str
    entry: str
    settings: Settings
    context: dict[str, Any]
    round: int
    slot: int
    previous: Optional[dict[str, Any]]    # this slot's last attempt and its feedback
    others: list[str]                     # one line per other candidate of the last round
    history: list[dict[str, Any]]         # earlier failures, one short line each
    best: Optional[dict[str, Any]]        # the best attempt so far (nodes.best_summary)
    strategy: str                         # this slot's approach (nodes.STRATEGIES), "" for one slot
    token_allowance: int                  # tokens this candidate may spend (prompt + reply)
    seconds_left: float
    started_at: float
    # work in progress
    messages: list[dict[str, str]]
    reply: dict[str, Any]
    source: Optional[str]
    tuning_space: Optional[dict[str, list]]
    notes: list[str]
    problem: Optional[dict[str, str]]     # {"stage", "reason", "message"} when rejected before verify
    verdict: Optional[dict[str, Any]]
    race: Optional[dict[str, Any]]        # a verified candidate's latency vs the target (race.py)
    # output (merged into AgentState through its reducers)
    attempts: Annotated[list[dict[str, Any]], operator.add]
    tokens_used: Annotated[int, operator.add]
    prompt_tokens: Annotated[int, operator.add]
    completion_tokens: Annotated[int, operator.add]


class CandidateOutput(TypedDict, total=False):
    attempts: Annotated[list[dict[str, Any]], operator.add]
    tokens_used: Annotated[int, operator.add]
    prompt_tokens: Annotated[int, operator.add]
    completion_tokens: Annotated[int, operator.add]


def estimate_tokens(text: str) -> int:
    """A rough count (4 characters per token) used only to plan budgets before a call."""
    return max(1, len(text) // 4)
