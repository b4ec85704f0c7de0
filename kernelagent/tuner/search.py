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

Energy. The study minimises latency; energy is recorded per trial. The ``policy`` picks the
answer among the measured configs: ``latency`` (fastest), ``energy`` (least joules among
configs within 1.05× the best latency), ``balanced`` (least latency × energy, the
energy-delay product). The Pareto front of (latency, energy) is returned with the result.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import BadInput, EnvironmentProblem

POLICIES = ("latency", "energy", "balanced")
SAMPLERS = ("auto", "tpe+local", "random+local", "tpe", "tpe-default", "random", "exhaustive")
ENERGY_LATENCY_SLACK = 1.05
ENUMERATE_LIMIT = 200_000  # raw spaces up to this size are enumerated (exhaustive, fallbacks)

Config = dict[str, Any]
Measure = Callable[[Mapping[str, Any]], Sequence[Any]]


# ------------------------------------------------------------------------------------------
# The space: ordered parameters, integer-coded.


@dataclass(frozen=True)
class OrderedParam:
    """A parameter with ordered values, searched as an integer code.

    Powers of two with consecutive exponents are coded by exponent (``log2``), anything else by
    index into ``values``; either way neighbouring codes are neighbouring values.
    """

    name: str
    values: tuple

    @property
    def coding(self) -> str:
        vs = self.values
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v & (v - 1) == 0 for v in vs):
            exps = [v.bit_length() - 1 for v in vs]
            if exps == list(range(exps[0], exps[0] + len(exps))):
                return "log2"
        return "idx"

    @property
    def optuna_name(self) -> str:
        return f"{self.name}:{self.coding}"

    def code_range(self) -> tuple[int, int]:
        if self.coding == "log2":
            return self.values[0].bit_length() - 1, self.values[-1].bit_length() - 1
        return 0, len(self.values) - 1

    def decode(self, code: int) -> Any:
        lo, _ = self.code_range()
        return self.values[int(code) - lo]

    def encode(self, value: Any) -> int:
        try:
            i = self.values.index(value)
        except ValueError:
            raise BadInput(f"value {value!r} is not one of {self.name}'s values {list(self.values)}") from None
        return i + self.code_range()[0]


