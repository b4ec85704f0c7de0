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


# ---------------------------------------------------------------------------------------------
# patch_interpreter(): every fix, and the deprecated alias


def test_patch_interpreter_reports_every_fix_and_the_alias_still_works():
    from kernelagent.kernels._interpreter import patch_bf16_dot, patch_interpreter

    assert patch_interpreter() == {"bf16_dot": True, "tf32_dot": True, "autotune": True}
    assert patch_interpreter() == {"bf16_dot": True, "tf32_dot": True, "autotune": True}  # idempotent
    with pytest.warns(DeprecationWarning, match="patch_interpreter"):
        assert patch_bf16_dot() is True


# ---------------------------------------------------------------------------------------------
# TF32: NVIDIA's default for an fp32 tl.dot; the interpreter computed full fp32 instead.


def _run_f32_dot(precision: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import triton
    import triton.language as tl

    @triton.jit
    def _dot32_kernel(a_ptr, b_ptr, c_ptr, N: tl.constexpr, PRECISION: tl.constexpr):
        r = tl.arange(0, N)
        x = tl.load(a_ptr + r[:, None] * N + r[None, :])
        y = tl.load(b_ptr + r[:, None] * N + r[None, :])
        if PRECISION == "default":
            c = tl.dot(x, y)
        else:
            c = tl.dot(x, y, input_precision=PRECISION)
        tl.store(c_ptr + r[:, None] * N + r[None, :], c)

    c = torch.empty_like(a)
    _dot32_kernel[(1,)](a, b, c, N=a.shape[0], PRECISION=precision)
    return c


def _f32_operands():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)


def _rel(c: torch.Tensor, ref: torch.Tensor) -> float:
    return float((c.double() - ref.double()).abs().max() / ref.double().abs().max())


def test_tf32_rounding_helpers():
    import numpy as np

    from kernelagent.kernels._interpreter import tf32_round, tf32_truncate

    ulp = 2.0 ** -10  # TF32 keeps 10 explicit mantissa bits
    x = np.array([1.0, 1 + ulp / 2, 1 + ulp / 2 + 2 ** -20, 1 + 3 * ulp / 4, -(1 + 3 * ulp / 4),
                  np.inf, -np.inf, np.nan, 0.0], dtype=np.float32)
    trunc, rnd = tf32_truncate(x), tf32_round(x)
    assert list(trunc[:5]) == [1.0, 1.0, 1.0, 1.0, -1.0]
    assert list(rnd[:5]) == [1.0, 1 + ulp, 1 + ulp, 1 + ulp, -(1 + ulp)]  # ties away from zero
    for out in (trunc, rnd):
        assert np.isposinf(out[5]) and np.isneginf(out[6]) and np.isnan(out[7]) and out[8] == 0.0
        assert not np.any(out[:5].view(np.uint32) & 0x1FFF)  # the low 13 bits are gone


def test_tf32_dot_is_emulated_and_ieee_stays_full_fp32(monkeypatch):
    from kernelagent.kernels._interpreter import patch_interpreter, tf32_truncate
    from triton.runtime import interpreter as interp

    a, b = _f32_operands()
    torch_fp32 = a @ b  # PyTorch's fp32 matmul on the CPU: full fp32 products
    original = interp.InterpreterBuilder.create_dot
    try:
        if getattr(original, "_kernelagent", False):
            interp.InterpreterBuilder.create_dot = original.__wrapped__
        # Triton's own interpreter ignores input_precision: tf32 looks exact (the bug).
        assert _rel(_run_f32_dot("tf32", a, b), torch_fp32) < 1e-6
        assert patch_interpreter()["tf32_dot"]
        default, tf32 = _run_f32_dot("default", a, b), _run_f32_dot("tf32", a, b)
        assert torch.equal(default, tf32)  # an unset precision resolves to "tf32", as on NVIDIA
        assert 2e-4 < _rel(tf32, torch_fp32) < 3e-3  # ~1e-3: 10 mantissa bits per operand
        truncated = torch.from_numpy(tf32_truncate(a.numpy())) @ torch.from_numpy(tf32_truncate(b.numpy()))
        assert _rel(tf32, truncated) < 1e-6  # exactly the truncated operands' product
        assert _rel(_run_f32_dot("ieee", a, b), torch_fp32) < 1e-6
        ref64 = a.double() @ b.double()
        assert _rel(_run_f32_dot("tf32x3", a, b), ref64) < 4 * _rel(torch_fp32, ref64) + 1e-7  # ~fp32 accurate
        # TRITON_F32_DEFAULT changes what an unset precision means, here as on a GPU.
        monkeypatch.setenv("TRITON_F32_DEFAULT", "ieee")
        assert _rel(_run_f32_dot("default", a, b), torch_fp32) < 1e-6
    finally:
        interp.InterpreterBuilder.create_dot = original


