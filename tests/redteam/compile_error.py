# target: softmax
# expect: compile-error
# examples: 3
# static: on
# taxonomy: Triton compile error
import torch
import triton
import triton.language as tl


@triton.jit
def _bad_kernel(x_ptr, y_ptr, n_cols, BLOCK: tl.constexpr):
    offs = tl.arange(0, 3)  # not a power of two: rejected by Triton
    tl.store(y_ptr + offs, tl.load(x_ptr + offs))


def softmax(x, *, config=None):
    y = torch.empty_like(x)
    _bad_kernel[(1,)](x, y, x.shape[-1], BLOCK=16)
    return y
