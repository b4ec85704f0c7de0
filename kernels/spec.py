"""What an op is: the OpSpec contract shared by the library, the harness and the tuner.

An op's folder (``kernels/<op>/``) holds ``spec.py`` (an ``OPSPEC`` built from the types here)
and ``kernel.py`` (a self-contained candidate: imports only torch, triton, math; defines the
entry function named after the op with the reference's signature plus a keyword-only
``config``). The harness verifies ``kernel.py`` exactly as it verifies an LLM's candidate.

This module imports torch only. Hypothesis is imported inside ``OpSpec.strategy`` callers'
functions, so ``from kernelagent.kernels import softmax`` does not pay for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

# Value distributions a Case can ask for. "pareto" is the heavy tail that defeats
# subsampling and analytic-mean hacks; "scaled" multiplies by Case.scale for ops that
# are meant to survive large magnitudes (softmax logits ~1e3).
DISTRIBUTIONS = ("normal", "uniform", "laplace", "pareto", "lognormal")
LAYOUTS = ("contiguous", "strided", "transposed")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class Case:
    """One point the property-based test draws: shapes and options, dtype, layout, values.

    A Case is a description, not tensors, so that a shrunk counterexample reads well
    ("rows=1 cols=129 bf16 strided pareto seed=3") and the parent can rebuild the exact
    tensors. ``params`` is op-specific (sizes, flags such as ``causal``).
    """

    params: Mapping[str, Any]
    dtype: str = "fp32"
    layout: str = "contiguous"
    dist: str = "normal"
    scale: float = 1.0
    seed: int = 0

    def describe(self) -> str:
        ps = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{ps} dtype={self.dtype} layout={self.layout} dist={self.dist} scale={self.scale:g} seed={self.seed}"

    def to_json(self) -> dict:
        return {"params": dict(self.params), "dtype": self.dtype, "layout": self.layout,
                "dist": self.dist, "scale": self.scale, "seed": self.seed}


@dataclass(frozen=True)
class Call:
    """Concrete arguments for one invocation: positional tensors/values and keyword options."""

    args: tuple
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tolerance:
    """Error budget relative to a float64 oracle.

    For each output element i, with r the float64 reference, n PyTorch's own result in the
    input dtype, and eps the unit roundoff of the output dtype::

        allowed_i = ulps * eps * (|r_i| + rms(r))            # rounding the output
                  + torch_factor * (|n_i - r_i| + rms(n - r))  # as good as PyTorch, within k×
                  + ulps * eps_acc * sqrt(K) * rms(r)         # accumulating K terms in fp32

    rms(r) ties the absolute part to the output's own magnitude, so an all-zeros answer fails
    even when every output is tiny. K is ``reduction_length(call)``.
    """

    ulps: float = 8.0
    torch_factor: float = 4.0
    reduction_length: Callable[[Call], int] | None = None


@dataclass(frozen=True)
class Param:
    """One tuning parameter. ``values`` are ordered; powers of two are searched by exponent."""

    name: str
    values: Sequence[Any]

    @property
    def is_pow2(self) -> bool:
        return all(isinstance(v, int) and v > 0 and (v & (v - 1)) == 0 for v in self.values)


@dataclass(frozen=True)
class TuningSpace:
    """The launch parameters an op's kernel exposes, with validity constraints.

    ``constraint(config, case_params)`` returns None when valid or a reason string. Static
    resource limits (shared memory, registers) are checked later, per SKU, by compiling.
    """

    params: Sequence[Param]
    constraint: Callable[[Mapping[str, Any], Mapping[str, Any]], str | None] = lambda c, p: None

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def size(self) -> int:
        return math.prod(len(p.values) for p in self.params)


@dataclass(frozen=True)
class OpSpec:
    """Everything the harness, the tuner and the library need to know about one op."""

    name: str
    doc: str
    reference: Callable[..., torch.Tensor]
    # strategy(max_numel) -> hypothesis strategy of Case; max_numel bounds one input's size
    # (small in the CPU interpreter lane, large on a GPU).
    strategy: Callable[[int], Any]
    build: Callable[[Case], Call]
    tolerance: Tolerance
    flops: Callable[[Call], float]
    bytes: Callable[[Call], float]
    tuning_space: TuningSpace
    default_config: Callable[[Mapping[str, Any]], dict]
    # shape_key(call) -> the params that select a config (e.g. {"cols": 4096}); the tuner
    # buckets them and the library looks configs up by bucket.
    shape_key: Callable[[Call], dict]
    # Representative production sizes for tuning and benchmarks (Case params).
    bench_cases: Sequence[Mapping[str, Any]] = ()
    float64_reference: bool = True
    dtypes: Sequence[str] = ("fp32", "fp16", "bf16")


# ---------------------------------------------------------------------------------------------
# Tensor builders used by every op's ``build``: deterministic from (seed, dist, layout).


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


def tensor(shape: Sequence[int], dtype: str, dist: str, scale: float, gen: torch.Generator,
           layout: str = "contiguous") -> torch.Tensor:
    """A tensor of ``shape`` in ``dtype`` with the given layout.

    ``strided``: a view taking every other element of a wider last dim (stride(-1) == 2).
    ``transposed``: the last two dims are stored swapped (a ``.mT`` view), so stride(-1) != 1.
    """
    tdt = DTYPES[dtype]
    shape = tuple(int(s) for s in shape)
    if layout == "contiguous" or len(shape) == 0:
        return values(shape, dist, scale, gen).to(tdt)
    if layout == "strided":
        wide = shape[:-1] + (shape[-1] * 2,)
        return values(wide, dist, scale, gen).to(tdt)[..., ::2]
    if layout == "transposed":
        if len(shape) < 2:
            return values(shape, dist, scale, gen).to(tdt)
        swapped = shape[:-2] + (shape[-1], shape[-2])
        return values(swapped, dist, scale, gen).to(tdt).mT
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def eps(dtype: torch.dtype) -> float:
    """Unit roundoff (half the machine epsilon) of a floating dtype."""
    return torch.finfo(dtype).eps / 2


# ---------------------------------------------------------------------------------------------
# Hypothesis helpers shared by op strategies (hypothesis imported lazily by callers).

AWKWARD_SIZES = (1, 2, 3, 7, 31, 127, 129, 257, 1000, 1021, 4097)


def size_strategy(lo: int, hi: int):
    """Sizes that break naive kernels: 1, primes, non-multiples of block sizes, and any int."""
    from hypothesis import strategies as st

    awkward = [s for s in AWKWARD_SIZES if lo <= s <= hi]
    if awkward:
        return st.one_of(st.sampled_from(awkward), st.integers(lo, hi))
    return st.integers(lo, hi)


def common_strategy(dtypes: Sequence[str] = ("fp32", "fp16", "bf16"),
                    layouts: Sequence[str] = LAYOUTS, dists: Sequence[str] = DISTRIBUTIONS,
                    scales: Sequence[float] = (1.0,)):
    """A strategy of the dtype/layout/dist/scale/seed part of a Case, as a dict."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries({
        "dtype": st.sampled_from(list(dtypes)),
        "layout": st.sampled_from(list(layouts)),
        "dist": st.sampled_from(list(dists)),
        "scale": st.sampled_from(list(scales)),
        "seed": st.integers(0, 2**31 - 1),
    })


# ---------------------------------------------------------------------------------------------
# Row-wise ops (softmax, rms_norm, layer_norm): one program per row, tiled along the last dim.
# Each op's kernel.py keeps its own copy of the default (candidates are self-contained); the
# op tests check the two agree.


def last_dim_key(call: Call) -> dict:
    """Shape key of a row-wise op: the length of the last dim of its first argument."""
    return {"cols": int(call.args[0].shape[-1])}


def row_tile_default(key: Mapping[str, Any]) -> dict:
    """One tile covering the row (up to 8192 lanes), with warps growing with the tile."""
    cols = int(key["cols"])
    block = min(1 << max(0, (max(cols, 1) - 1).bit_length()), 8192)
    return {"BLOCK_N": block, "num_warps": 4 if block <= 2048 else 8 if block <= 4096 else 16}


def row_tile_constraint(config: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    cols = params.get("cols")
    if cols is not None and int(config["BLOCK_N"]) >= 2 * max(int(cols), 1) and int(config["BLOCK_N"]) > 64:
        return "BLOCK_N is at least twice the row length: half the lanes would idle"
    return None
