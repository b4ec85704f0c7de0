# Source: https://github.com/linkedin/Liger-Kernel/blob/v0.5.2/src/liger_kernel/ops/swiglu.py
# Release: v0.5.2 (tag). Licence: BSD-2-Clause (Copyright 2024 LinkedIn Corporation).
# Transcribed from https://github.com/linkedin/Liger-Kernel/blob/v0.5.2/src/liger_kernel/ops/swiglu.py
# at v0.5.2 (written without network access, from the public source; the kernel bodies are
# Liger's). Adapted in launcher glue only: ``calculate_settings`` is inlined from
# liger_kernel/ops/utils.py (without the HIP branch); the launcher makes both inputs contiguous
# (the kernel uses one row stride for a, b and c) and returns c only.
# Exercises: an fp32 sigmoid on upcast rows times a 16-bit operand (mixed-dtype promotion).
# Target: op ``silu_mul`` (tests/test_public_corpus.py).
import torch
import triton
import triton.language as tl


@triton.jit
def silu(x):
    return x * tl.sigmoid(x)


@triton.jit
def _swiglu_forward_kernel(a_ptr, b_ptr, c_ptr, stride, n_cols: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    program_id = tl.program_id(0).to(tl.int64)

    # locate start index
    a_ptr += program_id * stride
    b_ptr += program_id * stride
    c_ptr += program_id * stride

    col_offsets = tl.arange(0, BLOCK_SIZE)
    mask = col_offsets < n_cols

    # sigmoid requires type float32
    a_row = tl.load(a_ptr + col_offsets, mask=mask, other=0).to(tl.float32)
    b_row = tl.load(b_ptr + col_offsets, mask=mask, other=0)
    c_row = silu(a_row) * b_row
    tl.store(c_ptr + col_offsets, c_row, mask=mask)


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


def silu_mul(gate, up):
    ori_shape = gate.shape
    n_cols = ori_shape[-1]
    if gate.numel() == 0:
        return torch.empty(ori_shape, dtype=gate.dtype, device=gate.device)
    a = gate.reshape(-1, n_cols).contiguous()
    b = up.reshape(-1, n_cols).contiguous()
    c = torch.empty_like(a)
    n_rows = a.shape[0]
    BLOCK_SIZE, num_warps = calculate_settings(n_cols)
    _swiglu_forward_kernel[(n_rows,)](
        a, b, c, c.stride(-2), n_cols=n_cols, BLOCK_SIZE=BLOCK_SIZE, num_warps=num_warps,
    )
    return c.reshape(ori_shape)