def test_bf16_dot_is_not_truncated_as_tf32():
    from kernelagent.kernels._interpreter import patch_interpreter

    patch_interpreter()
    assert _run_bf16_dot() < 1e-4  # the default precision (tf32) is irrelevant to bf16 operands


MATMUL_DEFAULT_PRECISION_MARK = "acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)"


def test_matmul_relying_on_the_default_precision_is_rejected_and_the_shipped_one_verifies():
    from kernelagent.harness import verify
    from kernelagent.kernels.registry import kernel_path

    shipped = kernel_path("matmul").read_text()
    assert MATMUL_DEFAULT_PRECISION_MARK in shipped
    # The same kernel, but its fp32 dot takes Triton's default: TF32 on an NVIDIA GPU.
    default = shipped.replace(MATMUL_DEFAULT_PRECISION_MARK, "acc = tl.dot(a, b, acc)")
    bad = verify("matmul", default, examples=10, seed=4)
    assert not bad.verified and bad.reason == "mismatch", bad.detail
    assert bad.counterexample["dtype"] == "fp32"
    good = verify("matmul", shipped, examples=10, seed=4)
    assert good.verified, f"{good.reason}: {good.detail}"


# ---------------------------------------------------------------------------------------------
# @triton.autotune under the interpreter (it used to need a GPU driver to time configs)

AUTOTUNED_SOFTMAX = '''
import torch
import triton
import triton.language as tl


@triton.autotune(configs=[triton.Config({"BLOCK_N": 64}, num_warps=4),
                          triton.Config({"BLOCK_N": 256}, num_warps=4)],
                 key=["n_cols"])
@triton.jit
def _softmax_kernel(x_ptr, y_ptr, n_cols, stride_xr, stride_xc, stride_yr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_N)
    m = tl.full([BLOCK_N], -float("inf"), tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + offs
        x = tl.load(x_ptr + row * stride_xr + cols * stride_xc, mask=cols < n_cols, other=-float("inf"))
        m = tl.maximum(m, x.to(tl.float32))
    mx = tl.max(m, axis=0)
    s = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + offs
        x = tl.load(x_ptr + row * stride_xr + cols * stride_xc, mask=cols < n_cols, other=-float("inf"))
        s += tl.where(cols < n_cols, tl.exp(x.to(tl.float32) - mx), 0.0)
    inv = 1.0 / tl.sum(s, axis=0)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + offs
        x = tl.load(x_ptr + row * stride_xr + cols * stride_xc, mask=cols < n_cols, other=-float("inf"))
        y = tl.exp(x.to(tl.float32) - mx) * inv
        tl.store(y_ptr + row * stride_yr + cols, y.to(y_ptr.dtype.element_ty), mask=cols < n_cols)


def softmax(x):
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n_cols = x.shape[-1]
    x2 = x.reshape(-1, n_cols)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    _softmax_kernel[(x2.shape[0],)](x2, y, n_cols, x2.stride(0), x2.stride(1), y.stride(0))
    return y.reshape(x.shape)
'''


def _load_source(source: str, name: str, tmp_path):
    import importlib.util
    import sys

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_autotuned_kernel_runs_in_the_interpreter_with_a_stable_config_per_key(tmp_path):
    from kernelagent.kernels._interpreter import patch_interpreter
    from triton.runtime import autotuner

    module = _load_source(AUTOTUNED_SOFTMAX, "autotuned_softmax_fix", tmp_path)
    tuner = module._softmax_kernel
    original = autotuner.Autotuner._bench
    try:
        if getattr(original, "_kernelagent", False):
            autotuner.Autotuner._bench = original.__wrapped__
        with pytest.raises(RuntimeError, match="driver"):  # Triton's own autotuner wants a GPU timer
            module.softmax(torch.randn(3, 100))
        assert patch_interpreter()["autotune"]
        chosen = {}
        for attempt in range(2):
            tuner.cache.clear()  # a fresh process: the choice must not depend on what ran before
            for n in (5, 100, 300, 1000, 4097):
                x = torch.randn(3, n)
                torch.testing.assert_close(module.softmax(x), torch.softmax(x, -1))
                chosen.setdefault(n, set()).add(str(tuner.best_config))
        assert all(len(v) == 1 for v in chosen.values())  # one config per key, every time
        assert len(set().union(*chosen.values())) == 2  # and across keys both configs run
    finally:
        autotuner.Autotuner._bench = original


def test_autotuned_candidate_verifies():
    from kernelagent.harness import verify

    verdict = verify("softmax", AUTOTUNED_SOFTMAX, examples=6, seed=1)
    assert verdict.verified, f"{verdict.reason}: {verdict.detail}"
