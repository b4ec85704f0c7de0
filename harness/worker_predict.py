"""The ``predict`` request, inside a sandboxed worker started without the interpreter
(``SandboxedWorker(device="static")``): run an untrusted kernel file's entry point with every
``kernel[grid](...)`` recorded instead of launched, and compile each recorded launch for the
target arch. What it returns (launches and compile reports) is a claim: the parent parses it
(``harness.predict``) and uses it only to *predict* latency, never to decide a verdict.
"""

from __future__ import annotations

import os
from pathlib import Path


def _arg(d):
    import torch

    if not isinstance(d, dict):
        raise ValueError(f"bad argument description {d!r}")
    if "t" in d:
        shape, stride, dtype = d["t"]
        # Never touched (the launches are recorded, not run): no memory is committed.
        return torch.empty_strided(tuple(shape), tuple(stride), dtype=getattr(torch, dtype))
    return d.get("v")


def predict(h: dict, failure) -> dict:
    from .compile import _encode, compile_requests
    from .launch_capture import _source_file, capture_launches

    private = Path(os.environ.get("TMPDIR", "/tmp"))
    path = private / os.path.basename(str(h.get("filename") or "candidate.py"))
    path.write_text(str(h["source"]))
    cache = private / "kernelagent-cache"
    _, sha = _source_file(path, cache)
    arch = h.get("arch")
    items = []
    for item in h.get("items", []):
        try:
            args = [_arg(a) for a in item.get("args", [])]
            kwargs = {str(k): _arg(v) for k, v in dict(item.get("kwargs", {})).items()}
            launches = capture_launches(path, str(h["entry"]), args, kwargs, item.get("config"), cache)
            shown = [{"fn_name": ln.fn_name, "signature": dict(ln.signature),
                      "constexprs": {k: _encode(v) for k, v in ln.constexprs.items()},
                      "aligned": list(ln.aligned), "options": dict(ln.options), "grid": list(ln.grid)}
                     for ln in launches]
            reports = None
            if arch is not None:
                reqs = [ln.request(str(path), sha, int(arch)) for ln in launches]
                reports = [r.to_json() for r in compile_requests(reqs, cache, use_cache=True, isolate=False,
                                                     timeout=float(h.get("timeout", 120.0)))]
            items.append({"ok": True, "launches": shown, "reports": reports})
        except BaseException as e:  # noqa: BLE001 - any failure of untrusted code is a result
            items.append({"ok": False, "detail": failure(e, str(path))})
    return {"ok": True, "items": items}
