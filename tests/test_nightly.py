"""`kernelagent nightly` end to end on the CPU lane: shipped library, tampered library, replayed
measurements, history, exit codes. Each verification costs ~15 s in the interpreter, so the
runs are few, limited to softmax and one example, and the tampered-library run is shared."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import inprocess_cli

from kernelagent.kernels.registry import kernel_path

HAS_CUDA = False
try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except Exception:
    pass

SHA = hashlib.sha256(kernel_path("softmax").read_bytes()).hexdigest()
CONFIG = {"BLOCK_N": 4096, "num_warps": 8}


def cli(*args, env_unset=("KERNELAGENT_LIBRARY",)):
    """`kernelagent …` in this process, without the test session's library variable."""
    return inprocess_cli.cli(*args, env_unset=env_unset)


def samples(seed, median, cv, n):
    return [round(float(v), 4) for v in np.random.default_rng(seed).lognormal(np.log(median), cv, n)]


def entry(dtype, cols, latency, energy, *, sha=SHA, seed=0, config=CONFIG):
    return {"dtype": dtype, "bucket": {"cols": cols}, "config": dict(config), "kernel_sha256": sha,
            "evidence": {"latency_us": latency, "energy_uj": energy, "backend": "gpu", "measured": True,
                         "trials": 48, "speedup_vs_default": 1.2,
                         "latency_samples_us": samples(seed, latency, 0.06, 30),
                         "energy_samples_uj": samples(seed + 1, energy, 0.04, 5)},
            "provenance": {"triton": "3.5.0", "torch": "2.10.0", "cuda": "12.8", "device": "NVIDIA H100 80GB HBM3",
                           "date": "2026-01-01T00:00:00+00:00", "method": "optuna-tpe"}}


def write_config(lib: Path, sku: str, entries) -> Path:
    path = lib / "softmax" / "configs" / f"{sku}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "op": "softmax", "sku": sku, "entries": entries}, indent=1))
    return path


def recording(measurements) -> dict:
    return {"format": "kernelagent-nightly-samples", "version": 1, "device": "NVIDIA H100 80GB HBM3",
            "sku": "h100-sxm", "measurements": measurements}


def measured(dtype, cols, latency, energy, seed, cv=0.06):
    return {"op": "softmax", "sku": "h100-sxm", "dtype": dtype, "bucket": {"cols": cols}, "config": CONFIG,
            "case": {"batch": 0, "rows": 4096, "cols": cols}, "latency_us": samples(seed, latency, cv, 30),
            "energy_uj": samples(seed + 1, energy, 0.04, 5), "pytorch_latency_us": samples(seed + 2, 31.0, 0.03, 30),
            "flops": 5.0 * 4096 * cols, "bytes": 2.0 * 4096 * cols * 2}


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    """One run over a library with good, regressed, stale and malformed entries and a corrupt file."""
    tmp = tmp_path_factory.mktemp("nightly")
    lib = tmp / "lib"
    good = write_config(lib, "h100-sxm", [
        entry("bf16", 4096, 20.0, 900.0, seed=1),                       # noisy, unchanged tonight
        entry("fp16", 4096, 21.0, 950.0, seed=2),                       # 25 % slower tonight
        entry("fp32", 4096, 35.0, 1500.0, seed=3, sha="0" * 64),        # tuned for another kernel.py
        {**entry("bf16", 8192, 40.0, 1800.0, seed=4),                   # broken evidence
         "evidence": {**entry("bf16", 8192, 40.0, 1800.0)["evidence"], "latency_us": -1}},
    ])
    corrupt = lib / "softmax" / "configs" / "a100-sxm.json"
    corrupt.write_text('{"schema": 1, "op": "softmax", "sku": "a100-sxm", "entries": [')
    rec = tmp / "samples.json"
    rec.write_text(json.dumps(recording([measured("bf16", 4096, 20.0, 900.0, seed=11, cv=0.12),
                                         measured("fp16", 4096, 21.0 * 1.25, 950.0 * 1.1, seed=12)])))
    before = {p: p.read_bytes() for p in (good, corrupt)}
    out, hist = tmp / "out", tmp / "history.db"
    proc = subprocess.run([sys.executable, "-m", "kernelagent.cli", "nightly", "--library", str(lib), "--ops", "softmax",
                           "--no-default", "--examples", "1", "--seed", "7", "--measure", f"replay:{rec}",
                           "--history", str(hist), "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERNELAGENT_LIBRARY": ""})
    results = json.loads((out / "results.json").read_text())
    return {"proc": proc, "out": out, "history": hist, "results": results, "before": before, "tmp": tmp}


