"""The Optuna samplers a search strategy names, and the local search as a sampler.

``make_sampler`` gives the base sampler of a strategy: ``tpe`` and ``tpe+local`` use TPE
(multivariate, group, constant liar) that is told a-priori infeasible trials as constraint
violations (set on the trial on Optuna 5, through ``constraints_func`` on 4.x); ``tpe-default``
is Optuna's default TPE; ``random`` and ``random+local`` sample at random; ``exhaustive`` is
Optuna's :class:`~optuna.samplers.BruteForceSampler` (in a seeded order; the search stops a trial
at the first parameter prefix no feasible config has, so each infeasible subtree costs one free
trial).

Every other kind runs inside :class:`LocalSearchSampler`, which explores with the base sampler
and then, for ``+local`` kinds, proposes the best-first local search's configs (see
``search.py`` for the strategy and why); so does an exhaustive search too large for
BruteForceSampler's tree (``search.BRUTE_FORCE_LIMIT``), as draws of every feasible config. The
local search, random search and the fallback for a base sampler that keeps proposing invalid or
measured points all draw from the feasible set, never from the raw product: on a space whose
feasible part is a tiny fraction of the product a random point of the product is almost never
measurable. Re-exported by ``search.py``.
"""

from __future__ import annotations

import functools
import random
import warnings
from typing import Any, Mapping, Sequence

import optuna
from optuna.distributions import IntDistribution

from ..errors import BadInput
from .results import _A, TrialIndex, _point
from .space import DRAW_TRIES, Config, SearchSpace, space_filling_design

SAMPLERS = ("auto", "tpe+local", "random+local", "tpe", "tpe-default", "random", "exhaustive")
WASTE_LIMIT = 20  # trials in a row that measured nothing before the fallback draws a feasible config


@functools.lru_cache(maxsize=None)
def _has_set_constraint() -> bool:
    return hasattr(optuna.trial.Trial, "set_constraint")


def _constraints_func(frozen) -> list[float]:
    return [0.0 if frozen.user_attrs.get(_A + "feasible", True) else 1.0]


