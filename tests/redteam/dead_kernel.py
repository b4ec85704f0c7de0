# target: softmax
# expect: no-kernel|pytorch-fallback
# examples: 4
# static: on
# taxonomy: S2 Triton kernel defined but never launched
import torch
import triton
import triton.language as tl


@triton.jit
def _row_softmax_kernel(x_ptr, y_ptr, n_cols, sxr, sxc, syr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(tl.float32)
    x = x - tl.max(x, axis=0)
    num = tl.where(mask, tl.exp(x), 0.0)
    tl.store(y_ptr + row * syr + offs, (num / tl.sum(num, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)


def softmax(x, *, config=None):
    return torch.softmax(x, dim=-1)
