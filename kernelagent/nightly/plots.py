"""Charts for the nightly report (and ``kernelagent tune --report``), as SVG element lists rendered by jinja2.

No plotting dependency: each chart is computed here as positioned elements (a tag, its
attributes, optional text and tooltip), and ``templates/report.html.j2`` writes them out as
inline SVG, so the report is one self-contained file. Data marks carry ``class="mark …"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

STATUS_COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "regression": "#ef6c00", "improvement": "#1565c0"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
FONT = "font-family:system-ui,sans-serif"


@dataclass
class Element:
    tag: str
    attrs: dict[str, Any]
    text: str | None = None
    tip: str | None = None          # rendered as a <title> child: the browser's tooltip


@dataclass
class Chart:
    id: str
    title: str
    width: int
    height: int
    elements: list[Element] = field(default_factory=list)
    caption: str = ""
    empty: str | None = None        # set: no data; the template shows this sentence instead

    @property
    def marks(self) -> int:
        return sum(1 for e in self.elements if "mark" in str(e.attrs.get("class", "")).split())


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(hi) * 0.5 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n, 1)
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= step * m:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(v, 12))
        v += step
    return ticks


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-2:
        return f"{v:.2g}"
    return f"{v:.3g}"


class _Scale:
    def __init__(self, d0: float, d1: float, r0: float, r1: float):
        self.d0, self.d1, self.r0, self.r1 = d0, d1, r0, r1

    def __call__(self, v: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return round(self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0), 2)


def _text(x, y, s, size=11, anchor="start", cls="label", **kw) -> Element:
    return Element("text", {"x": x, "y": y, "font-size": size, "text-anchor": anchor, "class": cls,
                            "style": FONT, **kw}, s)


def _axis_y(els: list, ticks: Sequence[float], ys: _Scale, x0: float, x1: float, unit: str = "",
            label=fmt) -> None:
    for t in ticks:
        y = ys(t)
        els.append(Element("line", {"x1": x0, "x2": x1, "y1": y, "y2": y, "stroke": "#e0e0e0", "class": "grid"}))
        els.append(_text(x0 - 6, y + 4, label(t) + unit, size=10, anchor="end", cls="tick"))


def _axis_x(els: list, ticks: Sequence[float], xs: _Scale, y0: float, y1: float, unit: str = "",
            label=fmt) -> None:
    for t in ticks:
        x = xs(t)
        els.append(Element("line", {"x1": x, "x2": x, "y1": y0, "y2": y1, "stroke": "#e0e0e0", "class": "grid"}))
        els.append(_text(x, y1 + 14, label(t) + unit, size=10, anchor="middle", cls="tick"))


def covering_ticks(lo: float, hi: float, n: int = 4) -> tuple[list[float], Any]:
    """``nice_ticks`` extended until they cover [lo, hi], and a label function with as many
    decimals as the step needs (a narrow range of large values keeps its digits apart)."""
    ticks = nice_ticks(lo, hi, n)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    while ticks[-1] < hi and len(ticks) < 60:
        ticks.append(round(ticks[-1] + step, 12))
    while ticks[0] > lo and len(ticks) < 60:
        ticks.insert(0, round(ticks[0] - step, 12))
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return ticks, (lambda v: f"{v:.{decimals}f}" if abs(v) < 1e6 else fmt(v))


def bar_chart(chart_id: str, title: str, bars: Sequence[dict], *, reference: float | None, unit: str,
              caption: str, empty: str) -> Chart:
    """Horizontal bars; each bar: {label, value, colour, tip}. ``reference`` draws a dashed line."""
    bars = [b for b in bars if b.get("value") is not None and math.isfinite(b["value"])]
    row, left, right, top = 22, 230, 60, 34
    height = top + max(len(bars), 1) * row + 30
    chart = Chart(chart_id, title, 760, height, caption=caption)
    if not bars:
        chart.empty, chart.height = empty, 60
        return chart
    vmax = max([b["value"] for b in bars] + [reference or 0.0]) * 1.08
    ticks = nice_ticks(0.0, vmax)
    xs = _Scale(0.0, ticks[-1], left, chart.width - right)
    bottom = top + len(bars) * row
    _axis_x(chart.elements, ticks, xs, top - 4, bottom, unit)
    for i, b in enumerate(bars):
        y = top + i * row
        chart.elements.append(_text(left - 8, y + row * 0.65, b["label"], anchor="end"))
        w = max(xs(b["value"]) - left, 1.0)
        chart.elements.append(Element("rect", {"x": left, "y": y + 3, "width": round(w, 2), "height": row - 6,
                                               "fill": b.get("colour", PALETTE[0]), "class": "mark bar"},
                                      tip=b.get("tip")))
        chart.elements.append(_text(left + w + 4, y + row * 0.65, fmt(b["value"]) + unit, size=10, cls="value"))
    if reference is not None:
        x = xs(reference)
        chart.elements.append(Element("line", {"x1": x, "x2": x, "y1": top - 6, "y2": bottom, "stroke": "#333",
                                               "stroke-dasharray": "4 3", "class": "reference"}))
    return chart


def tradeoff_chart(chart_id: str, op: str, points: Sequence[dict]) -> Chart:
    """Latency (x) against energy (y) for one op's items: stored evidence (hollow) → tonight (filled).

    Each point: {label, stored: (lat, en) | None, new: (lat, en) | None, colour}.
    """
    chart = Chart(chart_id, f"{op}: latency vs energy per call", 370, 300,
                  caption="hollow: stored evidence, filled: tonight; lower-left is better")
    pts = [p for p in points if p.get("new") or p.get("stored")]
    coords = [c for p in pts for c in (p.get("stored"), p.get("new")) if c]
    if not coords:
        chart.empty, chart.height = "no latency/energy pairs for this op", 60
        return chart
    left, right, top, bottom = 58, 14, 26, 250
    xt = nice_ticks(min(c[0] for c in coords) * 0.9, max(c[0] for c in coords) * 1.1, 4)
    yt = nice_ticks(min(c[1] for c in coords) * 0.9, max(c[1] for c in coords) * 1.1, 4)
    xs, ys = _Scale(xt[0], xt[-1], left, chart.width - right), _Scale(yt[0], yt[-1], bottom, top)
    _axis_y(chart.elements, yt, ys, left, chart.width - right)
    _axis_x(chart.elements, xt, xs, top, bottom)
    chart.elements.append(_text((left + chart.width - right) / 2, bottom + 30, "latency (µs)", size=10,
                                anchor="middle", cls="axis-title"))
    chart.elements.append(_text(12, (top + bottom) / 2, "energy (µJ/call)", size=10, anchor="middle",
                                cls="axis-title", transform=f"rotate(-90 12 {(top + bottom) / 2})"))
    for i, p in enumerate(pts):
        colour = p.get("colour") or PALETTE[i % len(PALETTE)]
        s, n = p.get("stored"), p.get("new")
        if s and n:
            chart.elements.append(Element("line", {"x1": xs(s[0]), "y1": ys(s[1]), "x2": xs(n[0]), "y2": ys(n[1]),
                                                   "stroke": colour, "stroke-width": 1.5, "class": "mark link"}))
        if s:
            chart.elements.append(Element("circle", {"cx": xs(s[0]), "cy": ys(s[1]), "r": 5, "fill": "white",
                                                     "stroke": colour, "stroke-width": 2, "class": "mark point stored"},
                                          tip=f"{p['label']} stored: {fmt(s[0])} µs, {fmt(s[1])} µJ"))
        if n:
            chart.elements.append(Element("circle", {"cx": xs(n[0]), "cy": ys(n[1]), "r": 5, "fill": colour,
                                                     "class": "mark point new"},
                                          tip=f"{p['label']} tonight: {fmt(n[0])} µs, {fmt(n[1])} µJ"))
    return chart


def history_status_chart(runs: Sequence[dict]) -> Chart:
    """Stacked bars per run: items ok, regressed, failed."""
    chart = Chart("history-status", "Health over time (items per run)", 760, 250,
                  caption="green: ok · orange: regression · red: failed; newest run on the right")
    if not runs:
        chart.empty, chart.height = "no runs recorded yet", 60
        return chart
    left, right, top, bottom = 50, 16, 20, 200
    vmax = max(r["n_items"] for r in runs) or 1
    yt = nice_ticks(0, vmax, 4)
    ys = _Scale(0, yt[-1], bottom, top)
    _axis_y(chart.elements, yt, ys, left, chart.width - right)
    slot = (chart.width - left - right) / len(runs)
    w = max(min(slot * 0.7, 40), 2)
    for i, r in enumerate(runs):
        x = left + i * slot + (slot - w) / 2
        ok = r["n_items"] - r["n_failed"] - r["n_regressions"]
        base = 0
        for count, key in ((ok, "ok"), (r["n_regressions"], "regression"), (r["n_failed"], "failed")):
            if count <= 0:
                continue
            y_top, y_bot = ys(base + count), ys(base)
            chart.elements.append(Element("rect", {"x": round(x, 2), "y": y_top, "width": round(w, 2),
                                                   "height": round(max(y_bot - y_top, 1), 2),
                                                   "fill": STATUS_COLOURS[key], "class": f"mark bar {key}"},
                                          tip=f"run {r['id']} ({r['started_at']}): {count} {key}"))
            base += count
        if len(runs) <= 16 or i % max(1, len(runs) // 12) == 0:
            chart.elements.append(_text(x + w / 2, bottom + 14, f"#{r['id']}", size=9, anchor="middle", cls="tick"))
            chart.elements.append(_text(x + w / 2, bottom + 26, str(r["started_at"])[5:10], size=9, anchor="middle",
                                        cls="tick"))
    return chart


def history_ratio_chart(runs: Sequence[dict], series: dict[str, list[dict]], min_effect: float) -> Chart:
    """Per item, tonight's median latency / stored median, run after run."""
    chart = Chart("history-latency", "Latency vs stored evidence over time (median ratio)", 760, 280,
                  caption=f"1.0 = as stored; the band is ±{min_effect:.0%} (the gate's minimum effect); "
                          "above the band is slower")
    run_index = {r["id"]: i for i, r in enumerate(runs)}
    lines = {n: [(run_index[p["run_id"]], p["latency_ratio"]) for p in pts
                 if p["latency_ratio"] is not None and p["run_id"] in run_index] for n, pts in series.items()}
    lines = {n: v for n, v in lines.items() if v}
    if not lines:
        chart.empty = "no gated latency measurements in the recorded runs yet (GPU runs, or --measure replay:FILE)"
        chart.height = 60
        return chart
    left, right, top, bottom = 50, 250, 20, 230
    values = [v for pts in lines.values() for _, v in pts]
    yt = nice_ticks(min(values + [1 - min_effect]) * 0.97, max(values + [1 + min_effect]) * 1.03, 5)
    ys = _Scale(yt[0], yt[-1], bottom, top)
    n = max(len(runs) - 1, 1)
    xs = _Scale(0, n, left + 10, chart.width - right - 10)
    _axis_y(chart.elements, yt, ys, left, chart.width - right)
    band_top, band_bot = ys(1 + min_effect), ys(1 - min_effect)
    chart.elements.append(Element("rect", {"x": left, "y": band_top, "width": chart.width - right - left,
                                           "height": round(band_bot - band_top, 2), "fill": "#e8f5e9",
                                           "class": "band"}))
    chart.elements.append(Element("line", {"x1": left, "x2": chart.width - right, "y1": ys(1.0), "y2": ys(1.0),
                                           "stroke": "#333", "stroke-dasharray": "4 3", "class": "reference"}))
    for k, (name, pts) in enumerate(sorted(lines.items())):
        colour = PALETTE[k % len(PALETTE)]
        if len(pts) > 1:
            chart.elements.append(Element("polyline", {
                "points": " ".join(f"{xs(i)},{ys(v)}" for i, v in pts), "fill": "none", "stroke": colour,
                "stroke-width": 2, "class": "mark line"}))
        for i, v in pts:
            chart.elements.append(Element("circle", {"cx": xs(i), "cy": ys(v), "r": 3.5, "fill": colour,
                                                     "class": "mark point"},
                                          tip=f"{name} run #{runs[i]['id']}: ×{v:.3f}"))
        y_leg = top + 14 * k
        chart.elements.append(Element("rect", {"x": chart.width - right + 10, "y": y_leg, "width": 10, "height": 10,
                                               "fill": colour, "class": "legend"}))
        chart.elements.append(_text(chart.width - right + 24, y_leg + 9, name[:42], size=10))
    return chart


