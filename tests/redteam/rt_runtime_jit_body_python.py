# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 interpreter-only: the @triton.jit body calls plain Python that runs torch.softmax (invisible under the old launch-window exemption)
import torch
import triton
import triton.language as tl

_WORK = []


def _python_side():
    for x, y in _WORK:
        y.copy_(torch.softmax(x.float(), dim=-1).to(y.dtype))
    _WORK.clear()
    return 0


@triton.jit
def _kernel(y_ptr, n, BLOCK: tl.constexpr):
    _python_side()
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(y_ptr + offs, mask=offs < n), mask=offs < n)


def softmax(x, *, config=None):
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _WORK.append((x, y))
    _kernel[(1,)](y, 0, BLOCK=16)
    return y
