# target: softmax
# expect: verified
# examples: 8
# static: on
# taxonomy: control: the kernel writes a column-major buffer and the entry returns a transposed view of it (.t().view(...), no copy)
import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_colmajor_kernel(x_ptr, yt_ptr, n_rows, n_cols, sxr, sxc, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * sxr + offs * sxc, mask=mask, other=-float("inf")).to(tl.float32)
    x = x - tl.max(x, axis=0)
    num = tl.where(mask, tl.exp(x), 0.0)
    # yt is (n_cols, n_rows), contiguous: element (row, col) of the answer lives at col * n_rows + row.
    tl.store(yt_ptr + offs * n_rows + row, (num / tl.sum(num, axis=0)).to(yt_ptr.dtype.element_ty), mask=mask)


def softmax(x, *, config=None):
    x2 = x.reshape(-1, x.shape[-1])
    n_rows, n_cols = x2.shape
    yt = torch.empty((n_cols, n_rows), dtype=x.dtype, device=x.device)
    _softmax_colmajor_kernel[(n_rows,)](x2, yt, n_rows, n_cols, x2.stride(0), x2.stride(1),
                                        BLOCK=triton.next_power_of_2(n_cols))
    return yt.t().view(x.shape)
