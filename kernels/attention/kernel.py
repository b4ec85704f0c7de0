"""attention(q, k, v, causal, scale): softmax(scale * q k^T [+ causal mask]) v, flash style.

Same semantics as ``torch.nn.functional.scaled_dot_product_attention``: q (B, H, Lq, D),
k and v (B, H, Lk, D); scale defaults to 1/sqrt(D); ``causal`` keeps key j for query i when
j <= i (top-left aligned, SDPA's ``is_causal``).

One program per (BLOCK_M queries, batch*head). It streams K/V in BLOCK_N blocks and keeps an
online softmax in fp32: a running row max m, a running denominator l and an unnormalised
output acc, rescaled by exp2(m_old - m_new) when the max grows. log2(e) is folded into the
scale so the exponentials are exp2, whose argument qk * scale - m is one fused multiply-add.
The (Lq x Lk) score matrix is never materialised.

The key range is split in two loops so the common case carries no masks: key blocks that lie
entirely inside every row's window (below the causal diagonal and before the ragged end of
the keys) run unmasked; the few blocks on the diagonal or at the tail run with masks. The
first block always contains key 0, which every query sees, so m is finite after it and no
row ever computes exp2(-inf - (-inf)).

fp32 inputs (SCORES_FP64) form q . k from exact products summed in fp64 rather than with a
fp32 dot, never TF32: a sequential fp32 sum over head_dim has 2-3x the logit error of
PyTorch's blocked BLAS and exp() hands it straight to the weights. The P @ V product stays a
fp32 dot with ``input_precision="ieee"``. This costs speed only for fp32; fp16/bf16 use
tensor-core dots with fp32 accumulation.

Self-contained on purpose: the harness verifies this file exactly as it verifies an LLM's
candidate, so it imports only torch, triton and math.
"""

import math

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

# D_CHUNK (optional, fp32 only): head dims per step of the fp64 score tile; see attention().
CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages", "D_CHUNK", "USE_TMA")
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LOG2E = 1.4426950408889634


@triton.jit
def _attention_scores_fp64(q_rows, q_ok, k_rows, k_ok, stride_qd, stride_kd,
                           HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, D_CHUNK: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """q . k for one (BLOCK_M, BLOCK_N) tile of fp32 inputs: exact products, fp64 sums.

    A sequential fp32 dot over head_dim (Triton's FMA dot, the interpreter's loop) carries
    2-3x the logit error of PyTorch's blocked BLAS, and exp() passes that error straight into
    the weights; in fp64 the logits are exact to well below fp32's last bit.
    """
    s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float64)
    # A runtime loop, not static_range: unrolled, the chunks' loads all hoist and spill.
    for c in range(0, HEAD_DIM, D_CHUNK):
        dims = c + tl.arange(0, D_CHUNK)
        d_ok = dims[None, :] < HEAD_DIM
        qc = tl.load(q_rows + dims[None, :] * stride_qd, mask=q_ok & d_ok, other=0.0).to(tl.float64)
        kc = tl.load(k_rows + dims[None, :] * stride_kd, mask=k_ok & d_ok, other=0.0).to(tl.float64)
        s += tl.sum(qc[:, None, :] * kc[None, :, :], 2)
    return s


