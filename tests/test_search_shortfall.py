"""Sampling stays inside the feasible set, and a search that cannot spend its budget says so.

Real spaces are mostly infeasible: a Kernel Tuner recording can list 10^7 raw configs and hold a
few thousand, a Triton space loses most of its product to its constraints. The search must draw
from the feasible configs (the recorded ones, the enumerated ones, or constraint-checked draws),
and when it measures nothing, or fewer configs than asked while feasible ones remain, the
result, the text, the JSON and the exit code (1) say so. Dead workers on an RDB storage are found
by Optuna's heartbeat and their trial is retried.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import optuna
import pytest

from kernelagent.tuner.replay import Recording, ReplayBackend, load
from kernelagent.tuner.search import SearchSpace, run_search

SPARSE_VALUES = {f"p{i}": list(range(1, 13)) for i in range(6)}  # 12^6 = 2,985,984 raw configs


def sparse_recording(path: Path, recorded: int = 60, seed: int = 0) -> Path:
    """A recording of ``recorded`` configs out of a ~3M-config product; latency is a bowl."""
    rng = random.Random(seed)
    configs: set[tuple] = set()
    while len(configs) < recorded:
        configs.add(tuple(rng.choice(v) for v in SPARSE_VALUES.values()))
    rec = Recording(op="toy", sku="test", dtype="fp32", bucket="n=1", device="Test GPU", params=SPARSE_VALUES)
    for c in sorted(configs):
        rec.add(dict(zip(SPARSE_VALUES, c)), 1e-6 * (1 + sum((x - 7) ** 2 for x in c)))
    return rec.save(path)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, TRITON_INTERPRET="1"))


# -- sampling inside the feasible set --------------------------------------------------------


def test_sparse_recorded_space_spends_the_whole_budget(tmp_path):
    space = load(sparse_recording(tmp_path / "sparse.json.gz"))
    assert len(space.entries) == 60 and space.search_space().size() == 12 ** 6
    backend = ReplayBackend(space)
    res = run_search(space.search_space(), backend.objective, budget=30, study_name="s", storage=":memory:", seed=0)
    assert res.sampler == "tpe+local" and res.shortfall is None
    assert res.trials_used == backend.calls == len({json.dumps(c) for c in backend.measured}) == 30
    assert all(space.key(c) in space.entries for c in backend.measured)
    latencies = sorted(m.latency_s for m in space.feasible())
    assert res.best_latency_s <= latencies[len(latencies) // 4]  # the best quarter: it searched, not guessed


def test_sparse_recorded_space_exhaustive_measures_each_recorded_config_once(tmp_path):
    space = load(sparse_recording(tmp_path / "sparse.json.gz"))
    backend = ReplayBackend(space)
    res = run_search(space.search_space(), backend.objective, budget=100, study_name="s", storage=":memory:", seed=3)
    assert res.sampler == "exhaustive" and res.shortfall is None
    assert res.trials_used == backend.calls == 60  # every recorded config once, and no more
    assert res.best_config == space.optimum().config
    assert res.optuna_trials == 60  # drawn from the recorded set: no trial spent on the ~3M others


def test_brute_force_exhaustive_spends_one_trial_per_dead_prefix():
    values = {"a": list(range(6)), "b": list(range(6)), "c": list(range(6))}
    keep = {(a, b, c) for a in range(6) for b in range(6) for c in range(6) if (a * 7 + b * 3 + c) % 11 == 0}
    space = SearchSpace.from_values(values, lambda cfg: None if tuple(cfg.values()) in keep else "not kept")
    calls, storage = [], optuna.storages.InMemoryStorage()
    res = run_search(space, lambda cfg: calls.append(cfg) or (1e-6 * (1 + sum(cfg.values())), None),
                     budget=len(keep), study_name="b", storage=storage, seed=0)
    assert res.sampler == "exhaustive" and res.shortfall is None
    assert sorted(tuple(c.values()) for c in calls) == sorted(keep)
    # BruteForceSampler's tree: a trial ends at the first prefix (the full config included) no kept
    # config has, one free trial per such prefix, each once; it ends when the last kept one is measured.
    live = {k[:n] for k in keep for n in (1, 2)}
    others = [t for t in optuna.load_study(study_name="b", storage=storage).trials if not t.user_attrs["ka.measured"]]
    prefixes = [tuple(t.user_attrs["ka.config"].values()) for t in others]
    assert len(prefixes) == len(set(prefixes)) == res.optuna_trials - len(keep) > 0
    assert all(p not in live | keep and p[:-1] in live | {()} for p in prefixes)


def test_constraint_only_space_too_large_to_enumerate_is_sampled_within_the_constraint():
    values = {f"q{i}": list(range(10)) for i in range(8)}  # 10^8 raw; 1 in 1000 passes

    def pairs_equal(c):
        return None if c["q0"] == c["q1"] and c["q2"] == c["q3"] and c["q4"] == c["q5"] else "pairs differ"

    space = SearchSpace.from_values(values, pairs_equal)
    assert space.feasible_configs() is None  # not enumerable: the search must draw within the constraint
    calls = []

    def measure(c):
        calls.append(dict(c))
        return 1e-6 * (1 + sum(c.values())), None

    res = run_search(space, measure, budget=12, study_name="c", storage=":memory:", seed=0)
    assert res.shortfall is None and res.trials_used == len(calls) == 12
    assert all(pairs_equal(c) is None for c in calls)


# -- shortfalls --------------------------------------------------------------------------------


def needle_space() -> tuple[SearchSpace, list[dict]]:
    """10^8 raw configs of which two pass the constraint (and no list says which)."""
    needles = [{f"q{i}": 7 for i in range(8)}, {f"q{i}": 2 for i in range(8)}]
    return SearchSpace.from_values({f"q{i}": list(range(10)) for i in range(8)},
                                   lambda c: None if c in needles else "not a needle"), needles


def test_a_search_that_measures_nothing_says_so():
    space, _ = needle_space()
    calls = []
    res = run_search(space, lambda c: calls.append(c) or (1e-6, None), budget=5, study_name="n", storage=":memory:",
                     seed=0)
    assert calls == [] and res.trials_used == 0 and res.best_config is None
    assert res.shortfall.startswith("measured nothing") and "random draws" in res.shortfall
    assert res.to_json()["shortfall"] == res.shortfall


def test_fewer_than_asked_while_feasible_remain_is_a_shortfall():
    space, needles = needle_space()
    res = run_search(space, lambda c: (1e-6, None), budget=5, study_name="w", storage=":memory:", seed=0,
                     warm_start=needles[:1])  # the other needle remains, and random draws cannot find it
    assert res.trials_used == 1 and res.best_config == needles[0]
    assert res.shortfall.startswith("measured 1 of the 5 configs asked") and "random draws" in res.shortfall


def test_empty_space_and_a_space_smaller_than_the_budget():
    none = SearchSpace.from_values({"a": [1, 2, 3], "b": [1, 2]}, lambda c: "never")
    res = run_search(none, lambda c: (1e-6, None), budget=4, study_name="e", storage=":memory:")
    assert res.trials_used == 0 and res.shortfall.startswith("measured nothing: no config")
    small = SearchSpace.from_values({"a": [1, 2, 3], "b": [1, 2]}, lambda c: None if c["a"] != 2 else "no")
    res = run_search(small, lambda c: (1e-6 * c["a"] * c["b"], None), budget=50, study_name="s", storage=":memory:")
    assert res.trials_used == 4 and res.shortfall is None  # every feasible config measured: nothing is missing


# -- what the commands print and exit with ------------------------------------------------------


def test_replay_cli_on_a_sparse_recording_measures_what_was_asked(tmp_path):
    f = sparse_recording(tmp_path / "sparse.json.gz")
    p = cli("tune", "--replay", str(f), "--trials", "20", "--seed", "1", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["ok"] and out["shortfall"] is None and out["trials_used"] == out["trials_asked"] == 20


def test_replay_cli_that_measures_nothing_exits_1_in_text_and_json(tmp_path):
    f = Recording(op="toy", sku="test", dtype="fp32", bucket="n=1", device="Test GPU",
                  params={"a": [1, 2, 3]}).save(tmp_path / "empty.json")
    p = cli("tune", "--replay", str(f), "--trials", "5", "--json")
    assert p.returncode == 1, (p.stdout, p.stderr[-2000:])
    out = json.loads(p.stdout)
    assert out["ok"] is False and out["trials_used"] == 0 and out["shortfall"].startswith("measured nothing")
    p = cli("tune", "--replay", str(f), "--trials", "5")
    assert p.returncode == 1 and "SHORTFALL: measured nothing" in p.stdout and "best found  none" in p.stdout


def test_tune_with_a_shortfall_exits_1_and_says_so(monkeypatch):
    from typer.testing import CliRunner

    from kernelagent.cli import app
    from kernelagent.tuner import tune as tune_mod

    why = "kernel: measured 3 of the 24 configs asked: the sampler proposed nothing new"
    short = tune_mod.TuneResult(op="softmax", sku="h100", dtype="bf16", bucket={"cols": 4096}, backend="model",
                                measured=False, policy="latency", sampler="tpe+local", trials_used=3, study="s",
                                best_config={"BLOCK_N": 4096}, latency_us=1.0, verified=True, shortfall=why)
    monkeypatch.setattr(tune_mod, "tune", lambda **kw: [short])
    runner = CliRunner()
    text = runner.invoke(app, ["tune", "--sku", "h100", "--op", "softmax", "--measure", "model"])
    assert text.exit_code == 1 and "SHORTFALL" in text.output and "measured 3 of the 24" in text.output
    js = runner.invoke(app, ["tune", "--sku", "h100", "--op", "softmax", "--measure", "model", "--json"])
    assert js.exit_code == 1 and json.loads(js.stdout)[0]["shortfall"] == short.shortfall
    monkeypatch.setattr(tune_mod, "tune", lambda **kw: [tune_mod.TuneResult(**{**short.to_json(), "shortfall": None})])
    assert runner.invoke(app, ["tune", "--sku", "h100", "--op", "softmax", "--measure", "model"]).exit_code == 0


# -- resume and dead workers --------------------------------------------------------------------


def test_an_interrupted_measurement_is_retried_on_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    space = SearchSpace.from_values({"a": list(range(6)), "b": list(range(6))})
    calls = []

    def crashing(c):
        if len(calls) == 3:
            calls.append(("interrupted", dict(c)))
            raise KeyboardInterrupt
        calls.append(dict(c))
        return 1e-6 * (1 + c["a"] + c["b"]), None

    with pytest.raises(KeyboardInterrupt):
        run_search(space, crashing, budget=8, study_name="r", storage=url, seed=0, sampler="random")
    interrupted = calls[-1][1]
    res = run_search(space, crashing, budget=8, study_name="r", storage=url, seed=0, sampler="random")
    assert calls[4] == interrupted  # measured first when the search resumed
    assert res.trials_used == 8 and res.shortfall is None


DEAD_WORKER = textwrap.dedent("""
    import json, socket, sys, time
    socket.gethostname = lambda: "another-host"  # so only the heartbeat can tell it died
    from kernelagent.tuner.search import SearchSpace, run_search

    url, name, marker = sys.argv[1:4]
    space = SearchSpace.from_values({"a": list(range(8)), "b": list(range(8))})
    done = []

    def measure(c):
        done.append(c)
        if len(done) == 3:
            with open(marker, "w") as f:
                f.write(json.dumps(c))
            time.sleep(600)  # killed here, mid-measurement
        return 1e-6 * (1 + c["a"] + c["b"]), None

    run_search(space, measure, budget=10, study_name=name, storage=url, seed=0, sampler="random", heartbeat_s=1)
