"""``kernelagent tune``: verified, tuned configs for a GPU SKU, written into the library.

For each op × dtype × shape bucket (the op's ``bench_cases``): an Optuna study over the op's
tuning space (``search.run_search``), measured by one backend —

* ``gpu``: this machine's GPU, timed and metered by the harness (``harness.measure``); the GPU
  must be the SKU being tuned;
* ``model``: the analytical estimate from the SKU's spec sheet and a static compile for its
  architecture (``tuner.model``): predicted, labelled so, never overwriting measured entries;
* ``replay:FILE``: a recording (this project's format) of an earlier GPU run.

Every variant of the op (``kernels/_variants.py``: the shipped kernel.py, shipped extras, the
user library's; or one, ``--variant``) is searched in its own space (its ``TUNING_SPACE``, else
the spec's), each in one candidate session (one sandboxed worker for all its trials and
re-verifications). Warm start: the op's default config and the best config of the nearest SKU
in the library. Before anything is written, each variant's top configs are re-verified by the
harness (in its sandbox, on this machine: natively on a GPU, through Triton's interpreter
otherwise) in order; the fastest verified variant wins, and its speedup is against the
baseline a library call runs without an entry (kernel.py with its default config, or the
architecture's default variant; same backend). It is
recorded as a ``LibraryEntry`` naming the variant, with evidence and provenance
(``record.write_result`` → ``library.record_entry``: atomic, locked, predicted never replaces
measured).
"""

from __future__ import annotations

import contextlib

import json
import secrets
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import BadInput, EnvironmentProblem

BACKENDS = ("gpu", "model", "replay")
REVERIFY_TOP = 3


@dataclass
class TuneTask:
    op: str
    dtype: str
    case_params: dict
    bucket: dict

    @property
    def bucket_str(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.bucket.items()))

    @property
    def label(self) -> str:
        return f"{self.op} {self.dtype} [{self.bucket_str}]"


@dataclass
class TuneResult:
    op: str
    sku: str
    dtype: str
    bucket: dict
    backend: str
    measured: bool
    policy: str
    sampler: str
    trials_used: int
    study: str
    best_config: dict | None = None
    latency_us: float | None = None
    energy_uj: float | None = None
    energy_uncertainty_uj: float | None = None   # ≈95 % half-width the measurement stated (None: not stated)
    default_latency_us: float | None = None
    speedup_vs_default: float | None = None
    verified: bool = False
    verify_detail: str = ""
    library_action: str | None = None     # "added" | "replaced" | "kept" | None (not written)
    library_path: str | None = None
    pareto_front: list = field(default_factory=list)   # latency/energy front, chosen marked (results.visible_front)
    note: str = ""
    variant: str = "kernel"               # the kernel file that won (see kernels/_variants.py)
    kernel_sha256: str | None = None
    variant_origin: str = "shipped"
    variants: list = field(default_factory=list)   # every variant tried: verified, latency, config, note
    shortfall: str | None = None          # a search measured fewer configs than asked while feasible ones remained
    system_config: dict | None = None     # --system: the SM clock / power limit the winner was measured at

    def to_json(self) -> dict:
        return asdict(self)


def parse_backend(measure: str | None, *, cuda: bool) -> tuple[str, Path | None, str | None]:
    """(backend, replay file, notice for the user)."""
    if measure is None:
        if cuda:
            return "gpu", None, None
        return "model", None, ("no GPU here and no --measure given: using the `model` backend; every result "
                               "is PREDICTED from the SKU's spec sheet and a static compile, not measured")
    if measure.startswith("replay:"):
        path = Path(measure.split(":", 1)[1])
        if not path.is_file():
            raise BadInput(f"replay file not found: {path}")
        return "replay", path, None
    if measure not in ("gpu", "model"):
        raise BadInput(f"unknown --measure {measure!r}; expected gpu, model or replay:FILE")
    if measure == "gpu" and not cuda:
        raise EnvironmentProblem("--measure gpu needs a CUDA GPU; none is visible here "
                                 "(use --measure model to predict, or replay:FILE)")
    return measure, None, None


