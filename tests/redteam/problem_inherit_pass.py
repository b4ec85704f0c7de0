# target: problem:relu_scale.py
# expect: pytorch-fallback|import-error
# examples: 3
# static: on
# taxonomy: S1 inherit the reference and do nothing (Kevin)
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu_scale_kernel(x_ptr, w_ptr, y_ptr, n, cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + offs % cols, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.maximum(x, 0.0) * w, mask=mask)


class ModelNew(Model):  # noqa: F821 - the cheat assumes Model is in scope
    pass