def by_name(results, name):
    return next(i for i in results["items"] if i["name"] == name)


def test_tampered_library_exits_1_naming_each_broken_entry(tampered):
    proc, res = tampered["proc"], tampered["results"]
    assert proc.returncode == 1, proc.stderr
    failed = {f["name"]: f for f in res["failures"]}
    assert set(failed) == {"softmax/a100-sxm.json", "softmax/h100-sxm fp32 cols=4096",
                           "softmax/h100-sxm bf16 cols=8192"}
    assert failed["softmax/a100-sxm.json"]["reason"] == "malformed"
    assert failed["softmax/h100-sxm fp32 cols=4096"]["reason"] == "stale"
    assert "kernel.py" in failed["softmax/h100-sxm fp32 cols=4096"]["detail"]
    assert "latency_us" in failed["softmax/h100-sxm bf16 cols=8192"]["detail"]
    for name in failed:
        assert f"FAILED {name}" in proc.stderr
    # the rest were still checked
    ok = by_name(res, "softmax/h100-sxm bf16 cols=4096")
    assert ok["status"] == "ok" and ok["verification"]["verified"] is True
    # and nothing was written to the library
    for path, data in tampered["before"].items():
        assert path.read_bytes() == data


def test_replayed_regression_is_flagged_and_noisy_unchanged_is_not(tampered):
    res, proc = tampered["results"], tampered["proc"]
    slow = by_name(res, "softmax/h100-sxm fp16 cols=4096")
    assert slow["status"] == "regression"
    assert slow["measurement"]["latency"]["verdict"] == "regression"
    assert slow["measurement"]["latency"]["test"] == "mann-whitney"
    assert slow["verification"]["verified"] and slow["verification"]["shared"]  # one verify per config
    assert [r["name"] for r in res["regressions"]] == ["softmax/h100-sxm fp16 cols=4096"]
    assert "REGRESSION softmax/h100-sxm fp16 cols=4096" in proc.stderr
    noisy = by_name(res, "softmax/h100-sxm bf16 cols=4096")
    assert noisy["measurement"]["latency"]["verdict"] == "unchanged"
    assert noisy["measurement"]["speedup_vs_pytorch"] > 1
    assert noisy["measurement"]["roofline_pct"] > 0


def test_results_json_has_the_environment_block(tampered):
    env = tampered["results"]["environment"]
    for key in ("device", "driver", "clocks", "versions", "mode", "measure"):
        assert key in env
    for key in ("torch", "triton", "python", "kernelagent"):
        assert env["versions"][key]
    assert env["mode"] == ("gpu" if HAS_CUDA else "cpu")
    assert tampered["results"]["status"] == "failed" and tampered["results"]["exit_code"] == 1
    summary = (tampered["out"] / "summary.md").read_text()
    assert "softmax/h100-sxm fp32 cols=4096" in summary and "Regressions" in summary


def test_history_accumulates_across_runs(tampered, tmp_path):
    # A second, cheap run (a stale entry only: nothing to verify) into the same history.
    lib = tmp_path / "lib"
    write_config(lib, "h100-sxm", [entry("bf16", 4096, 20.0, 900.0, sha="1" * 64)])
    out = tmp_path / "out"
    code, _, err = cli("nightly", "--library", lib, "--ops", "softmax", "--no-default", "--cpu",
                       "--history", tampered["history"], "--out", out)
    assert code == 1, err
    with sqlite3.connect(tampered["history"]) as db:
        runs = db.execute("SELECT id, status, n_items, n_failed FROM runs ORDER BY id").fetchall()
        names = db.execute("SELECT run_id, name, status FROM results WHERE name = ?",
                           ("softmax/h100-sxm bf16 cols=4096",)).fetchall()
    assert [r[1] for r in runs] == ["failed", "failed"] and runs[0][2] == 5 and runs[1][2] == 1
    assert [(n[0], n[2]) for n in names] == [(runs[0][0], "ok"), (runs[1][0], "failed")]
    second = json.loads((out / "results.json").read_text())
    assert second["run_id"] == runs[1][0]
    html = (out / "report.html").read_text()
    assert html.count('class="mark bar ok"') == 1 and html.count('class="mark bar failed"') == 2


