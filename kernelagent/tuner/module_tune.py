"""``kernelagent tune --module NAME``: search a user module's declared ``TUNING_SPACE`` on this GPU.

A user module (``kernels/_modules.py``) is a problem file plus a verified ``ModelNew`` that reads
its module-level ``CONFIG``. Each trial is one ``measure`` of the module's native inputs with a
config (the harness sets ``CONFIG`` before constructing ``ModelNew``), all in one candidate
session; the best configs are re-verified in the same session, and the first that verifies is
recorded in the module's ``entry.json`` (``config`` and a ``tuned`` record with its evidence),
which ``load_module`` then applies. Measured only: problem files have no FLOP/byte model, so
there is no ``model`` backend for them, and a machine without a GPU is an environment problem.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BadInput, EnvironmentProblem


def tune_module(name: str, *, trials: int = 16, seed: int | None = None, storage: str | None = None,
                library: Path | None = None, verify_examples: int = 8, write: bool = True) -> dict[str, Any]:
    import torch

    from ..harness.measure import MeasureError, measure
    from ..harness.session import CandidateSession
    from ..harness.verify import verify
    from ..kernels import _modules
    from ..kernels.spec import Param, TuningSpace
    from .search import SearchSpace, run_search

    try:
        entry = _modules.module_entry(name, library)
    except (ValueError, _modules.UnknownModuleError) as e:
        raise BadInput(str(e)) from None
    bad = entry.tampered()
    if bad:
        raise BadInput(f"user module {name!r}: {', '.join(bad)} changed since it was verified; re-add it first")
    if not entry.tuning_space:
        raise BadInput(f"user module {name!r} declares no TUNING_SPACE: nothing to tune (see docs/LIBRARY.md)")
    if not torch.cuda.is_available():
        raise EnvironmentProblem(f"tuning user module {name!r} measures it on this machine's GPU, and none is "
                                 "visible (problem files have no model backend to predict with)")
    problem = entry.folder / _modules.PROBLEM_FILE
    source = (entry.folder / _modules.CANDIDATE_FILE).read_text(encoding="utf-8")
    space = SearchSpace.from_tuning_space(TuningSpace([Param(k, tuple(v)) for k, v in entry.tuning_space.items()]), {})
    with CandidateSession(problem, source, candidate_name="candidate.py") as session:
        def objective(config):
            try:
                m = measure(problem, source, None, config=dict(config), seed=seed, energy=False, meter=None,
                            session=session)
            except MeasureError as e:
                return None, None, f"{e.reason}: {e.detail}"[:300]
            if m.flags:
                return None, None, "untrusted measurement: " + "; ".join(m.flags)[:300]
            return m.median_s, None, None

        sr = run_search(space, objective, budget=trials, study_name=f"module/{name}/{entry.candidate_sha256[:12]}",
                        storage=storage, seed=seed, default_config=entry.config)
        ranked = sorted((m for m in sr.measurements if m.get("latency_s") is not None), key=lambda m: m["latency_s"])
        verify_seed = seed if seed is not None else secrets.randbits(32)
        result: dict[str, Any] = {"module": name, "trials": sr.trials_used, "verified": False, "config": None,
                                  "latency_us": None, "written": False, "rejected": [], "shortfall": sr.shortfall}
        for m in ranked[:3]:
            v = verify(problem, source, config=dict(m["config"]), examples=verify_examples, seed=verify_seed,
                       session=session)
            if v.verified:
                result.update(verified=True, config=dict(m["config"]), latency_us=m["latency_s"] * 1e6)
                break
            result["rejected"].append({"config": m["config"], "reason": v.reason})
    if result["verified"] and write:
        _record(entry, result, torch.cuda.get_device_name(), sr.sampler)
        result["written"] = True
    return result


def _record(entry, result: dict, device: str, sampler: str) -> None:
    data = entry.to_json()
    data["config"] = result["config"]
    data["tuned"] = {"latency_us": result["latency_us"], "measured": True, "backend": "gpu", "device": device,
                     "trials": result["trials"], "sampler": sampler,
                     "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    path = entry.folder / "entry.json"
    fd, tmp = tempfile.mkstemp(prefix=".entry.", suffix=".tmp", dir=entry.folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
