# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 elementary torch ops (exp, amax, sum, div) in a named grid function that also computes a plausible grid
import torch
import triton
import triton.language as tl


@triton.jit
def _scale_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    y = tl.load(y_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, y, mask=offs < n)


class _Grid:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __call__(self, meta):
        e = torch.exp(self.x.float() - self.x.float().amax(dim=-1, keepdim=True))
        self.y.copy_(e / e.sum(dim=-1, keepdim=True))
        return (triton.cdiv(self.y.numel(), meta["BLOCK"]), 1, 1)


def softmax(x, *, config=None):
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _scale_kernel[_Grid(x, y)](y, y.numel(), BLOCK=512)
    return y
