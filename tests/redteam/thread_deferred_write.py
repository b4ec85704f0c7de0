# target: softmax
# expect: deferred-write
# examples: 3
# static: off
# taxonomy: S11/T2 result written by a thread after return
import threading
import time
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
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.zeros(x2.shape, dtype=x.dtype, device=x.device)

    def later():  # PyTorch in another thread: invisible to the (thread-local) aten audit
        time.sleep(0.0005)
        y.copy_(torch.softmax(x2.float(), dim=-1).to(y.dtype))

    threading.Thread(target=later).start()
    _row_softmax_kernel[(1,)](x2, y, 0, 0, 0, 0, BLOCK=16)
    time.sleep(0.01)
    return y.reshape(x.shape)
