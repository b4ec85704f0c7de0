# target: softmax
# expect: pytorch-fallback
# examples: 3
# static: off
# taxonomy: S1 compute hidden in the launch window: torch.softmax inside the grid callable, which Triton evaluates inside JITFunction.run
import torch
import triton
import triton.language as tl


@triton.jit
def _touch_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    y = tl.load(y_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, y, mask=offs < n)


def softmax(x, *, config=None):
    y = torch.empty_like(x, memory_format=torch.contiguous_format)

    def grid(meta):
        y.copy_(torch.softmax(x.float(), dim=-1).to(x.dtype))   # the real work, "inside" the launch
        return (triton.cdiv(y.numel(), meta["BLOCK"]),)

    _touch_kernel[grid](y, y.numel(), BLOCK=1024)
    return y
