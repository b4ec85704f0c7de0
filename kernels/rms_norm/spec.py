"""OpSpec for rms_norm over the last dim (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from ..spec import (Call, Case, OpSpec, Param, Tolerance, TuningSpace, common_strategy, generator,
                     last_dim_key, row_params_strategy, row_shape, row_shape_classes, row_tile_constraint,
                     row_tile_default, tensor)

BENCH_CASES = [{"batch": 0, "rows": 4096, "cols": 4096}, {"batch": 0, "rows": 8192, "cols": 8192},
               {"batch": 4, "rows": 2048, "cols": 5120}]
# Rows far from zero (offset + N(0, 1)): x**2 of a 16-bit value overflows fp16 (65504) long
# before the fp32 sum does, so a kernel squaring in the input dtype fails here.
OFFSETS = {"fp32": 1e4, "bf16": 1e4, "fp16": 1e3}


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    # Computed in at least fp32 and rounded once at the end, so "as good as PyTorch" means as
    # good as a careful fp32 implementation. (HF's Llama rounds the normalized x to the input
    # dtype before the weight multiply; one rounding is the more accurate choice, and the kernel's.)
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.to(acc)
    return y.to(x.dtype)


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return row_shape_classes(max_numel, bench_cases=BENCH_CASES)


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    shapes = row_params_strategy(max_numel, bench_cases=BENCH_CASES, pin=pin)
    commons = common_strategy(pin=pin)

    @st.composite
    def cases(draw):
        shape_class, params = draw(shapes)
        params = dict(params)
        common = draw(commons)
        if draw(st.sampled_from([False, False, False, False, True])):
            params["offset"] = OFFSETS[common["dtype"]]
        return Case(params=params, shape_class=shape_class, **common)

    return cases()


def build(case: Case) -> Call:
    p = case.params
    gen = generator(case.seed)
    x = tensor(row_shape(p), case.dtype, case.dist, case.scale, gen, case.layout, offset=p.get("offset", 0.0))
    # Trained RMSNorm gains sit around 1 with some spread; signs are kept to catch a dropped w.
    weight = tensor((p["cols"],), case.dtype, "normal", 1.0, gen)
    return Call(args=(x, weight))


def _numel(call: Call) -> int:
    return call.args[0].numel()


shape_key = last_dim_key


default_config = row_tile_default


_constraint = row_tile_constraint


OPSPEC = OpSpec(
    name="rms_norm",
    doc="rms_norm(x, weight, eps=1e-6) over the last dim; x of shape (..., cols), weight (cols,)",
    reference=reference,
    strategy=strategy,
    build=build,
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=lambda call: call.args[0].shape[-1]),
    # square, accumulate, scale by rstd, scale by weight
    flops=lambda call: 4.0 * _numel(call),
    bytes=lambda call: (2.0 * _numel(call) * call.args[0].element_size()
                        + call.args[1].numel() * call.args[1].element_size()),
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
