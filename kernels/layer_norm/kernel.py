"""layer_norm(x, weight, bias) over the last dim: y = (x - mean) / sqrt(var + eps) * w + b.

var is the biased (population) variance, as in ``torch.nn.functional.layer_norm``. Each row
takes the corrected two-pass scheme: a rough mean, then the mean and variance of the values
shifted by it, so a large common offset (mean >> std) costs no precision. A row that fits in
one tile (BLOCK_N >= cols) is loaded once and kept in registers, ROWS rows per program (narrow
rows share one); a longer row has a program of its own and is streamed three times (rough mean, shifted sums, normalize-and-write).
Accumulation is in fp32; the output has the input's dtype. ``weight``/``bias`` may be None.

Self-contained on purpose: the harness verifies this file exactly as it verifies an LLM's
candidate, so it imports only torch and triton.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _layer_norm_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, n_rows, n_cols, eps,
                           stride_xr, stride_xc, stride_w, stride_b, stride_yr,
                           HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                           BLOCK_N: tl.constexpr, SINGLE_TILE: tl.constexpr, ROWS: tl.constexpr):
    offs = tl.arange(0, BLOCK_N).to(tl.int64)
    if SINGLE_TILE:
        # ROWS rows per program, each in one tile: narrow rows fill the lanes. Rows past the end
        # are not loaded or stored.
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        col_ok = offs[None, :] < n_cols
        mask = (rows[:, None] < n_rows) & col_ok
        x = tl.load(x_ptr + rows[:, None] * stride_xr + offs[None, :] * stride_xc, mask=mask,
                    other=0.0).to(tl.float32)
        # Centre on the rough mean first (exact for x near it), then correct: the output is
        # formed from small differences and never from a large mean that lost its low bits.
        shift = tl.sum(x, axis=1) / n_cols
        xs = tl.where(col_ok, x - shift[:, None], 0.0)
        xc = tl.where(col_ok, xs - (tl.sum(xs, axis=1) / n_cols)[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / n_cols + eps)
        y = xc * rstd[:, None]
        if HAS_WEIGHT:
            y = y * tl.load(w_ptr + offs * stride_w, mask=offs < n_cols, other=0.0).to(tl.float32)[None, :]
        if HAS_BIAS:
            y = y + tl.load(b_ptr + offs * stride_b, mask=offs < n_cols, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rows[:, None] * stride_yr + offs[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        row = tl.program_id(0).to(tl.int64)
        x_row = x_ptr + row * stride_xr
        y_row = y_ptr + row * stride_yr
        # Same corrected two-pass scheme, streamed: rough mean, then the sums of the shifted
        # values (their mean is a small correction, so S2/n - (S1/n)^2 does not cancel).
        acc = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + offs
            x = tl.load(x_row + cols * stride_xc, mask=cols < n_cols, other=0.0).to(tl.float32)
            acc += x
        shift = tl.sum(acc, axis=0) / n_cols
        s1 = tl.zeros([BLOCK_N], tl.float32)
        s2 = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + offs
            mask = cols < n_cols
            x = tl.load(x_row + cols * stride_xc, mask=mask, other=0.0).to(tl.float32)
            xs = tl.where(mask, x - shift, 0.0)
            s1 += xs
            s2 += xs * xs
        mean_s = tl.sum(s1, axis=0) / n_cols
        var = tl.maximum(tl.sum(s2, axis=0) / n_cols - mean_s * mean_s, 0.0)
        rstd = 1.0 / tl.sqrt(var + eps)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + offs
            mask = cols < n_cols
            x = tl.load(x_row + cols * stride_xc, mask=mask, other=0.0).to(tl.float32)
            y = ((x - shift) - mean_s) * rstd
            if HAS_WEIGHT:
                y = y * tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
            if HAS_BIAS:
                y = y + tl.load(b_ptr + cols * stride_b, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_row + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def default_config(n_cols: int) -> dict:
    """One tile per row up to 8192 lanes; rows narrower than 2048 lanes share a program
    (ROWS of them, up to 16) so each program still has ~2048 elements in flight."""
    block = min(triton.next_power_of_2(max(n_cols, 1)), 8192)
    return {"BLOCK_N": block, "num_warps": 4 if block <= 2048 else 8 if block <= 4096 else 16,
            "ROWS": max(1, min(16, 2048 // block))}


def _check_affine(name: str, t, n_cols: int) -> None:
    if t is None:
        return
    if t.dim() != 1 or t.shape[0] != n_cols:
        raise ValueError(f"layer_norm: {name} must have shape ({n_cols},) to match x's last dim; "
                         f"got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"layer_norm: {name} must be floating point; got {t.dtype}")


def _pow2_param(cfg: dict, name: str) -> int:
    value = int(cfg[name])
    if value < 1 or value & (value - 1):
        raise ValueError(f"layer_norm: config {name} must be a power of two; got {cfg[name]!r}")
    return value


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float = 1e-5, *, config: dict | None = None) -> torch.Tensor:
    """Layer-normalize ``x`` over its last dim, then scale by ``weight`` and shift by ``bias``."""
    if x.dim() == 0:
        raise ValueError("layer_norm needs at least one dim; got a 0-d tensor")
    if not x.is_floating_point():
        raise ValueError(f"layer_norm: expected a floating x; got {x.dtype}")
    n_cols = x.shape[-1]
    _check_affine("weight", weight, n_cols)
    _check_affine("bias", bias, n_cols)
    if x.numel() == 0:
        # Nothing to compute (and reshape(-1, 0) of an empty (..., 0) input is ambiguous).
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    x2 = x.reshape(-1, n_cols) if x.dim() != 2 else x
    n_rows = x2.shape[0]
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    if n_rows == 0 or n_cols == 0:
        return y.reshape(x.shape)
    cfg = dict(default_config(n_cols), **(config or {}))
    block = _pow2_param(cfg, "BLOCK_N")
    # An absent weight/bias is compiled out (HAS_*); x stands in as a never-read pointer.
    w = weight if weight is not None else x2
    b = bias if bias is not None else x2
    single = block >= n_cols
    rows = _pow2_param(cfg, "ROWS") if single and "ROWS" in cfg else 1  # a multi-tile row has its program alone
    _layer_norm_fwd_kernel[(triton.cdiv(n_rows, rows),)](
        x2, w, b, y, n_rows, n_cols, float(eps),
        x2.stride(0), x2.stride(1),
        weight.stride(0) if weight is not None else 0, bias.stride(0) if bias is not None else 0,
        y.stride(0),
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        BLOCK_N=block, SINGLE_TILE=single, ROWS=rows, num_warps=_pow2_param(cfg, "num_warps"),
    )
    return y.reshape(x.shape)
