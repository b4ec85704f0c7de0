import torch
import torch.nn as nn
import triton
import triton.language as tl

TUNING_SPACE = {"BLOCK": [256, 512, 1024]}
CONFIG = {"BLOCK": 1024}


@triton.jit
def _relu_scale_kernel(x_ptr, w_ptr, y_ptr, n, cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + offs % cols, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.maximum(x, 0.0) * w, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features))
        self.block = CONFIG["BLOCK"]

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        _relu_scale_kernel[(triton.cdiv(x.numel(), self.block),)](x, self.weight, y, x.numel(), x.shape[-1],
                                                                 BLOCK=self.block)
        return y
