"""cross_entropy refuses a target outside [0, vocab) that is not ignore_index, as PyTorch does.

The CPU path (Triton's interpreter) raises a ValueError from the kernel's device assert; on a
GPU the assert runs under TRITON_DEBUG=1 and otherwise the loss is NaN, never a plausible
number (the shipped kernel used to return 10.75 in bf16).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from kernelagent.kernels import _dispatch
from kernelagent.kernels.spec import DTYPES

interpreter_only = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter lane only")

# (targets, ignore_index): each has one bad row among good ones.
BAD = [
    ([1, 7, -100, 3], -100),     # the vocab is 7: class 7 is past it
    ([1, -5, -100, 3], -100),    # negative, not the ignore index
    ([1, -100, 2, 0], -1),       # -100 is not ignored when the ignore index is -1
    ([0, 2, 9, 0], 0),           # a pad id inside the vocab ignores rows; 9 is still out
]
GOOD = [([1, 6, -100, 3], -100), ([1, -1, 2, 0], -1), ([0, 2, 6, 0], 0), ([-100, -100, 3, 3], -100)]


def _entry():
    entry, interpreted = _dispatch.kernel_entry("cross_entropy")
    return entry


def _logits(dtype: str, rows: int = 4, vocab: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(rows, vocab, generator=g) * 3).to(DTYPES[dtype])


@interpreter_only
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("targets,ignore_index", BAD)
def test_an_out_of_range_target_raises_a_value_error(dtype, targets, ignore_index):
    logits, target = _logits(dtype), torch.tensor(targets)
    with pytest.raises(IndexError):  # what PyTorch does
        torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    with pytest.raises(ValueError, match=r"outside \[0, vocab\) and is not ignore_index"):
        _entry()(logits, target, ignore_index)


@interpreter_only
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("targets,ignore_index", GOOD)
def test_in_range_and_ignored_targets_still_give_pytorchs_loss(dtype, targets, ignore_index):
    logits, target = _logits(dtype), torch.tensor(targets)
    want = torch.nn.functional.cross_entropy(logits.double(), target, ignore_index=ignore_index)
    got = _entry()(logits, target, ignore_index)
    assert got.dtype == logits.dtype
    assert abs(float(got) - float(want)) <= 2e-2 * max(1.0, abs(float(want)))


@contextlib.contextmanager
def _asserts_off():
    """Device asserts compiled out, as on a GPU without TRITON_DEBUG=1."""
    from triton.runtime import interpreter as interp

    sem = interp.interpreter_semantic
    saved = sem.__dict__.get("device_assert")
    sem.device_assert = lambda cond, msg, mask: None
    try:
        yield
    finally:
        if saved is None:
            del sem.device_assert
        else:
            sem.device_assert = saved


@interpreter_only
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_without_asserts_a_bad_target_makes_the_loss_nan_not_a_number(dtype):
    logits, target = _logits(dtype), torch.tensor([1, 7, -100, 3])
    with _asserts_off():
        out = _entry()(logits, target)
        assert torch.isnan(out), f"a loss of {float(out)} for an out-of-range target"
        good = _entry()(logits, torch.tensor([1, 6, -100, 3]))
        assert torch.isfinite(good)


@interpreter_only
def test_the_library_call_raises_rather_than_returning_a_loss(monkeypatch):
    from kernelagent.kernels import cross_entropy, dispatch_failures

    logits, target = _logits("bf16"), torch.tensor([1, 7, -100, 3])
    monkeypatch.delenv("KERNELAGENT_STRICT", raising=False)
    before = dict(dispatch_failures())
    # The kernel refuses the input (its device assert: a declined input, not a kernel failure,
    # so nothing is counted); PyTorch's reference then raises as PyTorch does.
    with pytest.warns(Warning, match="outside"), pytest.raises(IndexError):
        cross_entropy(logits, target)
    assert dispatch_failures().get("cross_entropy", 0) == before.get("cross_entropy", 0)
    monkeypatch.setenv("KERNELAGENT_STRICT", "1")   # strict is about kernel failures: a bad input still raises
    with pytest.raises(IndexError):
        cross_entropy(logits, target)


@pytest.mark.gpu
def test_on_a_gpu_a_bad_target_gives_nan():
    entry = _entry()
    logits = _logits("bf16").cuda()
    assert torch.isnan(entry(logits, torch.tensor([1, 7, -100, 3], device="cuda")))
    assert torch.isfinite(entry(logits, torch.tensor([1, 6, -100, 3], device="cuda")))
