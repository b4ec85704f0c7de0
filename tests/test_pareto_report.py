"""The latency/energy front, visible: `kernelagent tune --json` carries it with the chosen point
marked, `--report FILE.html` plots it (chosen ringed, measured vs predicted), and the model
backend predicts the SM-clock trade-off with `--system clocks` on a CPU machine, never touching
NVML. One tune run (model backend, ~1 min in the interpreter) is shared; the rest renders
fronts built by hand."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
from inprocess_cli import cli

from kernelagent.nightly import plots
from kernelagent.tuner.report import render
from kernelagent.tuner.results import visible_front

BOOST_H100 = 1980


@pytest.fixture(scope="module")
def clock_tune(tmp_path_factory):
    """`tune --measure model --system clocks --policy energy --json --report` for softmax on h100,
    with the NVML bindings made unimportable: the model backend must not need them."""
    tmp = tmp_path_factory.mktemp("pareto")
    report = tmp / "fronts.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "pynvml", None)   # `import pynvml` raises ImportError
        mp.setenv("TRITON_INTERPRET", "1")
        mp.delenv("KERNELAGENT_LIBRARY", raising=False)
        code, out, err = cli("tune", "--sku", "h100", "--op", "softmax", "--dtype", "bf16", "--trials", "14",
                             "--max-cases", "1", "--measure", "model", "--system", "clocks", "--policy", "energy",
                             "--seed", "1", "--examples", "2", "--no-write", "--json", "--report", report,
                             "--storage", f"sqlite:///{tmp / 'studies.db'}")
    return {"code": code, "out": out, "err": err, "report": report}


def test_model_clock_tune_returns_a_predicted_front_with_the_choice_marked(clock_tune):
    assert clock_tune["code"] == 0, clock_tune["err"][-3000:]
    assert "nothing is set on any GPU" in clock_tune["err"] and "PREDICTED" in clock_tune["err"]
    (res,) = json.loads(clock_tune["out"])
    front = res["pareto_front"]
    assert res["measured"] is False and res["system_config"]["sm_clock_mhz"] <= BOOST_H100
    assert len(front) >= 2, front
    for p in front:
        assert p["measured"] is False and p["backend"] == "model"
        assert set(p) >= {"config", "system_config", "latency_us", "energy_uj", "energy_uncertainty_uj", "chosen",
                          "on_front", "variant"}
        assert "sm_clock_mhz" in p["system_config"] and "sm_clock_mhz" not in p["config"]
    chosen = [p for p in front if p["chosen"]]
    assert len(chosen) == 1 and chosen[0]["config"] == res["best_config"]
    assert chosen[0]["system_config"] == res["system_config"] and chosen[0]["latency_us"] == res["latency_us"]
    # A front: faster points cost more energy. The trade-off here is the SM clock: the memory-bound
    # op saves energy at a lower clock for a little time, and the energy policy takes that.
    lat, en = [p["latency_us"] for p in front], [p["energy_uj"] for p in front]
    assert lat == sorted(lat) and all(a > b for a, b in zip(en, en[1:]))
    assert len({p["system_config"]["sm_clock_mhz"] for p in front}) >= 2
    assert res["system_config"]["sm_clock_mhz"] < BOOST_H100
    assert chosen[0]["energy_uj"] < en[0] and chosen[0]["latency_us"] <= 1.05 * lat[0]


def test_the_report_plots_the_front_with_the_choice_and_a_measured_predicted_legend(clock_tune):
    html = clock_tune["report"].read_text()
    assert "<svg" in html and 'class="mark chosen"' in html
    assert html.count('class="mark point predicted"') == len(json.loads(clock_tune["out"])[0]["pareto_front"])
    assert 'class="mark point measured"' not in html           # nothing here was measured …
    assert "legend-measured" in html and "legend-predicted" in html   # … but the legend says how each looks
    assert "latency per call" in html and "energy per call" in html and "sm_clock_mhz" in html


def _pt(lat, en, *, u=None, measured=True, chosen=False, on_front=True, clock=None):
    return {"variant": "kernel", "config": {"BLOCK": 64}, "system_config": {"sm_clock_mhz": clock} if clock else None,
            "latency_us": lat, "energy_uj": en, "energy_uncertainty_uj": u, "measured": measured,
            "backend": "gpu" if measured else "model", "chosen": chosen, "on_front": on_front, "trial": 0}


def _res(front, *, policy="energy", backend="gpu", measured=True, verified=True):
    return {"op": "softmax", "sku": "h100-sxm", "dtype": "bf16", "bucket": {"cols": 4096}, "backend": backend,
            "measured": measured, "policy": policy, "trials_used": 4, "verified": verified, "latency_us": 10.0,
            "pareto_front": front, "shortfall": None, "note": ""}


def _svgs(html):
    return re.findall(r"<svg .*?</svg>", html, flags=re.S)


def test_one_point_no_energy_and_nothing_tuned_all_render():
    one = render([_res([_pt(10.0, 500.0, u=12.0, chosen=True)])])
    (svg,) = _svgs(one)
    assert 'class="mark chosen"' in svg and 'class="mark point measured"' in svg and 'class="uncertainty"' in svg
    # the latency policy on a GPU meters no energy: no front, and the page says why
    no_energy = render([_res([], policy="latency")])
    assert not _svgs(no_energy) and "latency policy does not meter energy" in no_energy
    # the model backend without energy figures for any config
    model_none = render([_res([], backend="model", measured=False)])
    assert not _svgs(model_none) and "no configuration of this bucket has both" in model_none
    assert "predicted" in model_none
    assert "Nothing was tuned" in render([])


def test_measured_and_predicted_points_and_a_choice_off_the_front():
    front = [_pt(10.0, 900.0, u=20.0, measured=False), _pt(11.0, 700.0, measured=False, clock=1500),
             _pt(10.5, 950.0, measured=False, chosen=True, on_front=False)]
    chart = plots.pareto_chart("c", "t", front, empty="none")
    classes = [e.attrs.get("class") for e in chart.elements]
    assert classes.count("mark point predicted") == 3 and classes.count("mark chosen") == 1
    off = next(e for e in chart.elements if e.attrs.get("class") == "mark point predicted" and "not on" in e.tip)
    assert off.attrs["stroke"] == plots.PALETTE[7]
    mixed = plots.pareto_chart("m", "t", [_pt(1.0, 2.0), _pt(2.0, 1.0, measured=False)], empty="none")
    assert "mixed" in mixed.caption and mixed.marks == 3      # two points and the front line
    same = plots.pareto_chart("s", "t", [_pt(5.0, 5.0), _pt(5.0, 5.0)], empty="none")  # a zero range
    assert same.marks >= 2 and all(math_ok(e) for e in same.elements)
    empty = plots.pareto_chart("e", "t", [_pt(None, None)], empty="nothing to plot")
    assert empty.empty == "nothing to plot"


def math_ok(e) -> bool:
    import math

    return all(math.isfinite(v) for v in e.attrs.values() if isinstance(v, float))


def test_visible_front_marks_the_chosen_point_and_adds_it_when_off_the_front():
    pts = [{"config": {"B": 1, "sm_clock_mhz": 1980}, "latency_s": 1e-5, "energy_j": 2e-3,
            "energy_uncertainty_j": 1e-4, "trial": 0, "variant": "kernel"},
           {"config": {"B": 1, "sm_clock_mhz": 1380}, "latency_s": 1.02e-5, "energy_j": 1.5e-3,
            "energy_uncertainty_j": None, "trial": 1, "variant": "kernel"},
           {"config": {"B": 2, "sm_clock_mhz": 1980}, "latency_s": 2e-5, "energy_j": 3e-3, "trial": 2,
            "variant": "kernel"}]                                     # dominated
    chosen = {"variant": "kernel", "config": {"B": 1}, "system_config": {"sm_clock_mhz": 1380},
              "latency_us": 10.2, "energy_uj": 1500.0}
    front = visible_front(pts, chosen, measured=True, backend="gpu")
    assert [p["system_config"] for p in front] == [{"sm_clock_mhz": 1980}, {"sm_clock_mhz": 1380}]
    assert [p["chosen"] for p in front] == [False, True] and front[0]["energy_uncertainty_uj"] == pytest.approx(100)
    assert front[0]["latency_us"] == pytest.approx(10.0) and front[0]["config"] == {"B": 1}
    # a winner that is not on the front (what ranked ahead of it failed re-verification) is added
    off = visible_front(pts, {"variant": "kernel", "config": {"B": 2}, "system_config": {"sm_clock_mhz": 1980},
                              "latency_us": 20.0, "energy_uj": 3000.0}, measured=True, backend="gpu")
    assert len(off) == 3 and [p["on_front"] for p in off if p["chosen"]] == [False]
    # no energy anywhere (the latency policy on a GPU): no front, and no chosen point to place
    bare = [{**p, "energy_j": None} for p in pts]
    assert visible_front(bare, {**chosen, "energy_uj": None}, measured=True, backend="gpu") == []


def test_report_does_not_combine_with_replay_or_module(tmp_path):
    code, _, err = cli("tune", "--replay", tmp_path / "x.json", "--report", tmp_path / "r.html")
    assert code == 2 and "--report" in err


def test_report_written_from_json_rows_matches_the_tune_result_shape(tmp_path):
    from kernelagent.tuner.report import write_report
    from kernelagent.tuner.tune import TuneResult

    res = TuneResult(op="softmax", sku="h100-sxm", dtype="bf16", bucket={"cols": 4096}, backend="model",
                     measured=False, policy="balanced", sampler="tpe", trials_used=3, study="s",
                     best_config={"BLOCK": 64}, latency_us=10.0, energy_uj=500.0, verified=True,
                     pareto_front=[_pt(10.0, 500.0, measured=False, chosen=True)])
    path = write_report([res], tmp_path / "deep" / "r.html")
    html = path.read_text()
    assert path.is_file() and 'class="mark chosen"' in html and "predicted" in html
    assert not os.path.exists(str(path) + ".tmp")


def test_a_library_entry_keeps_a_small_front_and_the_nightly_report_plots_it():
    from kernelagent.nightly.report import build_charts
    from kernelagent.tuner.record import FRONT_POINTS, stored_front

    front = [{"variant": "kernel", "config": {"BLOCK_N": 2 ** (i % 6 + 6)}, "system_config": None,
              "latency_us": 10.0 + i, "energy_uj": 500.0 - 5 * i, "energy_uncertainty_uj": 3.0, "measured": True,
              "chosen": i == 7, "on_front": True, "trial": i} for i in range(40)]
    kept = stored_front(front)
    assert len(kept) == FRONT_POINTS and sum(p["chosen"] for p in kept) == 1 and kept[0]["latency_us"] == 10.0
    assert "trial" not in kept[0] and kept[-1]["latency_us"] == 49.0
    doc = {"items": [{"name": "softmax bf16 cols=4096", "op": "softmax", "measurement": None,
                      "evidence": {"pareto_front": kept}},
                     {"name": "rms_norm bf16 cols=4096", "op": "rms_norm", "measurement": None, "evidence": {}}],
           "environment": {"mode": "cpu"}, "gate_policy": {"latency": {"min_effect": 0.05}}}
    charts = build_charts(doc, None)
    (chart,) = charts["fronts"]
    assert "softmax" in chart.title and not chart.empty
