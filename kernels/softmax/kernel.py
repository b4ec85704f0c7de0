"""softmax(x) over the last dim: y_ij = exp(x_ij - max_j x_ij) / sum_j exp(x_ij - max_j x_ij).

A row that fits in one tile (BLOCK_N >= cols) is loaded once, ROWS rows per program (narrow
rows share a program so its lanes are busy); a longer row has a program of its own and takes
an online pass (running max and rescaled sum per lane) and a second pass that writes. Accumulation is in fp32 whatever the input dtype; the output has the input's dtype.

Self-contained on purpose: the harness verifies this file exactly as it verifies an LLM's
candidate, so it imports only torch and triton.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_fwd_kernel(x_ptr, y_ptr, n_rows, n_cols, stride_xr, stride_xc, stride_yr,
                        BLOCK_N: tl.constexpr, SINGLE_TILE: tl.constexpr, ROWS: tl.constexpr):
    if SINGLE_TILE:
        # ROWS rows per program, each in one tile: narrow rows fill the lanes. Rows past the end
        # re-read the last row (no -inf-only rows, so no NaN) and are not stored.
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n_rows
        src = tl.minimum(rows, n_rows - 1)
        offs = tl.arange(0, BLOCK_N)
        col_ok = offs < n_cols
        x = tl.load(x_ptr + src[:, None] * stride_xr + offs[None, :] * stride_xc, mask=col_ok[None, :],
                    other=-float("inf")).to(tl.float32)
        x = x - tl.max(x, axis=1)[:, None]
        num = tl.where(col_ok[None, :], tl.exp(x), 0.0)
        y = num / tl.sum(num, axis=1)[:, None]
        tl.store(y_ptr + rows[:, None] * stride_yr + offs[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])
    else:
        row = tl.program_id(0).to(tl.int64)
        x_row = x_ptr + row * stride_xr
        y_row = y_ptr + row * stride_yr
        offs = tl.arange(0, BLOCK_N)
        # Per-lane running max and sum; lanes are merged once at the end.
        m_lane = tl.full([BLOCK_N], -float("inf"), tl.float32)
        l_lane = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + offs
            mask = cols < n_cols
            x = tl.load(x_row + cols * stride_xc, mask=mask, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m_lane, x)
            alive = m_new > -float("inf")
            alpha = tl.where(alive, tl.exp(m_lane - m_new), 0.0)
            p = tl.where(mask & alive, tl.exp(x - m_new), 0.0)
            l_lane = l_lane * alpha + p
            m_lane = m_new
        m = tl.max(m_lane, axis=0)
        l_total = tl.sum(tl.where(m_lane > -float("inf"), l_lane * tl.exp(m_lane - m), 0.0), axis=0)
        inv = 1.0 / l_total
        for start in range(0, n_cols, BLOCK_N):
            cols = start + offs
            mask = cols < n_cols
            x = tl.load(x_row + cols * stride_xc, mask=mask, other=-float("inf")).to(tl.float32)
            y = tl.exp(x - m) * inv
            tl.store(y_row + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def default_config(n_cols: int) -> dict:
    """One tile per row up to 8192 lanes; rows narrower than 2048 lanes share a program
    (ROWS of them, up to 16) so each program still has ~2048 elements in flight."""
    block = min(triton.next_power_of_2(max(n_cols, 1)), 8192)
    return {"BLOCK_N": block, "num_warps": 4 if block <= 2048 else 8 if block <= 4096 else 16,
            "ROWS": max(1, min(16, 2048 // block))}


def softmax(x: torch.Tensor, *, config: dict | None = None) -> torch.Tensor:
    """Softmax over the last dim of ``x`` (fp32, fp16 or bf16; any strides)."""
    if x.dim() == 0:
        raise ValueError("softmax needs at least one dim; got a 0-d tensor")
    n_cols = x.shape[-1]
    if x.numel() == 0:
        # Nothing to compute (and reshape(-1, 0) of an empty (..., 0) input is ambiguous).
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    x2 = x.reshape(-1, n_cols) if x.dim() != 2 else x
    n_rows = x2.shape[0]
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    if n_rows == 0 or n_cols == 0:
        return y.reshape(x.shape)
    cfg = dict(default_config(n_cols), **(config or {}))
    block = int(cfg["BLOCK_N"])
    single = block >= n_cols
    rows = int(cfg.get("ROWS", 1)) if single else 1   # a row of several tiles has its program alone
    if rows < 1 or rows & (rows - 1):
        raise ValueError(f"softmax: config ROWS must be a power of two >= 1; got {cfg['ROWS']!r}")
    _softmax_fwd_kernel[(triton.cdiv(n_rows, rows),)](
        x2, y, n_rows, n_cols, x2.stride(0), x2.stride(1), y.stride(0),
        BLOCK_N=block, SINGLE_TILE=single, ROWS=rows, num_warps=int(cfg["num_warps"]),
    )
    return y.reshape(x.shape)
