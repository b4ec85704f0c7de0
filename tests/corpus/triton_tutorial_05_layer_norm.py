# Source: https://github.com/triton-lang/triton/blob/v3.1.0/python/tutorials/05-layer-norm.py
# Release: v3.1.0 (tag). Licence: MIT (Copyright (c) 2018-2020 Philippe Tillet, 2020-2022 OpenAI).
# Transcribed from https://github.com/triton-lang/triton/blob/v3.1.0/python/tutorials/05-layer-norm.py
# at v3.1.0 (written without network access, from the public tutorial; the forward kernel body
# is the tutorial's). Adapted in launcher glue only: the tutorial's autograd Function becomes a
# plain function; rows are made contiguous (the kernel reads unit column stride and one row
# stride for X and Y); an absent weight / bias is passed as ones / zeros; the tutorial's
# "feature dim >= 64KB" refusal is dropped because its kernel loops over the columns in
# BLOCK_SIZE chunks (the refusal guards the backward pass, not this forward).
# Exercises: a float ``eps`` kernel argument (fp32 scalar promotion), fp16 / bf16 loads.
# Target: op ``layer_norm`` (tests/test_public_corpus.py).
import torch
import triton
import triton.language as tl


@triton.jit
def _layer_norm_fwd_fused(
    X,  # pointer to the input
    Y,  # pointer to the output
    W,  # pointer to the weights
    B,  # pointer to the biases
    Mean,  # pointer to the mean
    Rstd,  # pointer to the 1/std
    stride,  # how much to increase the pointer when moving by 1 row
    N,  # number of columns in X
    eps,  # epsilon to avoid division by zero
    BLOCK_SIZE: tl.constexpr,
):
    # Map the program id to the row of X and Y it should compute.
    row = tl.program_id(0)
    Y += row * stride
    X += row * stride
    # Compute mean
    mean = 0
    _mean = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for off in range(0, N, BLOCK_SIZE):
        cols = off + tl.arange(0, BLOCK_SIZE)
        a = tl.load(X + cols, mask=cols < N, other=0.).to(tl.float32)
        _mean += a
    mean = tl.sum(_mean, axis=0) / N
    # Compute variance
    _var = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for off in range(0, N, BLOCK_SIZE):
        cols = off + tl.arange(0, BLOCK_SIZE)
        x = tl.load(X + cols, mask=cols < N, other=0.).to(tl.float32)
        x = tl.where(cols < N, x - mean, 0.)
        _var += x * x
    var = tl.sum(_var, axis=0) / N
    rstd = 1 / tl.sqrt(var + eps)
    # Write mean / rstd
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)
    # Normalize and apply linear transformation
    for off in range(0, N, BLOCK_SIZE):
        cols = off + tl.arange(0, BLOCK_SIZE)
        mask = cols < N
        w = tl.load(W + cols, mask=mask)
        b = tl.load(B + cols, mask=mask)
        x = tl.load(X + cols, mask=mask, other=0.).to(tl.float32)
        x_hat = (x - mean) * rstd
        y = x_hat * w + b
        # Write output
        tl.store(Y + cols, y, mask=mask)


def layer_norm(x, weight, bias, eps=1e-5):
    shape = x.shape
    if x.numel() == 0:
        return torch.empty(shape, dtype=x.dtype, device=x.device)
    x_arg = x.reshape(-1, shape[-1]).contiguous()
    M, N = x_arg.shape
    weight = torch.ones(N, dtype=x.dtype, device=x.device) if weight is None else weight.contiguous()
    bias = torch.zeros(N, dtype=x.dtype, device=x.device) if bias is None else bias.contiguous()
    # allocate output
    y = torch.empty_like(x_arg)
    mean = torch.empty((M, ), dtype=torch.float32, device=x.device)
    rstd = torch.empty((M, ), dtype=torch.float32, device=x.device)
    # Less than 64KB per feature: enqueue fused kernel
    MAX_FUSED_SIZE = 65536 // x.element_size()
    BLOCK_SIZE = min(MAX_FUSED_SIZE, triton.next_power_of_2(N))
    # heuristics for number of warps
    num_warps = min(max(BLOCK_SIZE // 256, 1), 8)
    # enqueue kernel
    _layer_norm_fwd_fused[(M, )](  #
        x_arg, y, weight, bias, mean, rstd,  #
        x_arg.stride(0), N, eps,  #
        BLOCK_SIZE=BLOCK_SIZE, num_warps=num_warps, num_ctas=1)
    return y.reshape(shape)
