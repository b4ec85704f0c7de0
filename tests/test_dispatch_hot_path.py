"""The library's hot path: a signature whose kernel ran cleanly goes straight to its bound
launcher on the next call (no decision, entry or config lookup), a failure there is still
reported like any other, and ``graphed`` replays a small static call as a CUDA graph."""

from __future__ import annotations

import pytest
import torch

import kernelagent.kernels as K
from kernelagent.kernels import _dispatch, _failures

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _isolated(isolated_dispatch):   # tests/conftest.py
    yield


def _count_decisions(monkeypatch) -> list:
    seen = []
    real = _dispatch.decide

    def counting(op, args, kwargs):
        seen.append(op)
        return real(op, args, kwargs)

    monkeypatch.setattr(_dispatch, "decide", counting)
    return seen


def test_a_repeated_signature_skips_the_decision_and_stays_correct(monkeypatch):
    seen = _count_decisions(monkeypatch)
    x = torch.randn(6, 50, device=DEVICE)
    first = K.softmax(x)
    second = K.softmax(x * 2)                  # same shape, dtype, device: the bound launcher
    assert seen == ["softmax"]
    torch.testing.assert_close(second, torch.softmax(x * 2, -1))
    assert second.data_ptr() != first.data_ptr()
    K.softmax(torch.randn(7, 50, device=DEVICE))   # a new shape is decided afresh
    assert seen == ["softmax", "softmax"]
    _dispatch.clear_caches()                    # e.g. after a new library entry: decided again
    K.softmax(x)
    assert seen == ["softmax"] * 3


def test_a_failure_on_the_bound_path_is_reported_and_falls_back(monkeypatch):
    monkeypatch.delenv(_failures.STRICT_ENV, raising=False)
    x = torch.randn(4, 30, device=DEVICE)
    K.softmax(x)
    (key,) = list(_dispatch._bound)
    entry, config = _dispatch._bound[key]

    def broken(*args, **kwargs):
        raise RuntimeError("simulated launch failure")

    _dispatch._bound[key] = (broken, config)
    monkeypatch.setattr(_dispatch, "kernel_entry", lambda op, variant="kernel", sha256=None: (broken, True))
    with pytest.warns(K.KernelDispatchFailure, match="simulated launch failure"):
        out = K.softmax(x)
    torch.testing.assert_close(out, torch.softmax(x, -1))
    assert K.dispatch_failures() == {"softmax": 1} and key not in _dispatch._bound


def test_a_declined_input_is_never_bound():
    x = torch.randn(3, 8, dtype=torch.float64, device=DEVICE)   # no fp64 kernel: the reference
    with pytest.warns(K.KernelFallbackWarning):
        K.softmax(x)
    assert not _dispatch._bound


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-lane error")
def test_graphed_needs_cuda_and_says_so():
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        K.graphed(K.softmax, torch.randn(2, 8))


@pytest.mark.gpu
def test_graphed_replays_a_small_call_with_new_inputs():
    x, w = torch.randn(8, 256, device="cuda", dtype=torch.bfloat16), torch.randn(256, device="cuda", dtype=torch.bfloat16)
    g = K.graphed(K.rms_norm, x, w, 1e-6)
    for _ in range(3):
        x2 = torch.randn_like(x)
        out = g(x2, w, 1e-6)
        torch.testing.assert_close(out, K.rms_norm(x2, w, 1e-6), rtol=0, atol=0)
    with pytest.raises(ValueError, match="must match the captured one"):
        g(torch.randn(9, 256, device="cuda", dtype=torch.bfloat16), w, 1e-6)
    with pytest.raises(ValueError, match="was 1e-06 at capture"):
        g(x, w, 1e-5)
