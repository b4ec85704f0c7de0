"""The graph's nodes: plain functions from state to a partial update, and its routing functions.

Main loop: gather_context → plan_round → (fan-out) candidate × K → reflect → decide.
One candidate (a subgraph, see graph.py): generate → static_checks → verify → race → analyse.
Side effects are confined to ``generate`` (one LLM call), ``verify`` (the harness, which runs
the candidate in its sandbox), ``race`` (timing a verified candidate: measured on a GPU,
predicted by the model otherwise, the candidate again only in a sandbox) and
``accept``/``give_up`` (writing the output folder).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from langgraph.types import Send

from ..prompts import render
from . import context as target_context
from .llm import ChatModel
from .outputs import write_accepted, write_report
from .race import describe_result, describe_target
from .replies import extract, static_profile, syntax_feedback
from .state import AgentState, CandidateState, estimate_tokens

MIN_REPLY_TOKENS = 256
MAX_FEEDBACK_CHARS = 4000
MAX_HISTORY = 8
STAGE_RANK = {"static": 3, "reply": 4, "budget": 5}   # verify-stage failures rank 1-2


@dataclass
class Deps:
    """What the nodes need from outside the state (never checkpointed: clients, callbacks)."""

    llm: ChatModel
    verifier: Callable[..., Any]
    progress: Callable[[str], None] = field(default=lambda msg: None)
    racer: Any = None        # race.Racer: times verified candidates (None: no race)


# One approach per parallel slot, so that K candidates explore K directions instead of K
# samples of the same one (slot i takes STRATEGIES[i % len]).
STRATEGIES = (
    "the most direct correct design: one program per row or output tile, fp32 accumulation, masks on every edge",
    "minimal memory traffic: read each input element once (fuse passes, one-pass/online reductions), "
    "vectorised loads along the contiguous dimension, no intermediate tensors",
    "parallelism for this GPU: block sizes and num_warps that give every SM several programs; several rows "
    "per program for narrow rows, split long rows; choose num_warps/num_stages for the target",
    "the target's hardware features: larger tiles that use its shared memory, tensor-core friendly tile shapes "
    "(tl.dot with multiples of 16), software pipelining (num_stages), persistent programs over tiles",
)


def _static_checker():
    from ..harness.static_checks import check_candidate

    return check_candidate


class Nodes:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # ---- main loop -------------------------------------------------------------------------

    def gather_context(self, state: AgentState) -> dict:
        ctx = target_context.gather(state["target_kind"], state["target"], state["entry"], state.get("sku"))
        ctx["race"] = None
        if self.deps.racer is not None and state["target_kind"] == "op" and state.get("sku") \
                and state["settings"].get("race", True):
            try:
                ctx["race"] = self.deps.racer.setup(state["target"], state["sku"])
            except Exception as e:  # noqa: BLE001 - no race is a weaker run, not a failed one
                ctx["race"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            if ctx["race"].get("error"):
                self.deps.progress(f"no performance race: {ctx['race']['error']}")
            else:
                self.deps.progress(describe_target(ctx["race"]).splitlines()[1] if ctx["race"].get("to_beat")
                                   else "racing verified candidates")
        ctx["race_target"] = describe_target(ctx["race"])
        ctx["verify_timeout"] = float(state["settings"].get("verify_timeout") or 0.0)
        return {"context": ctx, "round": 0, "elapsed_s": 0.0, "status": "running", "feedback": {},
                "stop_reason": "", "best": None, "outputs": {}}

    def plan_round(self, state: AgentState) -> dict:
        self.deps.progress(f"round {state['round'] + 1}: {state['settings']['parallel']} candidate(s)")
        return {"round": state["round"] + 1}

    def fan_out(self, state: AgentState) -> list[Send]:
        s = state["settings"]
        k = int(s["parallel"])
        allowance = max(0, int(s["budget_tokens"]) - int(state.get("tokens_used", 0))) // k
        seconds_left = max(0.0, float(s["budget_seconds"]) - float(state.get("elapsed_s", 0.0)))
        # sorted: parallel candidates finish in any order, and replayed prompts must not depend on it
        failures = sorted((a for a in state.get("attempts", []) if not a.get("verified")),
                          key=lambda a: (a["round"], a["slot"]))
        history = [{"round": a["round"], "slot": a["slot"], "reason": a["reason"], "summary": a["message"]}
                   for a in failures[-MAX_HISTORY:]]
        attempts = state.get("attempts", [])
        best = min(attempts, key=rank_key) if attempts else None
        sends = []
        for slot in range(k):
            fb = state.get("feedback", {}).get(str(slot))
            own = bool(fb and fb.get("previous") and best is not None and fb["previous"]["round"] == best["round"]
                       and best["slot"] == slot)
            sends.append(Send("candidate", {
                "run_id": state["run_id"], "target": state["target"], "target_kind": state["target_kind"],
                "entry": state["entry"], "settings": s, "context": state["context"], "round": state["round"],
                "slot": slot, "previous": fb["previous"] if fb else None, "others": fb["others"] if fb else [],
                "history": history, "token_allowance": allowance, "seconds_left": seconds_left,
                "best": best_summary(best, with_source=not own) if best is not None else None,
                "strategy": STRATEGIES[slot % len(STRATEGIES)] if k > 1 else "",
            }))
        return sends

    def reflect(self, state: AgentState) -> dict:
        """Turn this round's rejections into the feedback each slot's next prompt carries."""
        this_round = sorted((a for a in state.get("attempts", []) if a["round"] == state["round"]),
                            key=lambda a: a["slot"])
        duration = max((a.get("duration_s", 0.0) for a in this_round), default=0.0)
        feedback = {}
        for a in this_round:
            others = [f"candidate {o['slot']}: {o['reason'] or 'verified'}: {o['message']}"
                      for o in this_round if o["slot"] != a["slot"]]
            previous = None if a["stage"] == "budget" else {
                "round": a["round"], "reason": a["reason"], "feedback": a["feedback"], "verified": bool(a.get("verified")),
                "counterexample": a.get("counterexample"), "source": a.get("source"),
                "reply_excerpt": a.get("reply_excerpt", ""),
            }
            feedback[str(a["slot"])] = {"previous": previous, "others": others}
        return {"feedback": feedback, "elapsed_s": float(state.get("elapsed_s", 0.0)) + duration}

    def decide(self, state: AgentState) -> str:
        """Accept once a candidate verified, unless ``improve_rounds`` are left to beat the race's
        target and no verified candidate beats it yet; stop when a budget is spent (accepting the
        best verified candidate if there is one)."""
        verified = [a for a in state.get("attempts", []) if a.get("verified")]
        if verified:
            first = min(a["round"] for a in verified)
            improving = int(state["settings"].get("improve_rounds", 0) or 0)
            raced = [a for a in verified if (a.get("race") or {}).get("latency_us")]
            won = any((a.get("race") or {}).get("wins") for a in verified)
            if not raced or won or state["round"] - first >= improving or budget_exhausted(state):
                return "accept"
            return "retry"
        return "stop" if budget_exhausted(state) else "retry"

    def accept(self, state: AgentState) -> dict:
        verified = [a for a in state["attempts"] if a.get("verified")]
        best = min(verified, key=rank_key)
        outputs = write_accepted(state, best)
        line = describe_result(best.get("race"))
        self.deps.progress(f"accepted candidate {best['slot']} of round {best['round']}: {outputs['kernel']}"
                           + (f" ({line})" if line else ""))
        return {"status": "accepted", "best": best, "outputs": outputs, "stop_reason": "verified"}

    def give_up(self, state: AgentState) -> dict:
        attempts = state.get("attempts", [])
        best = min(attempts, key=rank_key) if attempts else None
        reason = budget_exhausted(state) or "stopped"
        outputs = write_report(state, best, status="exhausted", stop_reason=reason)
        self.deps.progress(f"stopping: {reason}")
        return {"status": "exhausted", "best": best, "outputs": outputs, "stop_reason": reason}

    # ---- one candidate ---------------------------------------------------------------------

    def generate(self, c: CandidateState) -> dict:
        started = time.time()  # wall clock: a resumed candidate may finish in another process
        messages = build_messages(c)
        s = c["settings"]
        room = int(c["token_allowance"]) - sum(estimate_tokens(m["content"]) for m in messages)
        if room < MIN_REPLY_TOKENS:
            return {"messages": messages, "started_at": started, "reply": {}, "source": None,
                    "problem": {"stage": "budget", "reason": "token-budget",
                                "message": f"not enough token budget left for a call ({max(room, 0)} tokens)"}}
        seed = (int(s["seed"]) + 7919 * int(c["round"]) + int(c["slot"])) % (2 ** 31)
        reply = self.deps.llm.complete(messages, max_tokens=min(int(s["max_reply_tokens"]), room),
                                       temperature=float(s["temperature"]), seed=seed)
        got = extract(reply.text, entry=c["entry"], finish_reason=reply.finish_reason)
        update = {"messages": messages, "started_at": started, "source": got.source,
                  "tuning_space": got.tuning_space, "notes": got.notes,
                  "reply": {"finish_reason": reply.finish_reason, "excerpt": reply.text[:1500],
                            "usage_reported": reply.usage_reported},
                  "tokens_used": reply.prompt_tokens + reply.completion_tokens,
                  "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
        if got.problem:
            update["problem"] = {"stage": "reply", "reason": got.problem.reason, "message": got.problem.message}
        return update

    @staticmethod
    def after_generate(c: CandidateState) -> str:
        return "has_code" if c.get("source") and not c.get("problem") else "rejected"

    def static_checks(self, c: CandidateState) -> dict:
        source = c["source"]
        if c["target_kind"] == "op":
            problems = _static_checker()(source, c["entry"])
        else:
            problems = _static_checker()(source, None, model_class=c["entry"])
        if not problems:
            return {}
        reason = problems[0][0]
        lines = [f"- {r}: {m}" for r, m in problems]
        syntax = syntax_feedback(source)
        message = "; ".join(m for _, m in problems)
        text = (syntax + "\n" if syntax else "") + "Static checks failed:\n" + "\n".join(lines)
        return {"problem": {"stage": "static", "reason": reason, "message": message, "feedback": text}}

    @staticmethod
    def after_static_checks(c: CandidateState) -> str:
        return "rejected" if c.get("problem") else "passed"

    def verify(self, c: CandidateState) -> dict:
        s = c["settings"]
        timeout = max(5.0, min(float(s["verify_timeout"]), float(c["seconds_left"])))
        verdict = self.deps.verifier(c["target"], c["source"], examples=s.get("examples"), seed=int(s["seed"]),
                                     timeout=timeout, config=None,
                                     candidate_name=f"candidate_r{c['round']}_c{c['slot']}.py")
        return {"verdict": verdict.to_json() if hasattr(verdict, "to_json") else dict(verdict)}

    def race(self, c: CandidateState) -> dict:
        """Time a verified candidate on the race's case (see race.py); advice, never a verdict."""
        setup = (c.get("context") or {}).get("race")
        verdict = c.get("verdict") or {}
        if self.deps.racer is None or not setup or setup.get("error") or not verdict.get("verified"):
            return {}
        return {"race": self.deps.racer.run(setup, c["source"], f"candidate_r{c['round']}_c{c['slot']}.py")}

    def analyse(self, c: CandidateState) -> dict:
        attempt = make_attempt(c)
        status = "VERIFIED" if attempt["verified"] else f"rejected ({attempt['reason']})"
        self.deps.progress(f"  round {c['round']} candidate {c['slot']}: {status} {attempt['message'][:160]}")
        return {"attempts": [attempt]}


