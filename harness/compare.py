"""Comparing a candidate's output with the float64 oracle, in the trusted parent.

The budget is the one documented on ``kernels.spec.Tolerance``: output rounding in the output
dtype, k × PyTorch's own error, and fp32 accumulation growth over the reduction length, all
tied to the output's own magnitude so that zeros never pass for an op with small outputs.
The comparison is written as ``err <= allowed`` with NaN failing it, never as ``err > tol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..kernels.spec import Tolerance


@dataclass
class Comparison:
    ok: bool
    reason: str | None           # "nonfinite" | "mismatch" | None
    worst_ratio: float           # max |err| / allowed over elements (inf for non-finite)
    detail: str


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt()) if t.numel() else 0.0


def allowed_error(ref64: torch.Tensor, native: torch.Tensor | None, out_dtype: torch.dtype,
                  tol: Tolerance, reduction_length: int | None) -> torch.Tensor:
    """Per-element allowed |candidate - ref64| (float64)."""
    r = ref64.double()
    eps_out = torch.finfo(out_dtype).eps / 2 if out_dtype.is_floating_point else 0.0
    eps_acc = torch.finfo(torch.float32).eps / 2
    mag = _rms(r)
    allowed = tol.ulps * eps_out * (r.abs() + mag)
    if native is not None:
        n_err = (native.double() - r).abs()
        n_err = torch.where(torch.isfinite(n_err), n_err, torch.zeros_like(n_err))
        allowed = allowed + tol.torch_factor * (n_err + _rms(n_err))
    if reduction_length and reduction_length > 1:
        allowed = allowed + tol.ulps * eps_acc * math.sqrt(reduction_length) * mag
    return allowed


def compare(out: torch.Tensor, ref64: torch.Tensor, native: torch.Tensor | None,
            tol: Tolerance, reduction_length: int | None) -> Comparison:
    """Decide whether ``out`` is within budget of ``ref64``. Shapes must already match."""
    o = out.double()
    r = ref64.double()
    fin_o, fin_r = torch.isfinite(o), torch.isfinite(r)
    # The native-dtype rule: where the float64 oracle is finite but PyTorch's own result in the
    # output dtype is not (an fp16 matmul past 65504), the dtype cannot hold the answer, so the
    # candidate may reproduce exactly that (the same-signed inf, NaN where native is NaN) and
    # only there; a finite value there is judged by the budget as anywhere else.
    overflow = _native_overflow(o, r, native)
    bad_fin = fin_r & ~fin_o & ~overflow
    if bool(bad_fin.any()):
        idx = _first_index(bad_fin)
        return Comparison(False, "nonfinite", math.inf,
                          f"{int(bad_fin.sum())} of {o.numel()} outputs are non-finite where the reference is "
                          f"finite; first at index {idx}: got {o[idx].item()}, expected {r[idx].item():.6g}"
                          + _pattern(o, r, bad_fin))
    # Where the reference itself is non-finite the candidate must agree exactly (same inf/nan).
    both_nonfin = ~fin_r
    if bool(both_nonfin.any()):
        agree = (o[both_nonfin] == r[both_nonfin]) | (torch.isnan(o[both_nonfin]) & torch.isnan(r[both_nonfin]))
        if not bool(agree.all()):
            return Comparison(False, "mismatch", math.inf, "non-finite reference values are not reproduced")
    fin_r = fin_r & ~overflow  # judged above: equal to native there
    err = torch.where(fin_r, (o - r).abs(), torch.zeros_like(r))
    allowed = allowed_error(torch.where(fin_r, r, torch.zeros_like(r)),
                            None if native is None else torch.where(fin_r, native.double(), torch.zeros_like(r)),
                            out.dtype, tol, reduction_length)
    ok_mask = err <= allowed  # NaN compares False: fails
    ratio = torch.where(allowed > 0, err / allowed, torch.where(err > 0, torch.full_like(err, math.inf), torch.zeros_like(err)))
    worst = float(ratio.max()) if ratio.numel() else 0.0
    if bool(ok_mask.all()):
        n_over = int(overflow.sum())
        note = (f"; {n_over} of {o.numel()} outputs non-finite exactly where PyTorch's native {out.dtype} result "
                "is (the dtype's range)") if n_over else ""
        return Comparison(True, None, worst, f"worst error {worst:.3g}× the budget{note}")
    idx = _first_index(ratio == ratio.max())
    n_bad = int((~ok_mask).sum())
    return Comparison(False, "mismatch", worst,
                      f"{n_bad} of {o.numel()} outputs over budget; worst at index {idx}: got {o[idx].item():.6g}, "
                      f"expected {r[idx].item():.6g} (|err| {err[idx].item():.3g} vs allowed "
                      f"{allowed[idx].item():.3g}, {worst:.3g}× the budget)" + _pattern(o, r, ~ok_mask))


def _native_overflow(o: torch.Tensor, r: torch.Tensor, native: torch.Tensor | None) -> torch.Tensor:
    """Where the oracle is finite, the native result is not, and the candidate's non-finite
    value is the native one (+inf/-inf the same, NaN for NaN). An output that is non-finite
    everywhere gains nothing: it is excused only at the native's own non-finite places."""
    if native is None or native.shape != o.shape:
        return torch.zeros(o.shape, dtype=torch.bool)
    n = native.double()
    same = (o == n) | (torch.isnan(o) & torch.isnan(n))
    return torch.isfinite(r) & ~torch.isfinite(n) & ~torch.isfinite(o) & same


def _pattern(o: torch.Tensor, r: torch.Tensor, bad: torch.Tensor) -> str:
    """Where the output is wrong (harness/error_pattern.py), as a second line of the detail."""
    from .error_pattern import describe

    text = describe(o, r, bad)
    return f"\nwhere: {text}" if text else ""


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    nz = mask.nonzero()
    return tuple(int(i) for i in nz[0]) if len(nz) else ()
