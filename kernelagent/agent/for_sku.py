"""``kernelagent tune --sku SKU --ops … --generate``: the agent writes a new variant of every op
for the SKU before the tuner runs, so that the tuner's usual pass (every variant of every op,
the fastest verified variant+config recorded) decides whether the generated kernel is used.

One agent run per op (its own run id, output folder, recording and checkpoint, so a run cut
short resumes with ``kernelagent generate --resume RUN_ID``); a verified kernel becomes variant
``gen_<run_id>`` in the user library with its provenance (``keep.add_variant``). An op the agent
does not solve keeps the variants it had. A dead endpoint stops the command before any tuning:
it names the run to resume.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import BadInput


def endpoint_configured(base_url: str | None) -> bool:
    return bool(base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"))


def generate_for_ops(ops: Sequence[str], sku: str, template, *, library: Path | None = None,
                     notice: Callable[[str], None] = lambda m: None,
                     progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the agent for each op with ``template`` (a ``GenerateOptions`` without target) and add
    each verified kernel as a variant. Returns one row per op."""
    from ..prompts import PROMPT_VERSION
    from .keep import add_variant, declared_space, provenance_of, variant_name
    from .run import generate

    if not endpoint_configured(template.base_url):
        raise BadInput("--generate needs an LLM endpoint: --base-url URL (or OPENAI_BASE_URL; OPENAI_API_KEY for "
                       "api.openai.com). Without one, tune the library's existing variants (drop --generate).")
    root = Path(template.out) if template.out else Path("kernelagent-out") / f"tune-{sku}"
    rows = []
    for op in ops:
        opts = replace(template, target=op, sku=sku, out=root / op)
        notice(f"generating a new {op} kernel for {sku} (agent run → {opts.out})")
        result = generate(opts, progress=progress) if progress is not None else generate(opts)
        row: dict[str, Any] = {"op": op, "run_id": result.run_id, "status": result.status,
                               "stop_reason": result.stop_reason, "variant": None, "path": None,
                               "race": (result.best or {}).get("race")}
        if result.status == "accepted" and result.kernel:
            name = variant_name(result)
            source = Path(result.kernel).read_text(encoding="utf-8")
            prov = provenance_of(result, endpoint=template.base_url or os.environ.get("OPENAI_BASE_URL"),
                                 model=template.model, prompt_version=PROMPT_VERSION)
            path = add_variant(op, source, declared_space(result), name, prov, library)
            row.update(variant=name, path=str(path))
            notice(f"added variant {name} of {op}: {path}")
        else:
            notice(f"no verified {op} kernel from the agent ({result.stop_reason}); its existing variants are tuned")
        rows.append(row)
    return rows


def summary_lines(rows: Sequence[dict[str, Any]], results: Sequence[Any], sku: str) -> list[str]:
    """What the generate phase added, and whether the tuner chose it (from the tune results)."""
    lines = []
    for row in rows:
        if not row["variant"]:
            lines.append(f"{row['op']}: no generated variant ({row['stop_reason']}; run {row['run_id']})")
            continue
        mine = [r for r in results if r.op == row["op"]]
        tried = [v for r in mine for v in (getattr(r, "variants", None) or []) if v["variant"] == row["variant"]]
        chosen = [r for r in mine if r.variant == row["variant"] and r.library_action in ("added", "replaced")]
        if chosen:
            how = f"chosen for {len(chosen)} bucket(s): `from kernelagent.kernels import {row['op']}` uses it on {sku}"
        elif tried:
            how = (f"tuned for {len(tried)} bucket(s) ({sum(1 for v in tried if v['verified'])} verified), not chosen "
                   "(not faster than what the library has by enough)")
        else:
            how = "not tuned"
        lines.append(f"{row['op']}: generated variant {row['variant']} ({row['path']}): {how}")
    return lines
