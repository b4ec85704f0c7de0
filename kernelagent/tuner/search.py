"""The search: one Optuna study per (op × SKU × dtype × shape bucket) over ordered launch parameters.

The search knows nothing about GPUs. It is given a :class:`SearchSpace` and a callable
``measure(config) -> (latency_s | None, energy_j | None[, reason])`` (``None`` latency means the
config failed: compile error, out of resources, wrong answer) and spends a budget of
*measurements*.

Counting rule. The budget counts distinct configurations handed to ``measure``, failed ones
included. A configuration rejected by the space's a-priori ``constraint`` (known without a
GPU: divisibility, shared-memory limits, Kernel Tuner "restrictions") costs no measurement; it
is told to Optuna as an infeasible trial so the sampler learns the region, and it is not
counted. A configuration already measured in the study (Optuna re-suggests points) is answered
from the study and not counted either.

Strategy (``sampler="auto"``):

* ``exhaustive`` when the feasible set has no more points than the budget: every feasible
  config once, in a seeded order.
* otherwise ``tpe+local``: Optuna's TPE (``multivariate=True, group=True``, ``constant_liar``,
  10 random start-up trials; a-priori infeasible trials reported as constraint violations)
  explores for the first ``explore_fraction`` = 30 % of the budget (warm-start configs count),
  then a best-first local search spends the rest, around the ``local_top`` = 3 best configs
  that differ pairwise in ≥ 2 parameters (the seeds). Its proposals alternate between (a) the
  nearest unmeasured config one parameter away from a seed (one step along the ordered values
  around all seeds first, then two steps, …) and (b) among all configs one parameter away from
  a seed, the one a ridge-regressed additive model of log-latency (one-hot values, λ = 0.1)
  rates fastest: (a) refines valleys, (b) jumps over worse values in between (block sizes that
  are multiples of a 64-wide wavefront, say).

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

Resume and many workers. Every trial carries its config key and measurement as user attrs, so
the study in storage *is* the measurement cache: re-running with the same storage and study
name continues toward the same budget, and workers sharing an RDB storage never measure one
config twice (the lowest-numbered live trial for a key owns it; the others wait for its result).

Energy is recorded per trial; the ``policy`` picks the answer among the measured configs.

This module holds the search loop (``_Search``) and ``run_search``. The pieces live beside it,
and it re-exports their names: the space (``space.py``), storages and study names
(``storage.py``), samplers (``samplers.py``), and measurement points with the selection
policies and the Pareto front (``results.py``).
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from typing import Any, Callable, Mapping, Sequence

from ..errors import BadInput
from .results import _A, ENERGY_LATENCY_SLACK, POLICIES, SearchResult, _point, pareto_front, select
from .samplers import SAMPLERS, _has_set_constraint, make_sampler
from .space import Config, OrderedParam, SearchSpace
from .storage import _storage, default_storage_url, normalize_storage_url, study_name_for

__all__ = [
    "ENUMERATE_LIMIT", "Measure", "run_search",
    # space.py
    "Config", "OrderedParam", "SearchSpace",
    # storage.py
    "default_storage_url", "normalize_storage_url", "study_name_for",
    # samplers.py
    "SAMPLERS", "make_sampler",
    # results.py
    "ENERGY_LATENCY_SLACK", "POLICIES", "SearchResult", "pareto_front", "select",
]

ENUMERATE_LIMIT = 200_000  # raw spaces up to this size are enumerated (exhaustive, fallbacks)

Measure = Callable[[Mapping[str, Any]], Sequence[Any]]


# ------------------------------------------------------------------------------------------
# The search loop.


class _Search:
    def __init__(self, space: SearchSpace, measure: Measure, study, budget: int, kind: str, seed: int | None,
                 explore_fraction: float, stale_after_s: float, poll_s: float):
        self.space, self.measure, self.study, self.budget, self.kind = space, measure, study, budget, kind
        self.rng = random.Random(seed)
        self.explore_n = max(1, int(round(explore_fraction * budget))) if kind.endswith("+local") else budget
        self.stale_after_s, self.poll_s = stale_after_s, poll_s
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._feasible: list[Config] | None = None
        self.waste_streak = 0
        self.choose_stale_s = min(300.0, stale_after_s)
        self.radius: int | None = None
        self.local_top = 3
        self.niche = 1
        self.local_order = "mixed"
        self.ridge = 0.1

    # -- what the study already holds ------------------------------------------------------
    def trials(self):
        return self.study.get_trials(deepcopy=False)

    def measured(self, trials) -> list:
        from optuna.trial import TrialState

        return [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get(_A + "measured")]

    def spent(self, trials) -> int:
        from optuna.trial import TrialState

        live = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get(_A + "status") == "measuring"]
        return len(self.measured(trials)) + len(live)

    def feasible_set(self) -> list[Config] | None:
        if self._feasible is None and self.space.size() <= ENUMERATE_LIMIT:
            self._feasible = [c for c in self.space.enumerate() if self.space.check(c) is None]
        return self._feasible

    # -- proposals beyond the sampler ------------------------------------------------------
    def propose(self, trials) -> Config | None | bool:
        """A config to enqueue instead of asking the sampler; None: ask the sampler; False:
        nothing feasible is left unmeasured."""
        seen = {t.user_attrs.get(_A + "key") for t in trials}
        if self.kind == "exhaustive":
            return self._unseen_random(seen) or False
        n = len(self.measured(trials))
        if n >= self.explore_n:
            return self._local(trials, seen) or self._unseen_random(seen) or False
        if self.waste_streak >= 20:  # the sampler keeps proposing known or invalid points
            return self._unseen_random(seen) or False
        return None

    def _unseen_random(self, seen) -> Config | None:
        feas = self.feasible_set()
        if feas is None:
            for _ in range(1000):
                c = {p.name: self.rng.choice(p.values) for p in self.space.params}
                if self.space.key(c) not in seen and self.space.check(c) is None:
                    return c
            return None
        if not hasattr(self, "_order"):
            self._order = list(feas)
            self.rng.shuffle(self._order)
        return next((c for c in self._order if self.space.key(c) not in seen), None)

    def _local(self, trials, seen) -> Config | None:
        """Best-first local search around the best configs (the seeds).

        ``distance`` order: steps of size 1 around the ``local_top`` seeds come before steps of
        size 2 around any of them, and so on, so the search refines near the incumbent first
        and only then jumps along a parameter over values that are worse in between.
        ``model`` order: among all configs one parameter away from a seed (any step), the one
        an additive model of log-latency fitted to the measurements rates fastest.
        ``mixed`` alternates the two.
        """
        ranked = sorted((p for p in map(_point, self.measured(trials)) if p["latency_s"] is not None),
                        key=lambda p: p["latency_s"])
        reach = self.radius or max((len(p.values) for p in self.space.free), default=1)
        seeds: list[dict] = []  # the best configs that differ from each other in several params
        for p in ranked:
            if len(seeds) >= self.local_top:
                break
            if all(_hamming(p["config"], q["config"]) >= self.niche for q in seeds):
                seeds.append(p)
        use_model = self.local_order == "model" or (  # "mixed": every other local-phase proposal
            self.local_order == "mixed" and len(ranked) % 2 == 0)
        if use_model:
            cands, keys = [], set()
            for p in seeds:
                for c in self.space.neighbours(p["config"], self.radius):
                    k = self.space.key(c)
                    if k not in seen and k not in keys and self.space.check(c) is None:
                        keys.add(k)
                        cands.append(c)
            if cands:
                return self._model_pick(ranked, cands)
        for d in range(1, reach + 1):
            for p in seeds:
                for c in self.space.neighbours(p["config"], d, exact=True):
                    k = self.space.key(c)
                    if k not in seen and self.space.check(c) is None:
                        return c
                    seen.add(k)
        for p in ranked[self.local_top:]:
            for c in self.space.neighbours(p["config"], 1):
                k = self.space.key(c)
                if k not in seen and self.space.check(c) is None:
                    return c
                seen.add(k)
        return None

    def _model_pick(self, ranked, cands):
        """The candidate an additive model of log-latency (ridge, one-hot values) rates fastest."""
        import numpy as np

        free = self.space.free
        offs = np.cumsum([0] + [len(p.values) for p in free])

        def onehot(cfgs):
            x = np.zeros((len(cfgs), int(offs[-1]) + 1))
            x[:, -1] = 1.0
            for j, p in enumerate(free):
                for i, c in enumerate(cfgs):
                    x[i, offs[j] + p.values.index(c[p.name])] = 1.0
            return x

        xa = onehot([p["config"] for p in ranked])
        y = np.log([p["latency_s"] for p in ranked])
        w = np.linalg.solve(xa.T @ xa + self.ridge * np.eye(xa.shape[1]), xa.T @ (y - y.mean()))
        pred = onehot(cands) @ w
        return cands[int(np.argmin(pred))]

    # -- one trial -------------------------------------------------------------------------
    def step(self) -> bool:
        """Run one trial; False when the budget is spent (or nothing is left to measure)."""
        from optuna.trial import TrialState

        trials = self.trials()
        if self.spent(trials) >= self.budget:
            return False
        if not any(t.state == TrialState.WAITING for t in trials):
            c = self.propose(trials)
            if c is False:
                return False  # every feasible config has been measured
            if c is not None:
                self.study.enqueue_trial(self.space.codes(c), user_attrs={_A + "key": self.space.key(c)})
        trial = self.study.ask()
        try:
            trial.set_user_attr(_A + "worker", self.worker)
            config = {p.name: p.values[0] for p in self.space.params if len(p.values) == 1}
            for p in self.space.free:
                lo, hi = p.code_range()
                config[p.name] = p.decode(trial.suggest_int(p.optuna_name, lo, hi))
            config = {p.name: config[p.name] for p in self.space.params}
            key = self.space.key(config)
            trial.set_user_attr(_A + "key", key)
            trial.set_user_attr(_A + "config", config)
            reason = self.space.check(config)
            if reason is not None:
                self._tell(trial, None, None, False, f"constraint: {reason}", measured=False, status="invalid")
                self.waste_streak += 1
                return True
            owner = self._owner(trial.number, key)
            if owner == "over-budget":
                trial.set_user_attr(_A + "status", "over-budget")
                self.study.tell(trial, state=TrialState.PRUNED)
                return False
            if owner is not None:
                p = _point(owner)
                trial.set_user_attr(_A + "duplicate_of", owner.number)
                self._tell(trial, p["latency_s"], p["energy_j"], p["feasible"], p["reason"], measured=False,
                           status="duplicate")
                self.waste_streak += 1
                return True
            trial.set_user_attr(_A + "status", "measuring")
            out = tuple(self.measure(dict(config)))
            lat, energy = out[0], out[1] if len(out) > 1 else None
            why = out[2] if len(out) > 2 else None
            ok = lat is not None and math.isfinite(float(lat))
            self._tell(trial, float(lat) if ok else None, float(energy) if ok and energy is not None else None,
                       ok, None if ok else (why or "measurement failed"), measured=True, status="measured")
            self.waste_streak = 0
            return True
        except BaseException:
            if self.study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                self.study.tell(trial, state=TrialState.FAIL)
            raise

    def _tell(self, trial, lat, energy, feasible, reason, *, measured: bool, status: str) -> None:
        for k, v in (("latency_s", lat), ("energy_j", energy), ("feasible", feasible), ("reason", reason),
                     ("measured", measured), ("status", status)):
            trial.set_user_attr(_A + k, v)
        if _has_set_constraint():
            trial.set_constraint("feasible", 0.0 if feasible else 1.0)
        if lat is None:  # infeasible: the constraint tells TPE; the value only keeps others sane
            done = [p["latency_s"] for p in map(_point, self.measured(self.trials())) if p["latency_s"] is not None]
            lat_value = max(done) if done else 1.0
        else:
            lat_value = lat
        self.study.tell(trial, lat_value)

    def _owner(self, number: int, key: str):
        """The trial that measures ``key`` (None: this one), or "over-budget".

        The lowest-numbered live trial holding a key owns it. Trials below this one that are
        still choosing their config (running, no key yet) are waited for, so two workers that
        draw the same config at once agree on one owner.
        """
        from optuna.trial import TrialState

        while True:
            trials = self.trials()
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
                if first.state == TrialState.RUNNING and first.user_attrs.get(_A + "status") == "measuring":
                    time.sleep(self.poll_s)
                    continue
            if choosing:
                time.sleep(self.poll_s)
                continue
            if same:  # the owner is waiting to be run (an enqueued trial)
                time.sleep(self.poll_s)
                continue
            spent = sum(1 for t in lower if t.user_attrs.get(_A + "measured")
                        or (t.state == TrialState.RUNNING and t.user_attrs.get(_A + "status") == "measuring"))
            return "over-budget" if spent >= self.budget else None


def run_search(space: SearchSpace, measure: Measure, *, budget: int, study_name: str, storage=None,
               seed: int | None = None, sampler: str = "auto", policy: str = "latency",
               default_config: Mapping[str, Any] | None = None, warm_start: Sequence[Mapping[str, Any]] = (),
               explore_fraction: float = 0.3, n_startup_trials: int = 10, local_radius: int | None = None,
               local_top: int = 3, local_niche: int = 2, local_order: str = "mixed", ridge: float = 0.1,
               stale_after_s: float = 3600.0, poll_s: float = 0.05) -> SearchResult:
    """Spend up to ``budget`` measurements finding the best config; see the module docstring.

    ``storage``: an Optuna storage object, an RDB URL (``sqlite:///…``, ``postgresql://…``),
    ``":memory:"``, or None for :func:`default_storage_url`. Re-running with the same storage
    and ``study_name`` resumes; ``budget`` is the total, trials already measured count.
    ``warm_start``: configs enqueued first (after ``default_config``) in a fresh study, e.g.
    the nearest known SKU's top configs.
    """
    import optuna

    if budget < 1:
        raise BadInput(f"budget must be at least 1 measurement, got {budget}")
    if policy not in POLICIES:
        raise BadInput(f"unknown policy {policy!r}; expected one of {POLICIES}")
    if sampler not in SAMPLERS:
        raise BadInput(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    kind = sampler
    if kind == "auto":
        feas = None if space.size() > ENUMERATE_LIMIT else sum(space.check(c) is None for c in space.enumerate())
        kind = "exhaustive" if feas is not None and feas <= budget else "tpe+local"
    study = optuna.create_study(study_name=study_name, storage=_storage(storage), direction="minimize",
                                sampler=make_sampler(kind, seed, n_startup_trials), load_if_exists=True)
    search = _Search(space, measure, study, budget, kind, seed, explore_fraction, stale_after_s, poll_s)
    search.radius, search.local_top, search.niche = local_radius, local_top, local_niche
    search.local_order, search.ridge = local_order, ridge
    _fail_orphans(study)
    if not study.get_trials(deepcopy=False) and kind != "exhaustive":
        for c in ([default_config] if default_config else []) + list(warm_start):
            c = {p.name: c[p.name] for p in space.params} if all(p.name in c for p in space.params) else None
            if c is None or space.check(c) is not None:
                continue  # a warm-start config outside this space or its constraint costs nothing
            study.enqueue_trial(space.codes(c), user_attrs={_A + "key": space.key(c)}, skip_if_exists=True)
    while search.step():
        pass
    return _result(search, study_name, kind, policy)


def _hamming(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    return sum(a[k] != b[k] for k in a)


def _fail_orphans(study) -> None:
    """Mark FAIL the running trials left by dead processes of this host (a crashed earlier run)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        h, _, pid = str(t.user_attrs.get(_A + "worker", "")).rpartition(":")
        if h == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _result(search: _Search, study_name: str, kind: str, policy: str) -> SearchResult:
    trials = search.trials()
    points = [_point(t) for t in sorted(search.measured(trials), key=lambda t: t.number)]
    best, note = select(points, policy)
    return SearchResult(
        best_config=best["config"] if best else None, best_latency_s=best["latency_s"] if best else None,
        best_energy_j=best["energy_j"] if best else None, policy=policy, sampler=kind,
        trials_used=len(points), optuna_trials=len(trials), study_name=study_name,
        pareto_front=pareto_front(points), measurements=points, note=note)
