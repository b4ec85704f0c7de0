"""The race: how fast each verified candidate is, against what it has to beat.

For a registered op on a named SKU, ``Racer.setup`` fixes one benchmark case (the op's first
``bench_cases`` entry, its preferred dtype) and what a new variant must beat there: the
library's current best (kernel.py with its default config, and the recorded winner for that
SKU × dtype × bucket if there is one), the roofline from the SKU's spec sheet and, on a GPU,
PyTorch's own op. ``Racer.run`` times a verified candidate on the same case with the same
backend:

* ``gpu`` (a CUDA GPU is visible): measured by the harness (sandboxed worker, timed from the
  parent's side, L2 flushed); PyTorch's reference timed with CUDA events in this process.
* ``model`` (otherwise): predicted by the tuner's analytical model from the static compile for
  the SKU; the candidate's launcher runs in a sandbox (``harness.predict``), never here.

Every number is labelled measured or predicted. The race ranks verified candidates and tells
the model how far it is from the target; what enters the library is still decided by the tuner
(``keep.py``), which re-measures with the same backend.
"""

from __future__ import annotations

import math
from typing import Any

# How much faster than the current best a candidate must be before the race calls it a win:
# the backend's own uncertainty (the model's assumed one, kernels._configs.PREDICTION_UNCERTAINTY;
# for a GPU measurement, run-to-run noise of a few per cent).
GPU_WIN_MARGIN = 0.03


def _margin(backend: str) -> float:
    if backend == "model":
        from ..kernels._configs import PREDICTION_UNCERTAINTY

        return float(PREDICTION_UNCERTAINTY)
    return GPU_WIN_MARGIN


def _dtype_for(spec) -> str:
    dtypes = list(spec.dtypes)
    return next((d for d in ("bf16", "fp16", "fp32") if d in dtypes), dtypes[0])


def _shape_text(call, dtype: str) -> str:
    shapes = [tuple(a.shape) for a in call.args if hasattr(a, "shape")]
    return ", ".join(str(s) for s in shapes) + f" {dtype}"