def make_sampler(kind: str, seed: int | None, n_startup_trials: int = 10):
    """The base Optuna sampler of a strategy (``exhaustive``: BruteForceSampler)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group=True, BruteForceSampler
        if kind in ("tpe", "tpe+local"):
            # Optuna 5 reads constraints set on the trial; 4.x needs constraints_func.
            cf = None if _has_set_constraint() else _constraints_func
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=n_startup_trials, constraints_func=cf)
        if kind == "tpe-default":
            return optuna.samplers.TPESampler(seed=seed)
        if kind in ("random", "random+local"):
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "exhaustive":
            return optuna.samplers.BruteForceSampler(seed=seed)
    raise BadInput(f"unknown sampler {kind!r}; expected one of {SAMPLERS}")


class LocalSearchSampler(optuna.samplers.BaseSampler):
    """Explore with ``base``; after ``explore_n`` measurements, best-first local search.

    With ``design_n`` and a known feasible set, the first ``design_n`` measurements are a
    space-filling design of feasible configs (``space.space_filling_design``) instead of the
    base sampler's proposals. With ``stall_n``, a local search that has not improved for that
    many measurements restarts from a ``kick`` config (see :meth:`_local`); ``kicks`` lists the
    restarts (measurements so far, config). Both states are per worker and rebuilt from the
    study's trials, so workers sharing an RDB storage each keep their own.

    A config of its own is proposed through ``sample_relative`` over every free parameter's
    code, so enqueued trials (warm starts, retried trials) keep their own params. While
    exploring, once the last ``waste_limit`` trials measured nothing (a-priori infeasible or
    already measured), the next trial is an untried feasible config drawn at random; with
    ``explore_by_draws`` (random search) every exploring trial is, which is uniform sampling of
    the feasible set without replacement. When it finds no untried feasible config,
    ``exhausted`` says why; the search then stops.

    Why TPE's own proposals are not screened against the constraint before they become trials:
    measured (``benchmarks/bench_search.py``, convolution spaces, 20 seeds), re-drawing TPE's
    infeasible or repeated proposals inside the sampler instead of telling them to TPE as
    trials raised the median best/optimum on A100 from 1.07 to 1.27 and on A6000 from 1.04 to
    1.17. Infeasible and repeated trials cost no measurement, only a little sampler time.
    """

    def __init__(self, space: SearchSpace, base: optuna.samplers.BaseSampler, *, explore_n: int,
                 feasible: list[Config] | None, seed: int | None, local_top: int = 3, niche: int = 2,
                 radius: int | None = None, order: str = "mixed", ridge: float = 0.1,
                 waste_limit: int = WASTE_LIMIT, explore_by_draws: bool = False, design_n: int = 0,
                 stall_n: int | None = None, kick: str = "mixed"):
        self.space, self.base, self.explore_n, self.feasible = space, base, explore_n, feasible
        self.local_top, self.niche, self.radius, self.order, self.ridge = local_top, niche, radius, order, ridge
        self.waste_limit, self.explore_by_draws = waste_limit, explore_by_draws
        self.design_n, self.stall_n, self.kick = design_n, stall_n, kick
        self.exhausted: str | None = None
        self.kicks: list[tuple[int, Config]] = []  # (measurements when the local search stalled, restart config)
        self._rng = random.Random(seed)
        self._design_rng = random.Random(f"design/{seed}")
        self._design: list[Config] | None = None
        self._basin: dict[str, int] = {}           # config key -> the restart whose basin proposed it
        self._order: list[Config] | None = None  # the feasible set in a seeded random order
        self._next = 0                           # _order[:_next] have all been tried
        self._dists = {p.optuna_name: IntDistribution(*p.code_range()) for p in space.free}
        self._proposed: dict[int, Config] = {}
        self._index = TrialIndex()

    # -- Optuna's sampler interface ------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict:
        config = self._propose(study.get_trials(deepcopy=False))
        if config is None:
            return self.base.infer_relative_search_space(study, trial)
        self._proposed[trial.number] = config
        return dict(self._dists)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        config = self._proposed.pop(trial.number, None)
        if config is None:
            return self.base.sample_relative(study, trial, search_space)
        return self.space.codes(config)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng.seed()

    # -- proposals -------------------------------------------------------------------------
    def _propose(self, trials) -> Config | None:
        """A config of the local search or the fallback, or None: let the base sampler choose."""
        index = self._index.update(trials)
        if len(index.measured) < self.design_n and self.feasible is not None:
            c = self._design_point(index.seen_keys())
            if c is not None:
                return c
        if len(index.measured) >= self.explore_n:
            seen = index.seen_keys()
            return self._local(index.measured, seen) or self.draw(seen)
        if self.explore_by_draws or index.waste_streak >= self.waste_limit:
            return self.draw(index.seen_keys())
        return None

    def draw(self, seen: set) -> Config | None:
        """An untried feasible config at random: from the feasible set when it is known, else by
        rejection over the product. None (and ``exhausted`` set) when there is none."""
        if self.feasible is None:
            c = self.space.draw_feasible(self._rng, seen)
            if c is None:
                self.exhausted = (f"no untried config passing the space's constraint turned up in {DRAW_TRIES} "
                                  f"random draws from its {self.space.size()}-config product")
            return c
        if self._order is None:
            self._order = list(self.feasible)
            self._rng.shuffle(self._order)
        while self._next < len(self._order) and self.space.key(self._order[self._next]) in seen:
            self._next += 1
        if self._next < len(self._order):
            return self._order[self._next]
        self.exhausted = f"every one of the space's {len(self._order)} feasible configs has been tried"
        return None

    def _design_point(self, seen: set) -> Config | None:
        """The next config of the space-filling initial design not yet tried, or None."""
        if self._design is None:
            self._design = space_filling_design(self.space, self.feasible, self.design_n, self._design_rng)
        return next((c for c in self._design if self.space.key(c) not in seen), None)

    def _local(self, measured, seen) -> Config | None:
        """Best-first local search around the best configs (the seeds), restarted when it stalls.

        ``distance`` order: steps of size 1 around the ``local_top`` seeds come before steps of
        size 2 around any of them, and so on, so the search refines near the incumbent first
        and only then jumps along a parameter over values that are worse in between.
        ``model`` order: among all configs one parameter away from a seed (any step), the one
        an additive model of log-latency fitted to the measurements rates fastest.
        ``mixed`` alternates the two.

        Restarts (iterated local search): when neither the best latency nor the latest restart's
        basin improved in the last ``stall_n`` measurements, the next proposal is a restart
        config (see :meth:`_kick`), and the best config found from it leads the seeds until the
        search stalls again.
        """
        space = self.space
        ranked = sorted((p for p in map(_point, measured) if p["latency_s"] is not None),
                        key=lambda p: p["latency_s"])
        anchor = self._anchor(measured, len(ranked))
        if anchor == "kick":
            c = self._kick(ranked, seen)
            if c is not None:
                self.kicks.append((len(measured), c))
                self._basin[space.key(c)] = len(self.kicks)
                return c
            anchor = None
        reach = self.radius or max((len(p.values) for p in space.free), default=1)
        seeds: list[dict] = [anchor] if anchor else []  # the best configs that differ from each other in several params
        for p in ranked:
            if len(seeds) >= self.local_top + bool(anchor):
                break
            if all(_hamming(p["config"], q["config"]) >= self.niche for q in seeds):
                seeds.append(p)
        use_model = self.order == "model" or (  # "mixed": every other local-phase proposal
            self.order == "mixed" and len(ranked) % 2 == 0)
        if use_model:
            cands, keys = [], set()
            for p in seeds:
                for c in space.neighbours(p["config"], self.radius):
                    k = space.key(c)
                    if k not in seen and k not in keys and space.check(c) is None:
                        keys.add(k)
                        cands.append(c)
            if cands:
                c = _model_pick(space, ranked, cands, self.ridge)
                if anchor and _hamming(c, anchor["config"]) <= 1:
                    self._basin[space.key(c)] = len(self.kicks)
                return c
        seen = set(seen)
        for d in range(1, reach + 1):
            for p in seeds:
                for c in space.neighbours(p["config"], d, exact=True):
                    k = space.key(c)
                    if k not in seen and space.check(c) is None:
                        if p is anchor:
                            self._basin[k] = len(self.kicks)
                        return c
                    seen.add(k)
        for p in ranked[self.local_top:]:
            for c in space.neighbours(p["config"], 1):
                k = space.key(c)
                if k not in seen and space.check(c) is None:
                    return c
                seen.add(k)
        return None

    def _anchor(self, measured, n_feasible: int) -> dict | str | None:
        """The best point found from the latest restart (None: no restart yet), or "kick" when
        the search has stalled and should restart."""
        if not self.stall_n:
            return None
        since_kick = self.kicks[-1][0] if self.kicks else 0
        best = basin_best = None
        last = since_kick  # the measurement count at the latest improvement (or restart)
        for i, t in enumerate(measured, 1):
            p = _point(t)
            lat = p["latency_s"]
            if lat is None:
                continue
            if best is None or lat < best:
                best = lat
                last = max(last, i)
            if self.kicks and self._basin.get(self.space.key(p["config"])) == len(self.kicks) and (
                    basin_best is None or lat < basin_best["latency_s"]):
                basin_best = p
                last = max(last, i)
        if best is not None and len(measured) - last >= self.stall_n:
            return "kick"
        return basin_best

    def _kick(self, ranked: Sequence[Mapping], seen: set) -> Config | None:
        """A restart config: alternately (``mixed``) the untried feasible config that the
        additive model rates fastest among those ≥ 2 parameters away from every seed
        (``model``), and an untried feasible config 2-3 parameters away from the best at
        random (``perturb``)."""
        if not ranked:
            return None
        space, best = self.space, ranked[0]["config"]
        how = self.kick if self.kick != "mixed" else ("model", "perturb")[len(self.kicks) % 2]
        pool = self.feasible if self.feasible is not None else self._perturbations(best, seen)
        top = [p["config"] for p in ranked[:self.local_top]]
        if how == "model":
            cands = [c for c in pool if space.key(c) not in seen and all(_hamming(c, q) >= 2 for q in top)]
            return _model_pick(space, ranked, cands, self.ridge) if cands else None
        if how == "pair":
            cands = [c for c in pool if space.key(c) not in seen and _hamming(c, best) == 2]
            return _model_pick(space, ranked, cands, self.ridge) if cands else None
        k = self._rng.choice((2, 3))
        cands = [c for c in pool if space.key(c) not in seen and _hamming(c, best) in (k, k + 1)]
        return self._rng.choice(cands) if cands else None

    def _perturbations(self, config: Config, seen: set, n: int = 200) -> list[Config]:
        """Up to ``n`` untried configs passing the constraint, each 2-4 parameters away from
        ``config`` (where the feasible set is not known)."""
        free, out = self.space.free, []
        for _ in range(20 * n):
            if len(out) >= n:
                break
            c = dict(config)
            for p in self._rng.sample(free, min(len(free), self._rng.choice((2, 3, 4)))):
                c[p.name] = self._rng.choice(p.values)
            if self.space.key(c) not in seen and self.space.check(c) is None:
                out.append(c)
        return out


def _model_pick(space: SearchSpace, ranked: Sequence[Mapping], cands: list[Config], ridge: float) -> Config:
    """The candidate an additive model of log-latency (ridge, one-hot values) rates fastest."""
    import numpy as np

    free = space.free
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
    w = np.linalg.solve(xa.T @ xa + ridge * np.eye(xa.shape[1]), xa.T @ (y - y.mean()))
    pred = onehot(cands) @ w
    return cands[int(np.argmin(pred))]


def _hamming(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    return sum(a[k] != b[k] for k in a)
