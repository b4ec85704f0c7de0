"""``kernelagent library add NAME PROBLEM CANDIDATE | list | remove NAME | variants``.

A user module is a KernelBench-format problem file plus a ``ModelNew`` candidate, re-verified in
the sandbox on the way in and loaded with ``kernelagent.kernels.load_module(NAME)`` (see
docs/LIBRARY.md, "User modules"). Exit codes: 0 ok, 1 the candidate was rejected (nothing
stored), 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .errors import BadInput, CheckFailed

library_app = typer.Typer(name="library", help="User modules: your own ops (a problem + a verified ModelNew).",
                          no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_LIB_HELP = "Library folder (default: $KERNELAGENT_LIBRARY or ~/.cache/kernelagent/library)."


@library_app.command("add")
def add_cmd(name: str = typer.Argument(..., help="The name to load it by: load_module(NAME)."),
            problem: Path = typer.Argument(..., help="KernelBench problem file (class Model, get_inputs, get_init_inputs)."),
            candidate: Path = typer.Argument(..., help="Candidate file defining class ModelNew."),
            config: Optional[str] = typer.Option(None, "--config", help="JSON config the candidate's CONFIG gets."),
            examples: Optional[int] = typer.Option(None, "--examples", help="Property-based examples to verify with."),
            timeout: float = typer.Option(300.0, "--timeout", help="CPU seconds for the verification."),
            force: bool = typer.Option(False, "--force", help="Replace a module of the same name."),
            library: Optional[Path] = typer.Option(None, "--library", help=_LIB_HELP),
            json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.")) -> None:
    """Verify CANDIDATE against PROBLEM and, if verified, keep both under NAME."""
    from .errors import read_text_file
    from .library_modules import add_module

    source = read_text_file(candidate, "candidate file")
    read_text_file(problem, "problem file")
    cfg = None
    if config:
        try:
            cfg = json.loads(config)
        except json.JSONDecodeError as e:
            raise BadInput(f"--config is not valid JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise BadInput("--config must be a JSON object, e.g. '{\"BLOCK\": 1024}'")
    entry, verdict = add_module(name, problem, source, config=cfg, examples=examples, timeout=timeout, force=force,
                                library=library, candidate_name=candidate.name)
    if json_out:
        typer.echo(json.dumps({"added": entry is not None, "name": name, "verdict": verdict.to_json(),
                               "folder": str(entry.folder) if entry else None}))
    if entry is None:
        raise CheckFailed(f"not added: the candidate was rejected ({verdict.reason}): {verdict.detail[:600]}")
    if not json_out:
        typer.echo(f"added {name}: {verdict.trials} examples verified on {verdict.device} → {entry.folder}\n"
                   f"  from kernelagent.kernels import load_module; ModelNew = load_module({name!r})")


@library_app.command("list")
def list_cmd(library: Optional[Path] = typer.Option(None, "--library", help=_LIB_HELP),
             json_out: bool = typer.Option(False, "--json", help="Print a JSON array on stdout.")) -> None:
    """List the user modules (name, problem file, when added, where verified)."""
    from .library_modules import list_modules

    rows = list_modules(library)
    if json_out:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no user modules; add one with `kernelagent library add NAME PROBLEM CANDIDATE`")
    for r in rows:
        status = "ok" if r["ok"] else f"UNUSABLE ({r['problem_note']})"
        typer.echo(f"{r['name']:24s} {r.get('problem') or '?':24s} {r.get('added') or '?':26s} "
                   f"{r.get('device') or '?'}  {status}")


@library_app.command("variants")
def variants_cmd(op: Optional[str] = typer.Option(None, "--op", help="One op (default: every op)."),
                 library: Optional[Path] = typer.Option(None, "--library", help=_LIB_HELP),
                 json_out: bool = typer.Option(False, "--json", help="Print a JSON array on stdout.")) -> None:
    """List the kernel variants of each op: name, origin, file, sha256, own tuning space."""
    from .kernels import _variants, op_names

    if op is not None and op not in op_names():
        raise BadInput(f"unknown op {op!r}; registered ops: {', '.join(op_names())}")
    rows = [{"op": v.op, "variant": v.name, "origin": v.origin, "path": str(v.path), "sha256": v.sha256,
             "tuning_space": v.tuning_space, "provenance": v.provenance}
            for name in ([op] if op else op_names()) for v in _variants.variants(name, library)]
    if json_out:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        space = "own TUNING_SPACE" if r["tuning_space"] else "the spec's space"
        typer.echo(f"{r['op']:14s} {r['variant']:16s} {r['origin']:9s} {r['sha256'][:12]}  {space:17s} {r['path']}")


@library_app.command("remove")
def remove_cmd(name: str = typer.Argument(...),
               library: Optional[Path] = typer.Option(None, "--library", help=_LIB_HELP)) -> None:
    """Remove the user module NAME."""
    from .library_modules import remove_module

    folder = remove_module(name, library)
    typer.echo(f"removed {name} ({folder})")


def register(app: typer.Typer) -> None:
    app.add_typer(library_app, name="library")
