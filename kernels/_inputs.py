"""Tensor builders used by every op's ``build``: deterministic from (seed, dist, layout).

The value distributions, storage layouts and dtypes a Case can name, a seeded generator, the
float64 values of a distribution, a tensor of a dtype laid out as asked (``tensor``), a copy
of a computed tensor in a layout (``lay_out``) and masking with -inf (``mask_neg_inf``).
Re-exported by ``kernels/spec.py``, where op specs import them from. Imports torch only.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

# Value distributions a Case can ask for. "pareto" is the heavy tail that defeats
# subsampling and analytic-mean hacks; "scaled" multiplies by Case.scale for ops that
# are meant to survive large magnitudes (softmax logits ~1e3).
DISTRIBUTIONS = ("normal", "uniform", "laplace", "pareto", "lognormal")
# How an input is stored (see ``tensor``). The last two are slices of a wider allocation whose
# unused elements are NaN, so a kernel that walks past a row or steps over the gap reads NaN.
LAYOUTS = ("contiguous", "strided", "transposed", "sliced", "row_step")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def values(shape: Sequence[int], dist: str, scale: float, gen: torch.Generator) -> torch.Tensor:
    """float64 values of the named distribution, centred where it makes sense, times scale."""
    shape = tuple(int(s) for s in shape)
    if dist == "normal":
        v = torch.randn(shape, generator=gen, dtype=torch.float64)
    elif dist == "uniform":
        v = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    elif dist == "laplace":
        u = torch.rand(shape, generator=gen, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12) - 0.5
        v = -torch.sign(u) * torch.log1p(-2 * u.abs())
    elif dist == "pareto":
        # Pareto(alpha=1.5) magnitudes with random signs: heavy tail, infinite variance.
        u = torch.rand(shape, generator=gen, dtype=torch.float64).clamp_(1e-12, 1.0)
        sign = torch.randint(0, 2, shape, generator=gen, dtype=torch.int64).to(torch.float64) * 2 - 1
        v = sign * (u ** (-1.0 / 1.5) - 1.0)
    elif dist == "lognormal":
        v = torch.exp(torch.randn(shape, generator=gen, dtype=torch.float64))
    else:
        raise ValueError(f"unknown distribution {dist!r}; expected one of {DISTRIBUTIONS}")
    return v * scale


def value_cap(dtype: torch.dtype) -> float:
    """The largest |value| a drawn input of ``dtype`` may have: the largest power of two at most
    the fourth root of the dtype's largest finite value (8 for fp16; 2**31 for bf16 and fp32).

    A product of two such inputs (cap²: 64 for fp16) stays 1000x inside the range, so sums of
    a few hundred typical products (a matmul, a norm's sum of squares) stay finite; where a
    heavy tail still overflows, PyTorch's own result in the dtype overflows at the same places
    and the comparison allows exactly that (``harness/compare.py``)."""
    if not dtype.is_floating_point or dtype == torch.float64:
        return float("inf")
    return 2.0 ** math.floor(math.log2(torch.finfo(dtype).max ** 0.25))


def fit_range(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 values ``v`` scaled by a power of two (so every value's mantissa, and the shape of
    the distribution, are kept) until max |v| <= ``value_cap(dtype)``; unchanged if they fit.
    For targets that know nothing of their op (problem files): an fp16 input drawn at 1e8 is
    inf before any kernel runs."""
    cap = value_cap(dtype)
    finite = v[torch.isfinite(v)]
    top = float(finite.abs().max()) if finite.numel() else 0.0
    if top <= cap:
        return v
    return v * 2.0 ** -math.ceil(math.log2(top / cap))


def tensor(shape: Sequence[int], dtype: str, dist: str, scale: float, gen: torch.Generator,
           layout: str = "contiguous", *, offset: float = 0.0) -> torch.Tensor:
    """A tensor of ``shape`` in ``dtype`` with the given layout (values ``offset + scale * dist``).

    ``strided``: a view taking every other element of a wider last dim (stride(-1) == 2).
    ``transposed``: the last two dims are stored swapped (a ``.mT`` view), so stride(-1) != 1.
    ``sliced``: unit last stride, but rows sit in a wider allocation (``wide[..., 1:n+1]`` of a
    last dim n + 3): row stride != row length and the data starts one element in.
    ``row_step``: every other row (``wide[..., ::2, :]``, rows along dim -2): a row stride
    twice the row length that a ``reshape(-1, n)`` keeps as a view (for 1-d: element stride 2).
    The gaps of ``sliced`` and ``row_step`` hold NaN.
    """
    tdt = DTYPES[dtype]
    shape = tuple(int(s) for s in shape)

    def vals(sh):
        v = values(sh, dist, scale, gen)
        return v + offset if offset else v

    if layout == "contiguous" or len(shape) == 0:
        return vals(shape).to(tdt)
    if layout == "strided":
        wide = shape[:-1] + (shape[-1] * 2,)
        return vals(wide).to(tdt)[..., ::2]
    if layout == "transposed":
        if len(shape) < 2:
            return vals(shape).to(tdt)
        swapped = shape[:-2] + (shape[-1], shape[-2])
        return vals(swapped).to(tdt).mT
    if layout in ("sliced", "row_step"):
        return lay_out(vals(shape).to(tdt), layout)
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def lay_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A copy of ``t`` (same values) stored with ``layout``; gaps of the new layouts hold NaN.

    For ops whose inputs are computed rather than drawn (rope's cos/sin tables).
    """
    if layout == "contiguous" or t.dim() == 0:
        return t.clone()
    if layout == "strided":
        wide = torch.zeros(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "transposed":
        return t.mT.contiguous().mT if t.dim() >= 2 else t.clone()
    if layout == "sliced":
        n = t.shape[-1]
        base = torch.full(t.shape[:-1] + (n + 3,), float("nan"), dtype=t.dtype)
        view = base[..., 1:n + 1]
    elif layout == "row_step":
        if t.dim() == 1:
            base = torch.full((2 * t.shape[0],), float("nan"), dtype=t.dtype)
            view = base[::2]
        else:
            base = torch.full(t.shape[:-2] + (2 * t.shape[-2], t.shape[-1]), float("nan"), dtype=t.dtype)
            view = base[..., ::2, :]
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    view.copy_(t)
    return view


NEG_INF_MODES = ("some", "all_but_one")


def mask_neg_inf(x: torch.Tensor, mode: str | None, gen: torch.Generator,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
    """Set entries of ``x`` to -inf in place (masked logits) and return ``x``.

    ``some``: about a quarter of each row (last dim); ``all_but_one``: every entry of a row but
    one. Per row, the entry at ``keep`` (an index tensor of shape ``x.shape[:-1]``; random if
    None) stays finite, so no row is entirely -inf and the float64 reference stays finite.
    """
    if not mode or x.numel() == 0:
        return x
    if mode not in NEG_INF_MODES:
        raise ValueError(f"unknown -inf mode {mode!r}; expected one of {NEG_INF_MODES}")
    n = x.shape[-1]
    if mode == "some":
        mask = torch.rand(x.shape, generator=gen, dtype=torch.float64) < 0.25
    else:
        mask = torch.ones(x.shape, dtype=torch.bool)
    if keep is None:
        keep = torch.randint(0, n, x.shape[:-1], generator=gen, dtype=torch.int64)
    mask.scatter_(-1, keep.reshape(x.shape[:-1] + (1,)), False)
    x.masked_fill_(mask, float("-inf"))
    return x
