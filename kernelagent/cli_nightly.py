"""``kernelagent nightly``: re-verify and re-measure the tuned library, gate regressions, write a report.

Exit codes: 0 healthy; 1 a failed verification, a broken or stale entry, a regression, or a
``--retune`` whose search fell short of its trials (each named on stderr and in the report); 2 bad input (unknown op, bad --measure file); 3 environment (--gpu or --retune with no GPU or no
NVML). ``--json`` prints
``results.json`` on stdout; progress goes to stderr. See docs/NIGHTLY.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("nightly")(nightly_command)


def nightly_command(
    out: Path = typer.Option(Path("nightly-report"), "--out", help="Folder for results.json, report.html, "
                             "summary.md (and samples.json after a GPU run)."),
    history: Optional[Path] = typer.Option(None, "--history", help="SQLite run history (default "
                                           "~/.cache/kernelagent/nightly.db)."),
    ops: Optional[List[str]] = typer.Option(None, "--ops", help="Only these ops (repeat, or comma-separated; "
                                            "default: all)."),
    gpu: bool = typer.Option(False, "--gpu", help="Require the GPU mode: this GPU's SKU entries, re-measured "
                             "(exit 3 without a CUDA GPU and NVML)."),
    cpu: bool = typer.Option(False, "--cpu", help="CPU mode even on a GPU machine: every SKU's entries, verified; "
                             "no timing unless --measure replay:FILE."),
    measure: str = typer.Option("auto", "--measure", help="auto | none | gpu | replay:FILE (recorded samples, "
                                "e.g. a GPU night's samples.json)."),
    library: Optional[Path] = typer.Option(None, "--library", help="Check only this library folder "
                                           "(DIR/<op>/configs/<sku>.json) instead of $KERNELAGENT_LIBRARY and the "
                                           "package's kernels/."),
    sku: Optional[List[str]] = typer.Option(None, "--sku", help="CPU mode: only these SKU files (repeatable)."),
    examples: Optional[int] = typer.Option(None, "--examples", help="Property-based examples per verification "
                                           "(default: the harness's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Verification seed (default: fresh; recorded in "
                                       "results.json so a failure can be reproduced)."),
    timeout: float = typer.Option(600.0, "--timeout", help="CPU seconds per verification or measurement (machine load does not count)."),
    default: bool = typer.Option(True, "--default/--no-default", help="Also verify each op's default heuristic "
                                 "(what runs where no entry matches)."),
    retune: bool = typer.Option(False, "--retune", help="GPU mode: re-tune each regressed entry and update the library only if the new config is verified and faster than the stored one re-measured today."),
    sessions: int = typer.Option(7, "--sessions", help="GPU: measurement sessions per item; each gives latency "
                                 "samples and one energy window (7: the fewest that let the energy gate fire at "
                                 "0.99 against a stored median)."),
    energy_window_s: float = typer.Option(5.0, "--energy-window-s", help="GPU: length of each energy window, s "
                                          "(5 s keeps counter quantisation near 4%)."),
    min_effect: float = typer.Option(0.05, "--min-effect", help="Smallest relative change the gate reports "
                                     "(0.05 = 5%)."),
    confidence: float = typer.Option(0.99, "--confidence", help="Confidence of the gate's test and interval "
                                     "(0.99: under 1% false alarms per entry on noisy, unchanged kernels)."),
    noise_floor_us: float = typer.Option(0.5, "--noise-floor-us", help="Latency differences below this many µs "
                                         "are never called a change (timer resolution)."),
    json_out: bool = typer.Option(False, "--json", help="Print results.json on stdout."),
) -> None:
    """Re-verify every library entry under today's versions, re-measure it, gate regressions, report."""
    from .errors import BadInput
    from .nightly.gate import GatePolicy
    from .nightly.run import NightlyOptions, run_nightly

    if gpu and cpu:
        raise BadInput("--gpu and --cpu exclude each other")
    op_list = [o.strip() for spec in (ops or []) for o in spec.split(",") if o.strip()] or None
    try:
        policy = GatePolicy(min_effect=min_effect, confidence=confidence, noise_floor=noise_floor_us)
    except ValueError as e:
        raise BadInput(str(e)) from None
    if sessions < 1 or energy_window_s < 1.0:
        raise BadInput("--sessions must be at least 1 and --energy-window-s at least 1.0")
    opts = NightlyOptions(out=out, history=history, ops=op_list, mode="gpu" if gpu else "cpu" if cpu else "auto",
                          measure=measure, library=library, skus=list(sku) if sku else None, examples=examples,
                          seed=seed, timeout=timeout, include_default=default, retune=retune, sessions=sessions,
                          energy_window_s=energy_window_s,
                          policy=policy)
    doc = run_nightly(opts)
    if json_out:
        typer.echo(json.dumps(json.loads(Path(doc["files"]["results"]).read_text()), indent=1))
    for f in doc["failures"]:
        first_line = (f.get("detail") or "").strip().splitlines()[:1]
        typer.echo(f"FAILED {f['name']}: {f['reason']}: {first_line[0][:300] if first_line else ''}", err=True)
    for r in doc["regressions"]:
        typer.echo(f"REGRESSION {r['name']}: {r['detail'][:300]}", err=True)
    s = doc["summary"]
    typer.echo(f"nightly {doc['status']}: {s['items']} item(s), {s['verified']} verified, {s['failed']} failed, "
               f"{s['regressions']} regression(s)"
               + (f", {s['retune_shortfalls']} re-tune shortfall(s)" if s.get("retune_shortfalls") else "")
               + f"; report: {doc['files']['report']}", err=True)
    raise typer.Exit(doc["exit_code"])