""")


def test_a_dead_workers_trial_is_failed_by_its_heartbeat_and_retried(tmp_path):
    import optuna
    from optuna.trial import TrialState

    url, name = f"sqlite:///{tmp_path / 'studies.db'}", f"dead/{uuid.uuid4().hex[:8]}"
    marker, script = tmp_path / "dying.json", tmp_path / "worker.py"
    script.write_text(DEAD_WORKER)
    proc = subprocess.Popen([sys.executable, str(script), url, name, str(marker)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "the worker never reached its third measurement"
        time.sleep(0.1)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    dying = json.loads(marker.read_text())

    space = SearchSpace.from_values({"a": list(range(8)), "b": list(range(8))})
    calls = []
    t0 = time.time()
    res = run_search(space, lambda c: calls.append(dict(c)) or (1e-6 * (1 + c["a"] + c["b"]), None), budget=10,
                     study_name=name, storage=url, seed=1, sampler="random", heartbeat_s=1, poll_s=0.05)
    assert time.time() - t0 < 60
    assert res.trials_used == 10 and res.shortfall is None
    assert dying in calls and len(calls) == 8  # 2 measured by the dead worker, its third retried here
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["ka.config"] == dying
    # Optuna's retry callback enqueued it again, naming the failed trial; this worker measured it.
    assert any(t.system_attrs.get("failed_trial") == failed.number and t.user_attrs.get("ka.measured")
               for t in trials)
