"""The GPU lane: everything a short GPU lease should run, in one command, within a time budget.

Usage (normally through ``scripts/gpu_lane.sh``, which installs first):

    python benchmarks/gpu_lane.py [--budget-s 480] [--out DIR] [--dry-run] [--only STEP,…]

Steps, in order (each with an estimated and a maximum duration):

1. ``gpu-tests``   the ``gpu``-marked tests, each with its own timeout (pytest-timeout);
2. ``reverify``    every shipped kernel re-verified on CUDA by the harness;
3. ``bench-ops``   every op against PyTorch eager and the measured copy-bandwidth / matmul
                   roofline, fallbacks flagged (``benchmarks/bench_ops.py --budget-s``);
4. ``compile``     the static compile report of matmul and attention for this GPU's SKU;
5. ``tune``        two ops tuned with ``--measure gpu --policy energy`` (latency and energy),
                   written to a library under the output folder (its study in ``tune.db``);
6. ``decoder``     joules and seconds per token of a Llama-style layer, library vs eager
                   (``benchmarks/bench_decoder.py``);
7. ``summary``     ``summary.md`` (a Markdown table for docs/BENCHMARKS.md) and ``lane.json``.

The budget is enforced: a step starts only if its estimate fits in what is left, runs with a
timeout of what is left (at most its maximum), and a step that does not fit is skipped and
said so. ``--dry-run`` prints the plan and the estimated total without running anything.
Everything is written under ``--out`` (default ``$OUT``, else ``./gpu-lane-out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
TUNE_OPS = ("softmax", "matmul")


@dataclass
class Step:
    name: str
    what: str
    estimate_s: float
    max_s: float
    argv: Callable[[Path, float], list[str]] | None = None   # (out dir, seconds allowed) → command
    run: Callable[[Path, list[dict]], dict] | None = None     # in-process step (summary)
    log: str = ""


@dataclass
class Budget:
    total_s: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(default=0.0)

    def __post_init__(self):
        self.start = self.clock()

    def left(self) -> float:
        return self.total_s - (self.clock() - self.start)


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _ka(*args: str) -> list[str]:
    return _py("-m", "kernelagent.cli", *args)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def steps() -> list[Step]:
    def gpu_tests(out: Path, allowed: float) -> list[str]:
        per_test = ["--timeout", "120"] if _have("pytest_timeout") else ["-o", "faulthandler_timeout=120"]
        return _py("-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *per_test,
                   f"--junitxml={out / 'gpu_tests.xml'}", str(REPO / "tests"))

    def bench(out: Path, allowed: float) -> list[str]:
        return _py(str(REPO / "benchmarks" / "bench_ops.py"), "--budget-s", f"{max(allowed - 30, 10):.0f}",
                   "--out", str(out / "bench_ops.json"))

    def compile_report(out: Path, allowed: float) -> list[str]:
        script = ("import json, sys\n"
                  "from kernelagent.cli_compile import static_report\n"
                  "from kernelagent.sku import detect\n"
                  "sku = detect()[0].id\n"
                  "rows = [static_report(op, sku) for op in ('matmul', 'attention')]\n"
                  f"open({str(out / 'compile.json')!r}, 'w').write(json.dumps(rows, indent=1))\n"
                  "print(json.dumps([[r['op'], [l['report']['mma'] for l in r['launches']], "
                  "[l['report']['tma'] for l in r['launches']]] for r in rows]))\n")
        return _py("-c", script)

    def tune(out: Path, allowed: float) -> list[str]:
        try:
            from kernelagent.sku import detect

            sku = detect()[0].id
        except Exception as e:  # noqa: BLE001 - the step fails with the reason
            return _py("-c", f"import sys; sys.exit({f'cannot detect this GPU: {e}'!r})")
        # A looser energy bound (10 %: ~2.4 s windows at a 100 ms counter, 3 per trial) and a short
        # cooldown keep two ops' energy trials inside the lane's budget; the report states both.
        args = ["tune", "--sku", sku, "--measure", "gpu", "--policy", "energy", "--trials", "3",
                "--energy-bound", "0.1", "--energy-cooldown", "3",
                "--max-cases", "1", "--dtype", "bf16", "--library", str(out / "library"),
                "--storage", f"sqlite:///{out / 'tune.db'}", "--json"]
        for op in TUNE_OPS:
            args += ["--op", op]
        return _ka(*args)

    def reverify(out: Path, allowed: float) -> list[str]:
        script = ("import json, subprocess, sys\n"
                  "from kernelagent.kernels import kernel_path, op_names\n"
                  "res = {}\n"
                  "for op in op_names():\n"
                  "    p = subprocess.run([sys.executable, '-m', 'kernelagent.cli', 'verify', op, str(kernel_path(op)),\n"
                  "                        '--examples', '12', '--seed', '1', '--json'], capture_output=True, text=True)\n"
                  "    try:\n"
                  "        v = json.loads(p.stdout)\n"
                  "    except ValueError:\n"
                  "        v = {'verified': False, 'reason': 'no-verdict', 'detail': p.stderr[-1500:]}\n"
                  "    res[op] = v\n"
                  "    print(op, v.get('verified'), v.get('reason'), v.get('device'), flush=True)\n"
                  f"open({str(out / 'reverify.json')!r}, 'w').write(json.dumps(res, indent=1))\n"
                  "sys.exit(0 if all(v.get('verified') for v in res.values()) else 1)\n")
        return _py("-c", script)

    def decoder(out: Path, allowed: float) -> list[str]:
        return _py(str(REPO / "benchmarks" / "bench_decoder.py"), "--train", "--seq", "2048", "--window-s", "2",
                   "--budget-s", f"{allowed:.0f}", "--out", str(out / "decoder.json"))

    # Correctness first (tests, re-verification), then performance: a short lease that runs out
    # still says whether the kernels are right on this GPU.
    return [
        Step("gpu-tests", "the gpu-marked tests, 120 s per test", 120, 240, argv=gpu_tests),
        Step("reverify", "every shipped kernel re-verified on CUDA", 80, 150, argv=reverify),
        Step("bench-ops", "every op vs PyTorch eager + measured roofline, fallbacks flagged", 80, 180, argv=bench),
        Step("compile", "static compile of matmul and attention for this GPU (wgmma, TMA, spills)", 30, 90,
             argv=compile_report),
        Step("tune", f"tune {', '.join(TUNE_OPS)} with --measure gpu --policy energy", 120, 240, argv=tune),
        Step("decoder", "joules and seconds per token of a Llama-3-8B-shaped layer: library vs eager", 45, 120,
             argv=decoder),
        Step("summary", "summary.md (table for docs/BENCHMARKS.md) and lane.json", 2, 10, run=_summary),
    ]


def plan(all_steps: list[Step], only: set[str] | None, budget_s: float) -> list[tuple[Step, str]]:
    """(step, "run" | why it is left out) for a dry run: estimates against the budget."""
    out, left = [], budget_s
    for st in all_steps:
        if only and st.name not in only and st.name != "summary":
            out.append((st, "not selected (--only)"))
        elif st.estimate_s > left:
            out.append((st, f"skipped: needs ~{st.estimate_s:.0f} s, ~{max(left, 0):.0f} s would be left"))
        else:
            out.append((st, "run"))
            left -= st.estimate_s
    return out


def execute(all_steps: list[Step], out: Path, budget: Budget, only: set[str] | None = None,
            echo: Callable[[str], None] = print) -> list[dict]:
    """Run the steps within the budget; one record per step (run, skipped, timed out, failed)."""
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for st in all_steps:
        left = budget.left()
        rec = {"step": st.name, "what": st.what, "estimate_s": st.estimate_s}
        if only and st.name not in only and st.name != "summary":
            rec.update(status="not selected")
        elif st.estimate_s > left:
            rec.update(status="skipped", why=f"needs ~{st.estimate_s:.0f} s, {max(left, 0):.0f} s of the budget left")
        elif st.run is not None:
            t0 = budget.clock()
            rec.update(st.run(out, records), duration_s=budget.clock() - t0)
        else:
            allowed = min(st.max_s, left)
            cmd = st.argv(out, allowed)
            rec.update(command=" ".join(shlex.quote(c) for c in cmd), allowed_s=allowed)
            t0 = budget.clock()
            log = out / f"{st.name}.log"
            with open(log, "w") as f:
                try:
                    p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=allowed, cwd=str(REPO),
                                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
                    rec.update(status="passed" if p.returncode == 0 else "failed", returncode=p.returncode)
                except subprocess.TimeoutExpired:
                    rec.update(status="timed out", why=f"stopped at its limit of {allowed:.0f} s")
            rec.update(duration_s=budget.clock() - t0, log=log.name, tail=_tail(log))
        echo(f"[gpu-lane {budget.total_s - budget.left():6.0f}s] {st.name}: {rec['status']}"
             + (f" ({rec['why']})" if rec.get("why") else ""))
        records.append(rec)
    return records


def _tail(path: Path, n: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-n:]


def _summary(out: Path, records: list[dict]) -> dict:
    lines = [f"# GPU lane, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    env = _environment()
    lines += [f"Device: {env.get('device')}; torch {env.get('torch')}, triton {env.get('triton')}, "
              f"CUDA {env.get('cuda')}, Python {env.get('python')}. All numbers measured on this device.", ""]
    lines += ["| step | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {r['step']} | {r['status']}{' (' + r['why'] + ')' if r.get('why') else ''} | "
              f"{r.get('duration_s', 0):.0f} |" for r in records]
    bench = out / "bench_ops.json"
    if bench.is_file():
        data = json.loads(bench.read_text())
        lines += ["", f"Copy bandwidth {data['copy_bandwidth_GBps']:.0f} GB/s; matmul peak "
                      f"{next((v for k, v in data.items() if k.startswith('matmul_peak')), 0):.0f} TFLOP/s (measured).",
                  "", "| op | case | dtype | ours µs | eager µs | × eager | % roofline | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in data["rows"]:
            lines.append(f"| {r['op']} | {json.dumps(r['case'])} | {r['dtype']} | {r['ours_us']:.1f} | "
                         f"{r['eager_us']:.1f} | {r['speedup_vs_eager']:.2f} | {r['pct_of_roofline']:.0f} | "
                         f"{'FALLBACK: ' + r['fallback'] if r['fallback'] else ''} |")
        for s in data.get("skipped", []):
            lines.append(f"| {s['op']} | {json.dumps(s['case'])} | | | | | | skipped: {s['why']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "lane.json").write_text(json.dumps({"environment": env, "steps": records}, indent=1, default=str))
    return {"status": "passed"}


def _environment() -> dict:
    env = {"python": platform.python_version()}
    try:
        import torch
        import triton

        env.update(torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                   device=torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
    except Exception as e:  # noqa: BLE001 - the summary still gets written
        env["error"] = repr(e)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=float(os.environ.get("KERNELAGENT_GPU_LANE_BUDGET_S", 480)))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-lane-out"))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated steps (summary always runs)")
    a = ap.parse_args(argv)
    only = {s for s in a.only.split(",") if s} or None
    all_steps = steps()
    unknown = (only or set()) - {s.name for s in all_steps}
    if unknown:
        print(f"error: unknown step(s) {', '.join(sorted(unknown))}; steps: {', '.join(s.name for s in all_steps)}",
              file=sys.stderr)
        return 2
    if a.dry_run:
        total = 0.0
        print(f"GPU lane plan, budget {a.budget_s:.0f} s, output {a.out}:")
        for st, verdict in plan(all_steps, only, a.budget_s):
            print(f"  {st.name:10s} ~{st.estimate_s:4.0f} s (at most {st.max_s:.0f} s)  {st.what}: {verdict}")
            total += st.estimate_s if verdict == "run" else 0.0
        print(f"estimated total: {total:.0f} s of {a.budget_s:.0f} s")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch; the GPU lane needs one (--dry-run shows the plan anywhere)",
              file=sys.stderr)
        return 3
    records = execute(all_steps, a.out, Budget(a.budget_s), only)
    failed = [r["step"] for r in records if r["status"] in ("failed", "timed out")]
    print(f"GPU lane done: {len(records)} steps, failed: {', '.join(failed) or 'none'}; see {a.out}/summary.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
