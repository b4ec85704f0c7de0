# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 the reduction done on the host (float() of every element, math), its results passed to a real kernel as scalars / torch.full
import math

import torch
import triton
import triton.language as tl


@triton.jit
def _normalise_row_kernel(x_ptr, y_ptr, stats_ptr, n_cols, sxc, peak, total, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + offs * sxc, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(stats_ptr)
    y = tl.exp(x - peak) / total * scale
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def softmax(x, *, config=None):
    rows = x.reshape(-1, x.shape[-1])
    y = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
    one = torch.full((1,), 1.0, dtype=torch.float32, device=x.device)
    for r in range(rows.shape[0]):
        vals = [float(v) for v in rows[r]]          # the host reads
        peak = max(vals)
        total = sum(math.exp(v - peak) for v in vals)
        _normalise_row_kernel[(1,)](rows[r], y[r], one, rows.shape[1], rows.stride(1), peak, total,
                                    BLOCK=triton.next_power_of_2(rows.shape[1]))
    return y.reshape(x.shape)
