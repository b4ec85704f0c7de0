"""What a search returns: measurement points, the selection policies and the Pareto front.

A trial's measurement lives in its user attrs (prefix ``_A``); ``_point`` reads one back as a
``{"config", "latency_s", "energy_j", "energy_uncertainty_j", "feasible", "reason", "trial"}``
point (``energy_uncertainty_j``: the ≈95 % half-width the measurement stated; None for a
prediction or an older recording, taken as 0).

Energy. The study minimises latency; energy is recorded per trial. The ``policy`` picks the
answer among the measured configs: ``latency`` (fastest), ``energy`` (least joules among
configs within 1.05× the best latency), ``balanced`` (least latency × energy, the
energy-delay product). Neither energy policy trades the fastest config away for a saving it
cannot see: a config is preferred to the fastest only when its saving exceeds the combined
uncertainty of the two figures compared (√(U₁² + U₂²)), and among the configs that pass, one
whose figure is within that uncertainty of the least is as good as it, so the fastest of them
wins. The Pareto front of (latency, energy) is returned with the result (``pareto_front``);
``visible_front`` is the form ``kernelagent tune`` reports and plots it in. Re-exported by
``search.py``.
"""

from __future__ import annotations

import bisect
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
    budget: int | None = None      # measurements asked for
    shortfall: str | None = None   # why fewer than ``budget`` were measured while feasible configs remain
                                   # (or none at all); None: the budget was spent or the space exhausted

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


def visible_front(points: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any] | None, *, measured: bool,
                  backend: str) -> list[dict]:
    """The (latency, energy) front of ``points`` (search points, each with its ``variant``) as a
    tune result reports it, sorted by latency. Each point::

        {"variant", "config" (the kernel's), "system_config" (SM clock / power limit, or None),
         "latency_us", "energy_uj", "energy_uncertainty_uj" (≈95 % half-width; None: not stated),
         "measured" (False: predicted by the model), "backend", "chosen", "on_front", "trial"}

    ``chosen`` (variant, config, system_config, latency_us, energy_uj, energy_uncertainty_uj) is
    the verified winner: its point is marked ``chosen``; when it is not on the front (a config
    ahead of it failed re-verification, or it has no energy) it is added with ``on_front`` False,
    as long as it has an energy figure to place it by."""
    from .system import split_config

    def key(variant, config) -> tuple:
        return variant, tuple(sorted((k, repr(v)) for k, v in config.items()))

    want = None if chosen is None else key(chosen.get("variant", "kernel"),
                                           {**chosen["config"], **(chosen.get("system_config") or {})})
    out = []
    for p in pareto_front(points):
        kernel, system = split_config(p["config"])
        u = p.get("energy_uncertainty_j")
        out.append({"variant": p.get("variant", "kernel"), "config": kernel, "system_config": system or None,
                    "latency_us": p["latency_s"] * 1e6, "energy_uj": p["energy_j"] * 1e6,
                    "energy_uncertainty_uj": None if u is None else u * 1e6, "measured": bool(measured),
                    "backend": backend, "chosen": key(p.get("variant", "kernel"), p["config"]) == want,
                    "on_front": True, "trial": p.get("trial")})
    if chosen is not None and not any(p["chosen"] for p in out) and chosen.get("energy_uj") is not None \
            and chosen.get("latency_us") is not None:
        out.append({"variant": chosen.get("variant", "kernel"), "config": dict(chosen["config"]),
                    "system_config": dict(chosen.get("system_config") or {}) or None,
                    "latency_us": chosen["latency_us"], "energy_uj": chosen["energy_uj"],
                    "energy_uncertainty_uj": chosen.get("energy_uncertainty_uj"), "measured": bool(measured),
                    "backend": backend, "chosen": True, "on_front": False, "trial": None})
        out.sort(key=lambda p: (p["latency_us"], p["energy_uj"]))
    return out


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
        return _clear_choice(near, lambda p: p["energy_j"], lambda p: p.get("energy_uncertainty_j") or 0.0, "energy")
    return _clear_choice(with_e, lambda p: p["latency_s"] * p["energy_j"],
                         lambda p: p["latency_s"] * (p.get("energy_uncertainty_j") or 0.0), "balanced")


