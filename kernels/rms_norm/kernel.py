"""rms_norm(x, weight) over the last dim: y_ij = x_ij / sqrt(mean_j(x_ij**2) + eps) * w_j.

A row that fits in one tile (BLOCK_N >= cols) is loaded once and kept in registers, ROWS rows
per program (narrow rows share a program so its lanes are busy); a longer row has a program of
its own and takes one pass for the sum of squares (per-lane partial sums, merged
once at the end) and a second pass that normalizes and writes. Accumulation is in fp32
whatever the input dtype; the output has the input's dtype.

Self-contained on purpose: the harness verifies this file exactly as it verifies an LLM's
candidate, so it imports only torch and triton.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_fwd_kernel(x_ptr, w_ptr, y_ptr, n_rows, n_cols, eps,
                         stride_xr, stride_xc, stride_w, stride_yr,
                         BLOCK_N: tl.constexpr, SINGLE_TILE: tl.constexpr, ROWS: tl.constexpr):
    offs = tl.arange(0, BLOCK_N).to(tl.int64)
    if SINGLE_TILE:
        # ROWS rows per program, each in one tile: narrow rows fill the lanes. Rows past the end
        # are not loaded or stored.
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & (offs[None, :] < n_cols)
        x = tl.load(x_ptr + rows[:, None] * stride_xr + offs[None, :] * stride_xc, mask=mask,
                    other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        w = tl.load(w_ptr + offs * stride_w, mask=offs < n_cols, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows[:, None] * stride_yr + offs[None, :],
                 (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        row = tl.program_id(0).to(tl.int64)
        x_row = x_ptr + row * stride_xr
        y_row = y_ptr + row * stride_yr
        acc = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + offs
            mask = cols < n_cols
            x = tl.load(x_row + cols * stride_xc, mask=mask, other=0.0).to(tl.float32)
            acc += x * x
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + offs
            mask = cols < n_cols
            x = tl.load(x_row + cols * stride_xc, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_row + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def default_config(n_cols: int) -> dict:
    """One tile per row up to 8192 lanes; rows narrower than 2048 lanes share a program
    (ROWS of them, up to 16) so each program still has ~2048 elements in flight."""
    block = min(triton.next_power_of_2(max(n_cols, 1)), 8192)
    return {"BLOCK_N": block, "num_warps": 4 if block <= 2048 else 8 if block <= 4096 else 16,
            "ROWS": max(1, min(16, 2048 // block))}


def _pow2_param(cfg: dict, name: str) -> int:
    value = int(cfg[name])
    if value < 1 or value & (value - 1):
        raise ValueError(f"rms_norm: config {name} must be a power of two; got {cfg[name]!r}")
    return value


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *,
             config: dict | None = None) -> torch.Tensor:
    """RMS-normalize ``x`` over its last dim and scale by ``weight`` (shape ``(cols,)``)."""
    if x.dim() == 0:
        raise ValueError("rms_norm needs at least one dim; got a 0-d tensor")
    n_cols = x.shape[-1]
    if weight.dim() != 1 or weight.shape[0] != n_cols:
        raise ValueError(f"rms_norm: weight must have shape ({n_cols},) to match x's last dim; "
                         f"got {tuple(weight.shape)}")
    if not x.is_floating_point() or not weight.is_floating_point():
        raise ValueError(f"rms_norm: expected floating tensors; got x {x.dtype}, weight {weight.dtype}")
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
    single = block >= n_cols
    rows = _pow2_param(cfg, "ROWS") if single and "ROWS" in cfg else 1  # a multi-tile row has its program alone
    _rms_norm_fwd_kernel[(triton.cdiv(n_rows, rows),)](
        x2, weight, y, n_rows, n_cols, float(eps),
        x2.stride(0), x2.stride(1), weight.stride(0), y.stride(0),
        BLOCK_N=block, SINGLE_TILE=single, ROWS=rows, num_warps=_pow2_param(cfg, "num_warps"),
    )
    return y.reshape(x.shape)
