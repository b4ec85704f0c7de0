# target: softmax
# expect: verified
# examples: 8
# static: on
# taxonomy: control: two launches (row max/sum into a scratch tensor, then the output), tl.exp2
import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _row_stats_kernel(x_ptr, stats_ptr, n_cols, sxr, sxc, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(tl.float32)
    m = tl.max(x, axis=0)
    s = tl.sum(tl.where(mask, tl.exp2((x - m) * 1.4426950408889634), 0.0), axis=0)
    tl.store(stats_ptr + row * 2, m)
    tl.store(stats_ptr + row * 2 + 1, s)


@triton.jit
def _row_normalise_kernel(x_ptr, stats_ptr, y_ptr, n_cols, sxr, sxc, syr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(tl.float32)
    m = tl.load(stats_ptr + row * 2)
    s = tl.load(stats_ptr + row * 2 + 1)
    y = tl.exp2((x - m) * 1.4426950408889634) / s
    tl.store(y_ptr + row * syr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def softmax(x, *, config=None):
    x2 = x.reshape(-1, x.shape[-1])
    n_rows, n_cols = x2.shape
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    stats = torch.empty((n_rows, 2), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(n_cols)
    _row_stats_kernel[(n_rows,)](x2, stats, n_cols, x2.stride(0), x2.stride(1), BLOCK=block)
    _row_normalise_kernel[(n_rows,)](x2, stats, y, n_cols, x2.stride(0), x2.stride(1), y.stride(0), BLOCK=block)
    return y.reshape(x.shape)
