"""Triton's interpreter multiplies bf16 bit patterns in tl.dot; the worker's patch fixes that."""

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter lane only")


def _run_bf16_dot():
    import triton
    import triton.language as tl

    @triton.jit
    def _dot16_kernel(a_ptr, b_ptr, c_ptr):
        r = tl.arange(0, 16)
        a = tl.load(a_ptr + r[:, None] * 16 + r[None, :])
        b = tl.load(b_ptr + r[:, None] * 16 + r[None, :])
        tl.store(c_ptr + r[:, None] * 16 + r[None, :], tl.dot(a, b))

    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 16, generator=g).bfloat16()
    b = torch.randn(16, 16, generator=g).bfloat16()
    c = torch.empty(16, 16, dtype=torch.float32)
    _dot16_kernel[(1,)](a, b, c)
    return (c.double() - a.double() @ b.double()).abs().max().item()


def test_bf16_dot_is_exact_products_after_the_patch():
    from kernelagent.kernels._interpreter import patch_bf16_dot
    from triton.runtime import interpreter as interp

    original = interp.InterpreterBuilder.create_dot
    try:
        if getattr(original, "_kernelagent", False):  # conftest patched it: start from Triton's own
            interp.InterpreterBuilder.create_dot = original.__wrapped__
        unpatched_err = _run_bf16_dot()
        assert patch_bf16_dot()
        assert _run_bf16_dot() < 1e-4
        assert unpatched_err > 1.0  # the interpreter bug this patch exists for
    finally:
        interp.InterpreterBuilder.create_dot = original
