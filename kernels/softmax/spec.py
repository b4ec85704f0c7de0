"""OpSpec for softmax over the last dim (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from ..spec import (NEG_INF_CLASSES, Call, Case, OpSpec, Param, Tolerance, TuningSpace, common_strategy,
                     generator, last_dim_key, mask_neg_inf, neg_inf_class, pick_class, row_params_strategy,
                     row_shape, row_shape_classes, row_tile_default, rows_constraint, tensor)


BENCH_CASES = [{"batch": 0, "rows": 4096, "cols": 4096}, {"batch": 0, "rows": 8192, "cols": 8192},
               {"batch": 0, "rows": 1024, "cols": 131072}]


def reference(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return row_shape_classes(max_numel, bench_cases=BENCH_CASES)


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    shapes = row_params_strategy(max_numel, bench_cases=BENCH_CASES, pin=pin)
    commons = common_strategy(scales=(1.0, 1.0, 30.0, 1000.0), pin=pin)
    masks = pick_class(NEG_INF_CLASSES, pin, axis="neg_inf")

    @st.composite
    def cases(draw):
        shape_class, params = draw(shapes)
        params = dict(params)
        # Masked logits: some entries of a row -inf, or all but one (the finite one anywhere in
        # the row, so a multi-tile kernel meets whole tiles of -inf first). Never a whole row:
        # its softmax is NaN and the harness would skip the case.
        neg_inf = draw(masks)
        if neg_inf != "none":
            params["neg_inf"] = neg_inf
        common = draw(commons)
        return Case(params=params, shape_class=shape_class, **common)

    return cases()


def build(case: Case) -> Call:
    gen = generator(case.seed)
    x = tensor(row_shape(case.params), case.dtype, case.dist, case.scale, gen, case.layout)
    return Call(args=(mask_neg_inf(x, case.params.get("neg_inf"), gen),))


def _numel(call: Call) -> int:
    return call.args[0].numel()


shape_key = last_dim_key


default_config = row_tile_default


OPSPEC = OpSpec(
    name="softmax",
    doc="softmax(x) over the last dim; x of shape (..., cols)",
    reference=reference,
    strategy=strategy,
    build=build,
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=lambda call: call.args[0].shape[-1]),
    flops=lambda call: 5.0 * _numel(call),
    bytes=lambda call: 2.0 * _numel(call) * call.args[0].element_size(),
    tuning_space=TuningSpace(
        params=[Param("BLOCK_N", [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]),
                Param("num_warps", [1, 2, 4, 8, 16, 32]),
                Param("ROWS", [1, 2, 4, 8, 16])],
        constraint=rows_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=BENCH_CASES,
    shape_classes=shape_classes,
    param_classes={"neg_inf": tuple(NEG_INF_CLASSES)},
    param_class_of=neg_inf_class,
)
