"""The output folder of a run: the accepted kernel with its verdict, or a report of the failures.

Layout (``--out DIR``, default ``./kernelagent-out/<run_id>/``)::

    <stem>.py              the accepted candidate (op: "<op>_variant", problem: "<file>_new")
    <stem>.verdict.json    the harness's verdict on it
    <stem>.tuning.json     the tuning space the model proposed (when it sent a valid one)
    best_attempt.py        when nothing verified: the attempt that got furthest
    report.json            the run: status, every attempt and why it failed, tokens and cost
    exchanges.jsonl        the recorded LLM exchanges (replay with --replay)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COST_NOTE = ("cost uses the configured price per 1k tokens (default 0: set --price-prompt/--price-completion "
             "to your provider's rates)")


def _stem(state: dict[str, Any]) -> str:
    if state["target_kind"] == "op":
        return f"{state['target']}_variant"
    return f"{Path(state['target']).stem}_new"


def usage(state: dict[str, Any]) -> dict[str, Any]:
    s = state["settings"]
    prompt, completion = int(state.get("prompt_tokens", 0)), int(state.get("completion_tokens", 0))
    cost = prompt / 1000 * float(s.get("price_prompt_per_1k", 0.0)) + \
        completion / 1000 * float(s.get("price_completion_per_1k", 0.0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "budget_tokens": int(s["budget_tokens"]), "cost_usd": round(cost, 6), "cost_note": COST_NOTE,
            "estimated": any((a.get("tokens") or {}).get("estimated") for a in state.get("attempts", [])),
            "wall_s": round(float(state.get("elapsed_s", 0.0)), 2)}


def attempt_summary(a: dict[str, Any]) -> dict[str, Any]:
    return {"round": a["round"], "candidate": a["slot"], "stage": a["stage"], "verified": a["verified"],
            "reason": a["reason"], "message": a["message"], "worst_error_ratio": a.get("worst_error_ratio"),
            "tokens": a.get("tokens"), "notes": a.get("notes", []), "race": a.get("race")}


def sorted_attempts(state: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(state.get("attempts", []), key=lambda a: (a["round"], a["slot"]))


def report(state: dict[str, Any], best: dict[str, Any] | None, *, status: str, stop_reason: str,
           outputs: dict[str, str]) -> dict[str, Any]:
    s = state["settings"]
    return {"run_id": state["run_id"], "target": state["target"], "target_kind": state["target_kind"],
            "sku": state.get("sku"), "status": status, "stop_reason": stop_reason, "rounds": state["round"],
            "model": s["model"], "base_url": s.get("base_url"), "prompt_version": s["prompt_version"],
            "best": attempt_summary(best) if best else None,
            "attempts": [attempt_summary(a) for a in sorted_attempts(state)],
            "usage": usage(state), "outputs": outputs, "recording": s.get("recording"),
            "race": (state.get("context") or {}).get("race")}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_accepted(state: dict[str, Any], best: dict[str, Any]) -> dict[str, str]:
    out = Path(state["settings"]["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(state)
    outputs = {"kernel": str(out / f"{stem}.py"), "verdict": str(out / f"{stem}.verdict.json")}
    Path(outputs["kernel"]).write_text(best["source"])
    _write_json(Path(outputs["verdict"]), best["verdict"])
    if best.get("tuning_space"):
        outputs["tuning_space"] = str(out / f"{stem}.tuning.json")
        _write_json(Path(outputs["tuning_space"]), best["tuning_space"])
    outputs["report"] = str(out / "report.json")
    _write_json(Path(outputs["report"]), report(state, best, status="accepted", stop_reason="verified",
                                                outputs=outputs))
    return outputs


def write_report(state: dict[str, Any], best: dict[str, Any] | None, *, status: str,
                 stop_reason: str) -> dict[str, str]:
    out = Path(state["settings"]["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    if best and best.get("source"):
        outputs["best_attempt"] = str(out / "best_attempt.py")
        Path(outputs["best_attempt"]).write_text(best["source"])
    outputs["report"] = str(out / "report.json")
    _write_json(Path(outputs["report"]), report(state, best, status=status, stop_reason=stop_reason,
                                                outputs=outputs))
    return outputs
