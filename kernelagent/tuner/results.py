"""What a search returns: measurement points, the selection policies and the Pareto front.

A trial's measurement lives in its user attrs (prefix ``_A``); ``_point`` reads one back as a
``{"config", "latency_s", "energy_j", "feasible", "reason", "trial"}`` point.

Energy. The study minimises latency; energy is recorded per trial. The ``policy`` picks the
answer among the measured configs: ``latency`` (fastest), ``energy`` (least joules among
configs within 1.05× the best latency), ``balanced`` (least latency × energy, the
energy-delay product). The Pareto front of (latency, energy) is returned with the result.
Re-exported by ``search.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import BadInput
from .space import Config

POLICIES = ("latency", "energy", "balanced")
ENERGY_LATENCY_SLACK = 1.05
_A = "ka."  # user-attr prefix


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


def _point(t) -> dict:
    u = t.user_attrs
    return {"config": u[_A + "config"], "latency_s": u.get(_A + "latency_s"), "energy_j": u.get(_A + "energy_j"),
            "feasible": u.get(_A + "feasible", False), "reason": u.get(_A + "reason"), "trial": t.number}
