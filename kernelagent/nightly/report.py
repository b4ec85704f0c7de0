"""The nightly's outputs: ``results.json`` (machines), ``report.html`` (people), ``summary.md`` (a PR comment).

``report.html`` is one self-contained file: inline CSS, inline SVG charts (``plots``), no
script, no network. Charts: speedup vs PyTorch per item, % of roofline (spec-sheet peaks of
the entry's SKU), the latency/energy trade-off per op (stored evidence → tonight), and the
history of the last runs from the SQLite store.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import plots
from .history import History

TEMPLATES = Path(__file__).resolve().parent / "templates"
HISTORY_RUNS = 60
HISTORY_SERIES = 10


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
                             trim_blocks=True, lstrip_blocks=True)
    missing = lambda v: v is None or isinstance(v, jinja2.Undefined)  # noqa: E731
    env.filters["num"] = lambda v, unit="": "—" if missing(v) else plots.fmt(float(v)) + unit
    env.filters["pct"] = lambda v: "—" if missing(v) else f"{(float(v) - 1) * 100:+.1f}%"
    env.filters["bucket"] = lambda b: "" if not b else ",".join(f"{k}={v}" for k, v in b.items())
    env.filters["tojson_compact"] = lambda v: json.dumps(v, sort_keys=True)
    return env


def _op_colours(items: list[dict]) -> dict[str, str]:
    ops = sorted({i["op"] for i in items})
    return {op: plots.PALETTE[k % len(plots.PALETTE)] for k, op in enumerate(ops)}


def build_charts(doc: dict, hist: History | None) -> dict[str, Any]:
    items = doc["items"]
    colours = _op_colours(items)
    measured = [i for i in items if i.get("measurement")]
    no_data = ("no measurements in this run" + (" (CPU mode: pass --measure replay:FILE to gate recorded samples)"
                                                if doc["environment"]["mode"] == "cpu" else ""))
    speed = plots.bar_chart(
        "speedup", "Speedup vs PyTorch (median latency of the op's reference / the kernel's)",
        [{"label": i["name"], "value": i["measurement"].get("speedup_vs_pytorch"), "colour": colours[i["op"]],
          "tip": f"{i['name']}: PyTorch {plots.fmt(i['measurement'].get('pytorch_latency_us') or 0)} µs, kernel "
                 f"{plots.fmt(i['measurement']['latency_median_us'])} µs"} for i in measured],
        reference=1.0, unit="×", caption="dashed line: as fast as PyTorch", empty=no_data)
    roof = plots.bar_chart(
        "roofline", "% of roofline (attainable time at the SKU's spec-sheet peak FLOP/s and bandwidth / measured)",
        [{"label": i["name"], "value": i["measurement"].get("roofline_pct"), "colour": colours[i["op"]],
          "tip": f"{i['name']}: {plots.fmt(i['measurement'].get('flops') or 0)} FLOP, "
                 f"{plots.fmt(i['measurement'].get('bytes') or 0)} B"} for i in measured],
        reference=100.0, unit="%", caption="dashed line: the roofline (spec-sheet figures, not measured peaks)",
        empty=no_data if not measured else "no FLOP/byte counts or SKU spec for the measured items")
    tradeoffs = []
    for op in sorted({i["op"] for i in measured}):
        pts = []
        for k, i in enumerate([i for i in measured if i["op"] == op]):
            m, ev = i["measurement"], i.get("evidence") or {}
            new = (m["latency_median_us"], m["energy_median_uj"]) if m.get("energy_median_uj") else None
            stored = ((ev["latency_us"], ev["energy_uj"]) if ev.get("latency_us") and ev.get("energy_uj") else None)
            pts.append({"label": i["name"], "new": new, "stored": stored,
                        "colour": plots.PALETTE[k % len(plots.PALETTE)]})
        tradeoffs.append(plots.tradeoff_chart(f"tradeoff-{op}", op, pts))
    # The latency/energy front each entry was tuned on (stored by `kernelagent tune`), chosen ringed.
    fronts = []
    for i in items:
        front = (i.get("evidence") or {}).get("pareto_front") or []
        if front:
            fronts.append(plots.pareto_chart(f"front-{len(fronts)}", f"{i['name']}: the front it was tuned on",
                                             [{**p, "label": json.dumps(p.get("config"), sort_keys=True)}
                                              for p in front], empty="no latency/energy pairs stored"))
    runs = hist.runs(HISTORY_RUNS) if hist is not None else []
    gated = [i["name"] for i in items if ((i.get("measurement") or {}).get("latency") or {}).get("ratio")]
    series = hist.series(gated[:HISTORY_SERIES], [r["id"] for r in runs]) if hist is not None else {}
    min_effect = doc["gate_policy"]["latency"]["min_effect"]
    return {"speedup": speed, "roofline": roof, "tradeoffs": tradeoffs, "fronts": fronts,
            "history_status": plots.history_status_chart(runs),
            "history_latency": plots.history_ratio_chart(runs, series, min_effect), "runs": runs}


def _clean(v: Any) -> Any:
    """JSON without NaN/inf (strict parsers reject them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_reports(doc: dict, out: Path, hist: History | None) -> dict[str, Path]:
    """Write results.json, summary.md and report.html into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    env = _env()
    charts = build_charts(doc, hist)
    paths = {"results": out / "results.json", "summary": out / "summary.md", "report": out / "report.html"}
    doc.setdefault("files", {k: str(p) for k, p in paths.items()})
    paths["results"].write_text(json.dumps(_clean(doc), indent=1, sort_keys=False, default=str) + "\n")
    ctx = {"doc": doc, "charts": charts, "env": doc["environment"], "summary": doc["summary"]}
    paths["summary"].write_text(env.get_template("summary.md.j2").render(**ctx))
    paths["report"].write_text(env.get_template("report.html.j2").render(**ctx))
    return paths