CHOSEN_COLOUR = "#c62828"


def _unit(values: Sequence[float], units: Sequence[tuple[str, float]]) -> tuple[str, float]:
    """The largest unit (name, factor from the base unit) that keeps the largest value ≥ 1."""
    top = max((abs(v) for v in values), default=0.0)
    for name, factor in reversed(units):
        if top >= factor:
            return name, factor
    return units[0]


def pareto_chart(chart_id: str, title: str, points: Sequence[dict], *, empty: str, caption: str = "") -> Chart:
    """Latency (x) against energy per call (y) for one tuned bucket: the front, each point's
    energy uncertainty, measured (filled) vs predicted (hollow, dashed) and the chosen point
    (a red ring). Each point: {latency_us, energy_uj, energy_uncertainty_uj, measured, chosen,
    on_front, label}; points without both figures are left out."""
    pts = [p for p in points if p.get("latency_us") is not None and p.get("energy_uj") is not None
           and math.isfinite(p["latency_us"]) and math.isfinite(p["energy_uj"])]
    kinds = {bool(p.get("measured")) for p in pts}
    what = "measured" if kinds == {True} else "predicted by the model backend" if kinds == {False} else "mixed"
    chart = Chart(chart_id, title, 560, 330,
                  caption=caption or f"{len(pts)} point(s), {what}; lower-left is better; bars: ≈95 % energy "
                                     "uncertainty where stated")
    if not pts:
        chart.empty, chart.height = empty, 60
        return chart
    t_unit, t_f = _unit([p["latency_us"] for p in pts], (("µs", 1.0), ("ms", 1e3), ("s", 1e6)))
    e_unit, e_f = _unit([p["energy_uj"] for p in pts], (("µJ", 1.0), ("mJ", 1e3), ("J", 1e6)))
    xy = []
    for p in pts:
        u = (p.get("energy_uncertainty_uj") or 0.0) / e_f
        xy.append((p["latency_us"] / t_f, p["energy_uj"] / e_f, u if math.isfinite(u) else 0.0, p))
    left, right, top, bottom = 64, 150, 22, 280
    xs_ = [x for x, _, _, _ in xy]
    ys_ = [v for _, y, u, _ in xy for v in (y - u, y + u)]
    xt, x_label = covering_ticks(min(xs_) - 0.05 * (max(xs_) - min(xs_)), max(xs_) + 0.05 * (max(xs_) - min(xs_)), 4)
    yt, y_label = covering_ticks(min(ys_) - 0.05 * (max(ys_) - min(ys_)), max(ys_) + 0.05 * (max(ys_) - min(ys_)), 4)
    xs, ys = _Scale(xt[0], xt[-1], left, chart.width - right), _Scale(yt[0], yt[-1], bottom, top)
    els = chart.elements
    _axis_y(els, yt, ys, left, chart.width - right, label=y_label)
    _axis_x(els, xt, xs, top, bottom, label=x_label)
    els.append(_text((left + chart.width - right) / 2, bottom + 32, f"latency per call ({t_unit})", size=10,
                     anchor="middle", cls="axis-title"))
    els.append(_text(14, (top + bottom) / 2, f"energy per call ({e_unit})", size=10, anchor="middle",
                     cls="axis-title", transform=f"rotate(-90 14 {(top + bottom) / 2})"))
    front = sorted((x, y) for x, y, _, p in xy if p.get("on_front", True))
    if len(front) > 1:
        els.append(Element("polyline", {"points": " ".join(f"{xs(x)},{ys(y)}" for x, y in front), "fill": "none",
                                        "stroke": PALETTE[0], "stroke-width": 1.5, "class": "mark front"}))
    for x, y, u, p in xy:
        if u > 0:
            els.append(Element("line", {"x1": xs(x), "x2": xs(x), "y1": ys(y - u), "y2": ys(y + u), "stroke": "#555",
                                        "stroke-width": 1, "class": "uncertainty"}))
    for x, y, u, p in xy:
        kind = "measured" if p.get("measured") else "predicted"
        colour = PALETTE[0] if p.get("on_front", True) else PALETTE[7]
        tip = (f"{p.get('label', '')}: {fmt(x)} {t_unit}, {fmt(y)}" + (f" ± {fmt(u)}" if u else "")
               + f" {e_unit} per call ({kind}" + (", chosen" if p.get("chosen") else "")
               + ("" if p.get("on_front", True) else ", not on the front") + ")")
        attrs = {"cx": xs(x), "cy": ys(y), "r": 5, "class": f"mark point {kind}"}
        if kind == "measured":
            attrs.update(fill=colour)
        else:
            attrs.update({"fill": "white", "stroke": colour, "stroke-width": 2, "stroke-dasharray": "2 1.5"})
        els.append(Element("circle", attrs, tip=tip))
        if p.get("chosen"):
            els.append(Element("circle", {"cx": xs(x), "cy": ys(y), "r": 9.5, "fill": "none", "stroke": CHOSEN_COLOUR,
                                          "stroke-width": 2.5, "class": "mark chosen"}, tip=tip))
            els.append(_text(xs(x) + 12, ys(y) - 8, "chosen", size=10, cls="chosen-label", fill=CHOSEN_COLOUR))
    lx, ly = chart.width - right + 16, top + 6
    legend = [("measured", {"fill": PALETTE[0]}),
              ("predicted", {"fill": "white", "stroke": PALETTE[0], "stroke-width": 2, "stroke-dasharray": "2 1.5"}),
              ("chosen", {"fill": "none", "stroke": CHOSEN_COLOUR, "stroke-width": 2.5, "r": 7}),
              ("not on the front", {"fill": PALETTE[7]})]
    for k, (name, style) in enumerate(legend):
        y = ly + 18 * k
        els.append(Element("circle", {"cx": lx, "cy": y, "r": 5, **style, "class": f"legend legend-{name.split()[0]}"}))
        els.append(_text(lx + 12, y + 4, name, size=10, cls="legend-label"))
    y = ly + 18 * len(legend)
    els.append(Element("line", {"x1": lx - 6, "x2": lx + 6, "y1": y, "y2": y, "stroke": PALETTE[0],
                                "stroke-width": 1.5, "class": "legend legend-front"}))
    els.append(_text(lx + 12, y + 4, "front", size=10, cls="legend-label"))
    y += 18
    els.append(Element("line", {"x1": lx, "x2": lx, "y1": y - 6, "y2": y + 6, "stroke": "#555",
                                "class": "legend legend-uncertainty"}))
    els.append(_text(lx + 12, y + 4, "± energy uncertainty", size=10, cls="legend-label"))
    return chart
