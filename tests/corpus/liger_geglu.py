# Source: https://github.com/linkedin/Liger-Kernel/blob/v0.5.2/src/liger_kernel/ops/geglu.py
# Release: v0.5.2 (tag). Licence: BSD-2-Clause (Copyright 2024 LinkedIn Corporation).
# Transcribed from https://github.com/linkedin/Liger-Kernel/blob/v0.5.2/src/liger_kernel/ops/geglu.py
# at v0.5.2 (written without network access, from the public source; the forward kernel body is
# Liger's). Adapted in launcher glue only: ``calculate_settings`` is inlined from
# liger_kernel/ops/utils.py (without the HIP branch); ``tanh`` is imported from
# ``triton.language.extra.libdevice`` (Liger's own first choice on Triton >= 3.0); the launcher
# is the forward of a ModelNew (the KernelBench candidate contract), inputs made contiguous.
# Exercises: libdevice.tanh on fp32, fp16 storage of an fp32 result.
# Target: problem tests/corpus/problems/geglu_tanh_fp16.py (tests/test_public_corpus.py).
import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra.libdevice import tanh


@triton.jit
def _geglu_tanh_forward_kernel(a, b, c, stride, n_cols: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    program_id = tl.program_id(0).to(tl.int64)

    # locate start index
    a += program_id * stride
    b += program_id * stride
    c += program_id * stride

    col_offsets = tl.arange(0, BLOCK_SIZE)
    mask = col_offsets < n_cols
    a_row = tl.load(a + col_offsets, mask=mask, other=0).to(tl.float32)
    b_row = tl.load(b + col_offsets, mask=mask, other=0)

    # tanh approximation form of GELU is computed with:
    # 0.5 * a * (1 + tanh(sqrt(2 / pi) * (a + 0.044715 * a^3)))
    sqrt_2_over_pi = 0.7978845608028654  # sqrt(2 / pi)
    a_cubed = a_row * a_row * a_row
    tanh_arg = sqrt_2_over_pi * (a_row + 0.044715 * a_cubed)
    tanh_result = tanh(tanh_arg)
    geglu_a = 0.5 * a_row * (1 + tanh_result)
    c_row = geglu_a * b_row
    tl.store(c + col_offsets, c_row, mask=mask)


def calculate_settings(n):
    # reference: https://github.com/unslothai/unsloth/blob/fd753fed99ed5f10ef8a9b7139588d9de9ddecfb/unsloth/kernels/utils.py#L43
    MAX_FUSED_SIZE = 65536
    BLOCK_SIZE = triton.next_power_of_2(n)
    if BLOCK_SIZE > MAX_FUSED_SIZE:
        raise RuntimeError(
            f"Cannot launch Triton kernel since n = {n} exceeds the recommended Triton blocksize = {MAX_FUSED_SIZE}."
        )
    num_warps = 4
    if BLOCK_SIZE >= 32768:
        num_warps = 32
    elif BLOCK_SIZE >= 8192:
        num_warps = 16
    elif BLOCK_SIZE >= 2048:
        num_warps = 8
    return BLOCK_SIZE, num_warps


def geglu_forward(a, b):
    ori_shape = a.shape

    n_cols = ori_shape[-1]
    a = a.reshape(-1, n_cols).contiguous()
    b = b.reshape(-1, n_cols).contiguous()
    c = torch.empty_like(a)
    n_rows = a.shape[0]

    BLOCK_SIZE, num_warps = calculate_settings(n_cols)

    _geglu_tanh_forward_kernel[(n_rows,)](
        a,
        b,
        c,
        c.stride(-2),
        n_cols=n_cols,
        BLOCK_SIZE=BLOCK_SIZE,
        num_warps=num_warps,
    )
    return c.reshape(*ori_shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        return geglu_forward(a, b)
