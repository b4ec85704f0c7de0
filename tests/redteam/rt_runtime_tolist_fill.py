# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 host compute via .tolist() (dispatches no aten op) written back element by element with fill_ (an allowed op)
import math

import torch
import triton
import triton.language as tl


@triton.jit
def _noop_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(y_ptr + offs, mask=offs < n), mask=offs < n)


def softmax(x, *, config=None):
    rows = x.reshape(-1, x.shape[-1])
    y = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
    for r, vals in enumerate(rows.tolist()):
        m = max(vals)
        e = [math.exp(v - m) for v in vals]
        s = sum(e)
        for c, v in enumerate(e):
            y[r, c].fill_(v / s)
    _noop_kernel[(1,)](y, 0, BLOCK=16)
    return y.reshape(x.shape)
