"""The Optuna samplers a search strategy names (``make_sampler``), and how they learn constraints.

``tpe`` and ``tpe+local`` use TPE (multivariate, group, constant liar) that is told a-priori
infeasible trials as constraint violations (set on the trial on Optuna 5, through
``constraints_func`` on 4.x); ``tpe-default`` is Optuna's default TPE; ``random``,
``random+local`` and ``exhaustive`` sample at random (the local and exhaustive phases
propose their own configs, see ``search.py``). Re-exported by ``search.py``.
"""

from __future__ import annotations

import functools
import warnings

from ..errors import BadInput
from .results import _A

SAMPLERS = ("auto", "tpe+local", "random+local", "tpe", "tpe-default", "random", "exhaustive")


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
