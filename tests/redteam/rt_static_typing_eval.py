# target: softmax
# expect: forbidden
# examples: 2
# static: on
# taxonomy: 3 typing.get_type_hints evaluates a string annotation
import torch
import triton
import triton.language as tl
import typing


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

def _evil(x: "x.softmax(-1)"):
    return x


def softmax(x, *, config=None):
    y = _launch(x)
    return typing.get_type_hints(_evil, localns={"x": x})["x"]
