"""OpSpec for matmul with fused bias and activation (see kernel.py for the math and the kernel)."""

from __future__ import annotations

import torch

from .. import spec as _spec
from ..spec import (DTYPE_NAMES, DTYPES, LAYOUTS, Call, Case, OpSpec, Param, Tolerance, TuningSpace, bench_strategy,
                    common_strategy, generator, pick_class, size_strategy, tensor)


def _kernel_default_config(*args, **kwargs) -> dict:
    # Imported on first use, not with the spec: kernel.py is imported once, and by then
    # dispatch has set TRITON_INTERPRET where KERNELAGENT_INTERPRET asks for it.
    from .kernel import default_config

    return default_config(*args, **kwargs)


ACTIVATIONS = (None, "relu", "gelu", "silu")
# Shared memory per SM on the largest current parts (H100/H200: 227 KiB usable); the per-SKU
# limit is checked later by compiling, this only prunes hopeless points early.
_SMEM_BYTES = 227 * 1024


BENCH_CASES = [
    {"batch": 0, "M": 4096, "N": 4096, "K": 4096, "bias": False, "activation": None, "layout_b": "contiguous"},
    {"batch": 0, "M": 8192, "N": 8192, "K": 8192, "bias": False, "activation": None, "layout_b": "contiguous"},
    {"batch": 0, "M": 4096, "N": 4096, "K": 4096, "bias": True, "activation": "gelu", "layout_b": "contiguous"},
    {"batch": 8, "M": 2048, "N": 2048, "K": 2048, "bias": False, "activation": None, "layout_b": "contiguous"},
]


def _largest_operand(p) -> int:
    return max(p["batch"], 1) * max(p["M"] * p["K"], p["K"] * p["N"], p["M"] * p["N"])


def reference(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
              activation: str | None = None) -> torch.Tensor:
    out = a @ b
    if bias is not None:
        out = out + bias
    if activation == "relu":
        out = torch.relu(out)
    elif activation == "gelu":
        out = torch.nn.functional.gelu(out)
    elif activation == "silu":
        out = torch.nn.functional.silu(out)
    elif activation is not None:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
    return out


def _shape_weights(max_numel: int) -> dict[str, int]:
    weights = {"plain": 8}
    if _spec.EMPTY_CASES:
        weights["empty"] = 1
    if bench_strategy(BENCH_CASES, _largest_operand, max_numel) is not None:
        weights["bench"] = 1
    return weights


def shape_classes(max_numel: int) -> tuple[str, ...]:
    return tuple(_shape_weights(max_numel))


