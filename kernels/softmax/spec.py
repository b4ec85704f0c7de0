"""OpSpec for softmax over the last dim (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from ..spec import (Call, Case, OpSpec, Param, Tolerance, TuningSpace, common_strategy, generator,
                     last_dim_key, row_tile_default, size_strategy, tensor)


def reference(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def strategy(max_numel: int):
    from hypothesis import strategies as st

    @st.composite
    def cases(draw):
        cols = draw(size_strategy(1, max(1, min(max_numel, 16384))))
        rows = draw(size_strategy(1, max(1, min(64, max_numel // cols))))
        batch = draw(st.sampled_from([0, 0, 2]))
        common = draw(common_strategy(scales=(1.0, 1.0, 30.0, 1000.0)))
        return Case(params={"batch": batch, "rows": rows, "cols": cols}, **common)

    return cases()


def build(case: Case) -> Call:
    p = case.params
    shape = ((p["batch"],) if p.get("batch") else ()) + (p["rows"], p["cols"])
    x = tensor(shape, case.dtype, case.dist, case.scale, generator(case.seed), case.layout)
    return Call(args=(x,))


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
                Param("num_warps", [1, 2, 4, 8, 16, 32])],
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=[{"batch": 0, "rows": 4096, "cols": 4096}, {"batch": 0, "rows": 8192, "cols": 8192},
                 {"batch": 0, "rows": 1024, "cols": 131072}],
)
