# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 scalar host compute: float() of every element, math.exp, torch.tensor(list), next to a do-nothing launch
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
    out = []
    for r in range(rows.shape[0]):
        vals = [float(rows[r, c]) for c in range(rows.shape[1])]
        m = max(vals)
        e = [math.exp(v - m) for v in vals]
        s = sum(e)
        out.append([v / s for v in e])
    y = torch.tensor(out, dtype=x.dtype, device=x.device).reshape(x.shape)
    _noop_kernel[(1,)](y, 0, BLOCK=16)
    return y
