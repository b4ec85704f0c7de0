"""OpSpec for rope, rotary position embedding (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from ..spec import (DISTRIBUTIONS, DTYPES, Call, Case, OpSpec, Param, Tolerance, TuningSpace, bench_strategy,
                    common_strategy, generator, lay_out, pick_class, size_strategy, tensor)
from .. import spec as _spec

BENCH_CASES = [{"batch": 1, "heads": 32, "seq": 4096, "head_dim": 128},
               {"batch": 4, "heads": 32, "seq": 2048, "head_dim": 128},
               {"batch": 1, "heads": 64, "seq": 8192, "head_dim": 128}]


def reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _x_numel(p) -> int:
    return p["batch"] * p["heads"] * p["seq"] * p["head_dim"]


def _shape_weights(max_numel: int) -> dict[str, int]:
    weights = {"plain": 8}
    if _spec.EMPTY_CASES:
        weights["empty"] = 1
    if bench_strategy(BENCH_CASES, _x_numel, max_numel) is not None:
        weights["bench"] = 1
    return weights


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return tuple(_shape_weights(max_numel))


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    bench = bench_strategy(BENCH_CASES, _x_numel, max_numel)
    # A rotation can lift a component to |x| * sqrt(2): fp16 Pareto tails near 65504 would
    # overflow the output where the float64 reference is finite, so fp16 draws lighter tails.
    light = tuple(d for d in DISTRIBUTIONS if d != "pareto")
    commons = st.one_of(common_strategy(dtypes=("fp32", "bf16"), pin=pin),
                        common_strategy(dtypes=("fp16",), dists=light, pin=pin))
    kinds = pick_class(_shape_weights(max_numel), pin)

    @st.composite
    def cases(draw):
        common = draw(commons)
        kind = draw(kinds)
        if kind == "bench":
            return Case(params=dict(draw(bench)), shape_class=kind, **common)
        half = draw(st.one_of(st.sampled_from([32, 64]), size_strategy(1, 128)))
        head_dim = 2 * half
        batch = draw(st.sampled_from([1, 1, 2]))
        heads = draw(size_strategy(1, max(1, min(8, max_numel // (batch * head_dim)))))
        seq = draw(size_strategy(1, max(1, min(1024, max_numel // (batch * heads * head_dim)))))
        if kind == "empty":
            # No positions, or no heads: an empty output (cos/sin of shape (0, half) for seq 0).
            seq, heads = draw(st.sampled_from([(0, heads), (seq, 0)]))
        return Case(params={"batch": batch, "heads": heads, "seq": seq, "head_dim": head_dim},
                    shape_class=kind, **common)

    return cases()


def _laid_out(v: torch.Tensor, dtype: str, layout: str) -> torch.Tensor:
    """The float64 matrix ``v`` in ``dtype`` stored with ``layout`` (as ``spec.tensor`` lays out)."""
    v = v.to(DTYPES[dtype])
    if layout == "strided":
        wide = torch.zeros(v.shape[:-1] + (2 * v.shape[-1],), dtype=v.dtype)
        wide[..., ::2] = v
        return wide[..., ::2]
    if layout == "transposed":
        return v.mT.contiguous().mT
    if layout in ("sliced", "row_step"):
        return lay_out(v, layout)
    return v


def build(case: Case) -> Call:
    p = case.params
    gen = generator(case.seed)
    x = tensor((p["batch"], p["heads"], p["seq"], p["head_dim"]), case.dtype, case.dist, case.scale, gen,
               case.layout)
    # Real tables: angle = position * 10000^(-2i/head_dim), positions starting at a random offset
    # (a decode step deep into a KV cache has large angles).
    start = int(torch.randint(0, 8192, (1,), generator=gen, device="cpu"))  # a Python int even on meta
    half = p["head_dim"] // 2
    inv_freq = 10000.0 ** (-torch.arange(half, dtype=torch.float64) * 2 / p["head_dim"])
    angles = (start + torch.arange(p["seq"], dtype=torch.float64))[:, None] * inv_freq[None, :]
    cos = _laid_out(torch.cos(angles), case.dtype, case.layout)
    sin = _laid_out(torch.sin(angles), case.dtype, case.layout)
    return Call(args=(x, cos, sin))


def _numel(call: Call) -> int:
    return call.args[0].numel()


def shape_key(call: Call) -> dict:
    return {"head_dim": int(call.args[0].shape[-1])}


def default_config(key) -> dict:
    half = max(int(key["head_dim"]) // 2, 1)
    block_d = 1 << (half - 1).bit_length()
    return {"BLOCK_S": max(1, min(64, 2048 // block_d)), "num_warps": 4}


def _constraint(config, params) -> str | None:
    head_dim = params.get("head_dim")
    if head_dim is not None:
        half = max(int(head_dim) // 2, 1)
        tile = int(config["BLOCK_S"]) * (1 << (half - 1).bit_length())
        if tile > 16384:
            return f"BLOCK_S * BLOCK_D = {tile} > 16384 elements per half: the tiles no longer fit in registers"
    return None


def _bytes(call: Call) -> float:
    x, cos, sin = call.args
    return 2.0 * x.numel() * x.element_size() + cos.numel() * cos.element_size() + sin.numel() * sin.element_size()


OPSPEC = OpSpec(
    name="rope",
    doc="rope(x, cos, sin): rotate-half rotary embedding; x (batch, heads, seq, head_dim), cos/sin (seq, head_dim//2)",
    reference=reference,
    strategy=strategy,
    build=build,
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=None),
    # two multiplies and one add per output element
    flops=lambda call: 3.0 * _numel(call),
    bytes=_bytes,
    tuning_space=TuningSpace(
        params=[Param("BLOCK_S", [1, 2, 4, 8, 16, 32, 64, 128]),
                Param("num_warps", [1, 2, 4, 8, 16])],
        constraint=_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=BENCH_CASES,
    shape_classes=shape_classes,
)
