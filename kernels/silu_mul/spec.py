"""OpSpec for silu_mul, the SwiGLU activation (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from ..spec import (DISTRIBUTIONS, Call, Case, OpSpec, Param, Tolerance, TuningSpace, common_strategy, generator,
                    row_params_strategy, row_shape, row_shape_classes, tensor)

# Llama-3 8B and 70B MLP widths at a 4k/8k-token batch.
BENCH_CASES = [{"batch": 0, "rows": 4096, "cols": 14336}, {"batch": 0, "rows": 8192, "cols": 28672},
               {"batch": 0, "rows": 16384, "cols": 11008}]


def reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(gate) * up


# Tiles stack rows, so the plain branch goes to 256 rows; "many rows" goes past grid caps.
_ROWS = {"max_rows": 256, "bench_cases": BENCH_CASES}


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return row_shape_classes(max_numel, **_ROWS)


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    # fp16 tops out at 65504: the product of two Pareto tails overflows it in a few percent of
    # draws, so fp16 cases take the lighter-tailed distributions.
    light = tuple(d for d in DISTRIBUTIONS if d != "pareto")
    commons = st.one_of(common_strategy(dtypes=("fp32", "bf16"), pin=pin),
                        common_strategy(dtypes=("fp16",), dists=light, pin=pin))
    shapes = row_params_strategy(max_numel, pin=pin, **_ROWS)

    @st.composite
    def cases(draw):
        shape_class, params = draw(shapes)
        return Case(params=params, shape_class=shape_class, **draw(commons))

    return cases()


def build(case: Case) -> Call:
    gen = generator(case.seed)
    shape = row_shape(case.params)
    gate = tensor(shape, case.dtype, case.dist, case.scale, gen, case.layout)
    up = tensor(shape, case.dtype, case.dist, case.scale, gen, case.layout)
    return Call(args=(gate, up))


def _numel(call: Call) -> int:
    return call.args[0].numel()


def shape_key(call: Call) -> dict:
    return {"cols": int(call.args[0].shape[-1]) if call.args[0].dim() else 1}


def default_config(key) -> dict:
    cols = int(key["cols"])
    block_n = min(1 << max(0, (max(cols, 1) - 1).bit_length()), 2048)
    return {"BLOCK_M": max(1, 2048 // block_n), "BLOCK_N": block_n, "num_warps": 4}


def _constraint(config, params) -> str | None:
    tile = int(config["BLOCK_M"]) * int(config["BLOCK_N"])
    if tile > 16384:
        return f"BLOCK_M*BLOCK_N = {tile} > 16384 elements: the tile no longer fits in registers"
    if tile < 128:
        return f"BLOCK_M*BLOCK_N = {tile} < 128 elements: fewer than one element per thread of a warp group"
    return None


OPSPEC = OpSpec(
    name="silu_mul",
    doc="silu_mul(gate, up) = silu(gate) * up elementwise (SwiGLU); gate and up of the same shape",
    reference=reference,
    strategy=strategy,
    build=build,
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=None),
    # negate, exp, add, divide, multiply
    flops=lambda call: 5.0 * _numel(call),
    bytes=lambda call: 3.0 * _numel(call) * call.args[0].element_size(),
    tuning_space=TuningSpace(
        params=[Param("BLOCK_M", [1, 2, 4, 8, 16, 32, 64]),
                Param("BLOCK_N", [32, 64, 128, 256, 512, 1024, 2048, 4096]),
                Param("num_warps", [1, 2, 4, 8, 16])],
        constraint=_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=BENCH_CASES,
    shape_classes=shape_classes,
)
