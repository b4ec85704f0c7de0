# target: softmax
# expect: no-kernel
# examples: 3
# static: off
# taxonomy: S1 host compute that dodges the dispatcher and the host-read hooks (TensorBase.numpy, frombuffer): only the output-storage check catches it
import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _noop_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(y_ptr + offs, mask=offs < n), mask=offs < n)


def softmax(x, *, config=None):
    scratch = torch.empty(16, dtype=x.dtype, device=x.device)
    _noop_kernel[(1,)](scratch, 0, BLOCK=16)      # a launch, on a decoy buffer
    a = torch._C.TensorBase.numpy(x.detach().float())   # the unwrapped method: no hook sees it
    e = np.exp(a - a.max(-1, keepdims=True))
    e = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    y32 = torch.frombuffer(bytearray(e.tobytes()), dtype=torch.float32)   # no aten op either
    return y32.to(x.dtype).reshape(x.shape)
