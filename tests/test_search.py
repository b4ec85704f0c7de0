"""The search: exhaustive and model-based, resume, warm start, duplicates, energy policies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kernelagent.errors import BadInput
from kernelagent.tuner.replay import ReplayBackend, load
from kernelagent.tuner.search import (OrderedParam, SearchSpace, pareto_front, run_search, select,
                                      study_name_for)

# The recorded spaces in ../shared beside the checkout (as CI has it), or where the variable points.
DATA = Path(os.environ.get("KERNELAGENT_AUTOTUNING_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "autotuning"))


def bowl_space(constraint=True) -> SearchSpace:
    def c(cfg):
        return "BLOCK*warps too large" if cfg["BLOCK"] * cfg["warps"] > 8192 else None
    return SearchSpace.from_values({"BLOCK": [64, 128, 256, 512, 1024, 2048], "warps": [1, 2, 4, 8, 16],
                                    "stages": [1, 2, 3, 4], "dtype_tag": ["bf16"]}, c if constraint else None)


class Counting:
    """A deterministic measure: a bowl with its minimum at (512, 4, 3); stages=4 fails."""

    def __init__(self, energy=False):
        self.calls: list[str] = []
        self.energy = energy

    def __call__(self, cfg):
        self.calls.append(json.dumps(cfg, sort_keys=True))
        if cfg["stages"] == 4:
            return None, None, "out of shared memory"
        lat = 1e-5 * (1 + abs(cfg["BLOCK"].bit_length() - 10) + abs(cfg["warps"].bit_length() - 3) + abs(cfg["stages"] - 3))
        return lat, (1e-3 * lat / 1e-5 if self.energy else None)


def test_param_coding():
    p = OrderedParam("BLOCK", (64, 128, 256))
    assert (p.coding, p.code_range(), p.decode(7), p.encode(256)) == ("log2", (6, 8), 128, 8)
    q = OrderedParam("bx", (16, 32, 48))
    assert (q.coding, q.code_range(), q.decode(2)) == ("idx", (0, 2), 48)
    with pytest.raises(BadInput):
        q.encode(64)


def test_exhaustive_finds_optimum_of_small_space():
    space = bowl_space()
    feasible = [c for c in space.enumerate() if space.check(c) is None]
    m = Counting()
    res = run_search(space, m, budget=len(feasible) + 5, study_name="t", storage=":memory:", seed=1)
    assert res.sampler == "exhaustive"
    assert res.best_config == {"BLOCK": 512, "warps": 4, "stages": 3, "dtype_tag": "bf16"}
    assert len(m.calls) == len(set(m.calls)) == len(feasible) == res.trials_used  # infeasible by constraint: free
    assert all(json.loads(c)["BLOCK"] * json.loads(c)["warps"] <= 8192 for c in m.calls)


@pytest.mark.skipif(not (DATA / "convolution_A6000.json.gz").exists(), reason="recorded spaces not found")
def test_beats_random_search_on_a_convolution_space():
    import statistics

    space = load(DATA / "convolution_A6000.json.gz")
    opt = space.optimum().latency_s
    ratio: dict[str, list[float]] = {"auto": [], "random": []}
    for sampler in ratio:
        for seed in (0, 1, 2):
            b = ReplayBackend(space)
            res = run_search(space.search_space(), b.objective, budget=100, study_name="t", storage=":memory:",
                             seed=seed, sampler=sampler)
            assert b.calls == res.trials_used == 100
            ratio[sampler].append(res.best_latency_s / opt)
    # Within 5 % of the optimum for the median seed, and better than random search on every seed.
    assert statistics.median(ratio["auto"]) <= 1.05 < statistics.median(ratio["random"])
    assert all(a < r for a, r in zip(ratio["auto"], ratio["random"]))


def test_resume_continues_to_budget_without_remeasuring(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    space, m = bowl_space(), Counting()
    name = study_name_for("softmax", "h100", "bf16", "cols=4096", space)
    first = run_search(space, m, budget=6, study_name=name, storage=url, seed=0, sampler="tpe+local")
    assert first.trials_used == 6 and len(m.calls) == 6
    second = run_search(space, m, budget=15, study_name=name, storage=url, seed=0, sampler="tpe+local")
    assert second.trials_used == 15 and len(m.calls) == 15 == len(set(m.calls))
    again = run_search(space, m, budget=15, study_name=name, storage=url, seed=0, sampler="tpe+local")
    assert len(m.calls) == 15 and again.best_config == second.best_config


def test_resume_after_crash_mid_measurement(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    space, m = bowl_space(), Counting()

    def crashing(cfg):
        if len(m.calls) == 4:
            raise KeyboardInterrupt
        return m(cfg)

    with pytest.raises(KeyboardInterrupt):
        run_search(space, crashing, budget=12, study_name="s", storage=url, seed=0)
    assert len(m.calls) == 4
    res = run_search(space, m, budget=12, study_name="s", storage=url, seed=0)
    assert res.trials_used == 12 and len(m.calls) == 12 == len(set(m.calls))


def test_warm_start_is_measured_first():
    space, m = bowl_space(), Counting()
    default = {"BLOCK": 1024, "warps": 8, "stages": 2, "dtype_tag": "bf16"}
    warm = [{"BLOCK": 256, "warps": 2, "stages": 1, "dtype_tag": "bf16"},
            {"BLOCK": 2048, "warps": 8, "stages": 1, "dtype_tag": "bf16"},   # violates the constraint: skipped
            {"BLOCK": 512, "warps": 4, "stages": 2, "dtype_tag": "bf16"}]
    res = run_search(space, m, budget=8, study_name="w", storage=":memory:", seed=0, sampler="tpe+local",
                     default_config=default, warm_start=warm)
    first = [json.loads(c) for c in m.calls[:3]]
    assert first == [default, warm[0], warm[2]]
    assert [p["config"] for p in res.measurements[:3]] == first


def test_duplicate_suggestions_are_not_remeasured():
    # 12 points, a budget of 12: TPE re-suggests measured points long before the end.
    space = SearchSpace.from_values({"a": [1, 2, 3], "b": [1, 2, 4, 8]})
    calls = []

    def measure(c):
        calls.append((c["a"], c["b"]))
        return 1e-6 * (c["a"] + c["b"]), None

    res = run_search(space, measure, budget=12, study_name="d", storage=":memory:", seed=0, sampler="tpe")
    assert len(calls) == len(set(calls)) == 12 == res.trials_used
    assert res.optuna_trials > 12  # duplicates were suggested, answered from the study
    assert res.best_config == {"a": 1, "b": 1}


POINTS = [  # (latency_s, energy_j)
    {"config": {"id": "fast"}, "latency_s": 1.00, "energy_j": 10.0},
    {"config": {"id": "near"}, "latency_s": 1.04, "energy_j": 8.0},
    {"config": {"id": "slow-frugal"}, "latency_s": 1.50, "energy_j": 5.0},
    {"config": {"id": "dominated"}, "latency_s": 1.60, "energy_j": 9.0},
    {"config": {"id": "too-slow"}, "latency_s": 1.06, "energy_j": 7.9},
    {"config": {"id": "failed"}, "latency_s": None, "energy_j": None},
]


def test_energy_policies_on_a_pareto_set():
    assert select(POINTS, "latency")[0]["config"]["id"] == "fast"
    assert select(POINTS, "energy")[0]["config"]["id"] == "near"         # least J within 1.05× best latency
    assert select(POINTS, "balanced")[0]["config"]["id"] == "slow-frugal"  # least latency × energy (7.5)
    assert [p["config"]["id"] for p in pareto_front(POINTS)] == ["fast", "near", "too-slow", "slow-frugal"]
    no_energy = [{**p, "energy_j": None} for p in POINTS]
    best, note = select(no_energy, "energy")
    assert best["config"]["id"] == "fast" and "no energy" in note
    with pytest.raises(BadInput):
        select(POINTS, "cheapest")


def test_search_records_energy_and_policy():
    space, m = bowl_space(), Counting(energy=True)
    res = run_search(space, m, budget=20, study_name="e", storage=":memory:", seed=0, policy="energy")
    assert res.policy == "energy" and res.best_energy_j is not None
    assert res.pareto_front and all(p["energy_j"] is not None for p in res.pareto_front)
    fastest = min(p["latency_s"] for p in res.measurements if p["latency_s"] is not None)
    assert res.best_latency_s <= 1.05 * fastest
    json.dumps(res.to_json())


def test_bad_storage_url_is_bad_input():
    with pytest.raises(BadInput, match="cannot open Optuna storage"):
        run_search(bowl_space(), Counting(), budget=3, study_name="x", storage="nosuchdb://u:secret@h/db")


# -- the space-filling start and the restarts (iterated local search) ---------------------------


def _spread(configs, space) -> float:
    """The smallest distance between two configs, in ordinal positions scaled to [0, 1]."""
    import itertools
    import math

    def pos(c):
        return [p.values.index(c[p.name]) / (len(p.values) - 1) for p in space.free]

    return min(math.dist(pos(a), pos(b)) for a, b in itertools.combinations(configs, 2))


def test_space_filling_design_is_feasible_and_spread():
    import random
    import statistics

    from kernelagent.tuner.space import space_filling_design

    # A sparse recorded-like space: 10 x 10 x 4, feasible only where (a + 2b + c) % 3 == 0.
    space = SearchSpace.from_values({"a": list(range(10)), "b": list(range(10)), "c": [1, 2, 4, 8]},
                                    lambda cfg: None if (cfg["a"] + 2 * cfg["b"] + cfg["c"]) % 3 == 0 else "pruned")
    feasible = space.feasible_configs()
    design = space_filling_design(space, feasible, 10, random.Random(0))
    assert len(design) == 10 and len({space.key(c) for c in design}) == 10
    assert all(space.check(c) is None for c in design)          # feasible only
    assert space_filling_design(space, feasible, 10, random.Random(0)) == design  # seeded
    # Each parameter is stratified: over seeds, the designs cover more distinct values of a and b than
    # 10 random feasible configs do, every design has every value of c, and its points lie further apart.
    rng = random.Random(100)

    def coverage(cs):
        return sum(len({c[n] for c in cs}) for n in ("a", "b"))

    designs = [space_filling_design(space, feasible, 10, random.Random(s)) for s in range(10)]
    randoms = [rng.sample(feasible, 10) for _ in range(10)]
    assert all({c["c"] for c in d} == {1, 2, 4, 8} for d in designs)
    assert sum(map(coverage, designs)) > sum(map(coverage, randoms)) + 15
    assert statistics.median(_spread(d, space) for d in designs) > statistics.median(_spread(r, space) for r in randoms)


def test_small_budget_search_starts_with_the_design():
    import random

    from kernelagent.tuner.search import DESIGN_BUDGET_MAX
    from kernelagent.tuner.space import space_filling_design

    space, m = bowl_space(), Counting()
    feasible = space.feasible_configs()
    res = run_search(space, m, budget=20, study_name="d", storage=":memory:", seed=3)
    assert res.sampler == "tpe+local" and res.trials_used == 20 and 20 <= DESIGN_BUDGET_MAX
    design = space_filling_design(space, feasible, 12, random.Random("design/3"))
    assert [json.loads(c) for c in m.calls[:12]] == design
    big = Counting()
    run_search(space, big, budget=80, study_name="d", storage=":memory:", seed=3)
    assert [json.loads(c) for c in big.calls[:12]] != design  # larger budgets start with TPE instead


class _Plateau:
    """A flat landscape (every config 1 ms) except one fast config far from the start."""

    FAST = {"BLOCK": 64, "warps": 16, "stages": 1, "dtype_tag": "bf16"}

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, cfg):
        self.calls.append(dict(cfg))
        return (1e-4 if cfg == self.FAST else 1e-3), None


def _capture_samplers(monkeypatch) -> list:
    from kernelagent.tuner import search

    made = []

    class Capturing(search.LocalSearchSampler):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(search, "LocalSearchSampler", Capturing)
    return made


def test_a_stall_triggers_a_restart(monkeypatch):
    made = _capture_samplers(monkeypatch)
    space, m = bowl_space(), _Plateau()
    res = run_search(space, m, budget=60, study_name="k", storage=":memory:", seed=0, sampler="tpe+local",
                     stall_fraction=0.1, kick="perturb")
    sampler = made[-1]
    assert res.trials_used == 60 and sampler.stall_n == 6
    assert sampler.kicks, "a flat landscape must stall the local search and restart it"
    keys = [space.key(c) for c in m.calls]
    for at, config in sampler.kicks:
        assert at >= sampler.explore_n                  # restarts belong to the local phase
        assert space.key(config) in keys                # the restart point was measured
        assert space.check(config) is None
    gaps = [b - a for (a, _), (b, _) in zip(sampler.kicks, sampler.kicks[1:])]
    assert all(g >= sampler.stall_n for g in gaps)
    # Without a stall rule there are no restarts.
    made.clear()
    run_search(space, _Plateau(), budget=60, study_name="k", storage=":memory:", seed=0, sampler="tpe+local")
    assert made[-1].stall_n is None and not made[-1].kicks

