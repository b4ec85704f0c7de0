# Source: https://github.com/triton-lang/triton/blob/v3.1.0/python/tutorials/02-fused-softmax.py
# Release: v3.1.0 (tag). Licence: MIT (Copyright (c) 2018-2020 Philippe Tillet, 2020-2022 OpenAI).
# Transcribed from https://github.com/triton-lang/triton/blob/v3.1.0/python/tutorials/02-fused-softmax.py
# at v3.1.0 (written without network access, from the public tutorial; the kernel body is the
# tutorial's). Adapted in launcher glue only: the tutorial sizes its persistent grid from the
# device's SM count and occupancy (``triton.runtime.driver``, not available to a candidate);
# here a fixed number of programs loops over the rows as the tutorial's do. The tutorial's
# kernel reads rows with unit column stride, so the launcher makes the input contiguous.
# Target: op ``softmax`` (tests/test_public_corpus.py).
import torch
import triton
import triton.language as tl


@triton.jit
def softmax_kernel(output_ptr, input_ptr, input_row_stride, output_row_stride, n_rows, n_cols, BLOCK_SIZE: tl.constexpr,
                   num_stages: tl.constexpr):
    # starting row of the program
    row_start = tl.program_id(0)
    row_step = tl.num_programs(0)
    for row_idx in tl.range(row_start, n_rows, row_step, num_stages=num_stages):
        # The stride represents how much we need to increase the pointer to advance 1 row
        row_start_ptr = input_ptr + row_idx * input_row_stride
        # The block size is the next power of two greater than n_cols, so we can fit each
        # row in a single block
        col_offsets = tl.arange(0, BLOCK_SIZE)
        input_ptrs = row_start_ptr + col_offsets
        # Load the row into SRAM, using a mask since BLOCK_SIZE may be > than n_cols
        mask = col_offsets < n_cols
        row = tl.load(input_ptrs, mask=mask, other=-float('inf'))
        # Subtract maximum for numerical stability
        row_minus_max = row - tl.max(row, axis=0)
        # Note that exponentiation in Triton is fast but approximate (i.e., think __expf in CUDA)
        numerator = tl.exp(row_minus_max)
        denominator = tl.sum(numerator, axis=0)
        softmax_output = numerator / denominator
        # Write back output to DRAM
        output_row_start_ptr = output_ptr + row_idx * output_row_stride
        output_ptrs = output_row_start_ptr + col_offsets
        tl.store(output_ptrs, softmax_output, mask=mask)


def softmax(x):
    shape = x.shape
    if x.numel() == 0:
        return torch.empty(shape, dtype=x.dtype, device=x.device)
    x = x.reshape(-1, shape[-1]).contiguous()
    n_rows, n_cols = x.shape
    # The block size of each loop iteration is the smallest power of two greater than the
    # number of columns in `x`
    BLOCK_SIZE = triton.next_power_of_2(n_cols)
    num_warps = 8
    num_stages = 2
    # Allocate output
    y = torch.empty_like(x)
    num_programs = min(n_rows, 64)
    softmax_kernel[(num_programs, 1, 1)](y, x, x.stride(0), y.stride(0), n_rows, n_cols, BLOCK_SIZE=BLOCK_SIZE,
                                         num_stages=num_stages, num_warps=num_warps)
    return y.reshape(shape)
