# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 host compute on a .numpy() view (no aten op but detach), written back with fill_
import torch
import triton
import triton.language as tl


@triton.jit
def _noop_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(y_ptr + offs, mask=offs < n), mask=offs < n)


def softmax(x, *, config=None):
    rows = x.reshape(-1, x.shape[-1])
    a = rows.float().numpy()
    e = (a - a.max(-1, keepdims=True))
    e = 2.718281828459045 ** e
    e = e / e.sum(-1, keepdims=True)
    y = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
    for r in range(e.shape[0]):
        for c in range(e.shape[1]):
            y[r, c].fill_(float(e[r, c]))
    _noop_kernel[(1,)](y, 0, BLOCK=16)
    return y.reshape(x.shape)
