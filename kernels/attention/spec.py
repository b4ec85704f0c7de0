"""OpSpec for flash-attention forward with SDPA semantics (see kernel.py for the math and kernel)."""

from __future__ import annotations

import math

import torch

from .. import spec as _spec
from ..spec import (DTYPE_NAMES, DTYPES, Call, Case, OpSpec, Param, Tolerance, TuningSpace, bench_strategy,
                    common_strategy, generator, pick_class, size_strategy, tensor)


def _kernel_default_config(*args, **kwargs) -> dict:
    # Imported on first use, not with the spec: kernel.py is imported once, and by then
    # dispatch has set TRITON_INTERPRET where KERNELAGENT_INTERPRET asks for it.
    from .kernel import default_config

    return default_config(*args, **kwargs)


HEAD_DIMS = (16, 32, 64, 64, 80, 128, 128)
# Shared memory per SM on the largest current parts (H100/H200: 227 KiB usable); the per-SKU
# limit is checked later by compiling, this only prunes hopeless points early.
_SMEM_BYTES = 227 * 1024


BENCH_CASES = [
    {"batch": 4, "heads": 32, "seq": 4096, "seq_kv": 4096, "head_dim": 128, "causal": False, "scale": None},
    {"batch": 4, "heads": 32, "seq": 4096, "seq_kv": 4096, "head_dim": 128, "causal": True, "scale": None},
    {"batch": 4, "heads": 32, "seq": 4096, "seq_kv": 4096, "head_dim": 64, "causal": False, "scale": None},
    {"batch": 1, "heads": 16, "seq": 16384, "seq_kv": 16384, "head_dim": 128, "causal": True, "scale": None},
]


# Key/value heads as a class axis: as many as the query heads (MHA), or fewer (GQA).
KV_HEAD_CLASSES = {"mha": 2, "gqa": 1}


def kv_head_class(case: Case, call: Call) -> dict[str, str]:
    q, k = call.args[0], call.args[1]
    return {"kv_heads": "gqa" if k.shape[1] != q.shape[1] else "mha"}


def _largest_input(p) -> int:
    return p["batch"] * p["heads"] * max(p["seq"], p["seq_kv"]) * p["head_dim"]


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    # enable_gqa only where the heads differ: SDPA's fused CPU/GPU paths for plain MHA stay the
    # ones PyTorch users get.
    gqa = q.dim() == 4 and k.dim() == 4 and q.shape[1] != k.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
                                                            **({"enable_gqa": True} if gqa else {}))


