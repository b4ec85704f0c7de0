"""Two worker processes share one study through an RDB storage URL.

Runs against a SQLite file always, and against PostgreSQL when ``KERNELAGENT_TEST_POSTGRES_URL``
is set (the CI script starts a server on loopback and sets it; driver: psycopg2-binary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

WORKER = textwrap.dedent("""
    import json, sys, time
    from kernelagent.tuner.search import SearchSpace, run_search

    url, name, log, sampler, budget, seed = sys.argv[1:7]
    space = SearchSpace.from_values({"BLOCK": [32, 64, 128, 256, 512, 1024, 2048, 4096],
                                     "warps": [1, 2, 4, 8, 16], "stages": [1, 2, 3]},
                                    lambda c: "too big" if c["BLOCK"] * c["warps"] > 16384 else None)

    def measure(cfg):
        with open(log, "a") as f:  # one line per measurement, appended atomically
            f.write(json.dumps(cfg, sort_keys=True) + "\\n")
        time.sleep(0.01)  # long enough for the two workers to interleave
        lat = 1e-5 * (1 + abs(cfg["BLOCK"].bit_length() - 9) + abs(cfg["warps"].bit_length() - 3)
                      + abs(cfg["stages"] - 2))
        return lat, None

    warm = [{"BLOCK": 64, "warps": 1, "stages": 1}, {"BLOCK": 4096, "warps": 4, "stages": 3}]
    res = run_search(space, measure, budget=int(budget), study_name=name, storage=url, seed=int(seed),
                     sampler=sampler, warm_start=warm, poll_s=0.02)
    print(json.dumps({"best": res.best_config, "used": res.trials_used}))
""")
OPTIMUM = {"BLOCK": 256, "warps": 4, "stages": 2}


def backends():
    out = [pytest.param("sqlite", id="sqlite")]
    out.append(pytest.param("postgres", id="postgres", marks=pytest.mark.skipif(
        not os.environ.get("KERNELAGENT_TEST_POSTGRES_URL"),
        reason="KERNELAGENT_TEST_POSTGRES_URL is not set (the CI script starts PostgreSQL on loopback and sets it)")))
    return out


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("sampler, budget", [("exhaustive", 0), ("tpe+local", 30)])
def test_two_workers_share_one_study(tmp_path, backend, sampler, budget):
    import optuna

    from kernelagent.tuner.search import normalize_storage_url

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'studies.db'}"
    else:
        pytest.importorskip("psycopg2", reason="psycopg2-binary is the PostgreSQL driver")
        url = normalize_storage_url(os.environ["KERNELAGENT_TEST_POSTGRES_URL"])
    feasible = sum(1 for b in [32, 64, 128, 256, 512, 1024, 2048, 4096] for w in [1, 2, 4, 8, 16] if b * w <= 16384) * 3
    budget = budget or feasible  # exhaustive: together the workers measure every feasible config once
    name = f"test/{sampler}/{uuid.uuid4().hex[:8]}"
    log = tmp_path / "measured.log"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, str(script), url, name, str(log), sampler, str(budget), str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in (1, 2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, errtext) in zip(procs, outs):
        assert p.returncode == 0, errtext[-3000:]
    measured = log.read_text().splitlines()
    assert len(measured) == len(set(measured)), "a configuration was measured twice"
    assert len(measured) == budget

    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.trials if t.user_attrs.get("ka.measured")]
    assert sorted(json.dumps(t.user_attrs["ka.config"], sort_keys=True) for t in done) == sorted(measured)
    assert {t.user_attrs["ka.worker"].rsplit(":", 1)[1] for t in done} == {str(p.pid) for p in procs}  # both worked
    best = min((t for t in done if t.user_attrs["ka.feasible"]), key=lambda t: t.user_attrs["ka.latency_s"])
    assert best.user_attrs["ka.config"] == OPTIMUM
    for out, _ in outs:  # each worker reports a result (the other may still have been measuring)
        assert json.loads(out.strip().splitlines()[-1])["used"] <= budget
    if backend == "postgres":
        optuna.delete_study(study_name=name, storage=url)
