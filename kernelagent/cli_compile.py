"""``kernelagent compile OP --sku SKU``: the static compile of an op's kernel for a SKU's
architecture, without a GPU — registers, spills, shared memory, the tensor-core and TMA
features in the PTX, and whether it fits (exit 1 when a launch does not)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .errors import BadInput


def register(app: typer.Typer) -> None:
    @app.command("compile")
    def compile_cmd(
        op: str = typer.Argument(..., help="A registered op (`kernelagent ops`)."),
        sku: str = typer.Option(..., "--sku", help="Target GPU SKU id or alias (`kernelagent sku list`)."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="fp32, fp16 or bf16 (default: bf16 where the op has it)."),
        config: Optional[str] = typer.Option(None, "--config", help="Launch config as JSON, e.g. '{\"BLOCK_N\": 4096, "
                                             "\"num_warps\": 8}' (default: the op's default for the case)."),
        case: Optional[str] = typer.Option(None, "--case", help="Case params as JSON (default: the op's first bench case)."),
        variant: Optional[str] = typer.Option(None, "--variant", help="A variant of the op (default: what the library runs on the SKU without a tuned entry: kernel.py, or the architecture's default variant)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    ) -> None:
        """Compile an op's kernel for a SKU without a GPU and report what it uses. Exit 1 if it does not fit."""
        out = static_report(op, sku, dtype=dtype, config=_json_arg(config, "--config"),
                            case=_json_arg(case, "--case"), variant=variant)
        if json_out:
            typer.echo(json.dumps(out, sort_keys=True))
        else:
            typer.echo(format_report(out))
        if not out["fits"]:
            raise typer.Exit(1)


def _json_arg(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{flag} is not JSON ({e.msg} at column {e.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


def static_report(op: str, sku_id: str, *, dtype: str | None = None, config: dict | None = None,
                  case: dict | None = None, variant: str | None = None) -> dict:
    import torch

    from .harness import compile as hc
    from .harness.predict import PredictError, SandboxedCapture
    from .kernels import _variants, get_opspec, op_names
    from .kernels._configs import arch_default
    from .kernels.spec import Case
    from .sku import get_sku

    if op not in op_names():
        raise BadInput(f"unknown op {op!r}; registered ops: {', '.join(op_names())}")
    sku = get_sku(sku_id)
    if not sku.static_compile:
        raise BadInput(f"{sku.id} ({sku.arch}) has no static compile target here (NVIDIA sm_* only)")
    spec = get_opspec(op)
    dtypes = list(spec.dtypes)
    dtype = dtype or next((d for d in ("bf16", "fp16", "fp32") if d in dtypes), dtypes[0])
    if dtype not in dtypes:
        raise BadInput(f"{op} does not take dtype {dtype!r}; it takes {', '.join(dtypes)}")
    params = dict(case) if case is not None else dict(spec.bench_cases[0])
    # No --variant: what the library runs on this architecture without an entry, with the
    # config dispatch gives it (a persistent grid sized to the SKU's SMs).
    found = arch_default(op, sku.arch, sku.sm_count) if variant is None else None
    if found is not None:
        variant, arch_config = found
        if config is None and arch_config:
            config = arch_config
    try:
        v = _variants.get_variant(op, variant)
    except _variants.UnknownVariantError as e:
        raise BadInput(str(e)) from None
    try:
        with torch.device("meta"):   # shapes only: nothing runs
            call = spec.build(Case(params=params, dtype=dtype, seed=0))
    except (TypeError, KeyError, ValueError) as e:
        raise BadInput(f"--case {params} is not a case of {op}: {type(e).__name__}: {e}") from None
    arch = hc.parse_arch(sku)
    if v.origin == "shipped":
        try:
            launches = hc.capture_launches(v.path, op, call.args, dict(call.kwargs), config)
        except (ValueError, TypeError, KeyError) as e:
            raise BadInput(f"{op} rejects this config or case: {type(e).__name__}: {e}") from None
        reports = hc.compile_launches(v.path, launches, sku)
    else:  # a user or generated variant is untrusted: captured and compiled in the sandbox
        with SandboxedCapture(v.path.read_text(encoding="utf-8"), op, filename=v.path.name) as cap:
            got = cap.capture([(call.args, dict(call.kwargs), config)], arch)[0]
        if isinstance(got, PredictError):
            raise BadInput(f"variant {v.name} could not be captured: {str(got)[:500]}")
        launches, reports = got.launches, got.reports or []
    rows = []
    for ln, rep in zip(launches, reports):
        feas = hc.check_feasible(rep, sku)
        rows.append({"kernel": ln.fn_name, "grid": list(ln.grid), "constexprs": {k: str(x) for k, x in ln.constexprs.items()},
                     "report": rep.to_json(), "fits": feas.feasible, "reasons": list(feas.reasons),
                     "warnings": list(feas.warnings), "blocks_per_sm": feas.blocks_per_sm,
                     "limited_by": feas.limited_by, "occupancy": feas.occupancy})
    return {"op": op, "variant": v.name, "sku": sku.id, "arch": sku.arch, "dtype": dtype, "case": params,
            "config": config, "launches": rows, "fits": bool(rows) and all(r["fits"] for r in rows),
            "measured": False, "note": "static compile for the SKU's architecture: nothing ran on a GPU"}


def format_report(out: dict) -> str:
    lines = [f"{out['op']} ({out['variant']}) for {out['sku']} ({out['arch']}), {out['dtype']}, case {out['case']}"
             + (f", config {out['config']}" if out["config"] else ", default config")]
    for r in out["launches"]:
        rep = r["report"]
        if not rep["ok"]:
            lines.append(f"  {r['kernel']}: DOES NOT COMPILE ({rep['failure']}): "
                         f"{(rep['error'] or '').strip().splitlines()[-1][:300] if rep['error'] else ''}")
            continue
        feats = [f for f, on in (("TMA", rep.get("tma")), ("warp-specialized", rep.get("warp_specialized"))) if on]
        lines.append(f"  {r['kernel']}: grid {tuple(r['grid'])}, {rep['num_warps']} warps, {rep['num_stages']} stages; "
                     f"{rep['registers']} registers/thread, {rep['spill_bytes']} B spilled, "
                     f"{rep['shared_bytes']} B shared; MMA {rep['mma']}"
                     + (f"; {', '.join(feats)}" if feats else "; no TMA"))
        lines.append(f"    {'fits' if r['fits'] else 'DOES NOT FIT'}: {r['blocks_per_sm']} block(s)/SM "
                     f"(limited by {r['limited_by'] or '-'}), occupancy {100 * r['occupancy']:.0f} %"
                     + (f"; {'; '.join(r['reasons'])}" if r["reasons"] else "")
                     + (f"; warning: {'; '.join(r['warnings'])}" if r["warnings"] else ""))
    lines.append(out["note"])
    return "\n".join(lines)