def _clear_choice(points: list, value, uncertainty, policy: str) -> tuple[dict, str]:
    """The least ``value`` among ``points``, but leaving the fastest only for a clear saving.

    Clear: the fastest's value minus the other's exceeds √(U_fastest² + U_other²). Among the
    clear candidates (the fastest included), those not clearly worse than the least are tied
    with it, and the fastest of those is chosen."""
    ref = min(points, key=lambda p: p["latency_s"])

    def clearly_below(a, b) -> bool:   # a's value is below b's by more than their combined uncertainty
        return value(b) - value(a) > math.hypot(uncertainty(a), uncertainty(b))

    clear = [p for p in points if p is ref or clearly_below(p, ref)]
    least = min(clear, key=lambda p: (value(p), p["latency_s"]))
    chosen = min((p for p in clear if not clearly_below(least, p)), key=lambda p: (p["latency_s"], value(p)))
    hidden = [p for p in points if value(p) < value(chosen) and p not in clear]
    note = ""
    if hidden:
        what = "energy" if policy == "energy" else "latency × energy"
        note = (f"policy {policy!r}: {len(hidden)} config(s) measured lower {what} than the one chosen, but by less "
                "than the combined uncertainty of the two figures; kept the faster")
    return dict(chosen), note


def _point(t) -> dict:
    u = t.user_attrs
    return {"config": u[_A + "config"], "latency_s": u.get(_A + "latency_s"), "energy_j": u.get(_A + "energy_j"),
            "energy_uncertainty_j": u.get(_A + "energy_uncertainty_j"),
            "feasible": u.get(_A + "feasible", False), "reason": u.get(_A + "reason"), "trial": t.number}


class TrialIndex:
    """What a study's trials hold, kept up to date incrementally.

    A finished trial never changes, so each :meth:`update` looks only at trials that are new or
    were still open (running or waiting) last time: a search of thousands of mostly-infeasible
    trials costs time linear in their number, not quadratic.
    """

    def __init__(self):
        self.measured: list = []           # complete, measured trials, in trial-number order
        self.measured_keys: set[str] = set()
        self.finished_keys: set = set()    # keys of every finished trial (None for a partial one)
        self.open: list = []               # trials running or waiting at the last update
        self.slowest: float | None = None  # the largest latency measured
        self._upto = 0                     # trials[:_upto] have been looked at
        self._last_measured = -1           # number of the latest measured trial
        self._wasted: list[int] = []       # invalid or duplicate trials after it

    def update(self, trials) -> "TrialIndex":
        from optuna.trial import TrialState

        # A study numbers its trials 0, 1, …, so trials[n] is trial n.
        look = [trials[t.number] for t in self.open] + list(trials[self._upto:])
        self._upto, self.open = len(trials), []
        for t in look:
            if not t.state.is_finished():
                self.open.append(t)
                continue
            u = t.user_attrs
            self.finished_keys.add(u.get(_A + "key"))
            if t.state != TrialState.COMPLETE:
                continue
            status = u.get(_A + "status")
            if u.get(_A + "measured"):
                bisect.insort(self.measured, t, key=lambda x: x.number)
                self.measured_keys.add(u.get(_A + "key"))
                lat = u.get(_A + "latency_s")
                if lat is not None:
                    self.slowest = lat if self.slowest is None else max(self.slowest, lat)
                if t.number > self._last_measured:
                    self._last_measured = t.number
                    self._wasted = [n for n in self._wasted if n > t.number]
            elif status in ("invalid", "duplicate") and t.number > self._last_measured:
                self._wasted.append(t.number)
        return self

    @property
    def count(self) -> int:
        """Trials in the study at the last update."""
        return self._upto

    @property
    def waste_streak(self) -> int:
        """Finished trials since the latest measurement that were a-priori infeasible or duplicates."""
        return len(self._wasted)

    def live(self) -> list:
        """Running trials that are measuring (this worker's or others')."""
        from optuna.trial import TrialState

        return [t for t in self.open
                if t.state == TrialState.RUNNING and t.user_attrs.get(_A + "status") == "measuring"]

    def seen_keys(self) -> set:
        """Keys of every trial, finished or not (an open trial may not have chosen its key yet)."""
        return self.finished_keys | {t.user_attrs.get(_A + "key") for t in self.open}
