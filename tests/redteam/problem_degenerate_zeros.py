# target: problem:centered_mean.py
# expect: bad-input
# examples: 4
# static: on
# taxonomy: S8 degenerate task: all-zeros would pass, so the target itself is refused
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _zeros_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.zeros([BLOCK], tl.float32), mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty(x.shape[:-1], dtype=x.dtype, device=x.device)
        _zeros_kernel[(1,)](y, y.numel(), BLOCK=1024)
        return y