@triton.jit
def _attention_fwd_blocks(acc, l_i, m_i, q, q_rows, q_ok, k_rows, v_rows, k_desc, v_desc, b, hk,
                          offs_m, offs_n, offs_d,
                          start, end, seq_k, qk_scale, stride_qd, stride_kn, stride_kd,
                          stride_vn, stride_vd,
                          HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr,
                          CAUSAL: tl.constexpr, SCORES_FP64: tl.constexpr, D_CHUNK: tl.constexpr,
                          DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fold key blocks [start, end) into (acc, l_i, m_i); k_rows/v_rows point at key start.

    USE_TMA: K and V tiles come through the descriptors (block [1, 1, BLOCK_N, BLOCK_D] at
    [b, hk, key, 0]); the copy engine zero-fills keys past seq_k and dims past HEAD_DIM, and the
    masked blocks' -inf scores below drop those keys."""
    d_ok = offs_d[None, :] < HEAD_DIM
    for start_n in range(start, end, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        keys = start_n + offs_n
        key_ok = keys[:, None] < seq_k
        if MASKED:
            kv_mask = key_ok & d_ok
        else:
            kv_mask = d_ok

        if SCORES_FP64:
            qk = _attention_scores_fp64(q_rows, q_ok, k_rows, key_ok, stride_qd, stride_kd,
                                        HEAD_DIM, BLOCK_D, D_CHUNK, BLOCK_M, BLOCK_N)
        elif USE_TMA:
            k = tl.load_tensor_descriptor(k_desc, [b, hk, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        else:
            k_ptrs = k_rows + offs_d[None, :] * stride_kd
            if MASKED or BLOCK_D != HEAD_DIM:
                k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
            else:
                k = tl.load(k_ptrs)
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        # The launcher guarantees qk_scale > 0, so max(qk * c) = max(qk) * c (one multiply
        # per row, not per score) and a masked score of -inf gives exp2(-inf) = 0 below.
        if MASKED:
            keep = keys[None, :] < seq_k
            if CAUSAL:
                keep = keep & (keys[None, :] <= offs_m[:, None])
            qk = tl.where(keep, qk, -float("inf"))
        m_new = tl.maximum(m_i, (tl.max(qk, 1) * qk_scale).to(tl.float32))
        alpha = tl.math.exp2(m_i - m_new)
        if SCORES_FP64:
            p = tl.math.exp2((qk * qk_scale - m_new[:, None]).to(tl.float32))
        else:
            # One rounding for qk * scale - m: rounding the product first costs |s| * eps in
            # the exponent, tens of fp32 ulps in the weights when logits are large.
            p = tl.math.exp2(tl.math.fma(qk, qk_scale, -m_new[:, None]))
        l_i = l_i * alpha + tl.sum(p, 1)

        v_ptrs = v_rows + offs_d[None, :] * stride_vd
        if USE_TMA:
            v = tl.load_tensor_descriptor(v_desc, [b, hk, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
        elif MASKED or BLOCK_D != HEAD_DIM:
            v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
        else:
            v = tl.load(v_ptrs)
        pv = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
        k_rows += BLOCK_N * stride_kn
        v_rows += BLOCK_N * stride_vn
    return acc, l_i, m_i


@triton.jit
def _attention_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, q_desc, k_desc, v_desc, o_desc,
                          qk_scale, qk_scale_lo, seq_q, seq_k, heads, kv_group,
                          stride_qb, stride_qh, stride_qm, stride_qd,
                          stride_kb, stride_kh, stride_kn, stride_kd,
                          stride_vb, stride_vh, stride_vn, stride_vd,
                          stride_ob, stride_oh, stride_om, stride_od,
                          stride_lb, stride_lh, stride_lm,
                          HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
                          SCORES_FP64: tl.constexpr, D_CHUNK: tl.constexpr,
                          DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr, STORE_LSE: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0)
    if CAUSAL:
        # Late query blocks see the most keys; launching them first shortens the tail.
        start_m = tl.num_programs(0) - 1 - start_m
    bh = tl.program_id(1)
    # GQA: kv_group consecutive query heads share one key/value head (1 for plain MHA).
    # Descriptor coordinates are int32 (b32, h32, hk32); pointer offsets int64.
    b32 = bh // heads
    h32 = bh % heads
    hk32 = h32 // kv_group
    b = b32.to(tl.int64)
    h = h32.to(tl.int64)
    hk = hk32.to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    q_rows = q_ptr + b * stride_qb + h * stride_qh + offs_m.to(tl.int64)[:, None] * stride_qm
    q_ok = offs_m[:, None] < seq_q
    q_mask = q_ok & (offs_d[None, :] < HEAD_DIM)
    if SCORES_FP64:
        # q is re-read chunk by chunk inside the score tile; scale = hi + lo rebuilt in fp64
        # because a Python float reaches the kernel as fp32.
        q = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        qk_scale = tl.cast(qk_scale, tl.float64) + tl.cast(qk_scale_lo, tl.float64)
    elif USE_TMA:
        # One bulk copy of the query tile; rows past seq_q and dims past HEAD_DIM read as 0.
        q = tl.load_tensor_descriptor(q_desc, [b32, h32, start_m * BLOCK_M, 0]).reshape(BLOCK_M, BLOCK_D)
    else:
        q = tl.load(q_rows + offs_d[None, :] * stride_qd, mask=q_mask, other=0.0)

    m_i = tl.full([BLOCK_M], -float("inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # Keys [0, full_end) need no mask: before the ragged key tail and, when causal, strictly
    # left of this block's first query. Keys [full_end, end) are masked.
    full_end = (seq_k // BLOCK_N) * BLOCK_N
    end = seq_k
    if CAUSAL:
        full_end = min(full_end, (start_m * BLOCK_M // BLOCK_N) * BLOCK_N)
        end = min(seq_k, (start_m + 1) * BLOCK_M)

    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh
    keys = offs_n.to(tl.int64)[:, None]
    acc, l_i, m_i = _attention_fwd_blocks(
        acc, l_i, m_i, q, q_rows, q_ok, k_base + keys * stride_kn, v_base + keys * stride_vn,
        k_desc, v_desc, b32, hk32, offs_m, offs_n, offs_d, 0, full_end, seq_k, qk_scale,
        stride_qd, stride_kn, stride_kd, stride_vn, stride_vd,
        HEAD_DIM, BLOCK_D, False, CAUSAL, SCORES_FP64, D_CHUNK, DOT_PRECISION, USE_TMA,
        BLOCK_M, BLOCK_N)
    keys = keys + full_end
    acc, l_i, m_i = _attention_fwd_blocks(
        acc, l_i, m_i, q, q_rows, q_ok, k_base + keys * stride_kn, v_base + keys * stride_vn,
        k_desc, v_desc, b32, hk32, offs_m, offs_n, offs_d, full_end, end, seq_k, qk_scale,
        stride_qd, stride_kn, stride_kd, stride_vn, stride_vd,
        HEAD_DIM, BLOCK_D, True, CAUSAL, SCORES_FP64, D_CHUNK, DOT_PRECISION, USE_TMA,
        BLOCK_M, BLOCK_N)

    out = acc / l_i[:, None]
    if STORE_LSE:
        # Natural-log log-sum-exp of the scaled scores per query (m_i and l_i are in base 2),
        # what a backward pass recomputes the weights from.
        lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
        tl.store(lse_ptr + b * stride_lb + h * stride_lh + offs_m.to(tl.int64) * stride_lm, lse,
                 mask=offs_m < seq_q)
    if USE_TMA:
        # The copy engine clips the store at seq_q and HEAD_DIM.
        tl.store_tensor_descriptor(o_desc, [b32, h32, start_m * BLOCK_M, 0],
                                   out.to(o_ptr.dtype.element_ty).reshape(1, 1, BLOCK_M, BLOCK_D))
    else:
        o_ptrs = (o_ptr + b * stride_ob + h * stride_oh + offs_m.to(tl.int64)[:, None] * stride_om
                  + offs_d[None, :] * stride_od)
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=q_mask)


def default_config(seq_q: int, seq_k: int, head_dim: int, causal: bool = False,
                   element_size: int = 2) -> dict:
    """Heuristic launch parameters; tuned configs replace these per SKU.

    16-bit inputs: 128 queries x 64 keys, 8 warps (two warpgroups of 64 rows), 3 stages; for
    head_dim <= 128 that compiles for sm_90 without spills in 128 KiB of shared memory, so it
    also fits an A100. fp32 inputs build fp64 score tiles and get 32 x 32 blocks. Short
    sequences shrink the blocks so seq 1 does not pay for 128 rows. The same on every runtime:
    Triton's interpreter (the CPU verify lane) runs the blocks a GPU would. 16-bit inputs read
    q, k, v and write o through TMA descriptors where their layout allows (``tma_plan``).
    """
    if element_size >= 4:
        block_m, block_n, num_warps, num_stages = 32, 32, 8, 2
    elif head_dim > 128:
        block_m, block_n, num_warps, num_stages = 64, 32, 4, 2
    else:
        block_m, block_n, num_warps, num_stages = 128, 64, 8, 3
    short_m = min(block_m, max(16, triton.next_power_of_2(max(seq_q, 1))))
    if short_m < block_m:
        block_m, num_warps = short_m, min(num_warps, 4)
    block_n = min(block_n, max(16, triton.next_power_of_2(max(seq_k, 1))))
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": num_warps, "num_stages": num_stages,
            "USE_TMA": 1 if element_size <= 2 else 0}


def _split_fp32(x: float) -> tuple[float, float]:
    """x = hi + lo with hi exactly representable in fp32 (lo carries the next 24 bits)."""
    if x == 0.0 or not math.isfinite(x):
        return x, 0.0
    mantissa, exponent = math.frexp(x)
    hi = math.ldexp(round(mantissa * 2**24), exponent - 24)
    return hi, x - hi


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale) -> None:
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        raise ValueError("attention expects torch tensors q, k, v")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects (batch, heads, seq, head_dim) tensors; got "
                         f"q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"expected q (B, H, Lq, D) and k, v (B, Hkv, Lk, D) with equal B and D "
                         f"(no broadcasting); got q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise ValueError(f"grouped-query attention needs the {q.shape[1]} query heads to be a multiple of "
                         f"the {k.shape[1]} key/value heads")
    if q.dtype not in _SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"attention needs q, k, v of one dtype among fp16/bf16/fp32; "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")
    if not 1 <= q.shape[-1] <= 256:
        raise ValueError(f"head_dim must be in 1..256; got {q.shape[-1]}")
    if k.shape[2] == 0 and q.shape[2] > 0:
        raise ValueError("attention over zero keys is undefined (softmax of an empty row)")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        # PyTorch's SDPA takes sqrt(scale) of q and k, so it returns NaN for scale <= 0.
        raise ValueError(f"scale must be a positive finite number or None; got {scale!r}")


def _aligned(t: torch.Tensor, elements: int) -> bool:
    return (elements * t.element_size()) % 16 == 0


def _tma_ok(t: torch.Tensor) -> bool:
    """Whether the copy engine can read or write ``t`` (B, H, L, D) as a rank-4 descriptor: a
    16-byte aligned start (checked through ``storage_offset``: PyTorch's allocators align
    storages to at least 64 bytes), a unit innermost stride, positive 16-byte aligned other
    strides, and rows of at least 16 bytes."""
    return (t.stride(-1) == 1 and t.shape[-1] * t.element_size() >= 16 and _aligned(t, t.storage_offset())
            and all(s > 0 and _aligned(t, s) for s in t.stride()[:-1]))


def _descriptor(t: torch.Tensor, block_rows: int, block_d: int):
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, block_rows, block_d])


def tma_plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, use_tma: bool = True) -> bool:
    """Whether this launch feeds q, k, v and o through descriptors (all four, or none)."""
    return (use_tma and q.dtype in (torch.float16, torch.bfloat16)
            and all(_tma_ok(t) for t in (q, k, v, o)))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None, *, config: dict | None = None) -> torch.Tensor:
    """SDPA forward (no dropout, no attn_mask) for fp16/bf16/fp32 q, k, v of any strides.

    k and v may have fewer heads than q (grouped-query attention, SDPA's ``enable_gqa``): query
    head h reads key/value head h // (Hq / Hkv)."""
    return _attention(q, k, v, causal, scale, config, want_lse=False)[0]


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                       scale: float | None = None, *, config: dict | None = None):
    """``attention`` and the fp32 log-sum-exp of each query's scaled scores, shape (B, H, Lq):
    ``logsumexp(scale * q k^T [masked], -1)``, what a backward pass needs."""
    return _attention(q, k, v, causal, scale, config, want_lse=True)


def _attention(q, k, v, causal, scale, config, want_lse: bool):
    _check_inputs(q, k, v, scale)
    batch, heads, seq_q, head_dim = q.shape
    heads_kv, seq_k = k.shape[1], k.shape[2]
    o = torch.empty((batch, heads, seq_q, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, seq_q), dtype=torch.float32, device=q.device) if want_lse else None
    if o.numel() == 0:
        return o, lse

    cfg = default_config(seq_q, seq_k, head_dim, bool(causal), q.element_size())
    unknown = set(config or {}) - set(CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown attention config keys {sorted(unknown)}; expected {list(CONFIG_KEYS)}")
    cfg.update(config or {})
    for name in ("BLOCK_M", "BLOCK_N"):
        val = int(cfg[name])
        if val < 16 or val & (val - 1):
            raise ValueError(f"{name} must be a power of two >= 16 (tl.dot's minimum); got {val}")
    block_m, block_n = int(cfg["BLOCK_M"]), int(cfg["BLOCK_N"])
    if block_n * max(abs(k.stride(2)), abs(v.stride(2))) >= 2**31:
        raise ValueError("a key stride times BLOCK_N exceeds 2**31; make k and v contiguous")

    sm_scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if not 2.0**-120 < sm_scale * _LOG2E < 2.0**120:
        raise ValueError(f"scale={sm_scale!r} is outside the fp32 range the kernel scores in")
    scale_hi, scale_lo = _split_fp32(sm_scale * _LOG2E)
    block_d = max(16, triton.next_power_of_2(head_dim))
    # fp32's fp64 score tile adds BLOCK_M x BLOCK_N x D_CHUNK products per step. 8 head dims
    # per step (a 32 x 32 x 8 fp64 temporary, 64 registers a thread at 8 warps) on every
    # runtime: 1 (rank-1 updates) avoids 3-D temporaries on a GPU but costs the interpreter a
    # numpy call per dimension (5x the CPU verify time). Not yet measured on a GPU; tunable.
    d_chunk = int(cfg["D_CHUNK"]) if "D_CHUNK" in cfg else min(block_d, 8)
    if d_chunk < 1 or d_chunk & (d_chunk - 1):
        raise ValueError(f"D_CHUNK must be a power of two >= 1; got {d_chunk}")
    if batch * heads > 65535:
        raise ValueError(f"batch * heads = {batch * heads} exceeds the 65535 programs of a grid's y axis")
    grid = (triton.cdiv(seq_q, block_m), batch * heads)
    use_tma = tma_plan(q, k, v, o, bool(int(cfg.get("USE_TMA", 1))))
    descs = ((_descriptor(q, block_m, block_d), _descriptor(k, block_n, block_d),
              _descriptor(v, block_n, block_d), _descriptor(o, block_m, block_d)) if use_tma
             else (None, None, None, None))
    lse_strides = lse.stride() if lse is not None else (0, 0, 0)
    _attention_fwd_kernel[grid](
        q, k, v, o, lse if lse is not None else o, *descs, scale_hi, scale_lo, seq_q, seq_k, heads,
        heads // heads_kv,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *lse_strides,
        HEAD_DIM=head_dim, BLOCK_D=block_d, CAUSAL=bool(causal),
        SCORES_FP64=q.dtype == torch.float32, D_CHUNK=d_chunk,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", USE_TMA=use_tma,
        STORE_LSE=lse is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=int(cfg["num_warps"]), num_stages=int(cfg["num_stages"]),
    )
    return o, lse
