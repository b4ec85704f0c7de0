"""rope(x, cos, sin): rotary position embedding, the rotate-half form.

x is (batch, heads, seq, head_dim); cos and sin are (seq, head_dim // 2). With x1, x2 the
first and second halves of the last dim::

    out = cat(x1 * cos - x2 * sin, x2 * cos + x1 * sin, dim=-1)

Each program rotates BLOCK_S positions of one (batch, head). Programs are numbered so that all
heads of one sequence block run next to each other and share the cos/sin tile through L2.
Everything is addressed through explicit strides (strided and transposed x, cos, sin need no
copy). Computed in fp32; the output dtype is the promotion of x, cos and sin, like PyTorch's.

Self-contained on purpose: the harness verifies this file exactly as it verifies an LLM's
candidate, so it imports only torch and triton.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_fwd_kernel(x_ptr, cos_ptr, sin_ptr, y_ptr, n_heads, n_bh, seq_len, half,
                     stride_xb, stride_xh, stride_xs, stride_xd,
                     stride_cs, stride_cd, stride_ss, stride_sd,
                     stride_yb, stride_yh, stride_ys,
                     BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    bh = pid % n_bh
    b = bh // n_heads
    h = bh % n_heads
    pos = (pid // n_bh) * BLOCK_S + tl.arange(0, BLOCK_S).to(tl.int64)
    d = tl.arange(0, BLOCK_D).to(tl.int64)
    mask = (pos < seq_len)[:, None] & (d < half)[None, :]
    c = tl.load(cos_ptr + pos[:, None] * stride_cs + d[None, :] * stride_cd, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + pos[:, None] * stride_ss + d[None, :] * stride_sd, mask=mask, other=0.0).to(tl.float32)
    x_tile = x_ptr + b * stride_xb + h * stride_xh + pos[:, None] * stride_xs + d[None, :] * stride_xd
    x1 = tl.load(x_tile, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_tile + half * stride_xd, mask=mask, other=0.0).to(tl.float32)
    y_tile = y_ptr + b * stride_yb + h * stride_yh + pos[:, None] * stride_ys + d[None, :]
    tl.store(y_tile, (x1 * c - x2 * s).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(y_tile + half, (x2 * c + x1 * s).to(y_ptr.dtype.element_ty), mask=mask)


def _result_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """PyTorch's type promotion for floating tensors with at least one dim, in plain Python.

    (``torch.promote_types`` would do, but it dispatches as an aten op and the harness counts
    every aten call outside a kernel launch as compute.)
    """
    unique = set(dtypes)
    if len(unique) == 1:
        return dtypes[0]
    if torch.float64 in unique:
        return torch.float64
    return torch.float32  # fp16 with bf16, or either with fp32


def default_config(head_dim: int) -> dict:
    block_d = triton.next_power_of_2(max(head_dim // 2, 1))
    return {"BLOCK_S": max(1, min(64, 2048 // block_d)), "num_warps": 4}


def _pow2_param(cfg: dict, name: str) -> int:
    value = int(cfg[name])
    if value < 1 or value & (value - 1):
        raise ValueError(f"rope: config {name} must be a power of two; got {cfg[name]!r}")
    return value


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, config: dict | None = None) -> torch.Tensor:
    """Rotate the halves of x's last dim by the angles whose cos/sin are given per position."""
    if x.dim() != 4:
        raise ValueError(f"rope: x must be (batch, heads, seq, head_dim); got shape {tuple(x.shape)}")
    n_batch, n_heads, seq_len, head_dim = x.shape
    if head_dim % 2:
        raise ValueError(f"rope: head_dim must be even to split into two halves; got {head_dim}")
    half = head_dim // 2
    for name, t in (("cos", cos), ("sin", sin)):
        if tuple(t.shape) != (seq_len, half):
            raise ValueError(f"rope: {name} must have shape (seq, head_dim // 2) = ({seq_len}, {half}); "
                             f"got {tuple(t.shape)}")
    if not (x.is_floating_point() and cos.is_floating_point() and sin.is_floating_point()):
        raise ValueError(f"rope: expected floating tensors; got x {x.dtype}, cos {cos.dtype}, sin {sin.dtype}")
    out_dtype = _result_dtype(x.dtype, cos.dtype, sin.dtype)
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if y.numel() == 0:
        return y
    cfg = dict(default_config(head_dim), **(config or {}))
    block_s = _pow2_param(cfg, "BLOCK_S")
    n_bh = n_batch * n_heads
    grid = (triton.cdiv(seq_len, block_s) * n_bh,)
    _rope_fwd_kernel[grid](
        x, cos, sin, y, n_heads, n_bh, seq_len, half,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        cos.stride(0), cos.stride(1), sin.stride(0), sin.stride(1),
        y.stride(0), y.stride(1), y.stride(2),
        BLOCK_S=block_s, BLOCK_D=triton.next_power_of_2(half), num_warps=_pow2_param(cfg, "num_warps"),
    )
    return y
