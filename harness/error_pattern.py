"""Where a wrong output is wrong, in words a kernel writer acts on.

A counterexample says *which* input fails; the pattern says *how*: every element (the formula
or the reduction), only the tail columns (masking or the last tile), whole rows from some row on
(the grid is too small), columns from the second tile on (the loop over tiles), zeros where
values belong (stores masked off, or a program that never ran), a constant factor (the
normalisation) — and, across the examples verification drew, whether only one dtype or layout
fails. Computed in the trusted parent from the output and the reference it already compared.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

MAX_LISTED = 4


def _runs(idx: list[int]) -> str:
    """[0, 1, 2, 7] → "0-2, 7" (at most MAX_LISTED runs)."""
    runs, start, prev = [], None, None
    for i in idx:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            runs.append((start, prev))
            start = prev = i
    if start is not None:
        runs.append((start, prev))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:MAX_LISTED])
    return text + (", …" if len(runs) > MAX_LISTED else "")


def describe(out: torch.Tensor, ref: torch.Tensor, bad: torch.Tensor) -> str:
    """One or two sentences on the shape of the error. ``bad``: the elements outside the budget
    (same shape as ``out``); ``out`` and ``ref`` are compared in float64."""
    if bad.shape != out.shape or out.shape != ref.shape or out.numel() == 0:
        return ""
    n_bad, total = int(bad.sum()), bad.numel()
    if n_bad == 0:
        return ""
    o, r = out.detach().double(), ref.detach().double()
    parts = []
    if n_bad == total and total >= 8:
        parts.append(f"every element is wrong ({total} of {total}): the computation itself, not the edges")
    elif n_bad == total:
        parts.append(f"all {total} element(s) wrong")
    else:
        parts.append(f"{n_bad} of {total} elements wrong ({100.0 * n_bad / total:.1f} %)")
        if out.dim() >= 1 and out.shape[-1] >= 8:   # too few columns to show a pattern otherwise
            rows = bad.reshape(-1, out.shape[-1])
            n_rows, n_cols = rows.shape
            bad_cols = rows.any(0).nonzero().flatten().tolist()
            bad_rows = rows.any(1).nonzero().flatten().tolist()
            if bad_cols and bad_cols == list(range(bad_cols[0], n_cols)) and bad_cols[0] > 0:
                c0 = bad_cols[0]
                if c0 & (c0 - 1) == 0 and n_cols - c0 > c0 // 2:
                    parts.append(f"every column from {c0} on ({n_cols - c0} of {n_cols}; {c0} is a power of two): "
                                 "the tiles after the first one (the loop over tiles, its offsets or its mask)")
                else:
                    parts.append(f"only the last {n_cols - c0} of {n_cols} columns (from column {c0}): "
                                 "the mask or the last tile along the row")
            elif len(bad_cols) < n_cols:
                parts.append(f"columns {_runs(bad_cols)} of {n_cols}")
            if n_rows >= 4:
                if len(bad_rows) == n_rows:
                    parts.append(f"in every row ({n_rows})")
                elif bad_rows == list(range(bad_rows[0], n_rows)) and bad_rows[0] > 0:
                    parts.append(f"only rows {bad_rows[0]}-{n_rows - 1} of {n_rows}: "
                                 "the grid does not cover every row")
                else:
                    parts.append(f"in rows {_runs(bad_rows)} of {n_rows}")
    ob, rb = o[bad], r[bad]
    finite = torch.isfinite(ob) & torch.isfinite(rb)
    span = float(r[torch.isfinite(r)].abs().max()) if bool(torch.isfinite(r).any()) else 0.0
    if bool((ob == 0).all()) and bool((rb != 0).any()):
        parts.append("the wrong elements are all 0: never written (stores masked off, or a program that did not run)")
    elif bool((~torch.isfinite(ob) | (ob.abs() > 1e6 * (span + 1.0))).all()):
        parts.append("the wrong values are NaN or far outside the reference's range: probably never written "
                     "(during verification new tensors read as NaN until stored to: stores masked off, or a "
                     "program that did not run)")
    elif bool(finite.all()) and bool((rb.abs() > 0).all()):
        ratio = ob / rb
        if ratio.numel() >= 2 and float(ratio.std()) <= 1e-3 * max(1.0, float(ratio.abs().mean())):
            parts.append(f"off by a constant factor {float(ratio.mean()):.4g}: the normalisation or a scale")
    return "; ".join(parts) + "."


class ClassTally:
    """Which input classes (dtype, layout, …) passed and failed over one verification's examples."""

    def __init__(self, keys: Iterable[str] = ("dtype", "layout")):
        self.keys = tuple(keys)
        self.passed: dict[str, set] = {k: set() for k in self.keys}
        self.failed: dict[str, set] = {k: set() for k in self.keys}

    def record(self, classes: Mapping[str, Any], ok: bool) -> None:
        for k in self.keys:
            if k in classes and classes[k] is not None:
                (self.passed if ok else self.failed)[k].add(str(classes[k]))

    def describe(self) -> str:
        """"failed only with dtype bf16 (passed with fp16, fp32)" when one value of a class is the
        only one that failed among the cases tried and others passed; "" otherwise."""
        out = []
        for k in self.keys:
            # One value failed (some of its cases may pass: shrinking tries smaller ones), and
            # every other value tried passed.
            others = self.passed[k] - self.failed[k]
            if len(self.failed[k]) == 1 and others:
                out.append(f"failed only with {k} {next(iter(self.failed[k]))} "
                           f"(passed with {', '.join(sorted(others))})")
                # The first axis that singles a value out, only: once every failure is bf16, the
                # failures' layouts are whatever the bf16 cases drew, and saying "failed only with
                # layout contiguous" then would mislead.
                break
        return "; ".join(out)
