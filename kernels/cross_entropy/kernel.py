"""cross_entropy(logits, target, ignore_index=-100): mean NLL of log-softmax over the vocab.

For each row i whose target t_i != ignore_index::

    loss_i = logsumexp_j(logits_ij) - logits_i,t_i

and the result is the mean of loss_i over those rows, as
``torch.nn.functional.cross_entropy(..., reduction="mean")``: a 0-d tensor of the logits' dtype
(NaN when every row is ignored, like PyTorch).

Two launches, no atomics, so identical calls give identical bits:
1. one program per row streams the vocab in BLOCK_V chunks with an online log-sum-exp (a
   running max m and a sum l rescaled by exp(m_old - m_new) when the max grows), so the row
   never has to fit on chip: 128k vocabularies are fine. An ignored row skips the vocab
   entirely. Per-row fp32 losses and 0/1 flags go to scratch buffers.
2. one program sums the losses and the flags in a fixed order and divides.

A target outside [0, vocab) that is not ignore_index is an error, as in PyTorch and Liger. The
row kernel asserts it with ``tl.device_assert``: in Triton's interpreter (the CPU path) the
assert is always checked and the call raises a ``ValueError`` (``DeviceAssertError``); on a GPU
Triton compiles device asserts only under ``TRITON_DEBUG=1`` (a bad target then stops the kernel
with a device-side assert, as PyTorch's CUDA kernel does), at the cost of one compare and
branch per row. Without it the
row's loss is NaN, so the mean is NaN rather than a plausible number: one compare and select
per row on the target the kernel loads anyway, no extra memory traffic, no host sync. (A host
check would read the targets back and wait for the GPU on every call; a candidate kernel may
not read tensor values on the host at all.) Accumulation is in fp32.

Self-contained on purpose: the harness verifies this file exactly as it verifies an LLM's
candidate, so it imports only torch and triton.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _cross_entropy_row_kernel(logits_ptr, target_ptr, loss_ptr, valid_ptr, n_vocab, ignore_index,
                              stride_lr, stride_lv, stride_t,
                              BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(target_ptr + row * stride_t)
    valid = target != ignore_index
    in_range = (target >= 0) & (target < n_vocab)
    tl.device_assert(in_range | (target == ignore_index),
                     "cross_entropy: a target is outside [0, vocab) and is not ignore_index")
    loss = 0.0
    if valid:
        logits_row = logits_ptr + row * stride_lr
        offs = tl.arange(0, BLOCK_V).to(tl.int64)
        m = -float("inf")
        l_sum = 0.0
        for start in range(0, n_vocab, BLOCK_V):
            cols = start + offs
            mask = cols < n_vocab
            x = tl.load(logits_row + cols * stride_lv, mask=mask, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            # While everything seen is -inf there is nothing to rescale (and -inf - -inf is NaN).
            alive = m_new > -float("inf")
            alpha = tl.where(alive, tl.exp(m - m_new), 1.0)
            # Masked lanes hold -inf, so exp gives them 0 once the max is finite.
            p = tl.where(alive, tl.exp(x - m_new), 0.0)
            l_sum = l_sum * alpha + tl.sum(p, axis=0)
            m = m_new
        x_t = tl.load(logits_row + target * stride_lv, mask=in_range, other=0.0).to(tl.float32)
        # (m - x_t) first: exact when the target logit is near the max, so a confident row's
        # small loss is not rounded at the magnitude of the logits.
        loss = tl.where(in_range, (m - x_t) + tl.log(l_sum), float("nan"))
    tl.store(loss_ptr + row, loss)
    tl.store(valid_ptr + row, valid.to(tl.int32))


@triton.jit
def _cross_entropy_mean_kernel(loss_ptr, valid_ptr, out_ptr, n_rows, BLOCK_R: tl.constexpr):
    offs = tl.arange(0, BLOCK_R)
    total = tl.zeros([BLOCK_R], tl.float32)
    count = tl.zeros([BLOCK_R], tl.int32)
    for start in range(0, n_rows, BLOCK_R):
        rows = start + offs
        mask = rows < n_rows
        total += tl.load(loss_ptr + rows, mask=mask, other=0.0)
        count += tl.load(valid_ptr + rows, mask=mask, other=0)
    # 0 / 0 = NaN when every row is ignored, which is what PyTorch returns too.
    mean = tl.sum(total, axis=0) / tl.sum(count, axis=0).to(tl.float32)
    tl.store(out_ptr, mean.to(out_ptr.dtype.element_ty))


def default_config(n_vocab: int) -> dict:
    block = min(triton.next_power_of_2(max(n_vocab, 1)), 8192)
    return {"BLOCK_V": block, "num_warps": 4 if block <= 1024 else 8 if block <= 4096 else 16}


def _pow2_param(cfg: dict, name: str) -> int:
    value = int(cfg[name])
    if value < 1 or value & (value - 1):
        raise ValueError(f"cross_entropy: config {name} must be a power of two; got {cfg[name]!r}")
    return value


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, *,
                  config: dict | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (rows, vocab) against int64 class indices ``target`` (rows,)."""
    if logits.dim() != 2:
        raise ValueError(f"cross_entropy: logits must be (rows, vocab); got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"cross_entropy: logits must be floating point; got {logits.dtype}")
    n_rows, n_vocab = logits.shape
    if target.dim() != 1 or target.shape[0] != n_rows:
        raise ValueError(f"cross_entropy: target must have shape ({n_rows},); got {tuple(target.shape)}")
    if target.dtype != torch.int64:
        raise ValueError(f"cross_entropy: target must hold int64 class indices; got {target.dtype}")
    if n_vocab == 0:
        raise ValueError("cross_entropy: the vocab dim is empty")
    cfg = dict(default_config(n_vocab), **(config or {}))
    block_v, num_warps = _pow2_param(cfg, "BLOCK_V"), _pow2_param(cfg, "num_warps")
    out = torch.empty((), dtype=logits.dtype, device=logits.device)
    losses = torch.empty((n_rows,), dtype=torch.float32, device=logits.device)
    valid = torch.empty((n_rows,), dtype=torch.int32, device=logits.device)
    if n_rows > 0:
        _cross_entropy_row_kernel[(n_rows,)](
            logits, target, losses, valid, n_vocab, int(ignore_index),
            logits.stride(0), logits.stride(1), target.stride(0),
            BLOCK_V=block_v, num_warps=num_warps,
        )
    block_r = min(triton.next_power_of_2(max(n_rows, 1)), 1024)
    _cross_entropy_mean_kernel[(1,)](losses, valid, out, n_rows, BLOCK_R=block_r,
                                     num_warps=4 if block_r >= 512 else 1)
    return out
