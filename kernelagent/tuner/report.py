"""``kernelagent tune --report FILE.html``: the latency/energy front of each tuned bucket, for people.

One self-contained HTML file like the nightly's (inline CSS, inline SVG, no script, no network),
drawn by the same chart module (``kernelagent.nightly.plots``) and the same chart template
(``nightly/templates/_chart.html.j2``). Per op × dtype × bucket: a plot of latency against
joules per call over the front the search found (``TuneResult.pareto_front``), measured points
filled and predicted ones hollow, each with its stated energy uncertainty, the chosen point
ringed; and a table of the same points. A bucket without energy figures (the latency policy on
the gpu backend does not meter energy) says so instead of a plot.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

_PAGE = """{% import "_chart.html.j2" as ch %}
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kernelagent tune — {{ skus }} — latency/energy fronts</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; padding: 0 16px; }
  h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 26px; border-bottom: 1px solid #ddd; }
  .pred { font-size: 11px; color: #8a5a00; background: #fff3d6; border-radius: 4px; padding: 0 4px; }
  .meas { font-size: 11px; color: #1b5e20; background: #e8f5e9; border-radius: 4px; padding: 0 4px; }
  .muted { color: #666; font-size: 12px; } .empty { color: #777; font-style: italic; margin: 6px 0 14px; }
  .warn { color: #b71c1c; font-weight: 600; }
  table { border-collapse: collapse; font-size: 12.5px; width: 100%; }
  th, td { border-bottom: 1px solid #eee; padding: 4px 6px; text-align: left; vertical-align: top; }
  th { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.chosen td { background: #fdecea; font-weight: 600; }
  code { font-size: 12px; } figure { margin: 8px 0 10px; }
</style>
</head>
<body>
<h1>kernelagent tune: latency/energy fronts</h1>
<p class="muted">{{ when }} · SKU {{ skus }} · backend {{ backends }} · policy {{ policies }}</p>
{% if any_predicted %}<p><span class="pred">predicted</span> Points of the <code>model</code> backend are predictions from the spec sheet and a static compile (their clocks and power limits too: nothing was set on a GPU), never measurements.</p>{% endif %}
{% if not sections %}<p class="empty">Nothing was tuned.</p>{% endif %}
{% for s in sections %}
<h2>{{ s.label }}</h2>
<p class="muted">{{ s.status }}{% if s.shortfall %} · <span class="warn">SHORTFALL: {{ s.shortfall }}</span>{% endif %}{% if s.note %} · {{ s.note }}{% endif %}</p>
{{ ch.chart(s.chart) }}
{% if s.rows %}
<table>
  <tr><th></th><th>variant</th><th>config</th><th>system</th><th>latency</th><th>energy per call</th><th>kind</th></tr>
  {% for p in s.rows %}
  <tr class="{{ 'chosen' if p.chosen else '' }}">
    <td>{{ 'chosen' if p.chosen else '' }}{% if not p.on_front %} <span class="muted">(not on the front)</span>{% endif %}</td>
    <td><code>{{ p.variant }}</code></td>
    <td><code>{{ p.config|tojson_compact }}</code></td>
    <td><code>{{ p.system_config|tojson_compact if p.system_config else 'board default' }}</code></td>
    <td class="num">{{ p.latency_us|scaled(LATENCY_UNITS) }}</td>
    <td class="num">{{ p.energy_uj|scaled(ENERGY_UNITS) }}{% if p.energy_uncertainty_uj %} ± {{ p.energy_uncertainty_uj|scaled(ENERGY_UNITS) }}{% endif %}</td>
    <td>{% if p.measured %}<span class="meas">measured</span>{% else %}<span class="pred">predicted</span>{% endif %}</td>
  </tr>
  {% endfor %}
</table>
{% endif %}
{% endfor %}
</body>
</html>
"""


def _env():
    import jinja2

    from ..nightly import plots
    from ..nightly.report import TEMPLATES

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, unit="": "—" if v is None else plots.fmt(float(v)) + unit
    env.filters["tojson_compact"] = lambda v: json.dumps(v, sort_keys=True)
    env.filters["scaled"] = _scaled
    env.globals.update(LATENCY_UNITS=LATENCY_UNITS, ENERGY_UNITS=ENERGY_UNITS)
    return env


LATENCY_UNITS = (("µs", 1.0), ("ms", 1e3), ("s", 1e6))    # from µs
ENERGY_UNITS = (("µJ", 1.0), ("mJ", 1e3), ("J", 1e6))     # from µJ


def _scaled(v, units) -> str:
    """A µs or µJ figure in the unit that keeps it readable (4 significant digits)."""
    if v is None:
        return "—"
    name, factor = units[0]
    for n, f in units:
        if abs(float(v)) >= f:
            name, factor = n, f
    return f"{float(v) / factor:.4g} {name}"


def _get(res: Any, name: str, default=None):
    return res.get(name, default) if isinstance(res, dict) else getattr(res, name, default)


def _label(res: Any) -> str:
    bucket = _get(res, "bucket") or {}
    return f"{_get(res, 'op')} {_get(res, 'dtype')} [{','.join(f'{k}={v}' for k, v in sorted(bucket.items()))}]"


def _empty_reason(res: Any) -> str:
    if not _get(res, "verified") and not _get(res, "trials_used"):
        return "nothing was measured for this bucket, so there is no front"
    if _get(res, "policy") == "latency" and _get(res, "backend") == "gpu":
        return ("no energy figures: the latency policy does not meter energy on the gpu backend "
                "(--policy energy or balanced does)")
    return "no configuration of this bucket has both a latency and an energy figure, so there is no front"


def section(res: Any, index: int) -> dict:
    """One bucket's plot, table rows and status line (``res``: a TuneResult or its JSON)."""
    from ..nightly import plots

    front = list(_get(res, "pareto_front") or [])
    points = []
    for p in front:
        cfg = dict(p.get("config") or {}, **(p.get("system_config") or {}))
        points.append({**p, "label": (f"{p.get('variant')}:" if p.get("variant", "kernel") != "kernel" else "")
                       + json.dumps(cfg, sort_keys=True, separators=(",", ":"))})
    kind = "measured" if _get(res, "measured") else "predicted"
    chart = plots.pareto_chart(f"front-{index}", f"{_label(res)}: latency vs energy per call ({kind})", points,
                               empty=_empty_reason(res))
    lat = _get(res, "latency_us")
    status = (("verified" if _get(res, "verified") else "NOT VERIFIED") + f", {_get(res, 'trials_used')} "
              f"{'predictions' if kind == 'predicted' else 'measurements'}, {_get(res, 'backend')} backend, policy "
              f"{_get(res, 'policy')}" + (f"; chosen {plots.fmt(lat)} µs ({kind})" if lat else ""))
    return {"label": _label(res), "chart": chart, "rows": front, "status": status,
            "shortfall": _get(res, "shortfall"), "note": _get(res, "note") or ""}


def render(results: Sequence[Any]) -> str:
    """The report's HTML for ``results`` (TuneResults or their JSON)."""
    def joined(name: str) -> str:
        return ", ".join(sorted({str(_get(r, name)) for r in results})) or "—"

    ctx = {"sections": [section(r, i) for i, r in enumerate(results)], "skus": joined("sku"),
           "backends": joined("backend"), "policies": joined("policy"),
           "any_predicted": any(not _get(r, "measured") for r in results),
           "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return _env().from_string(_PAGE).render(**ctx)


def write_report(results: Sequence[Any], path: str | Path) -> Path:
    """Write the report atomically (a temporary file renamed over ``path``)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(results), encoding="utf-8")
    os.replace(tmp, path)
    return path