def strategy(max_numel: int, pin=None):
    from hypothesis import strategies as st

    bench = bench_strategy(BENCH_CASES, _largest_operand, max_numel)
    commons = common_strategy(scales=(1.0, 1.0, 0.01, 100.0), pin=pin)
    kinds = pick_class(_shape_weights(max_numel), pin)

    @st.composite
    def cases(draw):
        common = draw(commons)
        if common["dtype"] == "fp16":
            # Pareto tails and large scales overflow fp16's 65504 in the output; that tests
            # fp16's range, not the kernel (PyTorch overflows too).
            common["dist"] = "laplace" if common["dist"] == "pareto" else common["dist"]
            common["scale"] = min(common["scale"], 1.0)
        kind = draw(kinds)
        if kind == "bench":
            # Production size (the GPU lane): the work bound below is for the interpreter only.
            return Case(params=dict(draw(bench)), shape_class=kind, **common)
        # Each operand and the output stay under max_numel elements, and the work under
        # 64 * max_numel multiply-adds: the CPU interpreter's tl.dot runs at ~50 MFLOP/s.
        macs = 64 * max_numel
        k = draw(size_strategy(1, max(1, min(max_numel, 4097))))
        m = draw(size_strategy(1, max(1, min(1021, max_numel // k))))
        n = draw(size_strategy(1, max(1, min(1021, max_numel // k, max_numel // m, macs // (m * k)))))
        batch = draw(st.sampled_from([0, 0, 0, 2, 3]))
        if batch:
            n = max(1, min(n, max_numel // (batch * k)))
            m = max(1, min(m, max_numel // (batch * max(k, n)), macs // (batch * n * k)))
        if kind == "empty":
            # M, N or K of 0 (K = 0: an all-zero product, plus the bias), or a batch of 0.
            dim = draw(st.sampled_from(["M", "N", "K", "batch"]))
            m, n, k, batch = (0 if dim == "M" else m, 0 if dim == "N" else n, 0 if dim == "K" else k,
                              [0] if dim == "batch" else batch)
        return Case(params={"batch": batch, "M": m, "N": n, "K": k,
                            "bias": draw(st.booleans()),
                            "activation": draw(st.sampled_from(ACTIVATIONS)),
                            "layout_b": draw(st.sampled_from(LAYOUTS))}, shape_class=kind, **common)

    return cases()


def build(case: Case) -> Call:
    p = case.params
    gen = generator(case.seed)
    b = p.get("batch") or 0
    lead = tuple(b) if isinstance(b, (list, tuple)) else ((b,) if b else ())  # [0]: an empty batch
    a = tensor(lead + (p["M"], p["K"]), case.dtype, case.dist, case.scale, gen, case.layout)
    b = tensor(lead + (p["K"], p["N"]), case.dtype, case.dist, case.scale, gen,
               p.get("layout_b", case.layout))
    bias = tensor((p["N"],), case.dtype, case.dist, case.scale, gen) if p.get("bias") else None
    return Call(args=(a, b), kwargs={"bias": bias, "activation": p.get("activation")})


def _dims(call: Call) -> tuple[int, int, int, int]:
    a, b = call.args[0], call.args[1]
    batch = a.shape[0] if a.dim() == 3 else b.shape[0] if b.dim() == 3 else 1
    return batch, a.shape[-2], b.shape[-1], a.shape[-1]


def _flops(call: Call) -> float:
    batch, m, n, k = _dims(call)
    return 2.0 * batch * m * n * k


def _bytes(call: Call) -> float:
    a, b = call.args[0], call.args[1]
    batch, m, n, _ = _dims(call)
    bias = call.kwargs.get("bias")
    extra = bias.numel() if bias is not None else 0
    return float((a.numel() + b.numel() + batch * m * n + extra) * a.element_size())


def shape_key(call: Call) -> dict:
    # dtype is part of the key because it changes what fits: a 16-bit tile that fills shared
    # memory is twice too big in fp32, and the library passes default_config(key) verbatim.
    _, m, n, k = _dims(call)
    return {"M": int(m), "N": int(n), "K": int(k), "dtype": DTYPE_NAMES[call.args[0].dtype]}


def default_config(key) -> dict:
    element_size = DTYPES[key.get("dtype", "bf16")].itemsize
    return _kernel_default_config(int(key["M"]), int(key["N"]), int(key["K"]), element_size)


def _constraint(cfg, params) -> str | None:
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    threads = 32 * cfg["num_warps"]
    if bm * bn // threads > 256:
        return f"{bm}x{bn} fp32 accumulator needs {bm * bn // threads} registers per thread (> 256)"
    smem = (bm * bk + bk * bn) * 2 * cfg["num_stages"]
    if smem > _SMEM_BYTES:
        return (f"{cfg['num_stages']} stages of {bm}x{bk} + {bk}x{bn} 16-bit tiles need "
                f"{smem} B of shared memory")
    m, n = params.get("M"), params.get("N")
    if m is not None and bm > 2 * max(16, m):
        return f"BLOCK_M={bm} is more than twice M={m}"
    if n is not None and bn > 2 * max(16, n):
        return f"BLOCK_N={bn} is more than twice N={n}"
    return None


OPSPEC = OpSpec(
    name="matmul",
    doc="activation(a @ b + bias); a (M, K) or (B, M, K), b (K, N) or (B, K, N), bias (N,)",
    reference=reference,
    strategy=strategy,
    build=build,
    tolerance=Tolerance(ulps=8.0, torch_factor=4.0, reduction_length=lambda call: call.args[0].shape[-1]),
    flops=_flops,
    bytes=_bytes,
    tuning_space=TuningSpace(
        params=[Param("BLOCK_M", [16, 32, 64, 128, 256]),
                Param("BLOCK_N", [16, 32, 64, 128, 256]),
                Param("BLOCK_K", [16, 32, 64, 128]),
                Param("GROUP_M", [1, 4, 8, 16]),
                Param("num_warps", [2, 4, 8]),
                Param("num_stages", [2, 3, 4, 5])],
        constraint=_constraint,
    ),
    default_config=default_config,
    shape_key=shape_key,
    bench_cases=BENCH_CASES,
    shape_classes=shape_classes,
    # Hopper: TMA loads, a persistent grid and epilogue subtiling (variants/tma_persistent.py).
    arch_variants={"sm_90": "tma_persistent"},
)
