# target: softmax
# expect: nondeterministic
# examples: 4
# static: off
# taxonomy: S13 behaviour keyed on ambient state: the harness always called under no_grad, the library calls with grad enabled
import torch
import triton
import triton.language as tl


@triton.jit
def _jitter_softmax_kernel(x_ptr, y_ptr, n_cols, sxr, sxc, syr, JITTER, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(tl.float32)
    x = x - tl.max(x, axis=0)
    num = tl.where(mask, tl.exp(x), 0.0)
    y = num / tl.sum(num, axis=0) * (1.0 + JITTER)
    tl.store(y_ptr + row * syr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _compute(x, jitter):
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    _jitter_softmax_kernel[(x2.shape[0],)](x2, y, x2.shape[1], x2.stride(0), x2.stride(1), y.stride(0), jitter,
                                           BLOCK=triton.next_power_of_2(x2.shape[1]))
    return y.reshape(x.shape)


def softmax(x, *, config=None):
    # Exact under the harness's no_grad; two ulps off (within budget) in production.
    jitter = 2 * torch.finfo(x.dtype).eps if torch.is_grad_enabled() else 0.0
    return _compute(x, jitter)
