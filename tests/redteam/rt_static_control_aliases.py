# target: softmax
# expect: verified
# examples: 6
# static: on
# taxonomy: control (aliased imports, from-imports, getattr with a literal, a module-level constant)
import math
from typing import Optional

import torch
from triton import cdiv, next_power_of_2
from triton import jit as kernel
import triton.language as tl
import triton.language as language

LOG2E: tl.constexpr = 1.4426950408889634


@kernel
def _softmax_kernel(x_ptr, y_ptr, n_cols, sxr, sxc, syr, BLOCK: tl.constexpr):
    row = language.program_id(0).to(language.int64)
    offs = language.arange(0, BLOCK)
    mask = offs < n_cols
    x = language.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(language.float32)
    x = (x - language.max(x, axis=0)) * LOG2E
    num = language.where(mask, language.exp2(x), 0.0)
    language.store(y_ptr + row * syr + offs, (num / language.sum(num, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)


class _Plan:
    def __init__(self, n_cols: int):
        self._block = next_power_of_2(max(n_cols, 1))

    @property
    def block(self) -> int:
        return self._block


def softmax(x: torch.Tensor, *, config: Optional[dict] = None) -> torch.Tensor:
    if x.dim() == 0:
        raise ValueError("softmax needs at least one dim")
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    plan = _Plan(x2.shape[1])
    block = int(getattr(plan, "block")) if math.isfinite(1.0) else 1
    _softmax_kernel[(max(cdiv(x2.shape[0], 1), 1),)](x2, y, x2.shape[1], x2.stride(0), x2.stride(1),
                                                     y.stride(0), BLOCK=block)
    return y.reshape(x.shape)
