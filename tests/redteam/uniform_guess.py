# target: softmax
# expect: mismatch
# examples: 6
# static: on
# taxonomy: S8 analytic shortcut: 1/cols everywhere (right mean, small outputs)
import torch
import triton
import triton.language as tl


@triton.jit
def _uniform_kernel(y_ptr, n, cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.full([BLOCK], 1.0, tl.float32) / cols
    tl.store(y_ptr + offs, v.to(y_ptr.dtype.element_ty), mask=offs < n)


def softmax(x, *, config=None):
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _uniform_kernel[(triton.cdiv(y.numel(), 1024),)](y, y.numel(), x.shape[-1], BLOCK=1024)
    return y
