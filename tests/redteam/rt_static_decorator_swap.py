# target: softmax
# expect: forbidden
# examples: 2
# static: on
# taxonomy: 3 a decorator replaces the entry point
import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, n_cols, sxr, sxc, syr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(tl.float32)
    x = x - tl.max(x, axis=0)
    num = tl.where(mask, tl.exp(x), 0.0)
    tl.store(y_ptr + row * syr + offs, (num / tl.sum(num, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)


def _launch(x):
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    _softmax_kernel[(x2.shape[0],)](x2, y, x2.shape[1], x2.stride(0), x2.stride(1), y.stride(0),
                                    BLOCK=triton.next_power_of_2(x2.shape[1]))
    return y.reshape(x.shape)

def _swap(fn):
    return lambda x, config=None: x.softmax(-1)


@_swap
def softmax(x, *, config=None):
    return _launch(x)
