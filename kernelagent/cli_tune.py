"""``kernelagent tune``: tune ops for a GPU SKU, or run the search alone over a recorded space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .errors import BadInput


def register(app: typer.Typer) -> None:
    @app.command()
    def tune(
        sku: Optional[str] = typer.Option(None, "--sku", help="Target GPU SKU id or alias (`kernelagent sku list`)."),
        op: List[str] = typer.Option([], "--op", help="An op to tune (repeatable)."),
        ops: Optional[str] = typer.Option(None, "--ops", help="`all` to tune every registered op."),
        dtype: List[str] = typer.Option([], "--dtype", help="fp32, fp16 or bf16 (repeatable; default: the op's dtypes)."),
        trials: int = typer.Option(24, "--trials", help="Measurements per op × dtype × shape bucket."),
        measure: Optional[str] = typer.Option(None, "--measure", help="gpu | model | replay:FILE (default: gpu if present, else model)."),
        policy: str = typer.Option("latency", "--policy", help="latency | energy | balanced (energy policies "
                                   "leave the fastest config only for a saving beyond the measured uncertainty)."),
        energy_bound: Optional[float] = typer.Option(None, "--energy-bound", help="With --measure gpu and an energy "
                                                     "policy: the counter-quantisation bound each energy window must "
                                                     "meet (a fraction; default 0.02: ~10 s windows at a 100 ms "
                                                     "counter update period, 3 windows per trial)."),
        energy_cooldown: Optional[float] = typer.Option(None, "--energy-cooldown", help="With --measure gpu and an "
                                                        "energy policy: the longest wait, in seconds, for the GPU to "
                                                        "return to its idle temperature before each trial's energy "
                                                        "windows (default 60; 0: no wait)."),
        storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: SQLite under ~/.cache/kernelagent; postgresql://… to share a study across machines)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for the sampler and verification."),
        library: Optional[Path] = typer.Option(None, "--library", help="Library folder to write (default: the user library that kernelagent.kernels reads: $KERNELAGENT_LIBRARY, else ~/.cache/kernelagent/library)."),
        examples: int = typer.Option(8, "--examples", help="Property-based examples when re-verifying winners."),
        max_cases: Optional[int] = typer.Option(None, "--max-cases", help="Tune only the first N shape buckets of each op (quick runs)."),
        no_write: bool = typer.Option(False, "--no-write", help="Tune and verify, but do not write the library."),
        min_predicted_gain: Optional[float] = typer.Option(None, "--min-predicted-gain", help="model backend: write a predicted entry only when it predicts at least this gain over the default (a fraction; default: the model's assumed uncertainty, 0.15)."),
        system: Optional[str] = typer.Option(None, "--system", help="Also tune system settings, `clocks` (SM "
                                             "application clock) and/or `power-limit`, comma-separated. --measure "
                                             "gpu: set through NVML only with permission (else exit 3), always "
                                             "restored. --measure model: predicted from the spec sheet on an "
                                             "assumed grid (50-100 % of the boost clock / of the power limit), "
                                             "nothing set."),
        report: Optional[Path] = typer.Option(None, "--report", help="Also write an HTML report to this file: the "
                                              "latency/energy front of each tuned bucket, the chosen point marked, "
                                              "measured vs predicted."),
        replay: Optional[Path] = typer.Option(None, "--replay", help="Run the search alone over a recorded space (Kernel Tuner cache or recording)."),
        module: Optional[str] = typer.Option(None, "--module", help="Tune a user module's TUNING_SPACE on this GPU (kernelagent library add; measured only)."),
        variant: Optional[str] = typer.Option(None, "--variant", help="Tune only this kernel variant of each op (default: every variant: kernel.py, kernels/<op>/variants/*.py, <library>/<op>/variants/*.py)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
        generate: bool = typer.Option(False, "--generate", help="First let the agent write a new variant of each op "
                                      "for this SKU (needs an LLM endpoint); the tuner then chooses among all variants."),
        base_url: Optional[str] = typer.Option(None, "--base-url", help="With --generate: the OpenAI-compatible endpoint "
                                               "(default $OPENAI_BASE_URL)."),
        model: Optional[str] = typer.Option(None, "--model", help="With --generate: the model name at the endpoint."),
        gen_parallel: int = typer.Option(2, "--gen-parallel", help="With --generate: candidates per round."),
        gen_max_iters: int = typer.Option(4, "--gen-max-iters", help="With --generate: rounds per op."),
        gen_budget_tokens: int = typer.Option(200_000, "--gen-budget-tokens", help="With --generate: tokens per op."),
        improve: int = typer.Option(0, "--improve", help="With --generate: rounds after the first verified candidate "
                                    "spent trying to beat the current best."),
        gen_out: Optional[Path] = typer.Option(None, "--gen-out", help="With --generate: folder for the agent runs "
                                               "(default ./kernelagent-out/tune-SKU/OP)."),
    ) -> None:
        """Produce verified, tuned kernel configs for a GPU SKU and write them into the library."""
        if report is not None and (replay is not None or module is not None):
            raise BadInput("--report plots the fronts of `tune --sku … --op …`; it does not combine with --replay "
                           "or --module")
        if replay is not None:
            from .tuner.replay import describe_replay_result, run_replay_search

            if not replay.is_file():
                raise BadInput(f"replay file not found: {replay}")
            out = run_replay_search(replay, trials, seed, policy=policy)
            typer.echo(json.dumps(out, sort_keys=True) if json_out else describe_replay_result(out))
            if not out["ok"]:  # measured nothing, fewer than asked while feasible configs remain, or no result
                raise typer.Exit(1)
            return
        if module is not None:
            from .tuner.module_tune import tune_module

            if op or ops:
                raise BadInput("--module tunes one user module; do not combine it with --op/--ops")
            out = tune_module(module, trials=trials, seed=seed, storage=storage, library=library,
                              verify_examples=examples, write=not no_write)
            if json_out:
                typer.echo(json.dumps(out, sort_keys=True))
            else:
                typer.echo(f"{module}: {'verified' if out['verified'] else 'no verified config'} "
                           f"{out['config']} at {out['latency_us']} us (measured), {out['trials']} trials; "
                           f"{'written to its entry' if out['written'] else 'not written'}")
            if out.get("shortfall"):
                typer.echo(f"SHORTFALL: {out['shortfall']}", err=json_out)
            if not out["verified"] or out.get("shortfall"):
                raise typer.Exit(1)
            return
        if not sku:
            raise BadInput("--sku is required (e.g. --sku h100; `kernelagent sku list` shows the SKUs)")
        op_names = _op_names_without_torch
        unknown = [o for o in op if o not in op_names()]
        if unknown:  # before torch, triton and optuna load: a typo costs a second, not a minute
            raise BadInput(f"unknown op {unknown[0]!r}; registered ops: {', '.join(op_names())}")
        from .sku import get_sku

        get_sku(sku)
        if ops == "all":
            chosen = op_names()
        elif ops is not None:
            raise BadInput(f"--ops takes only `all` (got {ops!r}); name single ops with --op")
        else:
            chosen = list(op)
        if not chosen:
            raise BadInput("name ops to tune with --op OP (repeatable) or --ops all")
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .tuner.tune import format_table, tune as run_tune

        console = Console(stderr=True)
        generated = None
        if generate:
            from .agent.for_sku import generate_for_ops
            from .agent.run import GenerateOptions

            template = GenerateOptions(base_url=base_url, model=model, parallel=gen_parallel, max_iters=gen_max_iters,
                                       budget_tokens=gen_budget_tokens, improve_rounds=improve, seed=seed, out=gen_out,
                                       examples=examples)
            generated = generate_for_ops(chosen, sku, template, library=library,
                                         notice=lambda m: console.print(f"[yellow]note:[/] {m}"))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False, disable=not console.is_terminal) as bars:
            tasks: dict[str, int] = {}
            plain = _PlainProgress(console.is_terminal)

            def progress(label: str, done: int, total: int) -> None:
                plain.update(label, done, total)
                if label not in tasks:
                    from rich.markup import escape

                    tasks[label] = bars.add_task(escape(label), total=total)
                bars.update(tasks[label], completed=min(done, total))

            results = run_tune(sku_id=sku, ops=chosen, dtypes=list(dtype) or None, trials=trials, measure=measure,
                               policy=policy, storage=storage, seed=seed, library_dir=library,
                               verify_examples=examples, write=not no_write, max_cases=max_cases, progress=progress,
                               notice=lambda m: console.print(f"[yellow]note:[/] {m}"),
                               min_predicted_gain=min_predicted_gain, variant=variant, energy_bound=energy_bound,
                               energy_cooldown_s=energy_cooldown, system=system)
        if report is not None:
            from .tuner.report import write_report

            typer.echo(f"report: {write_report(results, report)}", err=True)
        if json_out:
            rows = [r.to_json() for r in results]
            typer.echo(json.dumps(rows if generated is None else {"results": rows, "generated": generated},
                                  sort_keys=True, default=str))
        else:
            typer.echo(format_table(results))
            if generated is not None:
                from .agent.for_sku import summary_lines

                for line in summary_lines(generated, results, sku):
                    typer.echo(line)
        if any(not r.verified or r.shortfall for r in results):
            raise typer.Exit(1)


class _PlainProgress:
    """Progress as plain lines on stderr when it is not a terminal (CI, log files): a line when
    a task starts, every 15 s while it runs, and when it is done."""

    EVERY_S = 15.0

    def __init__(self, is_terminal: bool):
        import time

        self.on, self.clock = not is_terminal, time.monotonic
        self.start, self.last = self.clock(), {}

    def update(self, label: str, done: int, total: int) -> None:
        if not self.on:
            return
        now = self.clock()
        first = label not in self.last
        if first or done >= total or now - self.last[label] >= self.EVERY_S:
            self.last[label] = now
            typer.echo(f"[tune {now - self.start:6.0f}s] {label}: {min(done, total)}/{total} trials", err=True)


def _op_names_without_torch() -> list[str]:
    """The registered ops (folders of kernelagent.kernels with a spec.py), found without
    importing the library (which imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("kernelagent.kernels")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return sorted(p.name for root in roots for p in root.iterdir()
                  if p.is_dir() and (p / "spec.py").is_file() and not p.name.startswith("_"))
