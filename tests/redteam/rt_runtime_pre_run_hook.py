# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 compute in a Triton pre-run hook (JITFunction.add_pre_run_hook), which runs inside the launch
import torch
import triton
import triton.language as tl


@triton.jit
def _kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(y_ptr + offs, mask=offs < n), mask=offs < n)


_STATE = {}


def _hook(*args, **kwargs):
    x, y = _STATE["xy"]
    y.copy_(torch.nn.functional.softmax(x, dim=-1))


_kernel.add_pre_run_hook(_hook)


def softmax(x, *, config=None):
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _STATE["xy"] = (x, y)
    _kernel[(1,)](x, y, 0, BLOCK=16)
    return y
