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
# How an input is stored (see ``tensor``). The last two are slices of a wider allocation whose
# unused elements are NaN, so a kernel that walks past a row or steps over the gap reads NaN.
LAYOUTS = ("contiguous", "strided", "transposed", "sliced", "row_step")
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


# ---------------------------------------------------------------------------------------------
# Hard input classes: the shapes naive kernels get wrong, drawn by every op's strategy where
# they apply. Each class is a branch of one ``sampled_from`` so that no class depends on the
# harness stratifying draws: with the default 16 examples each class comes up about once per
# verify, and hypothesis can shrink a failure toward the plain branch.

# Rows just past a power-of-two grid cap: a kernel that launches min(rows, cap) programs and
# does not loop over the rest leaves rows unwritten.
PAST_CAP_ROWS = (65, 129, 257, 513, 1025, 2049, 4097, 65537)
# The widest single tile the tuning spaces offer; rows wider than this need a loop.
SINGLE_TILE_CAP = 16384
WIDE_COLS = (16385, 32768, 65537, 131073)
# Size-0 dims (rows, cols or a batch of 0; each op's reference accepts them). Off until the
# harness accepts an empty case: today its worker dies mapping an empty shared-input file
# (verdict "crash"), and verify.py demands a kernel launch that wrote the output, which a
# correct kernel does not make for an empty one ("no-kernel"). tests/test_hard_inputs.py
# holds a strict xfail that starts failing once the harness is fixed: then turn this on.
EMPTY_CASES = False


