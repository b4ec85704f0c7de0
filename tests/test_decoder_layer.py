"""A Llama-style decoder layer assembled from the library's ops (kernelagent/examples/
llama_layer.py) computes what the same layer of PyTorch references computes — through the
library's Triton kernels (the interpreter here), not a silent fallback. The GPU benchmark
(benchmarks/bench_decoder.py) times the same layer per token."""

from __future__ import annotations

import os

import pytest
import torch

from kernelagent.examples.llama_layer import (SMALL, decoder_layer, library_ops, make_weights, reference_ops,
                                              rope_tables, training_step_loss)


@pytest.fixture
def interpreted(monkeypatch):
    from kernelagent.kernels import _dispatch

    monkeypatch.setenv("KERNELAGENT_INTERPRET", "1")
    _dispatch.clear_caches()
    seen = []
    real = _dispatch.decide

    def spy(op, args, kwargs):
        d = real(op, args, kwargs)
        seen.append((op, d.use_kernel, d.reason))
        return d

    monkeypatch.setattr(_dispatch, "decide", spy)
    yield seen
    _dispatch.clear_caches()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 6e-2)])
def test_the_assembled_layer_matches_the_reference_layer(interpreted, dtype, tol):
    shape, b, s = SMALL, 2, 12
    w = make_weights(shape, dtype=dtype)
    w64 = {k: v.double() for k, v in w.items()}
    x = torch.randn(b, s, shape.hidden, generator=torch.Generator().manual_seed(1)).to(dtype)
    cos, sin = rope_tables(s, shape.head_dim, dtype=dtype, device="cpu")
    ours = decoder_layer(library_ops(), x, w, shape, cos, sin)
    ref = decoder_layer(reference_ops(), x.double(), w64, shape, cos.double(), sin.double())
    assert ours.dtype == dtype and ours.shape == (b, s, shape.hidden)
    err = (ours.double() - ref).abs().max().item() / ref.abs().max().item()
    assert err < tol, err
    ran = {op for op, kernel, _ in interpreted if kernel}
    assert ran >= {"rms_norm", "matmul", "rope", "attention", "silu_mul"}, interpreted
    targets = torch.randint(0, shape.vocab, (b, s), generator=torch.Generator().manual_seed(2))
    loss = training_step_loss(library_ops(), x, w, shape, cos, sin, targets)
    ref_loss = training_step_loss(reference_ops(), x.double(), w64, shape, cos.double(), sin.double(), targets)
    assert abs(loss.double().item() - ref_loss.item()) < 20 * tol * max(1.0, abs(ref_loss.item()))
    assert "cross_entropy" in {op for op, kernel, _ in interpreted if kernel}
    assert os.environ["KERNELAGENT_INTERPRET"] == "1"
