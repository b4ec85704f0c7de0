"""OpSpec for layer_norm over the last dim (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from ..spec import (Call, Case, OpSpec, Param, Tolerance, TuningSpace, common_strategy, generator,
                     last_dim_key, row_params_strategy, row_shape, row_shape_classes, row_tile_constraint,
                     row_tile_default, tensor)

BENCH_CASES = [{"batch": 0, "rows": 4096, "cols": 4096}, {"batch": 0, "rows": 8192, "cols": 8192},
               {"batch": 4, "rows": 2048, "cols": 5120}]
# Rows whose mean is far larger than their spread (offset + scale * dist): E[x^2] - E[x]^2
# cancels to noise in fp32 at 1e4 / 1. The 16-bit offsets keep the spread representable
# (fp16 steps by 0.5 at 1e3, bf16 by 0.5 at 1e2); at 1e4 both would round every row to one
# constant, which tests nothing.
OFFSETS = {"fp32": 1e4, "fp16": 1e3, "bf16": 1e2}


def reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
              eps: float = 1e-5) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return row_shape_classes(max_numel, bench_cases=BENCH_CASES)


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    shapes = row_params_strategy(max_numel, bench_cases=BENCH_CASES, pin=pin)
    # lognormal rows have a large common offset: the case that breaks E[x^2] - E[x]^2. fp16
    # stays at scale 1: Pareto x 100 would overflow its 65504 range in the *input*.
    commons = st.one_of(common_strategy(dtypes=("fp32", "bf16"), scales=(1.0, 1.0, 100.0), pin=pin),
                        common_strategy(dtypes=("fp16",), pin=pin))

    @st.composite
    def cases(draw):
        shape_class, params = draw(shapes)
        params = dict(params)
        common = draw(commons)
        if draw(st.sampled_from([False, False, False, True])):
            # A large common offset on top of the distribution, scale 1 so fp16 stays in range.
            params["offset"] = OFFSETS[common["dtype"]]
            common["scale"] = 1.0
        return Case(params=params, shape_class=shape_class, **common)

    return cases()


def build(case: Case) -> Call:
    p = case.params
    gen = generator(case.seed)
    x = tensor(row_shape(p), case.dtype, case.dist, case.scale, gen, case.layout, offset=p.get("offset", 0.0))
    weight = tensor((p["cols"],), case.dtype, "normal", 1.0, gen)
    bias = tensor((p["cols"],), case.dtype, "normal", 1.0, gen)
    return Call(args=(x, weight, bias))


def _numel(call: Call) -> int:
    return call.args[0].numel()


shape_key = last_dim_key


default_config = row_tile_default


_constraint = row_tile_constraint


def _bytes(call: Call) -> float:
    x = call.args[0]
    affine = sum(t.numel() * t.element_size() for t in call.args[1:3] if t is not None)
    return 2.0 * x.numel() * x.element_size() + affine


OPSPEC = OpSpec(
    name="layer_norm",
    doc="layer_norm(x, weight, bias, eps=1e-5) over the last dim; x (..., cols), weight/bias (cols,)",
    reference=reference,
    strategy=strategy,
    build=build,
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=lambda call: call.args[0].shape[-1]),
    # sum, centre, square, accumulate, scale by rstd, scale by weight, add bias
    flops=lambda call: 7.0 * _numel(call),
    bytes=_bytes,
    tuning_space=TuningSpace(
        params=[Param("BLOCK_N", [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]),
                Param("num_warps", [1, 2, 4, 8, 16, 32]),
                Param("ROWS", [1, 2, 4, 8, 16])],
        constraint=_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=BENCH_CASES,
    shape_classes=shape_classes,
)