# ---- pure helpers (tested directly) ------------------------------------------------------------


def build_messages(c: CandidateState) -> list[dict[str, str]]:
    ctx = c["context"]
    variables = dict(ctx, history=c.get("history", []), best=c.get("best"), strategy=c.get("strategy", ""))
    variables.setdefault("race_target", "")
    messages = [{"role": "system", "content": render("system.j2", **variables)},
                {"role": "user", "content": render("generate.j2", **variables)}]
    prev = c.get("previous")
    if prev:
        if prev.get("source"):
            shown = "```python\n" + prev["source"].rstrip("\n") + "\n```"
        else:
            shown = prev.get("reply_excerpt") or "(empty reply)"
        counterexample = json.dumps(prev["counterexample"], sort_keys=True) if prev.get("counterexample") else ""
        messages.append({"role": "assistant", "content": shown})
        messages.append({"role": "user", "content": render(
            "reflect.j2", round=prev["round"], reason=prev.get("reason") or "", feedback=prev["feedback"],
            counterexample=counterexample, others=c.get("others", []), verified=bool(prev.get("verified")),
            best=c.get("best"), strategy=c.get("strategy", ""))})
    return messages


def make_attempt(c: CandidateState) -> dict[str, Any]:
    """The record of one candidate: what it was, how far it got, and the feedback for the model."""
    problem = c.get("problem")
    verdict = c.get("verdict")
    attempt: dict[str, Any] = {
        "round": c["round"], "slot": c["slot"], "source": c.get("source"),
        "tuning_space": c.get("tuning_space"), "notes": c.get("notes", []), "verdict": verdict,
        "finish_reason": (c.get("reply") or {}).get("finish_reason"),
        "reply_excerpt": (c.get("reply") or {}).get("excerpt", ""),
        "tokens": {"prompt": c.get("prompt_tokens", 0), "completion": c.get("completion_tokens", 0),
                   "estimated": (c.get("reply") or {}).get("usage_reported") is False},
        "duration_s": round(max(0.0, time.time() - c.get("started_at", time.time())), 3),
        "counterexample": None, "worst_error_ratio": None,
        "profile": static_profile(c["source"]) if c.get("source") else {},
    }
    if attempt["tuning_space"]:
        attempt["tuning_space"], notes = fit_to_sku(attempt["tuning_space"], c["context"].get("sku"))
        attempt["notes"] = list(attempt["notes"]) + notes
    if problem:
        attempt.update(stage=problem["stage"], verified=False, reason=problem["reason"],
                       message=problem["message"], feedback=problem.get("feedback") or problem["message"])
        return attempt
    assert verdict is not None
    detail = str(verdict.get("detail") or "")
    attempt.update(stage="verify", verified=bool(verdict.get("verified")), reason=verdict.get("reason"),
                   counterexample=verdict.get("counterexample"), worst_error_ratio=verdict.get("worst_error_ratio"))
    first = detail.strip().splitlines()[0] if detail.strip() else ""
    attempt["race"] = c.get("race")
    if attempt["verified"]:
        attempt["message"] = f"verified in {verdict.get('trials', 0)} trials" + (
            f", worst error {verdict['worst_error_ratio']:.3g}× budget" if verdict.get("worst_error_ratio") is not None else "")
        raced = describe_result(c.get("race")).rstrip(".")
        if raced:
            attempt["message"] += "; " + raced[0].lower() + raced[1:]
        attempt["feedback"] = attempt["message"][0].upper() + attempt["message"][1:] + "." + (
            f"\n{c['context']['race_target']}" if raced and (c.get("context") or {}).get("race_target") else "")
    else:
        attempt["message"] = first[:300] or str(verdict.get("reason"))
        attempt["feedback"] = verify_feedback(verdict)
    return attempt


