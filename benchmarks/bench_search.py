"""Search efficiency on recorded, fully brute-forced tuning spaces (replay backend, no GPU).

For each ``convolution_*`` Kernel Tuner cache in the data folder: the median over seeds of
best-found latency / the space's optimum after a budget of measurements, for kernelagent's
search and, in the same run, random search and Optuna's default TPE. Then the transfer case:
warm-started with the A100 space's top configs, the same ratio on A4000 and A6000 within a
small budget. The ``dedispersion_*`` spaces are held out (the search was not tuned on them);
``--held-out`` reports them once, in a separate section. ``--sparse`` adds huge, partly recorded
spaces: a convolution and a dedispersion cache whose parameter lists are widened to millions of
raw configs while only 3,000 of the recorded configs are kept (synthetic, built from the real
caches; the shape constraint-pruned Triton spaces have, where most of the product is infeasible).
Each table ends with the geometric mean of its medians.

Counting rule: a measurement is one distinct configuration handed to the backend, failed ones
(``CompilationFailedConfig``, ``RuntimeFailedConfig``) included. Configurations outside the
space's restrictions (absent from the cache) are rejected a priori at no cost, as Kernel
Tuner's restrictions are; a configuration already measured is answered from the study.

    python benchmarks/bench_search.py --seeds 10 --out search.json [--held-out] [--sparse]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

from kernelagent.tuner.replay import ReplayBackend, load
from kernelagent.tuner.search import run_search

DATA = Path(os.environ.get("KERNELAGENT_AUTOTUNING_DATA", "/work/shared/data/autotuning"))
GPUS = ("A100", "A4000", "A6000", "MI250X", "W6600", "W7800")
METHODS = {"kernelagent": "auto", "random": "random", "optuna-tpe-default": "tpe-default"}
# Partly recorded spaces: values added to the recorded parameters (new ones recorded at their first
# value), 3,000 recorded configs kept at random.
SPARSE = {
    "convolution_A100": {"block_size_y": [1, 2, 4, 8, 16, 32, 64, 128, 256], "tile_size_x": list(range(1, 9)),
                         "tile_size_y": list(range(1, 9)), "loop_unroll": list(range(1, 17)),
                         "block_size_z": [1, 2, 4, 8]},
    "dedispersion_A100": {"block_size_z": [1, 2, 4, 8, 16, 32, 64, 128], "loop_unroll_factor_channel": list(range(9)),
                          "tile_size_x": list(range(1, 9)), "tile_size_y": list(range(1, 17))},
}
SPARSE_KEEP = 3000


def one(space, method: str, seed: int, budget: int, warm=()) -> dict:
    backend = ReplayBackend(space)
    t = time.perf_counter()
    res = run_search(space.search_space(), backend.objective, budget=budget, study_name="bench",
                     storage=":memory:", seed=seed, sampler=METHODS[method], warm_start=warm)
    opt = space.optimum().latency_s
    distinct = len({json.dumps(c, sort_keys=True) for c in backend.measured})
    assert distinct == backend.calls, "a configuration was measured twice"
    ratio = math.inf if res.best_latency_s is None else res.best_latency_s / opt  # found nothing: infinitely far
    return {"seed": seed, "ratio": ratio, "measurements": backend.calls, "shortfall": res.shortfall,
            "optuna_trials": res.optuna_trials, "sampler": res.sampler, "seconds": time.perf_counter() - t}


def summarise(runs: list[dict]) -> dict:
    rs = [r["ratio"] for r in runs]
    return {"median_ratio": statistics.median(rs), "worst_ratio": max(rs), "best_ratio": min(rs),
            "share_within_1.05": sum(r <= 1.05 for r in rs) / len(rs),
            "median_measurements": statistics.median(r["measurements"] for r in runs),
            "runs_with_shortfall": sum(r["shortfall"] is not None for r in runs),
            "median_optuna_trials": statistics.median(r["optuna_trials"] for r in runs),
            "median_seconds": statistics.median(r["seconds"] for r in runs), "runs": runs}


def geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if all(math.isfinite(x) for x in xs) else math.inf


def table(rows: list[dict], methods: list[str], counts: bool = False) -> str:
    per = (" | {m}: measurements (median)" if counts else "")
    head = "| space | GPU | feasible configs | " + " | ".join(
        f"{m}: median (worst) | {m}: ≤1.05" + per.format(m=m) for m in methods) + " |"
    sep = "|" + " --- |" * (3 + (3 if counts else 2) * len(methods))
    out = [head, sep]
    for r in rows:
        cells = []
        for m in methods:
            s = r["methods"][m]
            cells += [f"{s['median_ratio']:.3f} ({s['worst_ratio']:.2f})", f"{s['share_within_1.05']:.0%}"]
            if counts:
                cells.append(f"{s['median_measurements']:.0f}")
        out.append(f"| {r['space']} | {r['device']} | {r['feasible']} | " + " | ".join(cells) + " |")
    gm = []
    for m in methods:
        gm += [f"{geomean(r['methods'][m]['median_ratio'] for r in rows):.4f}", ""] + ([""] if counts else [])
    out.append("| geometric mean of the medians | | | " + " | ".join(gm) + " |")
    return "\n".join(out)


def section(prefix: str, gpus, methods, seeds, budget, log) -> list[dict]:
    return [space_row(DATA / f"{prefix}_{g}.json.gz", g, methods, seeds, budget, log) for g in gpus]


def space_row(path: Path, label: str, methods, seeds, budget, log, name: str | None = None) -> dict:
    space = load(path)
    row = {"space": name or path.name, "device": space.meta.get("device") or label, "feasible": len(space.feasible()),
           "raw_configs": math.prod(len(v) for v in space.params.values()), "optimum_s": space.optimum().latency_s,
           "methods": {}}
    for m in methods:
        row["methods"][m] = summarise([one(space, m, s, budget) for s in seeds])
        log(f"{row['space']} {m}: median {row['methods'][m]['median_ratio']:.3f}")
    return row


def widen(src: Path, dst: Path, extra: dict[str, list], keep: int, seed: int = 0) -> Path:
    """A partly recorded copy of a Kernel Tuner cache: ``extra`` values added to its parameters
    (a new parameter is recorded at its first value) and ``keep`` recorded configs kept at random."""
    doc = json.loads(gzip.decompress(src.read_bytes()))
    names, values = doc["tune_params_keys"], doc["tune_params"]
    for n, vs in extra.items():
        if n not in values:
            names.append(n)
        values[n] = sorted(set(values.get(n, [])) | set(vs))
    kept = random.Random(seed).sample(sorted(doc["cache"].values(), key=lambda r: json.dumps(r, sort_keys=True)), keep)
    for rec in kept:
        for n, vs in extra.items():
            rec.setdefault(n, vs[0])
    doc["cache"] = {",".join(str(rec[n]) for n in names): rec for rec in kept}
    dst.write_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))
    return dst


def sparse_section(methods, seeds, budget, log) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in SPARSE.items():
            path = widen(DATA / f"{name}.json.gz", Path(tmp) / f"{name}.json.gz", extra, SPARSE_KEEP)
            rows.append(space_row(path, name, methods, seeds, budget, log,
                                  name=f"{name}, widened, {SPARSE_KEEP} recorded"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--transfer-budget", type=int, default=20)
    ap.add_argument("--transfer-top", type=int, default=10, help="A100 top configs enqueued as the warm start")
    ap.add_argument("--held-out", action="store_true", help="also report the held-out dedispersion spaces")
    ap.add_argument("--sparse", action="store_true", help="also report huge, partly recorded spaces (synthetic)")
    ap.add_argument("--out", type=Path, help="write all results as JSON here")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    seeds = list(range(args.seeds))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.time()
    methods = list(METHODS)
    conv = section("convolution", GPUS, methods, seeds, args.budget, log)

    src = load(DATA / "convolution_A100.json.gz")
    warm = src.top(args.transfer_top)
    warm_diverse = src.top(args.transfer_top, min_distance=2)
    transfer = []
    for g in ("A4000", "A6000"):
        space = load(DATA / f"convolution_{g}.json.gz")
        row = {"space": f"convolution_{g}.json.gz", "device": space.meta.get("device") or g,
               "feasible": len(space.feasible()), "methods": {}}
        row["methods"]["kernelagent, warm (A100 top)"] = summarise(
            [one(space, "kernelagent", s, args.transfer_budget, warm) for s in seeds])
        row["methods"]["kernelagent, warm (A100 top, ≥2 params apart)"] = summarise(
            [one(space, "kernelagent", s, args.transfer_budget, warm_diverse) for s in seeds])
        row["methods"]["kernelagent, cold"] = summarise([one(space, "kernelagent", s, args.transfer_budget) for s in seeds])
        row["methods"]["random"] = summarise([one(space, "random", s, args.transfer_budget) for s in seeds])
        transfer.append(row)
        log(f"transfer {g}: {row['methods']['kernelagent, warm (A100 top)']['median_ratio']:.3f}")

    held = section("dedispersion", GPUS, ["kernelagent", "random"], seeds, args.budget, log) if args.held_out else []
    sparse = sparse_section(["kernelagent", "random"], seeds, args.budget, log) if args.sparse else []

    meta = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "optuna": optuna.__version__,
            "python": platform.python_version(), "machine": f"{os.cpu_count()}-core CPU, replay of recorded measurements",
            "seeds": len(seeds), "budget": args.budget, "transfer_budget": args.transfer_budget,
            "transfer_top": args.transfer_top, "wall_seconds": round(time.time() - t0, 1),
            "counting_rule": "distinct configurations measured, failed ones included; configurations outside "
                             "the recorded restrictions are rejected a priori and not counted"}
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "convolution": conv, "transfer": transfer, "held_out": held,
                                        "sparse": sparse}, indent=1))
    print(f"Search efficiency: best found / optimum (latency), median over {len(seeds)} seeds "
          f"(worst seed in brackets), after {args.budget} measurements. optuna {meta['optuna']}, "
          f"{meta['machine']}, {meta['date']}.\n")
    print(table(conv, methods))
    print(f"\nTransfer: warm start = the A100 space's top {args.transfer_top} configs (plain, or each "
          f"differing from the ones before it in ≥ 2 parameters), budget {args.transfer_budget} measurements "
          f"(the warm start included).\n")
    print(table(transfer, list(transfer[0]["methods"])))
    if held:
        print(f"\nHeld out (dedispersion, not used to choose the search; one run, final settings), "
              f"{args.budget} measurements.\n")
        print(table(held, ["kernelagent", "random"]))
    if sparse:
        print(f"\nHuge, partly recorded spaces (synthetic: the A100 caches' parameter lists widened to millions of "
              f"raw configs, {SPARSE_KEEP} recorded configs kept), {args.budget} measurements asked.\n")
        print(table(sparse, ["kernelagent", "random"], counts=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
