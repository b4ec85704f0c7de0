"""The search space: ordered launch parameters, integer-coded for Optuna.

:class:`OrderedParam` codes a parameter's ordered values as integers (by exponent for
consecutive powers of two, else by index), so that neighbouring codes are neighbouring values.
:class:`SearchSpace` holds the parameters and an a-priori ``constraint(config) -> reason |
None``; it keys, fingerprints, enumerates configs and yields a config's neighbours one
parameter away (the local search of ``search.py`` walks them). Re-exported by ``search.py``.

The feasible set. Real spaces are mostly infeasible once constraints prune them (a recorded
Kernel Tuner space can list 10^7 raw configs and record a few thousand), so the search draws
from the feasible configs, never from the raw product: ``candidates`` when the space knows
them (a recording's configs), else the enumerated product when it has at most
``ENUMERATE_LIMIT`` points, else random draws that the constraint accepts
(:meth:`SearchSpace.draw_feasible`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import BadInput

Config = dict[str, Any]

ENUMERATE_LIMIT = 200_000  # raw products up to this size are enumerated to find the feasible set
DRAW_TRIES = 100_000       # random draws per feasible config sought in a product too large to enumerate


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
    """Ordered parameters plus an a-priori constraint ``constraint(config) -> reason | None``.

    ``candidates``: every config that can pass the constraint, when known in advance (a
    recording's configs); the search samples among them instead of the raw product.
    """

    params: tuple[OrderedParam, ...]
    constraint: Callable[[Mapping[str, Any]], str | None] | None = None
    candidates: tuple[Config, ...] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_values(cls, values: Mapping[str, Sequence[Any]], constraint=None,
                    candidates: Iterable[Mapping[str, Any]] | None = None) -> "SearchSpace":
        return cls(tuple(OrderedParam(n, tuple(v)) for n, v in values.items()), constraint,
                   None if candidates is None else tuple(dict(c) for c in candidates))

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

    def feasible_configs(self, limit: int = ENUMERATE_LIMIT) -> list[Config] | None:
        """Every config that passes the constraint, or None when that set is not known and the
        raw product is too large to enumerate (more than ``limit`` points)."""
        if self.candidates is not None:
            return [{p.name: c[p.name] for p in self.params} for c in self.candidates if self.check(c) is None]
        if self.size() <= limit:
            return [c for c in self.enumerate() if self.check(c) is None]
        return None

    def draw_feasible(self, rng, seen: set[str], tries: int = DRAW_TRIES) -> Config | None:
        """A random config that passes the constraint and whose key is not in ``seen``, by
        rejection over the raw product (for spaces whose feasible set is not known); None
        after ``tries`` draws."""
        for _ in range(tries):
            c = {p.name: rng.choice(p.values) for p in self.params}
            if self.key(c) not in seen and self.check(c) is None:
                return c
        return None

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


def space_filling_design(space: SearchSpace, feasible: Sequence[Config], n: int, rng) -> list[Config]:
    """``n`` feasible configs spread over the space: a Latin hypercube over the free parameters'
    ordinal positions (each scaled to [0, 1]), each point mapped to the nearest feasible config
    not already chosen.

    The hypercube stratifies every parameter (each of ``n`` equal slices of its range gets one
    point), where ``n`` random draws clump; mapping to the feasible set keeps the design
    measurable on a space whose feasible part is a small, oddly shaped share of its product.
    Ties (equally near configs) are broken at random, so different seeds give different designs.
    """
    import numpy as np

    free = space.free
    if n <= 0 or not feasible:
        return []
    n = min(n, len(feasible))
    if not free:
        return [dict(feasible[0])]
    pos = {p.name: {v: i / (len(p.values) - 1) for i, v in enumerate(p.values)} for p in free}
    x = np.array([[pos[p.name][c[p.name]] for p in free] for c in feasible])
    x += np.array([[rng.random() * 1e-9 for _ in free] for _ in feasible])  # random tie-break
    cube = np.empty((n, len(free)))
    for j in range(len(free)):
        strata = list(range(n))
        rng.shuffle(strata)
        cube[:, j] = [(s + rng.random()) / n for s in strata]
    taken = np.zeros(len(feasible), dtype=bool)
    out = []
    for point in cube:
        d = ((x - point) ** 2).sum(axis=1)
        d[taken] = np.inf
        i = int(np.argmin(d))
        taken[i] = True
        out.append(dict(feasible[i]))
    return out
