# target: softmax
# expect: mismatch|nondeterministic
# examples: 6
# static: off
# taxonomy: S13/S6 nondeterminism hidden by replaying the previous call's result (copied by a Triton kernel into fresh memory) whenever the shape repeats: fooled back-to-back identical calls
import torch
import triton
import triton.language as tl

_LAST = {}
_FRESH = [0]


@triton.jit
def _copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=offs < n), mask=offs < n)


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
    key = (tuple(x.shape), x.dtype)
    prev = _LAST.get("out")
    if prev is not None and _LAST.get("key") == key:
        y = torch.empty_like(prev)                 # fresh memory, written by a launch: no reuse, no copy by torch
        _copy_kernel[(triton.cdiv(prev.numel(), 1024),)](prev, y, prev.numel(), BLOCK=1024)
        return y
    _FRESH[0] += 1
    # Two ulps every other fresh computation: inside the budget, so only determinism can catch it.
    y = _compute(x, 2 * torch.finfo(x.dtype).eps if _FRESH[0] % 2 == 0 else 0.0)
    _LAST.update(key=key, out=y)
    return y