def fit_to_sku(space: dict[str, list], sku: dict[str, Any] | None) -> tuple[dict[str, list] | None, list[str]]:
    """Drop tuning values the target SKU cannot launch (num_warps × warp size over its block limit)."""
    limits = (sku or {}).get("limits") or {}
    warp, max_threads = limits.get("warp_size"), limits.get("max_threads_per_block")
    if "num_warps" not in space or not warp or not max_threads:
        return space, []
    values = space["num_warps"]
    keep = [w for w in values if isinstance(w, int) and not isinstance(w, bool) and 0 < w * warp <= max_threads]
    dropped = [w for w in values if w not in keep]
    if not dropped:
        return space, []
    note = (f"num_warps {dropped} dropped from the tuning space: {sku['id']} allows {max_threads} threads per "
            f"block (warp size {warp})")
    fitted = {k: v for k, v in space.items() if k != "num_warps"}
    if keep:
        fitted["num_warps"] = keep
    return (fitted or None), [note]


GUIDANCE = {
    "pytorch-fallback": "Computing the result with PyTorch ops (or keeping a PyTorch fallback path) is not "
                        "allowed: all arithmetic on the inputs must happen inside your @triton.jit kernel.",
    "forbidden": "Import only torch, triton, triton.language and math; no file, process, network or "
                 "interpreter access.",
    "no-kernel": "Define a @triton.jit kernel and launch it (kernel[grid](...)) from the entry point.",
    "mismatch": "The result is outside the error budget for the input below. Check masking at the edges, "
                "stride handling, the reduction order and fp32 accumulation.",
    "nonfinite": "NaN/Inf appeared where the reference is finite: check masked lanes (`other=`) and "
                 "overflow in exp/sum; subtract the max before exp.",
    "timeout": "Verification ran out of its CPU-time budget (machine load does not count), or the worker stopped "
               "making progress: the kernel is far too slow on the slow case named above, loops forever, or waits.",
    "compile-error": "Triton could not compile or launch the kernel; the compiler's message is above.",
    "unsupported-on-cpu": "The kernel uses a Triton feature that this machine's verifier (Triton's CPU "
                          "interpreter) cannot run, named above; it is not known to be wrong, but it cannot be "
                          "verified here. Use the triton.language equivalent (tl.exp, tl.sqrt, tl.math.*) instead.",
}