class Racer:
    """Times verified candidates for the agent. ``backend``: "gpu", "model" or None (gpu when a
    CUDA GPU is visible, else model)."""

    def __init__(self, backend: str | None = None, timeout: float = 300.0):
        self.backend = backend
        self.timeout = timeout

    def _backend(self) -> str:
        if self.backend:
            return self.backend
        import torch

        return "gpu" if torch.cuda.is_available() else "model"

    def _call(self, op: str, params: dict, dtype: str):
        """The race's inputs. The model needs shapes, strides and dtypes only: meta tensors (no
        memory, no random draws: a cross_entropy bench case is 1 GB of logits)."""
        import contextlib

        import torch

        from ..kernels import get_opspec
        from ..kernels.spec import Case

        spec = get_opspec(op)
        with torch.device("meta") if self._backend() == "model" else contextlib.nullcontext():
            return spec, spec.build(Case(params=dict(params), dtype=dtype, seed=0))

    # ---- what to beat ------------------------------------------------------------------------

    def setup(self, op: str, sku_id: str) -> dict[str, Any]:
        """The race's case and targets, as a JSON-able dict (kept in the agent's state)."""
        from ..kernels import get_opspec
        from ..kernels._configs import best_recorded, case_bucket
        from ..sku import get_sku

        spec, sku = get_opspec(op), get_sku(sku_id)
        if not spec.bench_cases:
            return {"error": f"{op} declares no bench_cases to race on"}
        params, dtype = dict(spec.bench_cases[0]), _dtype_for(spec)
        _, call = self._call(op, params, dtype)
        backend = self._backend()
        flops, nbytes = float(spec.flops(call)), float(spec.bytes(call))
        peak = sku.peak("tf32") if dtype == "fp32" and sku.peak("tf32") else sku.peak(dtype)
        roofline_s = max(flops / (peak * 1e12) if peak else 0.0, nbytes / (sku.mem_bandwidth_gbps * 1e9))
        out: dict[str, Any] = {"op": op, "sku": sku.id, "sku_name": sku.name, "case": params, "dtype": dtype,
                               "shape": _shape_text(call, dtype), "backend": backend,
                               "measured": backend == "gpu", "margin": _margin(backend),
                               "roofline_us": roofline_s * 1e6 if roofline_s > 0 else None,
                               "to_beat": None, "contenders": [], "pytorch_us": None}
        contenders = [("kernel.py (default config)", "kernel", None)]
        entry = best_recorded(op, sku.id, dtype, case_bucket(op, params, dtype))
        if entry is not None:
            contenders.append((f"library entry for {sku.id}: variant {entry.variant or 'kernel'} "
                               f"config {dict(entry.config)}", entry.variant or "kernel", dict(entry.config)))
        for label, variant, config in contenders:
            try:
                latency = self._time_variant(op, variant, call, config, sku, dtype)
            except Exception as e:  # noqa: BLE001 - a contender that cannot be timed is skipped, and said
                out["contenders"].append({"label": label, "latency_us": None,
                                          "error": f"{type(e).__name__}: {str(e)[:200]}"})
                continue
            out["contenders"].append({"label": label, "latency_us": latency * 1e6 if latency else None})
        timed = [c for c in out["contenders"] if c.get("latency_us")]
        if timed:
            out["to_beat"] = min(timed, key=lambda c: c["latency_us"])
        if backend == "gpu":
            out["pytorch_us"] = self._time_pytorch(spec, call)
        return out

    def _time_variant(self, op: str, variant: str, call, config, sku, dtype: str) -> float | None:
        from ..kernels import _variants

        v = _variants.get_variant(op, variant)
        source = v.path.read_text(encoding="utf-8")
        if self._backend() == "gpu":
            return self._measure(op, source, call, config, dtype, v.path.name)
        return self._predict(op, source, call, config, sku, v.path.name,
                             trusted_path=v.path if v.origin == "shipped" else None)

    def _predict(self, op, source, call, config, sku, name, trusted_path=None) -> float | None:
        from ..harness.predict import SandboxedCapture
        from ..kernels import get_opspec
        from ..tuner import model

        spec = get_opspec(op)
        if trusted_path is not None:  # the package's own file: captured in-process
            est = model.estimate(spec, call, config, sku, source=trusted_path)
        else:
            with SandboxedCapture(source, op, filename=name, cpu_s=self.timeout) as cap:
                est = model.estimate(spec, call, config, sku, capture=cap, timeout=self.timeout)
        if not est.feasible:
            raise ValueError(f"predicted infeasible on {sku.id}: {est.reason}")
        return est.latency_s

    def _measure(self, op, source, call, config, dtype, name) -> float | None:
        from ..harness.measure import MeasureError, measure

        try:
            # The race ranks by latency: no energy windows (seconds each on a GPU).
            m = measure(op, source, call, config=config, dtype=dtype, timeout=self.timeout, candidate_name=name,
                        energy=False)
        except MeasureError as e:
            raise ValueError(f"{e.reason}: {e.detail}"[:300]) from None
        if m.flags:
            raise ValueError("untrusted measurement: " + "; ".join(m.flags)[:300])
        return m.median_s

    def _time_pytorch(self, spec, call) -> float | None:
        """PyTorch's op on the same case on the GPU: CUDA events, median of 30, µs."""
        import statistics

        import torch

        dev = torch.device("cuda", torch.cuda.current_device())
        move = lambda v: v.to(dev) if isinstance(v, torch.Tensor) else v  # noqa: E731
        args, kwargs = [move(a) for a in call.args], {k: move(v) for k, v in call.kwargs.items()}
        with torch.no_grad():
            for _ in range(5):
                spec.reference(*args, **kwargs)
            torch.cuda.synchronize(dev)
            times = []
            for _ in range(30):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                spec.reference(*args, **kwargs)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1000.0)
        return statistics.median(times)

    # ---- one candidate -----------------------------------------------------------------------

    def run(self, setup: dict[str, Any], source: str, name: str) -> dict[str, Any]:
        """The verified candidate's latency on the race's case, and how it compares."""
        from ..sku import get_sku

        backend = setup["backend"]
        spec, call = self._call(setup["op"], setup["case"], setup["dtype"])
        try:
            if backend == "gpu":
                latency = self._measure(setup["op"], source, call, None, setup["dtype"], name)
            else:
                latency = self._predict(setup["op"], source, call, None, get_sku(setup["sku"]), name)
        except Exception as e:  # noqa: BLE001 - the race is advice; the verdict stands
            return {"latency_us": None, "error": f"{type(e).__name__}: {str(e).strip()[:300]}",
                    "backend": backend, "measured": backend == "gpu"}
        return compare(setup, latency * 1e6 if latency else None)


