# target: softmax
# expect: verified
# examples: 8
# static: on
# taxonomy: control: a grid callable lambda META: (triton.cdiv(n, META["ROWS"]),), several rows per program
import torch
import triton
import triton.language as tl


@triton.jit
def _rows_softmax_kernel(x_ptr, y_ptr, n_rows, n_cols, sxr, sxc, syr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    first = tl.program_id(0).to(tl.int64) * ROWS
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    for i in range(ROWS):
        row = first + i
        if row < n_rows:
            x = tl.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(tl.float32)
            x = x - tl.max(x, axis=0)
            num = tl.where(mask, tl.exp(x), 0.0)
            tl.store(y_ptr + row * syr + offs, (num / tl.sum(num, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)


def softmax(x, *, config=None):
    x2 = x.reshape(-1, x.shape[-1])
    n_rows, n_cols = x2.shape
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    _rows_softmax_kernel[lambda META: (triton.cdiv(n_rows, META["ROWS"]),)](
        x2, y, n_rows, n_cols, x2.stride(0), x2.stride(1), y.stride(0),
        ROWS=4, BLOCK=triton.next_power_of_2(n_cols))
    return y.reshape(x.shape)