def plan(ops: Sequence[str], dtypes: Sequence[str] | None, max_cases: int | None = None,
         cases: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> list[TuneTask]:
    """Every (op, dtype, bench case) to tune. Unknown ops are a BadInput naming the known ones."""
    from ..kernels import UnknownOpError, get_opspec
    from ..kernels._configs import case_bucket

    tasks = []
    for op in ops:
        try:
            spec = get_opspec(op)
        except UnknownOpError as e:
            raise BadInput(str(e)) from None
        use = [d for d in (dtypes or spec.dtypes) if d in spec.dtypes]
        if dtypes and not use:
            raise BadInput(f"op {op} supports dtypes {list(spec.dtypes)}; none of {list(dtypes)}")
        for dtype in use:
            chosen = cases[op] if cases and op in cases else spec.bench_cases
            for params in list(chosen)[:max_cases]:
                tasks.append(TuneTask(op, dtype, dict(params), case_bucket(op, params, dtype)))
    return tasks


def _versions(device: str) -> dict:
    import torch
    import triton

    return {"triton": triton.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": device, "python": platform.python_version()}


def _nearest_warm_start(op: str, sku, dtype: str, bucket: dict, library_dir, variant: str = "kernel") -> list[dict]:
    """Best configs recorded for this op, variant and dtype on the three most similar SKUs."""
    from ..kernels._configs import best_recorded
    from ..sku import load_skus, rank_similar

    extra = (Path(library_dir).expanduser() / op / "configs",) if library_dir else ()
    others = rank_similar(sku, [s for s in load_skus().values() if s.id != sku.id])[:3]
    entries = (best_recorded(op, other.id, dtype, bucket, extra, variant) for other in others)
    return [dict(e.config) for e in entries if e]


def _objective(backend: str, task: TuneTask, spec, call, sku, recorded, *, seed: int | None,
               energy: bool, session=None, source_path=None, capture=None,
               energy_options: Mapping[str, Any] | None = None) -> Callable[[Mapping[str, Any]], tuple]:
    """measure(config) -> (latency_s | None, energy_j | None, reason[, energy_uncertainty_j]).
    ``capture``: the sandbox the model backend captures and compiles a non-shipped variant in (see
    harness/predict.py). ``energy_options``: MeasureOptions for the gpu backend's energy batch
    (``energy_bound``, ``energy_baseline``: one baseline shared by every trial, so each trial's
    cooldown returns to the same idle state)."""
    if backend == "model":
        from . import model

        from .system import split_config

        def by_model(config):
            kernel_config, system_config = split_config(config)   # the system part is predicted, never set
            try:
                est = model.estimate(spec, call, kernel_config, sku, source=source_path, capture=capture,
                                     system=system_config or None)
            except (ValueError, TypeError) as e:  # the launcher rejects this config
                return None, None, f"{type(e).__name__}: {e}"
            if not est.feasible:
                return None, None, est.reason
            return est.latency_s, est.energy_j, None

        return by_model
    if backend == "replay":
        from .replay import ReplayBackend

        return ReplayBackend(recorded).objective
    from ..harness.measure import MeasureError, measure

    def on_gpu(config):
        # One session for every trial: one worker and Triton cache, inputs staged and their
        # references computed once; only the config changes between trials.
        try:
            m = measure(task.op, session.source, call, config=dict(config), dtype=task.dtype, seed=seed,
                        energy=energy, meter="auto" if energy else None, session=session, **(energy_options or {}))
        except MeasureError as e:
            return None, None, f"{e.reason}: {e.detail}"[:300]
        if m.flags:
            return None, None, "untrusted measurement: " + "; ".join(m.flags)[:300]
        return m.median_s, m.energy_j_per_call, None, m.energy_uncertainty_j

    return on_gpu


def tune(*, sku_id: str, ops: Sequence[str], dtypes: Sequence[str] | None = None, trials: int = 24,
         measure: str | None = None, policy: str = "latency", storage: str | None = None,
         seed: int | None = None, library_dir: str | Path | None = None, verify_examples: int = 8,
         write: bool = True, max_cases: int | None = None,
         cases: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
         accept: Callable[[TuneResult], bool] | None = None, progress: Callable[[str, int, int], None] | None = None,
         notice: Callable[[str], None] | None = None, min_predicted_gain: float | None = None,
         variant: str | None = None, energy_bound: float | None = None, energy_cooldown_s: float | None = None,
         system: str | Sequence[str] | None = None, system_nvml=None) -> list[TuneResult]:
    """Tune and (with ``write``) record verified winners. ``variant``: tune only that variant of
    each op (default: every variant, ``kernels/_variants.py``; the fastest verified one is
    recorded). ``min_predicted_gain``: with the model backend, the predicted gain over the
    default (kernel.py, default config) below which nothing is written (default: the model's
    own relative uncertainty, ``model.RELATIVE_UNCERTAINTY``). ``energy_bound``: with the gpu
    backend and an energy policy, the counter-quantisation bound each energy window must meet
    (a fraction; default ``harness.energy_window.DEFAULT_QUANTISATION_BOUND``, 2 %);
    ``energy_cooldown_s``: the longest wait for the idle baseline before each energy batch
    (default ``Cooldown.max_wait_s``, 60 s; 0: no cooldown). ``system``: ``"clocks,power-limit"`` (or a subset) adds the SM clock and the power limit to
    the searched dimensions: with the gpu backend set through NVML and always restored
    (``tuner/system.py``; without permission an EnvironmentProblem, exit 3, before anything is
    measured); with the model backend predicted at each point from the spec sheet, nothing set
    (``system.PredictedSystem``, ``model``); not with replay.
    ``system_nvml``: the NVML module to use (tests inject a simulated one)."""
    import torch

    from ..kernels import get_opspec
    from ..kernels._configs import arch_default
    from ..kernels.spec import Case
    from ..sku import detect, get_sku
    from .record import write_result
    from .search import POLICIES

    if policy not in POLICIES:
        raise BadInput(f"unknown --policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if trials < 1:
        raise BadInput("--trials must be at least 1")
    if min_predicted_gain is not None and not 0 <= float(min_predicted_gain) < 10:
        raise BadInput(f"--min-predicted-gain must be in [0, 10) (a fraction: 0.15 = 15 %); got {min_predicted_gain}")
    if energy_bound is not None and not 0 < float(energy_bound) < 1:
        raise BadInput(f"--energy-bound must be in (0, 1) (a fraction: 0.02 = 2 %); got {energy_bound}")
    if energy_cooldown_s is not None and not 0 <= float(energy_cooldown_s) <= 3600:
        raise BadInput(f"--energy-cooldown must be 0..3600 seconds; got {energy_cooldown_s}")
    from .system import PredictedSystem, SystemControl, parse_dimensions

    dims = parse_dimensions(system)
    sku = get_sku(sku_id)
    cuda = torch.cuda.is_available()
    backend, replay_path, msg = parse_backend(measure, cuda=cuda)
    if dims and backend == "replay":
        raise BadInput("--system sets this machine's GPU clocks / power limit while measuring (--measure gpu) or "
                       "predicts them (--measure model); a replay has only what it recorded")
    if msg and notice:
        notice(msg)
    if backend == "gpu":
        local, _ = detect()
        if local.id != sku.id:
            raise EnvironmentProblem(f"--measure gpu tunes the GPU in this machine ({local.id}), not {sku.id}; "
                                     f"use --sku {local.id}, or --measure model to predict for {sku.id}")
    if backend == "model" and not sku.static_compile and notice:
        notice(f"{sku.id} has no static compile target: the model uses its spec sheet only (untested path)")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tasks = plan(ops, dtypes, max_cases, cases)
    recorded = None
    if backend == "replay":   # the recording, read once for the tasks, the space and the measurements
        from .replay import load

        recorded = load(replay_path)
        tasks = _replay_tasks(tasks, recorded, replay_path)
    device = torch.cuda.get_device_name() if backend == "gpu" else (
        f"{sku.name} (predicted: spec sheet + static compile for {sku.arch})" if backend == "model"
        else f"replay of {replay_path.name}")
    versions = _versions(device)
    energy_options = _energy_options(energy_bound, energy_cooldown_s) if backend == "gpu" and policy != "latency" \
        else None
    results = []
    if dims and backend == "model":
        system_control = PredictedSystem(dims, sku)
        if notice:
            notice(system_control.assumptions())
    else:
        system_control = SystemControl(dims, nvml=system_nvml) if dims else contextlib.nullcontext()
    with system_control as control:
        start_system = control.current() if control else {}
        for task in tasks:
            spec = get_opspec(task.op)
            # Real tensors only for backends that run or compile the kernel; replay needs none.
            call = spec.build(Case(params=task.case_params, dtype=task.dtype, seed=0)) if backend != "replay" else None
            default = spec.default_config(_meta_shape_key(spec, task))
            tried = []
            for v in _variants_for(task.op, variant, backend, library_dir):
                tried.append(_tune_variant(task, v, spec, call, sku, default, backend=backend, recorded=recorded,
                                           seed=seed, policy=policy, trials=trials, storage=storage,
                                           verify_examples=verify_examples, library_dir=library_dir, progress=progress,
                                           energy_options=energy_options, control=control,
                                           start_system=start_system))
            res = _choose(tried, policy)
            res.pareto_front = _visible_front(tried, res)
            res.shortfall = "; ".join(f"{t.variant}: {t.shortfall}" for t in tried if t.shortfall) or None
            # The baseline is what dispatch runs without an entry, by the same backend: kernel.py with
            # its default config (measured in kernel.py's own search when it ran, else once on its
            # own), or on an architecture with a default variant (OPSPEC.arch_variants) that variant
            # with its own default config.
            found = arch_default(task.op, sku.arch, sku.sm_count) if backend != "replay" else None
            arch_variant, arch_config = found or (None, {})
            baseline = None if arch_variant else next(
                (t.default_latency_us for t in tried if t.variant == "kernel" and t.default_latency_us), None)
            if baseline is None and backend != "replay":
                if control:
                    control.apply(start_system)   # the baseline runs at the board's own settings
                baseline = _baseline_us(backend, task, spec, call, sku, arch_config if arch_variant else default,
                                        seed, variant=arch_variant)
            res.default_latency_us = baseline
            res.variants = [{"variant": t.variant, "verified": t.verified, "latency_us": t.latency_us,
                             "config": t.best_config, "note": t.note} for t in tried]
            if res.verified and res.default_latency_us and res.latency_us:
                res.speedup_vs_default = res.default_latency_us / res.latency_us
            write_result(res, task, sku, backend, policy, versions, write=write, accept=accept,
                         library_dir=library_dir, min_predicted_gain=min_predicted_gain)
            results.append(res)
    return results


def _variants_for(op: str, name: str | None, backend: str, library_dir) -> list:
    """The variants to tune: ``name`` alone, or every variant of the op (replay: the recorded kernel.py)."""
    from ..kernels import _variants

    if backend == "replay":
        if name not in (None, _variants.DEFAULT_VARIANT):
            raise BadInput("--measure replay: replays recordings of kernel.py; --variant must be omitted or `kernel`")
        return [_variants.get_variant(op, _variants.DEFAULT_VARIANT, library_dir)]
    if name is not None:
        try:
            return [_variants.get_variant(op, name, library_dir)]
        except _variants.UnknownVariantError as e:
            raise BadInput(str(e)) from None
    return _variants.variants(op, library_dir)


def _space_for(v, spec, task):
    from ..kernels.spec import Param, TuningSpace
    from .search import SearchSpace

    if v.tuning_space is None:
        return SearchSpace.from_tuning_space(spec.tuning_space, task.case_params)
    return SearchSpace.from_tuning_space(TuningSpace([Param(k, tuple(vals)) for k, vals in v.tuning_space.items()]),
                                         task.case_params)


def _energy_options(energy_bound: float | None, cooldown_s: float | None = None) -> dict:
    """The gpu backend's energy batch for every trial of a run: the stated quantisation bound,
    the default repeats, the cooldown (its longest wait ``cooldown_s``; 0: none), and one idle
    baseline for them all."""
    from ..harness.energy_window import DEFAULT_QUANTISATION_BOUND, Cooldown, EnergyBaseline

    out = {"energy_bound": DEFAULT_QUANTISATION_BOUND if energy_bound is None else float(energy_bound),
           "energy_baseline": EnergyBaseline()}
    if cooldown_s is not None:
        out["cooldown"] = Cooldown(max_wait_s=float(cooldown_s)) if cooldown_s > 0 else None
    return out


def _tune_variant(task: TuneTask, v, spec, call, sku, default: dict, *, backend, recorded, seed, policy, trials,
                  storage, verify_examples, library_dir, progress, energy_options=None, control=None,
                  start_system=None) -> TuneResult:
    """Search one variant's space, then re-verify its best configs in the same candidate session.
    ``control``: a SystemControl whose dimensions join the space (set before each measurement)."""
    from ..harness.predict import SandboxedCapture
    from ..harness.session import CandidateSession
    from ..harness.verify import verify
    from .search import run_search, study_name_for

    from .system import split_config

    space = _space_for(v, spec, task)
    if recorded is not None:
        # A recording is searched over what it recorded: a parameter it lacks (one added to the
        # kernel since) keeps the launcher's default instead of being searched blind.
        recorded_space = recorded.search_space()
        if {p.name for p in recorded_space.params} < {p.name for p in space.params}:
            space = recorded_space
    fits = all(p.name in default and default[p.name] in p.values for p in space.params)
    if control is not None:
        space = _with_system(space, control, start_system or {})
        default = {**default, **(start_system or {})}
    warm = _nearest_warm_start(task.op, sku, task.dtype, task.bucket, library_dir, v.name)
    source = v.path.read_text(encoding="utf-8")
    label = task.label if v.name == "kernel" else f"{task.label} variant {v.name}"
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(CandidateSession(task.op, source, candidate_name=v.path.name))
        # Generated and user variants are untrusted code: the model backend runs their launcher
        # in a sandbox too, never in this process (the shipped files are the package's own).
        capture = stack.enter_context(SandboxedCapture(source, task.op, filename=v.path.name)) \
            if backend == "model" and v.origin != "shipped" else None
        objective = _objective(backend, task, spec, call, sku, recorded, seed=seed, energy=policy != "latency",
                               session=session, source_path=v.path, capture=capture, energy_options=energy_options)
        done = [0]

        def counted(config):
            kernel_config, system_config = split_config(config)
            if control is not None:
                control.apply(system_config)
            out = objective(config if backend == "model" else kernel_config)
            done[0] += 1
            if progress:
                progress(label, done[0], trials)
            return out

        study_op = task.op if v.name == "kernel" else f"{task.op}.{v.name}"
        study = study_name_for(study_op, sku.id, task.dtype, task.bucket_str, space)
        sr = run_search(space, counted, budget=trials, study_name=study, storage=storage, seed=seed,
                        policy=policy, default_config=default if fits else None, warm_start=warm)
        res = TuneResult(op=task.op, sku=sku.id, dtype=task.dtype, bucket=task.bucket, backend=backend,
                         measured=backend != "model", policy=policy, sampler=sr.sampler,
                         trials_used=sr.trials_used, study=study, note=sr.note,
                         pareto_front=[{**p, "variant": v.name} for p in sr.pareto_front],
                         shortfall=sr.shortfall, variant=v.name, kernel_sha256=v.sha256, variant_origin=v.origin)
        ranked = sorted((m for m in sr.measurements if m.get("latency_s") is not None), key=lambda m: m["latency_s"])
        if v.name == "kernel" and fits:
            default_key = space.key(default)
            dflt = next((m for m in ranked if space.key(m["config"]) == default_key), None)
            if dflt:
                res.default_latency_us = dflt["latency_s"] * 1e6
        order = ([sr.best_config] if sr.best_config else []) + [m["config"] for m in ranked]
        seen, candidates = set(), []
        for c in order:
            k = json.dumps(c, sort_keys=True, default=str)
            if k not in seen:
                seen.add(k)
                candidates.append(c)
        # The same cases for every config re-verified (their references are computed once).
        verify_seed = seed if seed is not None else secrets.randbits(32)
        for config in candidates[:REVERIFY_TOP]:
            kernel_config, system_config = split_config(config)
            verdict = verify(task.op, source, config=kernel_config, examples=verify_examples, seed=verify_seed,
                             session=session)
            if verdict.verified:
                m = next(m for m in sr.measurements if m["config"] == config)
                res.best_config, res.verified = kernel_config, True
                res.system_config = system_config or None
                res.latency_us = m["latency_s"] * 1e6
                res.energy_uj = None if m.get("energy_j") is None else m["energy_j"] * 1e6
                u = m.get("energy_uncertainty_j")
                res.energy_uncertainty_uj = None if u is None or res.energy_uj is None else u * 1e6
                res.verify_detail = f"{verdict.trials} examples on {verdict.device}: {verdict.detail}"
                break
            res.verify_detail += f"config {config} rejected by the harness: {verdict.reason}: {verdict.detail[:200]}\n"
    return res


def _with_system(space, control, start: Mapping[str, Any]):
    """The kernel's space plus the system dimensions, the board's starting values among them
    (the kernel's constraint sees only its own keys)."""
    from .search import OrderedParam, SearchSpace
    from .system import split_config

    extra = tuple(OrderedParam(n, tuple(sorted(set(vals) | ({start[n]} if n in start else set()))))
                  for n, vals in control.space_values().items())
    check = space.constraint
    return SearchSpace(space.params + extra, (lambda c: check(split_config(c)[0])) if check else None)


def _visible_front(tried: list[TuneResult], chosen: TuneResult) -> list[dict]:
    """The latency/energy front over every variant's points, the chosen one marked (``results.visible_front``)."""
    from .results import visible_front

    pick = None
    if chosen.verified and chosen.best_config is not None:
        pick = {"variant": chosen.variant, "config": dict(chosen.best_config),
                "system_config": dict(chosen.system_config or {}), "latency_us": chosen.latency_us,
                "energy_uj": chosen.energy_uj, "energy_uncertainty_uj": chosen.energy_uncertainty_uj}
    return visible_front([p for t in tried for p in t.pareto_front], pick, measured=chosen.measured,
                         backend=chosen.backend)


def _choose(tried: list[TuneResult], policy: str = "latency") -> TuneResult:
    """The verified variant the policy picks among the variants' own winners: the lowest latency
    (ties: the earlier, i.e. kernel.py first), or under an energy policy ``results.select``'s
    rule across variants (a saving beyond the stated uncertainty, within the latency slack)."""
    from .results import select

    verified = [t for t in tried if t.verified and t.latency_us is not None]
    if not verified:
        return tried[0]
    points = [{"latency_s": t.latency_us * 1e-6, "index": i,
               "energy_j": None if t.energy_uj is None else t.energy_uj * 1e-6,
               "energy_uncertainty_j": None if t.energy_uncertainty_uj is None else t.energy_uncertainty_uj * 1e-6}
              for i, t in enumerate(verified)]
    return verified[select(points, policy)[0]["index"]]


def _baseline_us(backend: str, task: TuneTask, spec, call, sku, default: dict, seed,
                 variant: str | None = None) -> float | None:
    """kernel.py (or the shipped ``variant``) with the default config, by ``backend``: what a
    library call runs without an entry."""
    from ..harness.session import CandidateSession
    from ..kernels import _variants

    path = _variants.get_variant(task.op, variant).path
    source = path.read_text(encoding="utf-8")
    with CandidateSession(task.op, source, candidate_name=path.name) as session:
        objective = _objective(backend, task, spec, call, sku, None, seed=seed, energy=False, session=session,
                               source_path=path)
        latency = objective(default)[0]
    return None if latency is None else latency * 1e6


def _replay_tasks(tasks: list[TuneTask], space, path: Path) -> list[TuneTask]:
    """The task a project recording (``space``, read from ``path``) covers (its op/dtype/bucket);
    Kernel Tuner caches have none."""
    meta = getattr(space, "meta", None) or {}
    op, dtype = meta.get("op"), meta.get("dtype")
    if not op:
        raise BadInput(f"{path} is not a kernelagent recording (no op): for a Kernel Tuner cache use "
                       "`kernelagent tune --replay FILE` to run the search alone")
    picked = [t for t in tasks if t.op == op and t.dtype == dtype and t.bucket_str == meta.get("bucket")]
    if not picked:
        raise BadInput(f"{path} records {op} {dtype} [{meta.get('bucket')}], which is not among the requested "
                       "ops/dtypes/buckets")
    return picked[:1]


def _meta_shape_key(spec, task: TuneTask) -> dict:
    import torch

    from ..kernels.spec import Case

    with torch.device("meta"):
        return spec.shape_key(spec.build(Case(params=task.case_params, dtype=task.dtype)))


def format_table(results: Sequence[TuneResult]) -> str:
    """The result table and a summary: what was tuned, for which SKU and shapes, measured or
    predicted, where it was written, and the next command."""
    lines = [f"{'op':14s} {'dtype':5s} {'bucket':24s} {'best config':40s} {'latency':>12s} {'vs default':>10s}  status"]
    for r in results:
        kind = "meas" if r.measured else "pred"
        lat = f"{r.latency_us:8.2f}us {kind}" if r.latency_us else "-"
        sp = f"{r.speedup_vs_default:.2f}x" if r.speedup_vs_default else "-"
        if not r.verified:
            status = "NOT VERIFIED"
        elif r.library_action:
            status = f"verified, {r.library_action}"
        else:
            status = "verified, default kept" if "default heuristic stays" in r.note else "verified, not written"
        cfg = json.dumps(r.best_config, separators=(",", ":")) if r.best_config else "-"
        if r.variant != "kernel":
            cfg = f"{r.variant}:{cfg}"
        lines.append(f"{r.op:14s} {r.dtype:5s} {json.dumps(r.bucket, separators=(',', ':'))[:24]:24s} {cfg[:40]:40s} "
                     f"{lat:>12s} {sp:>10s}  {status}")
    return "\n".join(lines + [""] + summary_lines(results))


def summary_lines(results: Sequence[TuneResult]) -> list[str]:
    if not results:
        return ["nothing was tuned"]
    skus = sorted({r.sku for r in results})
    predicted = [r for r in results if not r.measured]
    out = [f"tuned {len(results)} op x dtype x shape bucket(s) for {', '.join(skus)} "
           f"({', '.join(sorted({r.backend for r in results}))} backend)."]
    if predicted:
        out.append(f"latencies of {len(predicted)} row(s) are PREDICTED by the model from the spec sheet and a "
                   "static compile, not measured; 'vs default' is the predicted ratio.")
    written = [r for r in results if r.library_action in ("added", "replaced")]
    kept_default = [r for r in results if r.verified and "default heuristic stays" in r.note]
    if written:
        roots = sorted({str(Path(r.library_path).parents[2]) for r in written if r.library_path})
        out.append(f"wrote {len(written)} entr{'y' if len(written) == 1 else 'ies'} to {', '.join(roots)}; "
                   f"`from kernelagent.kernels import {written[0].op}` uses them on {written[0].sku}.")
    if kept_default:
        out.append(f"{len(kept_default)} row(s) keep the op's default config: the predicted gain is within the "
                   "model's uncertainty (--min-predicted-gain).")
    short = [r for r in results if r.shortfall]
    if short:
        r = short[0]
        out.append(f"SHORTFALL: {len(short)} row(s) measured fewer configs than --trials asked while feasible ones "
                   f"remained (`shortfall` in --json); {r.op} {r.dtype} {json.dumps(r.bucket)}: {r.shortfall}")
    failed = [r for r in results if not r.verified]
    if failed:
        out.append(f"{len(failed)} row(s) had no config that the harness verified (see verify_detail in --json).")
    out.append("every written config was re-verified by the sandboxed harness before it was recorded.")
    if predicted:
        out.append(f"next: on a {skus[0]} machine, `kernelagent tune --sku {skus[0]} --measure gpu` measures "
                   "instead of predicting; `kernelagent nightly` re-verifies the library.")
    else:
        out.append("next: `kernelagent nightly` re-verifies and re-measures the library.")
    return out