def _shape_weights(max_numel: int) -> dict[str, int]:
    weights = {"plain": 8}
    if _spec.EMPTY_CASES:
        weights["empty"] = 1
    if bench_strategy(BENCH_CASES, _largest_input, max_numel) is not None:
        weights["bench"] = 1
    return weights


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return tuple(_shape_weights(max_numel))


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    bench = bench_strategy(BENCH_CASES, _largest_input, max_numel)
    commons = common_strategy(scales=(1.0, 1.0, 3.0), pin=pin)
    kinds = pick_class(_shape_weights(max_numel), pin)
    kv_kinds = pick_class(KV_HEAD_CLASSES, pin, axis="kv_heads")

    @st.composite
    def cases(draw):
        common = draw(commons)
        kind = draw(kinds)
        # Grouped-query attention (fewer key/value heads than query heads) is a class of its own,
        # so that every verify draws it; a bench case's GQA form has Llama 3's 4 query heads per
        # key/value head.
        kv_kind = draw(kv_kinds)
        if kind == "bench":
            params = dict(draw(bench))
            params["heads_kv"] = params["heads"] // 4 if kv_kind == "gqa" else params["heads"]
            return Case(params={**params, "kv_heads": kv_kind}, shape_class=kind, **common)
        head_dim = draw(st.sampled_from(HEAD_DIMS))
        batch = draw(st.sampled_from([1, 1, 2]))
        if kv_kind == "gqa":
            heads = draw(st.sampled_from([2, 3, 4]))
            heads_kv = draw(st.sampled_from([h for h in (1, 2) if heads % h == 0 and h < heads]))
        else:
            heads = heads_kv = draw(st.sampled_from([1, 2, 3]))
        # q, k and v each stay under max_numel elements, and q k^T under 64 * max_numel
        # multiply-adds: the CPU interpreter's tl.dot runs at ~50 MFLOP/s.
        rows = batch * heads * head_dim
        seq_hi = max(1, min(1021, max_numel // rows, math.isqrt(64 * max_numel // rows)))
        seq = draw(size_strategy(1, seq_hi))
        seq_kv = draw(st.one_of(st.just(seq), st.just(seq), size_strategy(1, seq_hi)))
        if kind == "empty":
            seq = 0  # no queries: an empty output (zero keys with queries is undefined)
        return Case(params={"batch": batch, "heads": heads, "heads_kv": heads_kv, "kv_heads": kv_kind,
                            "seq": seq, "seq_kv": seq_kv,
                            "head_dim": head_dim, "causal": draw(st.booleans()),
                            "scale": draw(st.sampled_from([None, None, 0.125, 0.5]))}, shape_class=kind, **common)

    return cases()


def build(case: Case) -> Call:
    p = case.params
    gen = generator(case.seed)
    b, h, d = p["batch"], p["heads"], p["head_dim"]
    seq_kv = p.get("seq_kv", p["seq"])
    hkv = p.get("heads_kv", h)
    q = tensor((b, h, p["seq"], d), case.dtype, case.dist, case.scale, gen, case.layout)
    k = tensor((b, hkv, seq_kv, d), case.dtype, case.dist, case.scale, gen, case.layout)
    v = tensor((b, hkv, seq_kv, d), case.dtype, case.dist, case.scale, gen, case.layout)
    return Call(args=(q, k, v), kwargs={"causal": bool(p.get("causal", False)), "scale": p.get("scale")})


def _flops(call: Call) -> float:
    q, k = call.args[0], call.args[1]
    b, h, seq_q, d = q.shape
    full = 4.0 * b * h * seq_q * k.shape[2] * d   # GQA: every query head still attends
    return full / 2 if call.kwargs.get("causal") else full


def _bytes(call: Call) -> float:
    q, k, v = call.args[:3]
    return float((2 * q.numel() + k.numel() + v.numel()) * q.element_size())


def shape_key(call: Call) -> dict:
    # dtype is part of the key because fp32 takes a different path (fp64 score tiles) with
    # its own block sizes, and the library passes default_config(key) verbatim.
    q = call.args[0]
    return {"seq": int(q.shape[2]), "head_dim": int(q.shape[3]),
            "causal": bool(call.kwargs.get("causal", False)), "dtype": DTYPE_NAMES[q.dtype]}


def default_config(key) -> dict:
    seq = int(key["seq"])
    element_size = DTYPES[key.get("dtype", "bf16")].itemsize
    return _kernel_default_config(seq, seq, int(key["head_dim"]), bool(key.get("causal", False)),
                                  element_size)


def _constraint(cfg, params) -> str | None:
    bm, bn, warps = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["num_warps"]
    d = max(16, 1 << (int(params.get("head_dim", 128)) - 1).bit_length())
    # fp32 accumulator (BM x D) plus the score tile (BM x BN) live in registers.
    regs = bm * (d + bn) // (32 * warps)
    if regs > 256:
        return f"BLOCK_M={bm}, BLOCK_N={bn}, head_dim={d} need ~{regs} fp32 registers per thread (> 256)"
    smem = (bm * d + 2 * bn * d * cfg["num_stages"]) * 2
    if smem > _SMEM_BYTES:
        return f"q tile plus {cfg['num_stages']} stages of K/V tiles need {smem} B of shared memory"
    return None


OPSPEC = OpSpec(
    name="attention",
    doc="scaled_dot_product_attention(q, k, v, is_causal, scale) forward; q, k, v (B, H, L, D)",
    reference=reference,
    strategy=strategy,
    build=build,
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=lambda call: call.args[1].shape[2]),
    flops=_flops,
    bytes=_bytes,
    tuning_space=TuningSpace(
        params=[Param("BLOCK_M", [16, 32, 64, 128, 256]),
                Param("BLOCK_N", [16, 32, 64, 128, 256]),
                Param("num_warps", [2, 4, 8]),
                Param("num_stages", [1, 2, 3, 4, 5]),
                Param("USE_TMA", [1, 0])],
        constraint=_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=BENCH_CASES,
    shape_classes=shape_classes,
    param_classes={"kv_heads": tuple(KV_HEAD_CLASSES)},
    param_class_of=kv_head_class,
)
