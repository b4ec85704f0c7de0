"""Recording a tuning result in the library: the ``LibraryEntry`` a ``TuneResult`` becomes.

A predicted win within the model's own uncertainty is not written (the default heuristic
stays); a caller's acceptance test can refuse an entry; otherwise ``library.record_entry``
merges it (atomic, locked, predicted never replaces measured).
"""

from __future__ import annotations

import datetime as _dt

FRONT_POINTS = 16   # at most this many front points are kept in a library entry


def stored_front(front: list) -> list[dict]:
    """The tune result's latency/energy front, small enough for a library entry: at most
    ``FRONT_POINTS`` points spread along it (the chosen one always kept), each with its
    latency, energy, energy uncertainty, measured flag, chosen flag, variant and configs."""
    pts = [p for p in front if p.get("latency_us") is not None and p.get("energy_uj") is not None]
    if len(pts) > FRONT_POINTS:
        step = (len(pts) - 1) / (FRONT_POINTS - 1)
        keep = {round(i * step) for i in range(FRONT_POINTS)}
        chosen = [i for i, p in enumerate(pts) if p.get("chosen")]
        if chosen and chosen[0] not in keep:
            keep.discard(min(keep - {0, len(pts) - 1}, key=lambda i: abs(i - chosen[0])))
            keep.add(chosen[0])
        pts = [pts[i] for i in sorted(keep)]
    fields = ("variant", "config", "system_config", "latency_us", "energy_uj", "energy_uncertainty_uj", "measured",
              "chosen", "on_front")
    return [{k: p.get(k) for k in fields} for p in pts]


def write_result(res, task, sku, backend: str, policy: str, versions: dict, *, write: bool,
           accept, library_dir, min_predicted_gain) -> None:
    """Record the winner as a LibraryEntry, unless a predicted win is within the model's noise."""
    from .. import library
    from ..kernels._configs import predicted_win_is_clear
    from ..kernels._entries import Evidence, LibraryEntry, Provenance

    evidence_extra = {}
    if backend == "model":
        from .model import RELATIVE_UNCERTAINTY

        gain = RELATIVE_UNCERTAINTY if min_predicted_gain is None else float(min_predicted_gain)
        evidence_extra["uncertainty_rel"] = gain
    if getattr(res, "system_config", None):
        evidence_extra["system_config"] = dict(res.system_config)   # measured at these settings, not set by dispatch
    if res.energy_uncertainty_uj is not None:
        evidence_extra["energy_uncertainty_uj"] = res.energy_uncertainty_uj   # ≈95 % half-width
    front = stored_front(getattr(res, "pareto_front", None) or [])
    if front:
        evidence_extra["pareto_front"] = front   # what the nightly report plots for this entry
    unclear = backend == "model" and res.verified and not predicted_win_is_clear(
        {"speedup_vs_default": res.speedup_vs_default, **evidence_extra})
    if unclear and write:
        sp = res.speedup_vs_default
        if sp is not None and sp < 1.0:
            why = f"not written: predicted {sp:.2f}x, slower than the default, so the default heuristic stays"
        else:
            gain = "no prediction for the default" if sp is None else f"a predicted {sp:.2f}x"
            why = (f"not written: {gain} over the default is within the model's ±{evidence_extra['uncertainty_rel']:.0%} "
                   "uncertainty, so the default heuristic stays")
        res.note = (res.note + "; " if res.note else "") + why
    elif res.verified and write and accept is not None and not accept(res):
        res.note = (res.note + "; " if res.note else "") + "not written: the caller's acceptance test refused it"
    elif res.verified and write:
        entry = LibraryEntry(
            dtype=task.dtype, bucket=dict(task.bucket), config=dict(res.best_config), variant=res.variant,
            kernel_sha256=res.kernel_sha256,
            evidence=Evidence(res.latency_us, res.energy_uj, backend, backend != "model", res.trials_used,
                              res.speedup_vs_default,
                              {"policy": policy, "case": task.case_params, "study": res.study, "sampler": res.sampler,
                               "verified": res.verify_detail[:300], **evidence_extra}),
            provenance=Provenance(versions["triton"], versions["torch"], versions["cuda"], versions["device"],
                                  _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  f"kernelagent tune: optuna {res.sampler}, {res.trials_used} "
                                  f"{'predictions' if backend == 'model' else 'measurements'} ({backend})",
                                  {"variant_origin": res.variant_origin}))
        out = library.record_entry(task.op, sku.id, entry, library_dir)
        res.library_action, res.library_path = out.action, str(out.path)
