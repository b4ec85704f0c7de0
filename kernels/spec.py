"""What an op is: the OpSpec contract shared by the library, the harness and the tuner.

An op's folder (``kernels/<op>/``) holds ``spec.py`` (an ``OPSPEC`` built from the types here)
and ``kernel.py`` (a self-contained candidate: imports only torch, triton, math; defines the
entry function named after the op with the reference's signature plus a keyword-only
``config``). The harness verifies ``kernel.py`` exactly as it verifies an LLM's candidate.

This module holds the types (Case, Call, Tolerance, Param, TuningSpace, OpSpec), ``eps``, the
classes a built Case exercises (``covered_classes``), the row-wise ops' shape key, default
config and constraint, and the ``EMPTY_CASES`` switch. It
re-exports the helpers op specs build with, so ``from ..spec import X`` finds them all:
tensor builders from ``kernels/_inputs.py`` (DTYPES, LAYOUTS, ``generator``, ``tensor``, …)
and hypothesis strategies and hard input classes from ``kernels/_strategies.py``.

This module imports torch only. Hypothesis is imported inside ``OpSpec.strategy`` callers'
functions, so ``from kernelagent.kernels import softmax`` does not pay for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ._inputs import (DISTRIBUTIONS, DTYPE_NAMES, DTYPES, LAYOUTS, NEG_INF_MODES, generator, lay_out,
                      mask_neg_inf, tensor, values)
from ._strategies import (AWKWARD_SIZES, PAST_CAP_ROWS, SINGLE_TILE_CAP, WIDE_COLS, bench_strategy,
                          common_strategy, many_rows_cap, pick_class, row_params_strategy, row_shape,
                          row_shape_classes, size_strategy)

__all__ = [
    # defined here
    "Case", "Call", "Tolerance", "Param", "TuningSpace", "OpSpec", "eps", "EMPTY_CASES", "CLASS_AXES",
    "covered_classes", "NEG_INF_CLASSES", "neg_inf_class",
    "last_dim_key", "row_tile_default", "row_tile_constraint", "rows_constraint",
    # kernels/_inputs.py
    "DISTRIBUTIONS", "LAYOUTS", "DTYPES", "DTYPE_NAMES", "NEG_INF_MODES", "generator", "values", "tensor",
    "lay_out", "mask_neg_inf",
    # kernels/_strategies.py
    "AWKWARD_SIZES", "PAST_CAP_ROWS", "SINGLE_TILE_CAP", "WIDE_COLS", "size_strategy", "common_strategy",
    "pick_class", "many_rows_cap", "row_shape", "row_params_strategy", "row_shape_classes", "bench_strategy",
]


@dataclass(frozen=True)
class Case:
    """One point the property-based test draws: shapes and options, dtype, layout, values.

    A Case is a description, not tensors, so that a shrunk counterexample reads well
    ("rows=1 cols=129 bf16 strided pareto seed=3") and the parent can rebuild the exact
    tensors. ``params`` is op-specific (sizes, flags such as ``causal``); ``shape_class`` names
    the class of shapes they were drawn from (``plain``, ``wide``, ``many_rows``, …: see the
    op's ``OpSpec.shape_classes``).
    """

    params: Mapping[str, Any]
    dtype: str = "fp32"
    layout: str = "contiguous"
    dist: str = "normal"
    scale: float = 1.0
    seed: int = 0
    shape_class: str = "plain"

    def describe(self) -> str:
        ps = " ".join(f"{k}={v}" for k, v in self.params.items())
        return (f"{ps} class={self.shape_class} dtype={self.dtype} layout={self.layout} dist={self.dist} "
                f"scale={self.scale:g} seed={self.seed}")

    def to_json(self) -> dict:
        return {"params": dict(self.params), "shape_class": self.shape_class, "dtype": self.dtype,
                "layout": self.layout, "dist": self.dist, "scale": self.scale, "seed": self.seed}


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


# The axes every Case's classes are named on; an op adds its own (``OpSpec.param_classes``).
# Every verify draws each declared class at least once.
CLASS_AXES = ("dtype", "layout", "shape_class")


@dataclass(frozen=True)
class OpSpec:
    """Everything the harness, the tuner and the library need to know about one op."""

    name: str
    doc: str
    reference: Callable[..., torch.Tensor]
    # strategy(max_numel, pin=None) -> hypothesis strategy of Case; max_numel bounds one input's
    # size (small in the CPU interpreter lane, large on a GPU). ``pin`` ({"dtype": "bf16"},
    # {"layout": "sliced", "shape_class": "wide"}) restricts every draw to the named classes.
    strategy: Callable[..., Any]
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
    # The classes the strategy draws, by axis: every one appears in every verify (the harness
    # pins each in turn), and a strategy draws no other (tests/test_coverage_strata.py).
    dtypes: Sequence[str] = ("fp32", "fp16", "bf16")
    layouts: Sequence[str] = LAYOUTS
    # shape_classes(max_numel) -> the shape classes the strategy offers at that budget.
    shape_classes: Callable[[int], Sequence[str]] = lambda max_numel: ("plain",)
    # The op's own hard input classes, by axis (a Case param of that name; "none" when absent),
    # e.g. {"neg_inf": ("none", "some", "all_but_one")}, and what a built Case shows on them.
    param_classes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    param_class_of: Callable[[Case, Call], Mapping[str, str]] | None = None
    # arch ("sm_90") -> a shipped variant that is the default kernel on that architecture when
    # the library has no entry (with the variant's own default config); trusted, so only here.
    arch_variants: Mapping[str, str] = field(default_factory=dict)

    def classes(self, max_numel: int) -> dict[str, tuple[str, ...]]:
        """The declared classes at this budget, by axis (``CLASS_AXES``, then the op's own)."""
        return {"dtype": tuple(self.dtypes), "layout": tuple(self.layouts),
                "shape_class": tuple(self.shape_classes(max_numel)),
                **{axis: tuple(values) for axis, values in self.param_classes.items()}}

    def covered(self, case: Case, call: Call) -> dict[str, str]:
        """The classes ``case``, built as ``call``, exercises on every declared axis."""
        got = covered_classes(case, call)
        for axis in self.param_classes:
            got[axis] = str(case.params.get(axis) or "none")
        if self.param_class_of is not None:
            got.update(self.param_class_of(case, call))
        return got


def covered_classes(case: Case, call: Call) -> dict[str, str]:
    """The classes a built Case really exercises, by axis: its dtype and shape class, and its
    layout where the layout shows in the first tensor input. A transposed or row-step layout of
    a single row, or any layout of a one-element or empty tensor, stores the input exactly as
    contiguous does, so it counts as contiguous: a class is covered by its effect, not its name.
    """
    x = next((a for a in call.args if isinstance(a, torch.Tensor)), None)
    layout = case.layout
    if layout != "contiguous" and (x is None or x.numel() <= 1
                                   or (x.is_contiguous() and x.storage_offset() == 0)):
        layout = "contiguous"
    return {"dtype": case.dtype, "layout": layout, "shape_class": case.shape_class}


# Masked logits (``mask_neg_inf``) as a class axis of the ops that take logits, with the weights
# their strategies draw them by (``pick_class(NEG_INF_CLASSES, pin, axis="neg_inf")``).
NEG_INF_CLASSES = {"none": 4, "some": 1, "all_but_one": 1}


def neg_inf_class(case: Case, call: Call) -> dict[str, str]:
    """The -inf class a built Case shows: its mode only if the logits hold a -inf (all but one
    of a single column masks nothing)."""
    mode = case.params.get("neg_inf") or "none"
    if mode != "none" and not bool(torch.isneginf(call.args[0]).any()):
        mode = "none"
    return {"neg_inf": mode}


def eps(dtype: torch.dtype) -> float:
    """Unit roundoff (half the machine epsilon) of a floating dtype."""
    return torch.finfo(dtype).eps / 2


# ---------------------------------------------------------------------------------------------
# Row-wise ops (softmax, rms_norm, layer_norm): one program per row, tiled along the last dim.
# Each op's kernel.py keeps its own copy of the default (candidates are self-contained); the
# op tests check the two agree.


def last_dim_key(call: Call) -> dict:
    """Shape key of a row-wise op: the length of the last dim of its first argument."""
    return {"cols": int(call.args[0].shape[-1])}


def row_tile_default(key: Mapping[str, Any]) -> dict:
    """One tile covering the row (up to 8192 lanes), with warps growing with the tile, and
    rows narrower than 2048 lanes sharing a program (ROWS, up to 16)."""
    cols = int(key["cols"])
    block = min(1 << max(0, (max(cols, 1) - 1).bit_length()), 8192)
    return {"BLOCK_N": block, "num_warps": 4 if block <= 2048 else 8 if block <= 4096 else 16,
            "ROWS": max(1, min(16, 2048 // block))}


def row_tile_constraint(config: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    cols = params.get("cols")
    if cols is not None and int(config["BLOCK_N"]) >= 2 * max(int(cols), 1) and int(config["BLOCK_N"]) > 64:
        return "BLOCK_N is at least twice the row length: half the lanes would idle"
    return rows_constraint(config, params)


def rows_constraint(config: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """ROWS (rows per program) only where a row is one tile, and not so many that they spill."""
    cols = params.get("cols")
    rows = int(config.get("ROWS", 1))
    if rows > 1 and cols is not None and int(config["BLOCK_N"]) < int(cols):
        return "ROWS > 1 needs a row in one tile (BLOCK_N >= cols): longer rows have a program each"
    if rows * int(config["BLOCK_N"]) > 16384:
        return f"ROWS x BLOCK_N = {rows * int(config['BLOCK_N'])} elements per program: too many registers"
    return None


# ---------------------------------------------------------------------------------------------
# The switch of one hard input class (the others are in ``kernels/_strategies.py``, which reads
# it here at call time, as the op specs do: tests set it on this module).

# Size-0 dims (rows, cols or a batch of 0; each op's reference accepts them). Off until the
# harness accepts an empty case: today its worker dies mapping an empty shared-input file
# (verdict "crash"), and verify.py demands a kernel launch that wrote the output, which a
# correct kernel does not make for an empty one ("no-kernel"). tests/test_hard_inputs.py
# holds a strict xfail that starts failing once the harness is fixed: then turn this on.
EMPTY_CASES = False
