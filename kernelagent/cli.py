"""The ``kernelagent`` command line. Heavy imports happen inside commands so --help is instant.

Exit codes everywhere: 0 ok, 1 the check/gate failed, 2 bad input, 3 environment problem.
Machine-readable output (``--json``) goes to stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import BadInput, KernelAgentError, read_text_file  # noqa: F401 - read_text_file is used by the sub-CLIs

app = typer.Typer(
    name="kernelagent",
    help="Write, verify and tune Triton GPU kernels for a GPU SKU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def err(msg: str) -> None:
    typer.echo(msg, err=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("kernelagent")
        except PackageNotFoundError:  # running from a source tree that was never installed
            v = "unknown (not installed)"
        typer.echo(f"kernelagent {v}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Write, verify and tune Triton GPU kernels for a GPU SKU."""


@app.command()
def verify(
    target: str = typer.Argument(..., help="A registered op name (see `kernelagent ops`) or a KernelBench-format problem file."),
    candidate: Path = typer.Argument(..., help="The candidate's source file (a Triton implementation)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    timeout: float = typer.Option(120.0, "--timeout", help="CPU seconds the sandboxed worker may use for the whole verification (machine load does not count; a worker that makes no progress is stopped after min(S, 60) s of wall time)."),
    examples: Optional[int] = typer.Option(None, "--examples", help="Property-based examples (trials) to run."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for input generation (default: a fresh secret seed)."),
    config: Optional[str] = typer.Option(None, "--config", help="Launch config as JSON, passed to the candidate's entry point."),
) -> None:
    """Check a candidate kernel against a target in the sandbox. Exit 0 verified, 1 rejected."""
    from .harness.verify import verify as run_verify

    source = read_text_file(candidate, "candidate file")
    cfg = None
    if config:
        try:
            cfg = json.loads(config)
        except json.JSONDecodeError as e:
            raise BadInput(f"--config is not valid JSON ({e}); example: --config '{{\"BLOCK_N\": 1024}}'")
    verdict = run_verify(target, source, examples=examples, seed=seed, timeout=timeout,
                         config=cfg, candidate_name=candidate.name)
    if json_out:
        typer.echo(verdict.dumps())
    else:
        status = "VERIFIED" if verdict.verified else f"REJECTED ({verdict.reason})"
        cpu = f", {verdict.cpu_s:.1f} CPU-s" if verdict.cpu_s is not None else ""
        typer.echo(f"{status}: {verdict.target} — {verdict.trials} trials in {verdict.duration_s:.1f}s{cpu} "
                   f"[{verdict.device}; sandbox: {verdict.sandbox}]")
        if verdict.detail:
            typer.echo(verdict.detail)
    for w in verdict.warnings:   # on stderr with --json too (a weak sandbox is never silent)
        err(f"warning: {w}")
    raise typer.Exit(0 if verdict.verified else 1)


@app.command("ops")
def ops_list() -> None:
    """List the registered ops."""
    from .kernels import get_opspec, op_names

    for name in op_names():
        typer.echo(f"{name:16s} {get_opspec(name).doc}")


# Other command groups register themselves here (one line each, in their own modules).
# --- command registrations ---
from . import cli_tune as _cli_tune; _cli_tune.register(app)  # noqa: E402,E702
from . import cli_generate as _cli_generate; _cli_generate.register(app)
from . import cli_sku as _cli_sku; _cli_sku.register(app)
from . import cli_nightly as _cli_nightly; _cli_nightly.register(app)
from . import cli_library as _cli_library; _cli_library.register(app)
from . import cli_compile as _cli_compile; _cli_compile.register(app)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that checkpointed work says how to resume (exit 143)."""


_terminated = []


def _on_sigterm(signum, frame):
    _terminated.append(signum)   # remembered: a library may re-raise the interrupt as a plain one
    raise Terminated()


def main() -> None:
    import signal

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            app()
        except SystemExit:
            if _terminated:   # click turned the interrupt into its own exit
                raise KeyboardInterrupt from None
            raise
    except KernelAgentError as e:
        err(f"error: {e}")
        if "--json" in sys.argv[1:]:
            # Machines reading stdout get an answer too, not an empty stream.
            typer.echo(json.dumps({"error": str(e), "kind": type(e).__name__, "exit_code": e.exit_code}))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        if _terminated:
            err("terminated (SIGTERM)")
            sys.exit(143)
        err("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
