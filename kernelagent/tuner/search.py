"""The search: one Optuna study per (op × SKU × dtype × shape bucket) over ordered launch parameters.

The search knows nothing about GPUs. It is given a :class:`SearchSpace` and a callable
``measure(config) -> (latency_s | None, energy_j | None[, reason[, energy_uncertainty_j]])``
(``None`` latency means the config failed: compile error, out of resources, wrong answer;
``energy_uncertainty_j`` is the energy's stated ≈95 % half-width) and spends a budget of
*measurements*.

Counting rule. The budget counts distinct configurations handed to ``measure``, failed ones
included. A configuration rejected by the space's a-priori ``constraint`` (known without a
GPU: divisibility, shared-memory limits, Kernel Tuner "restrictions") costs no measurement; it
is told to Optuna as an infeasible trial so the sampler learns the region, and it is not
counted. A configuration already measured in the study (Optuna re-suggests points) is answered
from the study and not counted either.

Strategy (``sampler="auto"``):

* ``exhaustive`` when the feasible set is known and has no more points than the budget: every
  feasible config once, in a seeded order: Optuna's BruteForceSampler, trials stopped at the
  first parameter prefix no feasible config has; or, where that would take more than
  ``BRUTE_FORCE_LIMIT`` trials (its cost is quadratic in them), the feasible configs drawn in a
  seeded order by ``LocalSearchSampler``.
* otherwise ``tpe+local``: Optuna's TPE (``multivariate=True, group=True``, ``constant_liar``,
  10 random start-up trials; a-priori infeasible trials reported as constraint violations)
  explores for the first ``explore_fraction`` = 30 % of the budget (warm-start configs count).
  Budgets up to ``DESIGN_BUDGET_MAX`` = 75 start instead with a space-filling design: a Latin
  hypercube over the free parameters' ordinal positions, each point mapped to the nearest
  untried feasible config (``space.space_filling_design``), ``design_fraction`` = 60 % of the
  budget and at most ``design_max`` = 12 configs, which also serve as TPE's start-up trials;
  the exploration phase is then at least as long as the design. Then a best-first local search
  spends the rest, around the ``local_top`` = 3 best configs
  that differ pairwise in ≥ 2 parameters (the seeds). Its proposals alternate between (a) the
  nearest unmeasured config one parameter away from a seed (one step along the ordered values
  around all seeds first, then two steps, …) and (b) among all configs one parameter away from
  a seed, the one a ridge-regressed additive model of log-latency (one-hot values, λ = 0.1)
  rates fastest: (a) refines valleys, (b) jumps over worse values in between (block sizes that
  are multiples of a 64-wide wavefront, say). Optional restarts (iterated local search,
  ``stall_fraction``, off by default): when neither the best latency nor the latest restart's
  basin improved in the last ``stall_fraction`` × budget measurements (at least ``STALL_MIN``),
  the next config is a restart (``kick``: the additive model's favourite among untried configs
  ≥ 2 parameters from every seed, a random config 2-3 parameters from the best, or the two in
  turn), and the best config found from it leads the seeds.

  2026-12-04 (``benchmarks/bench_search.py``, convolution spaces only; ``docs/SEARCH.md``): the
  design lowered the geometric mean of the medians at 20 measurements from 1.91 to 1.51 (20
  seeds; random search 1.65) and at 50 from 1.30 to 1.22, but at 100 raised it from 1.050 to
  1.056 and cut the seeds within 5 % from 62 % to 50 % (20 seeds), so budgets above 75 keep
  TPE's own start. Restarts after 10 %, 15 % or 25 % of the budget without improvement (model,
  random-perturbation, mixed and best-pair kicks) all did worse at 50 and 100 (geomean at 100
  1.060-1.211 against 1.051; after 40 % 1.052), so they are off by default.

  Chosen by measurement (``benchmarks/bench_search.py``, ``docs/BENCHMARKS.md``; six recorded
  convolution spaces, median best/optimum after 100 measurements, 10 and 20 seeds): TPE
  (multivariate, group) alone and Optuna's default TPE were no better than random search
  (1.13-1.60): the last few percent sit in narrow valleys (on A100 only the optimum itself is
  within 5 %). TPE + the local phase reaches ≤ 1.04 on A4000, A6000, MI250X and W7800, about
  1.0-1.07 on A100 (the optimum or the second-best config, by seed), and stays at 1.20 on
  W6600, whose four fast configs form an isolated basin. Measured and rejected: radius-1-only
  local search (stuck at 1.2-1.5 on the AMD spaces), distance order alone (same medians, one
  MI250X seed at 14.9×), model order alone (1.18-1.24 on A4000/A6000), random instead of TPE
  exploration, 20-50 % exploration, interleaving sampler proposals into the local phase, and
  Thompson-sampled pairwise-interaction models over the whole space. GP and CMA-ES need
  scipy / cmaes, which are not project dependencies, so they were not measured.

Sampling stays inside the feasible set: the local search and the fallback for a sampler that
keeps proposing invalid or measured points draw from the space's feasible configs (a
recording's configs, the enumerated product, or constraint-checked random draws), not from the
raw product, so a space whose feasible part is a tiny fraction of its product is still searched.

Shortfall. A search that measures fewer configs than its budget while feasible ones remain, or
measures nothing at all, says so in ``SearchResult.shortfall`` (None when the budget was spent or
every feasible config was measured); the commands that run a search print it and exit 1.

Resume and many workers. The loop is Optuna's ``study.optimize``; every trial carries its config
key and measurement as user attrs, so the study in storage *is* the measurement cache:
re-running with the same storage and study name continues toward the same budget, and workers
sharing an RDB storage never measure one config twice (the lowest-numbered live trial for a key
owns it; the others wait for its result). RDB storages beat a heartbeat for each running trial;
a trial whose worker died (no heartbeat for a grace period) is failed and retried once by
Optuna's retry callback, and a worker whose budget is spent by other workers' measurements
waits for them (or for their retries) before it reports. A measurement interrupted in an
earlier run (an exception, Ctrl-C) is retried once when the search resumes.

Energy is recorded per trial; the ``policy`` picks the answer among the measured configs.

This module holds the search loop (``_Search``) and ``run_search``. The pieces live beside it,
and it re-exports their names: the space (``space.py``), storages and study names
(``storage.py``), samplers (``samplers.py``), and measurement points with the selection
policies and the Pareto front (``results.py``).
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

from ..errors import BadInput
from .results import _A, ENERGY_LATENCY_SLACK, POLICIES, SearchResult, TrialIndex, _point, pareto_front, select
from .samplers import SAMPLERS, LocalSearchSampler, _has_set_constraint, make_sampler
from .space import ENUMERATE_LIMIT, Config, OrderedParam, SearchSpace
from .storage import HEARTBEAT_S, _storage, default_storage_url, normalize_storage_url, pid_alive, study_name_for

__all__ = [
    "ENUMERATE_LIMIT", "Measure", "run_search",
    # space.py
    "Config", "OrderedParam", "SearchSpace",
    # storage.py
    "default_storage_url", "normalize_storage_url", "study_name_for",
    # samplers.py
    "SAMPLERS", "LocalSearchSampler", "make_sampler",
    # results.py
    "ENERGY_LATENCY_SLACK", "POLICIES", "SearchResult", "pareto_front", "select",
]

Measure = Callable[[Mapping[str, Any]], Sequence[Any]]

# BruteForceSampler rebuilds its tree from every trial at each suggestion (stateless, so workers
# can share it): its cost is quadratic in the trials. Measured here (4 parameters, all feasible):
# 256 configs 0.7 s, 1,296 13 s, 4,096 200 s. Exhaustive searches needing more trials than this
# (feasible configs plus dead prefixes) draw the feasible configs in a seeded order instead.
BRUTE_FORCE_LIMIT = 500
DESIGN_BUDGET_MAX = 75  # budgets up to this start with the space-filling design (measured: see the docstring)
STALL_MIN = 5  # the fewest measurements without improvement that count as a stall


# ------------------------------------------------------------------------------------------
# The search loop.


class _Search:
    """One worker's search: ``study.optimize`` with :meth:`objective` as the trial, until the
    budget is spent, every feasible config is measured, or the sampler finds nothing new."""

    def __init__(self, space: SearchSpace, measure: Measure, study, storage, budget: int, kind: str,
                 feasible: list[Config] | None, prefixes: set[tuple] | None, stale_after_s: float, poll_s: float):
        self.space, self.measure, self.study, self.budget, self.kind = space, measure, study, budget, kind
        self.stale_after_s, self.poll_s = stale_after_s, poll_s
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.choose_stale_s = min(300.0, stale_after_s)
        self.feasible_keys = None if feasible is None else {space.key(c) for c in feasible}
        self.prefixes = prefixes  # BruteForceSampler: a trial stops at the first prefix not in this set
        get_interval = getattr(storage, "get_heartbeat_interval", None)
        self.heartbeat_s = get_interval() if callable(get_interval) else None
        self._stale_checked = 0.0
        self._index = TrialIndex()
        self.stopped_why: str | None = None

    # -- what the study already holds ------------------------------------------------------
    def index(self) -> TrialIndex:
        return self._index.update(self.study.get_trials(deepcopy=False))

    def spent(self, index: TrialIndex) -> int:
        return len(index.measured) + len(index.live())

    def all_feasible_measured(self, index: TrialIndex) -> bool:
        return self.feasible_keys is not None and self.feasible_keys.issubset(index.measured_keys)

    def finished(self, index: TrialIndex) -> bool:
        exhausted = getattr(self.study.sampler, "exhausted", None)
        if exhausted:
            self.stopped_why = exhausted
        return len(index.measured) >= self.budget or self.all_feasible_measured(index) or bool(exhausted)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        from optuna.trial import TrialState

        while True:
            index = self.index()
            if self.finished(index):
                return
            waiting = any(t.state == TrialState.WAITING for t in index.open)
            if self.spent(index) < self.budget or waiting:
                before = len(index.measured)
                self.study.optimize(self.objective, callbacks=[self._after_trial], gc_after_trial=False)
                index = self.index()
                if len(index.measured) == before and not index.live():
                    self.stopped_why = self.stopped_why or "the sampler proposed nothing new to measure"
                    return
                continue
            # The rest of the budget is being measured by other workers. Without heartbeats a dead
            # worker's trial would never be failed, so only an RDB storage waits for them.
            if not self.heartbeat_s:
                return
            time.sleep(self.poll_s)
            self._fail_stale()

    def _after_trial(self, study, frozen) -> None:
        index = self.index()
        if self.finished(index) or self.spent(index) >= self.budget:
            study.stop()

    def _fail_stale(self) -> None:
        """Fail trials whose worker stopped beating (Optuna retries them), at most once a beat."""
        if not self.heartbeat_s or time.monotonic() - self._stale_checked < self.heartbeat_s:
            return
        import optuna

        self._stale_checked = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    # -- one trial -------------------------------------------------------------------------
    def objective(self, trial) -> float:
        import optuna

        trial.set_user_attr(_A + "worker", self.worker)
        config = {p.name: p.values[0] for p in self.space.params if len(p.values) == 1}
        free = self.space.free
        for i, p in enumerate(free):
            lo, hi = p.code_range()
            config[p.name] = p.decode(trial.suggest_int(p.optuna_name, lo, hi))
            prefix = tuple(config[q.name] for q in free[:i + 1])
            if self.prefixes is not None and i < len(free) - 1 and prefix not in self.prefixes:
                trial.set_user_attr(_A + "config", dict(config))
                values = ", ".join(f"{q.name}={v}" for q, v in zip(free, prefix))
                return self._finish(trial, None, None, False, f"constraint: no feasible config has {values}",
                                    measured=False, status="invalid")
        config = {p.name: config[p.name] for p in self.space.params}
        key = self.space.key(config)
        trial.set_user_attr(_A + "key", key)
        trial.set_user_attr(_A + "config", config)
        reason = self.space.check(config)
        if reason is not None:
            return self._finish(trial, None, None, False, f"constraint: {reason}", measured=False, status="invalid")
        owner = self._owner(trial.number, key)
        if owner == "over-budget":
            trial.set_user_attr(_A + "status", "over-budget")
            self.study.stop()
            raise optuna.TrialPruned("the budget is spent")
        if owner is not None:
            p = _point(owner)
            trial.set_user_attr(_A + "duplicate_of", owner.number)
            return self._finish(trial, p["latency_s"], p["energy_j"], p["feasible"], p["reason"], measured=False,
                                status="duplicate", energy_uncertainty=p.get("energy_uncertainty_j"))
        trial.set_user_attr(_A + "status", "measuring")
        out = tuple(self.measure(dict(config)))
        lat, energy = out[0], out[1] if len(out) > 1 else None
        why = out[2] if len(out) > 2 else None
        unc = out[3] if len(out) > 3 else None   # the energy's stated uncertainty (J), when the backend gives one
        ok = lat is not None and math.isfinite(float(lat))
        has_e = ok and energy is not None
        return self._finish(trial, float(lat) if ok else None, float(energy) if has_e else None,
                            ok, None if ok else (why or "measurement failed"), measured=True, status="measured",
                            energy_uncertainty=float(unc) if has_e and unc is not None else None)

    def _finish(self, trial, lat, energy, feasible, reason, *, measured: bool, status: str,
                energy_uncertainty: float | None = None) -> float:
        """Record the outcome on the trial; the value Optuna is told."""
        for k, v in (("latency_s", lat), ("energy_j", energy), ("energy_uncertainty_j", energy_uncertainty),
                     ("feasible", feasible), ("reason", reason), ("measured", measured), ("status", status)):
            trial.set_user_attr(_A + k, v)
        if _has_set_constraint():
            trial.set_constraint("feasible", 0.0 if feasible else 1.0)
        if lat is not None:
            return lat
        # infeasible: the constraint tells TPE; the value only keeps others sane
        slowest = self.index().slowest
        return 1.0 if slowest is None else slowest

    def _owner(self, number: int, key: str):
        """The trial that measures ``key`` (None: this one), or "over-budget".

        The lowest-numbered live trial holding a key owns it. Trials below this one that are
        still choosing their config (running, no key yet) are waited for, so two workers that
        draw the same config at once agree on one owner.
        """
        from optuna.trial import TrialState

        while True:
            trials = self.study.get_trials(deepcopy=False)
            lower = [t for t in trials if t.number < number and t.state not in (TrialState.FAIL, TrialState.PRUNED)]
            now = time.time()

            def stale(t, after: float | None = None) -> bool:
                start = t.datetime_start.timestamp() if t.datetime_start else now
                return now - start > (self.stale_after_s if after is None else after)

            choosing = [t for t in lower if t.state == TrialState.RUNNING and not stale(t, self.choose_stale_s)
                        and (_A + "key" not in t.user_attrs or _A + "status" not in t.user_attrs)]
            same = [t for t in lower if t.user_attrs.get(_A + "key") == key
                    and (t.state != TrialState.RUNNING or not stale(t))]
            if same:
                first = min(same, key=lambda t: t.number)
                if first.state == TrialState.COMPLETE:
                    return first
            if same or choosing:  # the owner is measuring or waits to be run, or a lower trial is choosing
                time.sleep(self.poll_s)
                self._fail_stale()
                continue
            spent = sum(1 for t in lower if t.user_attrs.get(_A + "measured")
                        or (t.state == TrialState.RUNNING and t.user_attrs.get(_A + "status") == "measuring"))
            return "over-budget" if spent >= self.budget else None


def run_search(space: SearchSpace, measure: Measure, *, budget: int, study_name: str, storage=None,
               seed: int | None = None, sampler: str = "auto", policy: str = "latency",
               default_config: Mapping[str, Any] | None = None, warm_start: Sequence[Mapping[str, Any]] = (),
               explore_fraction: float = 0.3, n_startup_trials: int = 10, local_radius: int | None = None,
               local_top: int = 3, local_niche: int = 2, local_order: str = "mixed", ridge: float = 0.1,
               design_fraction: float = 0.6, design_max: int = 12, stall_fraction: float | None = None, kick: str = "mixed",
               stale_after_s: float = 3600.0, poll_s: float = 0.05, heartbeat_s: int | None = HEARTBEAT_S
               ) -> SearchResult:
    """Spend up to ``budget`` measurements finding the best config; see the module docstring.

    ``storage``: an Optuna storage object, an RDB URL (``sqlite:///…``, ``postgresql://…``),
    ``":memory:"``, or None for :func:`default_storage_url`. Re-running with the same storage
    and ``study_name`` resumes; ``budget`` is the total, trials already measured count.
    ``warm_start``: configs enqueued first (after ``default_config``) in a fresh study, e.g.
    the nearest known SKU's top configs. ``heartbeat_s``: the heartbeat interval of a storage
    opened from a URL (a trial without a beat for 4× that is failed and retried; None: off).
    """
    import optuna

    if budget < 1:
        raise BadInput(f"budget must be at least 1 measurement, got {budget}")
    if policy not in POLICIES:
        raise BadInput(f"unknown policy {policy!r}; expected one of {POLICIES}")
    if sampler not in SAMPLERS:
        raise BadInput(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    feasible = space.feasible_configs()
    kind = sampler
    if kind == "auto":
        kind = "exhaustive" if feasible is not None and len(feasible) <= budget else "tpe+local"
    prefixes, tree_trials = (None, 0)
    if kind == "exhaustive" and feasible is not None:
        prefixes, tree_trials = _prefix_tree(space, feasible)
    if prefixes is not None and tree_trials <= BRUTE_FORCE_LIMIT:
        base = make_sampler(kind, seed, n_startup_trials)  # BruteForceSampler
    else:
        prefixes = None
        if kind == "exhaustive":  # every feasible config once, in a seeded order, without BruteForceSampler's tree
            explore_n, draws, inner = budget, True, make_sampler("random", seed)
        else:
            explore_n = max(1, int(round(explore_fraction * budget))) if kind.endswith("+local") else budget
            draws, inner = kind.startswith("random"), make_sampler(kind, seed, n_startup_trials)
        local = kind.endswith("+local")
        design_n = (min(design_max, int(round(design_fraction * budget)))
                    if kind == "tpe+local" and budget <= DESIGN_BUDGET_MAX else 0)
        explore_n = max(explore_n, design_n) if local else explore_n
        stall_n = max(STALL_MIN, int(round(stall_fraction * budget))) if local and stall_fraction else None
        base = LocalSearchSampler(space, inner, explore_n=explore_n, feasible=feasible, seed=seed, local_top=local_top,
                                  niche=local_niche, radius=local_radius, order=local_order, ridge=ridge,
                                  explore_by_draws=draws, design_n=design_n, stall_n=stall_n, kick=kick)
    store = _storage(storage, heartbeat_s)
    study = optuna.create_study(study_name=study_name, storage=store, direction="minimize", sampler=base,
                                load_if_exists=True)
    search = _Search(space, measure, study, store, budget, kind, feasible, prefixes, stale_after_s, poll_s)
    _fail_orphans(study)
    if not study.get_trials(deepcopy=False) and kind != "exhaustive":
        for c in ([default_config] if default_config else []) + list(warm_start):
            c = {p.name: c[p.name] for p in space.params} if all(p.name in c for p in space.params) else None
            if c is None or space.check(c) is not None:
                continue  # a warm-start config outside this space or its constraint costs nothing
            study.enqueue_trial(space.codes(c), user_attrs={_A + "key": space.key(c)}, skip_if_exists=True)
    _retry_interrupted(study, space)
    search.run()
    return _result(search, study_name, kind, policy)


def _prefix_tree(space: SearchSpace, feasible: list[Config]) -> tuple[set[tuple], int]:
    """The parameter prefixes (in ``space.free`` order, all but the full length) some feasible
    config has, and the trials an exhaustive search with them takes: one per feasible config
    plus one per dead prefix (a prefix no feasible config has, one value past a live one)."""
    names = [p.name for p in space.free]
    levels = [{tuple(c[n] for n in names[:i]) for c in feasible} for i in range(len(names) + 1)]
    dead = sum(len(levels[i]) * len(space.free[i].values) - len(levels[i + 1]) for i in range(len(names)))
    return set().union(*levels[1:-1]), len(feasible) + dead


def _fail_orphans(study) -> None:
    """Mark FAIL the running trials left by dead processes of this host (a crashed earlier run) at
    once; heartbeats find dead workers on other hosts, after a grace period."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        h, _, pid = str(t.user_attrs.get(_A + "worker", "")).rpartition(":")
        if h == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            try:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            except RuntimeError:  # BruteForceSampler's after_trial stops a finished tree: only optimize may stop
                pass              # (the trial is failed all the same: tell stores the state in a finally)


def _retry_interrupted(study, space: SearchSpace) -> None:
    """Enqueue again, once, each config whose measurement failed without a result (an exception,
    Ctrl-C, a dead worker) and that no other trial has measured or holds."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    held = {t.user_attrs.get(_A + "key") for t in trials if t.state != TrialState.FAIL}
    failed = Counter(t.user_attrs.get(_A + "key") for t in trials
                     if t.state == TrialState.FAIL and t.user_attrs.get(_A + "status") == "measuring")
    for t in trials:
        key = t.user_attrs.get(_A + "key")
        if t.state == TrialState.FAIL and key in failed and failed[key] == 1 and key not in held:
            config = t.user_attrs.get(_A + "config")
            if config and all(p.name in config for p in space.params):
                study.enqueue_trial(space.codes(config), user_attrs={_A + "key": key})
                held.add(key)


def _result(search: _Search, study_name: str, kind: str, policy: str) -> SearchResult:
    index = search.index()
    points = [_point(t) for t in index.measured]
    best, note = select(points, policy)
    return SearchResult(
        best_config=best["config"] if best else None, best_latency_s=best["latency_s"] if best else None,
        best_energy_j=best["energy_j"] if best else None, policy=policy, sampler=kind,
        trials_used=len(points), optuna_trials=index.count, study_name=study_name,
        pareto_front=pareto_front(points), measurements=points, note=note, budget=search.budget,
        shortfall=_shortfall(search, index))


def _shortfall(search: _Search, index: TrialIndex) -> str | None:
    """Why fewer configs than the budget were measured while feasible ones remain, or none at
    all; None when the budget was spent, every feasible config was measured, or other workers
    are still measuring the rest."""
    used, live = len(index.measured), index.live()
    if used + len(live) >= search.budget:
        return None
    left = ""
    if search.feasible_keys is not None:
        if not search.feasible_keys:
            return f"measured nothing: no config of the space's {search.space.size()} passes its constraint"
        covered = index.measured_keys | {t.user_attrs.get(_A + "key") for t in live}
        unmeasured = len(search.feasible_keys - covered)
        if not unmeasured:
            return None
        left = f"; {unmeasured} feasible configs were left unmeasured"
    head = "measured nothing" if used == 0 else f"measured {used} of the {search.budget} configs asked"
    return f"{head}: {search.stopped_why or 'the search stopped early'}{left}"
