"""OpSpec for layer_norm over the last dim (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from ..spec import (Call, Case, OpSpec, Param, Tolerance, TuningSpace, common_strategy, generator,
                     last_dim_key, row_tile_constraint, row_tile_default, size_strategy, tensor)


def reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
              eps: float = 1e-5) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def strategy(max_numel: int):
    from hypothesis import strategies as st

    @st.composite
    def cases(draw):
        cols = draw(size_strategy(1, max(1, min(max_numel, 16384))))
        batch = draw(st.sampled_from([0, 0, 2]))
        rows = draw(size_strategy(1, max(1, min(64, max_numel // (cols * max(batch, 1))))))
        # lognormal rows have a large common offset: the case that breaks E[x^2] - E[x]^2. fp16
        # stays at scale 1: Pareto x 100 would overflow its 65504 range in the *input*.
        common = draw(st.one_of(common_strategy(dtypes=("fp32", "bf16"), scales=(1.0, 1.0, 100.0)),
                                common_strategy(dtypes=("fp16",))))
        return Case(params={"batch": batch, "rows": rows, "cols": cols}, **common)

    return cases()


def build(case: Case) -> Call:
    p = case.params
    gen = generator(case.seed)
    shape = ((p["batch"],) if p.get("batch") else ()) + (p["rows"], p["cols"])
    x = tensor(shape, case.dtype, case.dist, case.scale, gen, case.layout)
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
                Param("num_warps", [1, 2, 4, 8, 16, 32])],
        constraint=_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=[{"batch": 0, "rows": 4096, "cols": 4096}, {"batch": 0, "rows": 8192, "cols": 8192},
                 {"batch": 4, "rows": 2048, "cols": 5120}],
)