def verify_feedback(verdict: dict[str, Any]) -> str:
    reason = str(verdict.get("reason") or "rejected")
    detail = str(verdict.get("detail") or "").strip()
    if len(detail) > MAX_FEEDBACK_CHARS:
        detail = detail[:MAX_FEEDBACK_CHARS // 2] + "\n…\n" + detail[-MAX_FEEDBACK_CHARS // 2:]
    parts = [f"Rejected: {reason}."]
    if detail:
        parts.append(detail)
    if verdict.get("worst_error_ratio") is not None:
        parts.append(f"Worst error: {verdict['worst_error_ratio']:.4g}× the allowed error (≤ 1 passes).")
    if reason in GUIDANCE:
        parts.append(GUIDANCE[reason])
    return "\n".join(parts)


def rank_key(a: dict[str, Any]) -> tuple:
    """Lower is better. Verified first; among verified, the race's latency (measured or
    predicted, see race.py; unraced last), then the larger accuracy margin, fewer memory ops,
    the shorter file."""
    ratio = a.get("worst_error_ratio")
    ratio = float(ratio) if ratio is not None else float("inf")
    prof = a.get("profile") or {}
    if a.get("verified"):
        latency = (a.get("race") or {}).get("latency_us")
        return (0, float(latency) if latency else float("inf"), ratio,
                prof.get("loads", 0) + prof.get("stores", 0), prof.get("lines", 0), a["round"], a["slot"])
    if a.get("stage") == "verify":
        stage = 1 if a.get("reason") in ("mismatch", "nonfinite") else 2
    else:
        stage = STAGE_RANK.get(a.get("stage", ""), 9)
    return (stage, float("inf"), ratio, 0, 0, -a["round"], a["slot"])


def best_summary(a: dict[str, Any], *, with_source: bool) -> dict[str, Any]:
    """The best attempt so far, as the next prompts show it (its source only where the slot's
    own previous attempt is not already that one)."""
    source = a.get("source") if with_source else None
    return {"round": a["round"], "slot": a["slot"], "verified": bool(a.get("verified")), "reason": a.get("reason"),
            "message": a.get("message", ""), "race": describe_result(a.get("race")),
            "source": source if source and len(source) <= MAX_FEEDBACK_CHARS * 2 else None}


def budget_exhausted(state: AgentState) -> str | None:
    """Why no further round may start, or None. Checked by the ``decide`` edge after every round."""
    s = state["settings"]
    if state["round"] >= int(s["max_iters"]):
        return f"round limit reached ({s['max_iters']} rounds)"
    used, budget = int(state.get("tokens_used", 0)), int(s["budget_tokens"])
    last = [a for a in state.get("attempts", []) if a["round"] == state["round"]]
    starved = bool(last) and all(a["stage"] == "budget" for a in last)
    if used >= budget or (budget - used) // int(s["parallel"]) < MIN_REPLY_TOKENS or starved:
        return f"token budget spent ({used} of {budget} tokens; the next prompt would not fit)" if starved \
            else f"token budget spent ({used} of {budget} tokens)"
    if float(state.get("elapsed_s", 0.0)) >= float(s["budget_seconds"]):
        return f"wall-clock budget spent ({state.get('elapsed_s', 0.0):.0f} of {s['budget_seconds']:.0f} s)"
    return None
