"""The headline commands over every registered op, and the main job's output used through the
public API. An op whose spec breaks `tune --ops all` or `nightly` fails here, not for a user."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kernelagent.kernels import op_names
from kernelagent.kernels._configs import case_bucket
from kernelagent.kernels.registry import get_opspec


def run(*args: str, env: dict | None = None, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ))


@pytest.mark.parametrize("op", op_names())
def test_every_bench_case_of_every_op_has_a_bucket(op):
    """What `tune` and `nightly` compute first, for every op: no real tensors (meta device)."""
    spec = get_opspec(op)
    assert spec.bench_cases, f"{op} has no benchmark cases to tune"
    for params in spec.bench_cases:
        for dtype in spec.dtypes:
            bucket = case_bucket(op, params, dtype)
            assert bucket and all(v is not None for v in bucket.values()), (op, params, bucket)


def test_tune_ops_all_generate_covers_every_op(tmp_path):
    """`tune --ops all --generate`: the agent runs for every op (scripted loopback endpoint: a
    verified softmax, no code for the others), the softmax kernel becomes a generated variant,
    and the tuner's pass over every variant of every op includes it."""
    from pathlib import Path

    from fake_openai import FakeOpenAI, Reply, python_reply

    softmax = (Path(__file__).resolve().parents[1] / "kernels" / "softmax" / "kernel.py").read_text()

    def script(body, n):
        prompt = body["messages"][-1]["content"]
        return python_reply(softmax) if "the op `softmax`" in prompt else Reply("I cannot write this one.")

    lib = tmp_path / "lib"
    env = dict(os.environ, OPENAI_API_KEY="sk-test", KERNELAGENT_AGENT_DB=str(tmp_path / "agent.db"))
    with FakeOpenAI(script) as srv:
        p = run("tune", "--sku", "h100", "--ops", "all", "--dtype", "fp32", "--trials", "1", "--max-cases", "1",
                "--examples", "1", "--seed", "5", "--library", str(lib), "--storage",
                f"sqlite:///{tmp_path / 's.db'}", "--json", "--generate", "--base-url", srv.base_url,
                "--model", "fake", "--gen-parallel", "1", "--gen-max-iters", "1", "--gen-out", str(tmp_path / "gen"),
                env=env)
        asked = {m for r in srv.chat_requests() for m in op_names() if f"the op `{m}`" in r["messages"][-1]["content"]}
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    results, generated = out["results"], {g["op"]: g for g in out["generated"]}
    assert asked == set(op_names()) and set(generated) == set(op_names())
    assert generated["softmax"]["status"] == "accepted" and generated["softmax"]["variant"].startswith("gen_")
    assert all(g["status"] == "exhausted" and g["variant"] is None for op, g in generated.items() if op != "softmax")
    assert generated["softmax"]["race"]["measured"] is False and generated["softmax"]["race"]["latency_us"] > 0
    assert sorted({r["op"] for r in results}) == sorted(op_names())
    assert all(r["verified"] and r["measured"] is False for r in results), \
        [(r["op"], r["verify_detail"][:200]) for r in results if not r["verified"]]
    (row,) = [r for r in results if r["op"] == "softmax"]
    tried = {v["variant"]: v for v in row["variants"]}
    assert tried[generated["softmax"]["variant"]]["verified"], tried
    assert (lib / "softmax" / "variants" / (generated["softmax"]["variant"] + ".py")).is_file()
    # Without a terminal, progress still shows as plain lines on stderr.
    assert "[tune " in p.stderr and "trials" in p.stderr and "added variant gen_" in p.stderr


def test_tune_generate_needs_an_endpoint(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    p = run("tune", "--sku", "h100", "--op", "softmax", "--generate", env=env)
    assert p.returncode == 2 and "--generate needs an LLM endpoint" in p.stderr and "Traceback" not in p.stderr


def test_nightly_over_every_op(tmp_path):
    out = tmp_path / "out"
    p = run("nightly", "--cpu", "--examples", "1", "--seed", "3", "--history", str(tmp_path / "h.db"),
            "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    checked = {i["op"] for i in res["items"]}
    assert checked == set(op_names()), f"nightly skipped {set(op_names()) - checked}"
    assert res["status"] == "healthy", res["failures"]


def test_the_main_jobs_output_is_what_the_library_uses(tmp_path):
    """`tune` without --library writes the user library; `kernelagent.kernels` reads it with no
    variable set (a fresh process, the default folder under XDG_CACHE_HOME); the nightly checks
    it and labels its numbers predicted."""
    env = {k: v for k, v in os.environ.items() if k != "KERNELAGENT_LIBRARY"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    t = run("tune", "--sku", "h100", "--op", "softmax", "--dtype", "fp32", "--trials", "2", "--max-cases", "1",
            "--examples", "2", "--seed", "4", "--min-predicted-gain", "0", "--storage",
            f"sqlite:///{tmp_path / 's.db'}", env=env)
    assert t.returncode == 0, t.stderr[-3000:]
    library = tmp_path / "cache" / "kernelagent" / "library"
    # The table says where it wrote, that the numbers are predictions, and what to run next.
    assert "PREDICTED" in t.stdout and str(library) in t.stdout and "next:" in t.stdout
    path = library / "softmax" / "configs" / "h100-sxm.json"
    (entry,) = json.loads(path.read_text())["entries"]
    probe = (
        "import json, torch\n"
        "from kernelagent.kernels import softmax, _dispatch\n"
        "x = torch.randn(8, 4096)\n"
        "d = _dispatch.decide('softmax', (x,), {})\n"
        "y = softmax(x)\n"
        "print(json.dumps({'source': d.resolution.source, 'config': d.resolution.config, 'measured': d.resolution.measured,"
        " 'ok': bool(torch.allclose(y, torch.softmax(x, -1), atol=1e-6))}))\n")
    probe_env = dict(env, KERNELAGENT_INTERPRET="1", KERNELAGENT_DEVICE_NAME="NVIDIA H100 80GB HBM3",
                     KERNELAGENT_DEVICE_CC="9.0")
    q = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=probe_env, timeout=300)
    assert q.returncode == 0, q.stderr[-3000:]
    used = json.loads(q.stdout.strip().splitlines()[-1])
    assert used["source"] == str(path) and used["config"] == entry["config"]
    assert used["measured"] is False and used["ok"]
    out = tmp_path / "night"
    n = run("nightly", "--cpu", "--ops", "softmax", "--no-default", "--examples", "1", "--seed", "3",
            "--history", str(tmp_path / "h.db"), "--out", str(out), env=env)
    assert n.returncode == 0, n.stderr[-3000:]
    assert "pred." in (out / "report.html").read_text() and "predicted" in (out / "summary.md").read_text()
    assert "NVML energy counter" not in (out / "report.html").read_text()  # nothing was metered tonight