def test_shipped_library_cpu_mode_passes(tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("nightly", "--cpu", "--ops", "softmax", "--examples", "1", "--seed", "3",
                            "--history", tmp_path / "h.db", "--out", out, "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["status"] == "healthy" and res["failures"] == [] and res["regressions"] == []
    default = by_name(res, "softmax/default")
    assert default["verification"]["verified"] is True and default["config"] is None
    entries = [i for i in res["items"] if i["kind"] == "entry"]
    assert all(i["verification"]["verified"] for i in entries)
    if not entries:  # nothing tuned for softmax yet: the report says only the default was checked
        assert res["ops_without_entries"] == ["softmax"]
        assert "No tuned library entries yet for softmax" in (out / "summary.md").read_text()
    assert res["summary"]["verified"] == len(res["items"])
    assert (out / "report.html").is_file() and "healthy" in (out / "summary.md").read_text()


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU answer; this machine has a GPU")
def test_gpu_mode_without_a_gpu_is_an_environment_problem(tmp_path):
    code, _, err = cli("nightly", "--gpu", "--ops", "softmax", "--history", tmp_path / "h.db", "--out", tmp_path)
    assert code == 3 and "GPU" in err
    assert not (tmp_path / "results.json").exists()


def test_bad_input_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    for args, needle in ((["--ops", "no_such_op"], "unknown op"),
                         (["--measure", f"replay:{bad}"], "kernelagent-nightly-samples"),
                         (["--measure", "bogus"], "--measure")):
        code, _, err = cli("nightly", "--cpu", "--no-default", "--library", tmp_path / "empty",
                           "--history", tmp_path / "h.db", "--out", tmp_path / "out", *args)
        assert code == 2, (args, err)
        assert needle in err, (args, err)


def test_retune_needs_the_gpu_mode(tmp_path):
    code, _, err = cli("nightly", "--cpu", "--no-default", "--retune", "--library", tmp_path / "empty",
                       "--history", tmp_path / "h.db", "--out", tmp_path / "out")
    assert code == 3 and "--retune" in err and "GPU" in err


def test_retune_writes_only_a_verified_and_faster_result():
    from types import SimpleNamespace

    from kernelagent.nightly.run import NightlyOptions, retune_item
    from kernelagent.tuner.tune import TuneResult

    item = SimpleNamespace(op="softmax", sku="h100-sxm", dtype="bf16", name="softmax/h100-sxm bf16 cols=4096",
                           evidence={"case": {"batch": 0, "rows": 4096, "cols": 4096}})
    samples = {"latency_us": [20.0, 21.0, 19.0], "case": None}
    calls = []

    def fake_tune(new_latency_us, verified=True):
        def tune(**kw):
            calls.append(kw)
            assert kw["cases"] == {"softmax": [item.evidence["case"]]} and kw["measure"] == "gpu"
            res = TuneResult(op="softmax", sku="h100-sxm", dtype="bf16", bucket={"cols": 4096}, backend="gpu",
                             measured=True, policy="latency", sampler="tpe+local", trials_used=8, study="s",
                             best_config={"BLOCK_N": 2048, "num_warps": 8}, latency_us=new_latency_us,
                             verified=verified)
            if verified and kw["accept"](res):  # what tune() does before writing
                res.library_action = "replaced"
            return [res]
        return tune

    opts = NightlyOptions()
    faster = retune_item(item, samples, opts, 1, lambda m: None, tune_fn=fake_tune(15.0))
    assert faster["status"] == "updated" and faster["stored_config_today_us"] == 20.0
    same = retune_item(item, samples, opts, 1, lambda m: None, tune_fn=fake_tune(19.5))  # within the 5 % effect
    assert same["status"] == "not-updated"
    unverified = retune_item(item, samples, opts, 1, lambda m: None, tune_fn=fake_tune(5.0, verified=False))
    assert unverified["status"] == "not-updated"
    no_case = retune_item(SimpleNamespace(**{**vars(item), "evidence": {}}), {"latency_us": [1.0]}, opts, 1,
                          lambda m: None, tune_fn=fake_tune(0.5))
    assert no_case["status"] == "skipped" and len(calls) == 3


def test_a_retune_shortfall_fails_the_night_and_is_named_in_the_report(tmp_path):
    """What `kernelagent tune` does with a search that fell short (exit 1), the nightly does too."""
    from types import SimpleNamespace

    from kernelagent.nightly.environment import environment
    from kernelagent.nightly.report import write_reports
    from kernelagent.nightly.run import NightlyOptions, _results, retune_item
    from kernelagent.tuner.tune import TuneResult

    why = "measured 3 of the 32 configs asked: the sampler stopped proposing new configs; 40 feasible configs were left unmeasured"

    def short_tune(**kw):
        res = TuneResult(op="softmax", sku="h100-sxm", dtype="bf16", bucket={"cols": 4096}, backend="gpu",
                         measured=True, policy="latency", sampler="tpe+local", trials_used=3, study="s",
                         best_config={"BLOCK_N": 2048, "num_warps": 8}, latency_us=15.0, verified=True,
                         shortfall=why)
        if kw["accept"](res):
            res.library_action = "replaced"
        return [res]

    item = SimpleNamespace(op="softmax", sku="h100-sxm", dtype="bf16", name="softmax/h100-sxm bf16 cols=4096",
                           evidence={"case": {"batch": 0, "rows": 4096, "cols": 4096}})
    opts = NightlyOptions(out=tmp_path / "out")
    retune = retune_item(item, {"latency_us": [20.0, 21.0, 19.0]}, opts, 1, lambda m: None, tune_fn=short_tune)
    assert retune["status"] == "updated" and retune["shortfall"] == why

    def row(name, status, retune):
        return {"name": name, "op": "softmax", "kind": "entry", "file": "softmax/configs/h100-sxm.json",
                "sku": "h100-sxm", "dtype": "bf16", "bucket": {"cols": 4096}, "config": CONFIG, "evidence": None,
                "status": status, "retune": retune, "verification": {"verified": True}, "measurement": None,
                "failure": {"reason": "regression", "detail": "latency: 25 % slower"} if status == "regression" else None}

    env = environment("cpu", "none", None)
    doc = _results([row(item.name, "regression", retune)], env, opts, "2026-01-01T00:00:00+00:00", 1.0, 1, ["softmax"])
    assert doc["exit_code"] == 1 and doc["summary"]["retune_shortfalls"] == 1
    (f,) = doc["failures"]
    assert f["name"] == item.name and f["reason"] == "retune-shortfall" and why in f["detail"]
    # a shortfall alone (no failed item, no regression left) still fails the night
    alone = _results([row(item.name, "ok", retune)], env, opts, "2026-01-01T00:00:00+00:00", 1.0, 1, ["softmax"])
    assert alone["exit_code"] == 1 and alone["status"] == "failed"
    clean = _results([row(item.name, "ok", {**retune, "shortfall": None})], env, opts, "2026-01-01T00:00:00+00:00",
                     1.0, 1, ["softmax"])
    assert clean["exit_code"] == 0 and clean["failures"] == [] and clean["summary"]["retune_shortfalls"] == 0
    doc["run_id"] = 1
    paths = write_reports(doc, tmp_path / "out", None)
    html, summary = paths["report"].read_text(), paths["summary"].read_text()
    assert "retune-shortfall" in html and "re-tune SHORTFALL" in html
    assert "retune-shortfall" in summary


# ---------------------------------------------------------------------------------------------
# The HTML report in a real browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def png_pixels(data: bytes):
    """(width, height, rows of RGB tuples) of an 8-bit non-interlaced RGB/RGBA PNG (stdlib only)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(the CI script installs it: apt-get install -y chromium); this test installs nothing")
def test_html_report_renders_its_plots_in_headless_chromium(tampered, tmp_path):
    from html.parser import HTMLParser

    report = tampered["out"] / "report.html"
    common = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]

    class Marks(HTMLParser):
        def __init__(self):
            super().__init__()
            self.charts, self.sized, self.current = {}, {}, None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "svg" and "chart" in (a.get("class") or "").split():
                self.current = a.get("aria-label")
                self.charts[self.current] = 0
            elif self.current and "mark" in (a.get("class") or "").split():
                size = {"rect": lambda: float(a["width"]) * float(a["height"]), "circle": lambda: float(a["r"]),
                        "line": lambda: abs(float(a["x2"]) - float(a["x1"])) + abs(float(a["y2"]) - float(a["y1"])),
                        "polyline": lambda: len(a["points"].split())}[tag]()
                if size > 0:
                    self.charts[self.current] += 1

        def handle_endtag(self, tag):
            if tag == "svg":
                self.current = None

    parser = Marks()
    parser.feed(dom.stdout)
    titles = {t.split(" (")[0].split(":")[0] for t in parser.charts}
    assert {"Speedup vs PyTorch", "% of roofline", "softmax", "Health over time",
            "Latency vs stored evidence over time"} <= titles, parser.charts
    assert all(n > 0 for n in parser.charts.values()), parser.charts

    shot = tmp_path / "report.png"
    # half scale keeps the stdlib PNG decoding quick; the page is 1200 CSS px wide, 2400 tall
    run = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", "--force-device-scale-factor=0.5",
                          report.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())

    def near(p, q):
        return sum(abs(x - y) for x, y in zip(p, q)) < 40

    # the speedup/roofline bars and the first trade-off point are the first op colour (#1f77b4),
    # which nothing else on the page uses; failed-item status bars are red
    blue = sum(near(p, (0x1F, 0x77, 0xB4)) for row in rows for p in row)
    red = sum(near(p, (0xC6, 0x28, 0x28)) for row in rows for p in row)
    assert blue > 1000 and red > 200, (blue, red)


# ---------------------------------------------------------------------------------------------
# The GPU measurement path

def test_gpu_measurer_pools_sessions_and_fails_on_flags(monkeypatch):
    """The glue around harness.measure, with the harness's measure replaced (no GPU here)."""
    from kernelagent.harness import measure as harness_measure
    from kernelagent.nightly.inventory import LibraryItem
    from kernelagent.nightly.measure import GpuMeasurer, MeasurementFailed

    g = object.__new__(GpuMeasurer)  # skip __init__: it needs CUDA and NVML
    g.sessions, g.min_window_s, g.sku, g.timeout, g.reference_repeats = 3, 1.0, None, 10.0, 5
    g.meter = object()  # handed to harness.measure untouched
    g._reference_samples = lambda op, params, dtype: [31.0, 30.0, 32.0, 30.5, 31.5]
    seen, flags = [], []

    def fake_measure(target, source, case, **kw):
        seen.append((target, dict(case), kw))
        return harness_measure.Measurement(target=target, device="fake", case=dict(case), config=kw["config"],
                                           samples_s=[10e-6, 11e-6], n=2, median_s=10.5e-6,
                                           energy_j_per_call=5e-4, flags=list(flags))

    monkeypatch.setattr(harness_measure, "measure", fake_measure)
    item = LibraryItem("entry", "softmax", "softmax/h100-sxm bf16 cols=4096", sku="h100-sxm", dtype="bf16",
                       bucket={"cols": 4096}, config=CONFIG)
    got, why = g.measure(item)
    assert why == "" and len(seen) == 3
    assert seen[0][1] == {"batch": 0, "rows": 4096, "cols": 4096} and seen[0][2]["config"] == CONFIG
    assert seen[0][2]["dtype"] == "bf16" and seen[0][2]["reference_latency_s"] == pytest.approx(31e-6)
    assert got.latency_us == pytest.approx([10.0, 11.0] * 3) and got.energy_uj == pytest.approx([500.0] * 3)
    assert got.flops == 5.0 * 4096 * 4096 and got.bucket == {"cols": 4096}
    flags.append("nondeterministic: two timed calls differ")
    with pytest.raises(MeasurementFailed) as e:
        g.measure(item)
    assert e.value.reason == "measurement-flagged"
    unmatched = LibraryItem("entry", "softmax", "softmax/h100-sxm bf16 cols=64", sku="h100-sxm", dtype="bf16",
                            bucket={"cols": 64}, config=CONFIG)
    assert g.measure(unmatched)[0] is None


@pytest.mark.gpu
def test_gpu_nightly_measures_and_its_recording_replays(tmp_path):
    out, hist = tmp_path / "gpu", tmp_path / "h.db"
    code, stdout, err = cli("nightly", "--gpu", "--ops", "softmax", "--examples", "2", "--sessions", "2",
                            "--energy-window-s", "1", "--history", hist, "--out", out, "--json")
    assert code in (0, 1), err
    res = json.loads(stdout)
    env = res["environment"]
    assert env["mode"] == "gpu" and env["driver"] and env["clocks"]["sm_mhz"] and env["sku"]
    default = by_name(res, "softmax/default")
    m = default["measurement"]
    assert m["backend"] == "gpu" and len(m["latency_samples_us"]) >= 10 and m["speedup_vs_pytorch"] > 0
    assert (out / "samples.json").is_file()
    code, stdout, err = cli("nightly", "--cpu", "--ops", "softmax", "--examples", "1", "--sku", env["sku"],
                            "--measure", f"replay:{out / 'samples.json'}", "--history", hist,
                            "--out", tmp_path / "replayed", "--json")
    replayed = by_name(json.loads(stdout), "softmax/default")["measurement"]
    assert replayed["latency_median_us"] == pytest.approx(m["latency_median_us"])
