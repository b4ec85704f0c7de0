"""Accepted → tuner → library: what ``generate --tune`` does with a verified kernel.

* A registered op: the kernel becomes a **variant** in the user library
  (``<library>/<op>/variants/gen_<run>.py``, with its declared ``TUNING_SPACE`` and a provenance
  sidecar: endpoint, model, prompt version, run id, date, verdict), then ``tune`` searches that
  variant for the SKU (``gpu`` backend on a GPU, ``model`` otherwise, labelled) and records it
  only where it beats the default (kernel.py, default config) — dispatch then picks it.
* A problem file: the kernel becomes a **user module** (re-verified on the way in), loadable
  with ``kernelagent.kernels.load_module(NAME)``.

Returns what was added, with the lines a user needs to use it.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput


def keep(result, *, sku: str | None, endpoint: str | None, model: str | None, prompt_version: str,
         library: Path | None = None, trials: int = 8, measure: str | None = None, max_cases: int | None = 1,
         min_predicted_gain: float | None = None, examples: int | None = None, dtypes=None,
         notice: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    from ..harness.problem import is_problem_path

    if result.status != "accepted" or not result.kernel:
        raise BadInput("nothing to keep: the run did not produce a verified kernel")
    source = Path(result.kernel).read_text(encoding="utf-8")
    space = declared_space(result)
    name = variant_name(result)
    provenance = provenance_of(result, endpoint=endpoint, model=model, prompt_version=prompt_version)
    if is_problem_path(result.target):
        return _keep_module(result, source, name, library, examples, provenance)
    return _keep_variant(result.target, source, space, name, provenance, sku=sku, library=library, trials=trials,
                         measure=measure, max_cases=max_cases, min_predicted_gain=min_predicted_gain,
                         examples=examples, dtypes=dtypes, notice=notice)


def declared_space(result) -> dict | None:
    path = (result.outputs or {}).get("tuning_space")
    if not path or not Path(path).is_file():
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) and data else None


def add_variant(op: str, source: str, space: dict | None, name: str, provenance: dict,
                library: Path | None = None) -> Path:
    """Write a verified kernel as variant ``name`` of ``op`` in the user library (its tuning space
    as a literal ``TUNING_SPACE``, its provenance in the sidecar JSON); returns the file."""
    from ..kernels import _variants
    from ..kernels._configs import user_library_dir

    root = Path(library).expanduser() if library is not None else user_library_dir()
    folder = root / op / "variants"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        declared = _variants.literal_tuning_space(source)
    except ValueError:
        declared = None
    text = source
    if declared is None and space:
        text = f"TUNING_SPACE = {space!r}  # declared with the generated kernel\n" + source  # a Python literal
    path = folder / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _variants.clear_caches()
    return path


def variant_name(result) -> str:
    return "gen_" + re.sub(r"[^A-Za-z0-9_]", "_", str(result.run_id))[:56]


def provenance_of(result, *, endpoint: str | None, model: str | None, prompt_version: str) -> dict[str, Any]:
    return {"origin": "generated", "endpoint": endpoint, "model": model, "prompt_version": prompt_version,
            "run_id": result.run_id, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "verified": {k: (result.verdict or {}).get(k) for k in ("trials", "worst_error_ratio", "device",
                                                                    "sandbox", "seed")},
            "race": (result.best or {}).get("race")}


def _keep_variant(op: str, source: str, space: dict | None, name: str, provenance: dict, *, sku, library, trials,
                  measure, max_cases, min_predicted_gain, examples, dtypes, notice) -> dict[str, Any]:
    from ..tuner.tune import tune

    if not sku:
        raise BadInput("--tune needs --sku: the SKU to tune the generated variant for")
    path = add_variant(op, source, space, name, provenance, library)
    notice(f"added variant {name} of {op}: {path}")
    results = tune(sku_id=sku, ops=[op], dtypes=dtypes, variant=name, trials=trials, measure=measure, library_dir=library,
                   max_cases=max_cases, min_predicted_gain=min_predicted_gain, verify_examples=examples or 8,
                   notice=notice)
    written = [r for r in results if r.library_action in ("added", "replaced")]
    rows = [{"dtype": r.dtype, "bucket": r.bucket, "verified": r.verified, "config": r.best_config,
             "latency_us": r.latency_us, "speedup_vs_default": r.speedup_vs_default, "measured": r.measured,
             "library_action": r.library_action, "note": r.note} for r in results]
    if written:
        how = (f"from kernelagent.kernels import {op}  # uses variant {name} on {sku} for "
               f"{len(written)} shape bucket(s)")
    else:
        how = (f"kept as variant {name} of {op}, but no entry was written (not faster than the default, or not "
               f"verified for {sku}): `kernelagent tune --sku {sku} --op {op} --variant {name}` to try again")
    return {"kind": "variant", "op": op, "variant": name, "path": str(path), "sku": sku, "tuned": rows,
            "entries_written": len(written), "use": how}


def _keep_module(result, source: str, name: str, library, examples, provenance) -> dict[str, Any]:
    from ..library_modules import add_module

    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(result.target).stem)
    module_name = stem if re.match(r"^[A-Za-z]", stem) else f"m_{stem}"
    entry, verdict = add_module(module_name, Path(result.target), source, examples=examples, force=True,
                                library=library, candidate_name=Path(result.kernel).name, provenance=provenance)
    if entry is None:
        return {"kind": "module", "name": module_name, "added": False,
                "use": f"not added: re-verification rejected it ({verdict.reason}): {verdict.detail[:300]}"}
    return {"kind": "module", "name": module_name, "added": True, "path": str(entry.folder),
            "use": f"from kernelagent.kernels import load_module; ModelNew = load_module({module_name!r})"}
