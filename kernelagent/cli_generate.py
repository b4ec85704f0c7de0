"""``kernelagent generate``: have an LLM write a Triton kernel for a target until the harness verifies one.

Exit 0: a verified kernel was written (its path is printed); 1: the budget ran out (the best
attempt and why each attempt failed are printed); 2: bad input; 3: endpoint problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)


def generate_command(
    target: Optional[str] = typer.Argument(None, help="A registered op name or a KernelBench-format problem file. "
                                           "Optional with --resume or --replay."),
    sku: Optional[str] = typer.Option(None, "--sku", help="Target GPU SKU id (kernelagent/skus/<id>.json); its spec "
                                      "facts go into the prompt."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint, e.g. "
                                           "http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name at the endpoint (default: "
                                        "$KERNELAGENT_MODEL or gpt-4.1)."),
    parallel: int = typer.Option(2, "--parallel", help="Candidates generated and verified in parallel per round."),
    max_iters: int = typer.Option(4, "--max-iters", help="Rounds before giving up."),
    budget_tokens: int = typer.Option(200_000, "--budget-tokens", help="Prompt + completion tokens for the whole run."),
    budget_seconds: float = typer.Option(3600.0, "--budget-seconds", help="Wall-clock seconds for the whole run."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default ./kernelagent-out/<run_id>/)."),
    replay: Optional[Path] = typer.Option(None, "--replay", help="Rerun a recorded run (its exchanges.jsonl) "
                                          "with no network."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue an interrupted run by its id."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    db: Optional[Path] = typer.Option(None, "--db", help="Checkpoint database (default "
                                      "~/.cache/kernelagent/agent.db or $KERNELAGENT_AGENT_DB)."),
    examples: Optional[int] = typer.Option(None, "--examples", help="Property-based examples per verification."),
    verify_timeout: float = typer.Option(120.0, "--verify-timeout", help="Seconds allowed per verification."),
    request_timeout: float = typer.Option(300.0, "--request-timeout", help="Seconds allowed per LLM request."),
    retries: int = typer.Option(4, "--retries", help="Retries per LLM request on 429/5xx/timeouts "
                                "(exponential backoff from 1 s)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for verification inputs and sampling "
                                       "(default: a fresh one, recorded)."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature."),
    max_reply_tokens: int = typer.Option(8192, "--max-reply-tokens", help="max_tokens per LLM reply."),
    price_prompt: float = typer.Option(0.0, "--price-prompt", help="USD per 1k prompt tokens, for the cost report."),
    price_completion: float = typer.Option(0.0, "--price-completion", help="USD per 1k completion tokens."),
    tune: bool = typer.Option(False, "--tune", help="Keep the verified kernel: an op's becomes a library variant "
                              "tuned for --sku (gpu backend on a GPU, else model, labelled); a problem file's becomes "
                              "a user module (kernelagent.kernels.load_module)."),
    tune_trials: int = typer.Option(8, "--tune-trials", help="Tuning trials per shape bucket with --tune."),
    tune_dtype: List[str] = typer.Option([], "--tune-dtype", help="With --tune: dtypes to tune (repeatable; default: "
                                         "the op's dtypes)."),
    min_predicted_gain: Optional[float] = typer.Option(None, "--min-predicted-gain", help="With --tune and the model "
                                                       "backend: the predicted gain over the default needed to write "
                                                       "an entry (default 0.15)."),
    measure: Optional[str] = typer.Option(None, "--measure", help="With --tune: gpu | model (default: gpu if present)."),
    library: Optional[Path] = typer.Option(None, "--library", help="With --tune: library folder (default: the user "
                                           "library, $KERNELAGENT_LIBRARY or ~/.cache/kernelagent/library)."),
    race: bool = typer.Option(True, "--race/--no-race", help="For an op with --sku: time each verified candidate "
                              "(measured on a GPU, PREDICTED by the model otherwise) against the library's current "
                              "best; the fastest verified one wins."),
    improve: int = typer.Option(0, "--improve", help="Rounds to keep going after the first verified candidate while "
                                "none beats the current best (needs the race)."),
) -> None:
    """Generate a verified Triton kernel for TARGET with an LLM (OpenAI-compatible endpoint)."""
    from .agent.race import describe_result
    from .agent.run import GenerateOptions, generate

    opts = GenerateOptions(
        target=target, sku=sku, base_url=base_url, model=model, parallel=parallel, max_iters=max_iters,
        budget_tokens=budget_tokens, budget_seconds=budget_seconds, out=out, replay=replay, resume=resume,
        db=db, examples=examples, verify_timeout=verify_timeout, request_timeout=request_timeout,
        retries=retries, seed=seed, temperature=temperature, max_reply_tokens=max_reply_tokens,
        price_prompt_per_1k=price_prompt, price_completion_per_1k=price_completion, race=race,
        improve_rounds=improve)
    if tune and target and not sku and not _is_problem(target):
        from .errors import BadInput

        raise BadInput("--tune needs --sku: the SKU to tune the generated variant for")
    result = generate(opts)
    kept = None
    if tune and result.status == "accepted":
        from .agent.keep import keep
        from .prompts import PROMPT_VERSION

        kept = keep(result, sku=sku, endpoint=base_url, model=model, prompt_version=PROMPT_VERSION, library=library,
                    trials=tune_trials, measure=measure, examples=examples, min_predicted_gain=min_predicted_gain,
                    dtypes=list(tune_dtype) or None,
                    notice=lambda m: typer.echo(f"note: {m}", err=True))
    if json_out:
        typer.echo(json.dumps(dict(result.to_json(), kept=kept), sort_keys=True, default=str))
        raise typer.Exit(result.exit_code)
    u = result.usage
    if result.status == "accepted":
        typer.echo(f"VERIFIED kernel for {result.target}: {result.kernel}")
        v = result.verdict or {}
        typer.echo(f"  verdict: {v.get('trials', 0)} trials, worst error {v.get('worst_error_ratio')} × budget "
                   f"[{v.get('device', '')}; sandbox: {v.get('sandbox', '')}] → {result.outputs.get('verdict')}")
        raced = describe_result((result.best or {}).get("race"))
        if raced:
            typer.echo(f"  {raced}")
    else:
        typer.echo(f"NO VERIFIED KERNEL for {result.target}: {result.stop_reason}")
        for a in result.attempts:
            typer.echo(f"  round {a['round']} candidate {a['candidate']}: {a['reason']}: {a['message'][:200]}")
        if result.best:
            typer.echo(f"  best attempt: round {result.best['round']} candidate {result.best['candidate']} "
                       f"({result.best['reason']}) → {result.outputs.get('best_attempt', 'no source')}")
    typer.echo(f"  run {result.run_id}: {result.rounds} round(s), {u['total_tokens']} tokens "
               f"({u['prompt_tokens']} prompt + {u['completion_tokens']} completion), cost ${u['cost_usd']:.4f} "
               f"({'configured price' if u['cost_usd'] else 'price not configured: --price-prompt/--price-completion'}); "
               f"report: {result.outputs.get('report')}")
    if kept:
        typer.echo(f"kept as {kept['kind']} {kept.get('variant') or kept.get('name')}: {kept.get('path', '')}")
        for row in kept.get("tuned", []):
            sp = row["speedup_vs_default"]
            typer.echo(f"  {row['dtype']} {row['bucket']}: {'verified' if row['verified'] else 'not verified'}, "
                       f"{'measured' if row['measured'] else 'PREDICTED'} "
                       f"{'-' if sp is None else f'{sp:.2f}x'} vs the default; library: {row['library_action'] or 'not written'}")
        typer.echo(f"  {kept['use']}")
    elif tune and result.status != "accepted":
        typer.echo("  --tune: nothing kept (no verified kernel)")
    raise typer.Exit(result.exit_code)


def _is_problem(target: str) -> bool:
    from .harness.problem import is_problem_path

    return is_problem_path(target)
