"""Writing user modules (the trusted parent's side of ``<user library>/modules/NAME/``).

``add_module`` re-verifies the candidate against the problem in the sandbox and only then
stores the two files and ``entry.json`` (hashes, config, tuning space, the verdict, provenance),
into a temporary folder that is renamed into place, so a reader sees the old module or the new
one, never half. The reader (``kernelagent.kernels._modules``) refuses a module whose files no
longer match the recorded hashes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import BadInput
from .kernels import _modules


def _tuning_space(candidate_source: str) -> dict | None:
    """A literal module-level ``TUNING_SPACE`` of the candidate, if any (the rule variants use)."""
    from .kernels._variants import literal_tuning_space

    try:
        return literal_tuning_space(candidate_source)
    except ValueError as e:
        raise BadInput(str(e)) from None


def add_module(name: str, problem: Path, candidate_source: str, *, config: dict | None = None,
               examples: int | None = None, timeout: float = 300.0, force: bool = False,
               library: Path | str | None = None, candidate_name: str = "candidate.py",
               provenance: dict | None = None):
    """Verify and store. Returns (ModuleEntry or None, Verdict); stores nothing when rejected."""
    from .harness.verify import verify

    try:
        _modules.check_name(name)
    except ValueError as e:
        raise BadInput(str(e)) from None
    root = _modules.modules_dir(library)
    dest = root / name
    if dest.exists() and not force:
        raise BadInput(f"user module {name!r} already exists in {root}; pass --force to replace it")
    problem_source = problem.read_bytes().decode("utf-8") if problem.is_file() else None
    if problem_source is None:
        raise BadInput(f"problem file not found: {problem}")
    space = _tuning_space(candidate_source)
    if config is not None and space is not None:
        unknown = sorted(set(config) - set(space))
        if unknown:
            raise BadInput(f"--config names {', '.join(unknown)}, not in the candidate's TUNING_SPACE "
                           f"({', '.join(space)})")
    verdict = verify(problem, candidate_source, examples=examples, timeout=timeout, config=config,
                     candidate_name=candidate_name)
    if not verdict.verified:
        return None, verdict
    import torch
    import triton

    from . import __version__

    entry = _modules.ModuleEntry(
        name=name, problem_sha256=_modules.sha256_text(problem_source),
        candidate_sha256=_modules.sha256_text(candidate_source), config=config, tuning_space=space,
        verified={"device": verdict.device, "trials": verdict.trials, "worst_error_ratio": verdict.worst_error_ratio,
                  "seed": verdict.seed, "sandbox": verdict.sandbox, "cpu_s": verdict.cpu_s},
        provenance={"added": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "problem_file": problem.name, "candidate_file": candidate_name, "kernelagent": __version__,
                    "torch": torch.__version__, "triton": triton.__version__, "origin": "user",
                    **(provenance or {})},
        folder=dest)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        (tmp / _modules.PROBLEM_FILE).write_text(problem_source, encoding="utf-8")
        (tmp / _modules.CANDIDATE_FILE).write_text(candidate_source, encoding="utf-8")
        (tmp / _modules.ENTRY_FILE).write_text(json.dumps(entry.to_json(), indent=1) + "\n", encoding="utf-8")
        if dest.exists():
            old = root / f".{name}.old.{os.getpid()}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry, verdict


def remove_module(name: str, library: Path | str | None = None) -> Path:
    try:
        folder = _modules.modules_dir(library) / _modules.check_name(name)
        if not folder.is_dir():
            _modules.module_entry(name, library)   # raises, naming the known modules
    except (ValueError, _modules.UnknownModuleError) as e:
        raise BadInput(str(e)) from None
    shutil.rmtree(folder)
    return folder


def list_modules(library: Path | str | None = None) -> list[dict[str, Any]]:
    out = []
    for name in _modules.module_names(library):
        try:
            e = _modules.module_entry(name, library)
            bad = e.tampered()
            out.append({"name": name, "ok": not bad, "problem": e.provenance.get("problem_file"),
                        "added": e.provenance.get("added"), "device": e.verified.get("device"),
                        "trials": e.verified.get("trials"), "config": e.config,
                        "problem_note": f"changed since verified: {', '.join(bad)}" if bad else ""})
        except _modules.UnknownModuleError as err:
            out.append({"name": name, "ok": False, "problem_note": str(err)})
    return out