def many_rows_cap(max_numel: int) -> int:
    """The most rows a "many rows" draw takes.

    Triton's interpreter runs programs one after another (2-7 ms each for a row kernel, two
    calls per case), so the CPU budget (max_numel 2**15) stops at 1100 rows and draws 1025,
    just past a 1024 cap, at most; a GPU budget (2**24) reaches 69905, past the 65535
    programs of a grid's y and z axes.
    """
    return min(70000, max(1100, max_numel // 240))


def row_shape(p: Mapping[str, Any]) -> tuple[int, ...]:
    """The input shape of a row-wise Case: ``(*lead, rows, cols)``, or ``(cols,)`` for rank 1.

    ``batch`` is 0 (no leading dim), an int (one leading dim) or a list of leading dims (so
    ``[0]`` is an empty batch and ``[2, 3]`` makes a rank-4 input).
    """
    if p.get("rank") == 1:
        return (int(p["cols"]),)
    b = p.get("batch") or 0
    lead = tuple(int(v) for v in b) if isinstance(b, (list, tuple)) else ((int(b),) if b else ())
    return lead + (int(p["rows"]), int(p["cols"]))


def _fits(bench_cases, numel, max_numel: int) -> list[dict]:
    return [dict(c) for c in bench_cases if numel is not None and numel(c) <= max_numel]


def row_params_strategy(max_numel: int, *, max_rows: int = 64, max_cols: int = SINGLE_TILE_CAP,
                        batches: Sequence[int] = (0, 0, 2), bench_cases: Sequence[Mapping[str, Any]] = (),
                        rank1: bool = True, rank4: bool = True):
    """Shape params (``batch``, ``rows``, ``cols``, maybe ``rank``) of a row-wise op's Case.

    Branches: plain (the common case: awkward sizes up to ``max_rows`` x ``max_cols``); wide
    (one row of more than SINGLE_TILE_CAP columns, when the budget allows); many rows (past a
    grid cap, narrow); rank 1; rank 4; empty (``EMPTY_CASES``); a bench case whose input fits
    ``max_numel`` (the GPU lane). Every input stays within ``max_numel`` elements.
    """
    from hypothesis import strategies as st

    numel = lambda c: math.prod(row_shape(c))  # noqa: E731
    fitting = _fits(bench_cases, numel, max_numel)

    def plain():
        @st.composite
        def draw_plain(draw):
            cols = draw(size_strategy(1, max(1, min(max_numel, max_cols))))
            batch = draw(st.sampled_from(list(batches)))
            rows = draw(size_strategy(1, max(1, min(max_rows, max_numel // (cols * max(batch, 1))))))
            return {"batch": batch, "rows": rows, "cols": cols}
        return draw_plain()

    def wide():
        hi = min(max_numel, 1 << 18)
        past = [c for c in WIDE_COLS if c <= hi]
        cols = st.one_of(st.sampled_from(past), st.integers(SINGLE_TILE_CAP + 1, hi))
        return st.builds(lambda c: {"batch": 0, "rows": 1, "cols": c}, cols)

    def many_rows():
        hi = min(many_rows_cap(max_numel), max_numel)
        past = [r for r in PAST_CAP_ROWS if max_rows < r <= hi]

        # Under the interpreter's small budget only the just-past-a-cap counts (each costs
        # seconds); with a GPU's budget any count up to the cap as well.
        counts = st.sampled_from(past)
        if hi > 4096:
            counts = st.one_of(counts, st.integers(max_rows + 1, hi))

        @st.composite
        def draw_many(draw):
            rows = draw(counts)
            cols = draw(size_strategy(1, max(1, min(64, max_numel // rows))))
            return {"batch": 0, "rows": rows, "cols": cols}
        return draw_many()

    def rank_one():
        return st.builds(lambda c: {"rank": 1, "batch": 0, "rows": 1, "cols": c},
                         size_strategy(1, max(1, min(max_numel, 1 << 18))))

    def rank_four():
        @st.composite
        def draw4(draw):
            lead = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
            rows = draw(size_strategy(1, 8))
            cols = draw(size_strategy(1, max(1, min(max_cols, max_numel // (lead[0] * lead[1] * rows)))))
            rows = max(1, min(rows, max_numel // (lead[0] * lead[1] * cols)))
            return {"batch": lead, "rows": rows, "cols": cols}
        return draw4()

    def empty():
        # No rows, no columns, an empty batch, and an empty last dim behind a batch or alone
        # (where ``reshape(-1, 0)`` is ambiguous).
        small = size_strategy(1, 64)
        return st.one_of(st.builds(lambda c: {"batch": 0, "rows": 0, "cols": c}, small),
                         st.builds(lambda r: {"batch": 0, "rows": r, "cols": 0}, small),
                         st.builds(lambda r, c: {"batch": [0], "rows": r, "cols": c}, small, small),
                         st.builds(lambda r: {"batch": [2], "rows": r, "cols": 0}, small),
                         st.just({"rank": 1, "batch": 0, "rows": 1, "cols": 0}))

    branches = {"plain": plain()}
    if max_numel > SINGLE_TILE_CAP and max_cols >= SINGLE_TILE_CAP:
        branches["wide"] = wide()
    if min(many_rows_cap(max_numel), max_numel) > max_rows:
        branches["many_rows"] = many_rows()
    if rank1:
        branches["rank1"] = rank_one()
    if rank4:
        branches["rank4"] = rank_four()
    if EMPTY_CASES:
        branches["empty"] = empty()
    if fitting:
        branches["bench"] = st.sampled_from(fitting)
    # The plain branch dominates; each hard class comes up about once in 15 draws (the many-rows
    # class costs seconds per case in the interpreter, so not more often).
    kinds = ["plain"] * 9 + [k for k in branches if k != "plain"]
    if "wide" in branches:
        kinds.append("wide")  # one program: the cheapest hard class, drawn twice as often
    return st.sampled_from(kinds).flatmap(lambda k: branches[k])


def bench_strategy(bench_cases: Sequence[Mapping[str, Any]], numel: Callable[[Mapping[str, Any]], int],
                   max_numel: int):
    """A strategy of the bench cases whose largest input fits ``max_numel``, or None."""
    from hypothesis import strategies as st

    fitting = _fits(bench_cases, numel, max_numel)
    return st.sampled_from(fitting) if fitting else None