@dataclass(frozen=True)
class SearchSpace:
    """Ordered parameters plus an a-priori constraint ``constraint(config) -> reason | None``."""

    params: tuple[OrderedParam, ...]
    constraint: Callable[[Mapping[str, Any]], str | None] | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, Sequence[Any]], constraint=None) -> "SearchSpace":
        return cls(tuple(OrderedParam(n, tuple(v)) for n, v in values.items()), constraint)

    @classmethod
    def from_tuning_space(cls, tuning_space, case_params: Mapping[str, Any]) -> "SearchSpace":
        """From an OpSpec's TuningSpace, its constraint bound to one shape bucket's params."""
        return cls(tuple(OrderedParam(p.name, tuple(p.values)) for p in tuning_space.params),
                   lambda c: tuning_space.constraint(c, case_params))

    @property
    def free(self) -> list[OrderedParam]:
        return [p for p in self.params if len(p.values) > 1]

    def size(self) -> int:
        return math.prod(len(p.values) for p in self.params)

    def key(self, config: Mapping[str, Any]) -> str:
        return json.dumps([config[p.name] for p in self.params], separators=(",", ":"))

    def check(self, config: Mapping[str, Any]) -> str | None:
        return self.constraint(config) if self.constraint else None

    def fingerprint(self) -> str:
        import hashlib

        text = json.dumps([[p.name, list(p.values)] for p in self.params], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def codes(self, config: Mapping[str, Any]) -> dict[str, int]:
        return {p.optuna_name: p.encode(config[p.name]) for p in self.free}

    def enumerate(self) -> list[Config]:
        import itertools

        names = [p.name for p in self.params]
        return [dict(zip(names, vs)) for vs in itertools.product(*(p.values for p in self.params))]

    def neighbours(self, config: Mapping[str, Any], radius: int | None = None, exact: bool = False) -> Iterable[Config]:
        """Configs differing from ``config`` in one parameter, nearest steps first.

        All parameters one step up or down, then two steps, … up to ``radius`` (None: the whole
        line of each parameter, so one move can jump from 16 to 1 when the middle is worse).
        """
        idx = {p.name: p.values.index(config[p.name]) for p in self.free}
        reach = max((len(p.values) for p in self.free), default=1) if radius is None else radius
        for d in range(reach if exact else 1, reach + 1):
            for p in self.free:
                for j in (idx[p.name] - d, idx[p.name] + d):
                    if 0 <= j < len(p.values):
                        yield {**config, p.name: p.values[j]}


# ------------------------------------------------------------------------------------------
# Storage and study names.


def default_storage_url() -> str:
    """SQLite under the user cache dir (``$XDG_CACHE_HOME`` or ``~/.cache``)/kernelagent."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kernelagent"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'studies.db'}"


def study_name_for(op: str, sku: str, dtype: str, bucket: str, space: SearchSpace | None = None) -> str:
    """``op/sku/dtype/bucket``, plus the space's fingerprint so a changed space starts afresh."""
    name = f"{op}/{sku}/{dtype}/{bucket}"
    return f"{name}/space-{space.fingerprint()}" if space is not None else name


def _storage(storage):
    import optuna

    if storage is None:
        storage = default_storage_url()
    if isinstance(storage, str):
        if storage == ":memory:":
            return optuna.storages.InMemoryStorage()
        storage = normalize_storage_url(storage)
        sqlite = storage.startswith("sqlite")
        for attempt in range(3):
            try:
                rdb = optuna.storages.RDBStorage(
                    storage, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None)
                break
            except Exception as e:  # bad URL, missing driver, unreachable server
                from sqlalchemy.exc import DBAPIError, OperationalError

                # Two workers creating the schema at once collide (table exists, unique key);
                # the loser retries and finds the schema made. Other errors fail at once.
                if attempt == 2 and isinstance(e, OperationalError) and not sqlite:
                    # The URL is fine; the server is not there (down, firewalled, wrong host).
                    raise EnvironmentProblem(f"cannot reach the Optuna storage {_redact(storage)}: "
                                             f"{str(e).splitlines()[0][:300]}") from e
                if attempt == 2 or not isinstance(e, DBAPIError):
                    raise BadInput(f"cannot open Optuna storage {_redact(storage)}: {e}") from e
                time.sleep(0.5 + attempt)
        if sqlite:
            _serialize_sqlite(rdb.engine)
        return rdb
    return storage


def normalize_storage_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, older versions to psycopg2; the
    project's optional extra installs psycopg2-binary. An explicit ``+driver`` is kept as given.
    """
    import importlib.util

    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            rest = url[len(bare):]
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + rest
            return "postgresql://" + rest
    return url


def _serialize_sqlite(engine) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE``.

    Python's sqlite3 runs a SELECT outside any transaction, so two processes can both read an
    enqueued trial as WAITING and both take it (PostgreSQL's row lock prevents that). Taking
    the write lock at the start of each transaction makes read-then-update atomic, at the cost
    of serialising the workers' storage calls, which are tiny next to a measurement.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" below open transactions

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners were attached are dropped


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# ------------------------------------------------------------------------------------------
# Results and selection policies.


@dataclass
class SearchResult:
    best_config: Config | None
    best_latency_s: float | None
    best_energy_j: float | None
    policy: str
    sampler: str
    trials_used: int               # distinct configs measured (the budget's unit)
    optuna_trials: int             # every trial in the study, free ones included
    study_name: str
    pareto_front: list[dict] = field(default_factory=list)
    measurements: list[dict] = field(default_factory=list)  # in measurement order
    note: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def pareto_front(points: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Non-dominated measurements in (latency_s, energy_j), sorted by latency."""
    pts = sorted((p for p in points if p.get("latency_s") is not None and p.get("energy_j") is not None),
                 key=lambda p: (p["latency_s"], p["energy_j"]))
    front, least = [], math.inf
    for p in pts:
        if p["energy_j"] < least:
            front.append(dict(p))
            least = p["energy_j"]
    return front


def select(points: Sequence[Mapping[str, Any]], policy: str) -> tuple[dict | None, str]:
    """The measurement a policy picks among feasible ``points``, and a note when it fell back."""
    if policy not in POLICIES:
        raise BadInput(f"unknown policy {policy!r}; expected one of {POLICIES}")
    ok = [p for p in points if p.get("latency_s") is not None]
    if not ok:
        return None, "no feasible configuration was measured"
    fastest = min(ok, key=lambda p: p["latency_s"])
    with_e = [p for p in ok if p.get("energy_j") is not None]
    if policy == "latency":
        return dict(fastest), ""
    if not with_e:
        return dict(fastest), f"policy {policy!r}: no energy measured; chose by latency"
    if policy == "energy":
        near = [p for p in with_e if p["latency_s"] <= ENERGY_LATENCY_SLACK * fastest["latency_s"]]
        if not near:
            return dict(fastest), f"policy 'energy': no config within {ENERGY_LATENCY_SLACK}× the best latency has an energy; chose by latency"
        return dict(min(near, key=lambda p: (p["energy_j"], p["latency_s"]))), ""
    return dict(min(with_e, key=lambda p: (p["latency_s"] * p["energy_j"], p["latency_s"]))), ""


# ------------------------------------------------------------------------------------------
# The search loop.

_A = "ka."  # user-attr prefix


@functools.lru_cache(maxsize=None)
def _has_set_constraint() -> bool:
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def _constraints_func(frozen) -> list[float]:
    return [0.0 if frozen.user_attrs.get(_A + "feasible", True) else 1.0]


def make_sampler(kind: str, seed: int | None, n_startup_trials: int = 10):
    import optuna

    if kind in ("tpe", "tpe+local"):
        # Optuna 5 reads constraints set on the trial; 4.x needs constraints_func.
        cf = None if _has_set_constraint() else _constraints_func
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group=True
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=n_startup_trials, constraints_func=cf)
    if kind == "tpe-default":
        return optuna.samplers.TPESampler(seed=seed)
    if kind in ("random", "random+local", "exhaustive"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise BadInput(f"unknown sampler {kind!r}; expected one of {SAMPLERS}")


def _point(t) -> dict:
    u = t.user_attrs
    return {"config": u[_A + "config"], "latency_s": u.get(_A + "latency_s"), "energy_j": u.get(_A + "energy_j"),
            "feasible": u.get(_A + "feasible", False), "reason": u.get(_A + "reason"), "trial": t.number}


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