def compare(setup: dict[str, Any], latency_us: float | None) -> dict[str, Any]:
    """A candidate's latency against the race's targets (pure; tested directly)."""
    backend = setup.get("backend", "model")
    out: dict[str, Any] = {"latency_us": latency_us, "backend": backend, "measured": backend == "gpu",
                           "speedup_vs_best": None, "roofline_pct": None, "speedup_vs_pytorch": None, "wins": False}
    if not latency_us or not math.isfinite(latency_us):
        return out
    best = (setup.get("to_beat") or {}).get("latency_us")
    if best:
        out["speedup_vs_best"] = best / latency_us
        out["wins"] = out["speedup_vs_best"] > 1.0 + float(setup.get("margin") or 0.0)
    if setup.get("roofline_us"):
        out["roofline_pct"] = 100.0 * setup["roofline_us"] / latency_us
    if setup.get("pytorch_us"):
        out["speedup_vs_pytorch"] = setup["pytorch_us"] / latency_us
    return out


def describe_target(setup: dict[str, Any] | None) -> str:
    """What the prompt says a new kernel must beat (empty when there is no race)."""
    if not setup or setup.get("error") or not setup.get("backend"):
        return ""
    how = "measured on the GPU" if setup["backend"] == "gpu" else \
        f"predicted by our analytical model for {setup['sku_name']} (not measured; ±{100 * setup['margin']:.0f} %)"
    lines = [f"Performance: verified candidates are raced on {setup['op']} {setup['shape']} ({how})."]
    best = setup.get("to_beat")
    if best:
        pct = f", {100 * setup['roofline_us'] / best['latency_us']:.0f} % of the roofline" if setup.get("roofline_us") else ""
        lines.append(f"Current best: {best['label']}: {best['latency_us']:.1f} µs{pct}. To be kept, a new kernel "
                     f"must be more than {100 * setup['margin']:.0f} % faster.")
    if setup.get("roofline_us"):
        lines.append(f"Roofline (spec-sheet peak FLOP/s and bandwidth): {setup['roofline_us']:.1f} µs.")
    if setup.get("pytorch_us"):
        lines.append(f"PyTorch's own op: {setup['pytorch_us']:.1f} µs (measured).")
    return "\n".join(lines)


def describe_result(race: dict[str, Any] | None) -> str:
    """One line for the feedback: how far a verified candidate is from the target."""
    if not race:
        return ""
    if race.get("error"):
        return f"Not raced: {race['error']}"
    if not race.get("latency_us"):
        return ""
    kind = "measured" if race.get("measured") else "predicted"
    parts = [f"{kind} {race['latency_us']:.1f} µs"]
    if race.get("speedup_vs_best"):
        parts.append(f"{race['speedup_vs_best']:.2f}× as fast as the current best"
                     + (" (a win)" if race.get("wins") else " (not faster by enough)"))
    if race.get("roofline_pct"):
        parts.append(f"{race['roofline_pct']:.0f} % of the roofline")
    if race.get("speedup_vs_pytorch"):
        parts.append(f"{race['speedup_vs_pytorch']:.2f}× as fast as PyTorch")
    return "Race: " + ", ".join(parts) + "."
