"""A kernel that raises at dispatch is visible: warned once (op, kernel file, config, error named),
counted in ``kernelagent.kernels.dispatch_failures()``, and raised under ``KERNELAGENT_STRICT=1``
(which the test suite sets). A kernel that does not apply — an unsupported dtype, an input its
launcher declines — is not a failure: it stays a quiet, documented fallback, even when strict."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import kernelagent.kernels as K
from kernelagent import library
from kernelagent.kernels import _device, _dispatch, _failures

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture(autouse=True)
def _isolated(isolated_dispatch):   # tests/conftest.py
    yield


@pytest.fixture
def lenient(monkeypatch):
    monkeypatch.delenv(_failures.STRICT_ENV, raising=False)


@pytest.fixture
def strict(monkeypatch):
    monkeypatch.setenv(_failures.STRICT_ENV, "1")


def _fake_kernel(monkeypatch, fn):
    _, interpreted = _dispatch.kernel_entry("softmax")
    monkeypatch.setitem(_dispatch._kernels, "softmax", (fn, interpreted))


def _crashing(x, *, config=None):
    raise RuntimeError("illegal memory access in _softmax_fwd_kernel")


def _tuned_softmax_config(tmp_path, config: dict) -> None:
    """A library entry for h100-sxm with this config for the bucket of 200 columns."""
    entry = {"dtype": "fp32", "bucket": {"cols": 256}, "config": config,
             "kernel_sha256": library.kernel_sha256("softmax"),
             "evidence": {"latency_us": 5.0, "energy_uj": None, "backend": "gpu", "measured": True, "trials": 4,
                          "speedup_vs_default": 1.2},
             "provenance": {"triton": "3.6.0", "torch": "2.11.0", "cuda": None, "device": H100[0],
                            "date": "2026-11-26T07:30:00+00:00", "method": "test"}}
    path = tmp_path / "library" / "softmax" / "configs" / "h100-sxm.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": 1, "op": "softmax", "sku": "h100-sxm", "entries": [entry]}))


def _ours(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, K.KernelFallbackWarning)]


def test_a_raising_kernel_is_warned_once_naming_op_file_config_and_error_and_counted(monkeypatch, lenient):
    _fake_kernel(monkeypatch, _crashing)
    x = torch.randn(3, 50, device=DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            torch.testing.assert_close(K.softmax(x), torch.softmax(x, -1))  # the reference answered
    (message,) = _ours(caught)
    failures = [w for w in caught if issubclass(w.category, K.KernelDispatchFailure)]
    assert len(failures) == 1
    config = K.get_opspec("softmax").default_config({"cols": 50})
    assert "kernelagent.kernels.softmax" in message and __file__ in message  # op and kernel file
    assert str(config) in message                                         # the config it ran
    assert "RuntimeError: illegal memory access" in message               # the error
    assert "dispatch_failures" in message and "KERNELAGENT_STRICT=1" in message
    assert K.dispatch_failures() == {"softmax": 3}  # every failed call counts; one warning


def test_strict_raises_with_the_kernels_error_as_cause(monkeypatch, strict):
    _fake_kernel(monkeypatch, _crashing)
    with pytest.raises(K.KernelDispatchError, match=r"softmax.*failed with config .*RuntimeError: illegal") as e:
        K.softmax(torch.randn(3, 50, device=DEVICE))
    assert isinstance(e.value.__cause__, RuntimeError)
    assert K.dispatch_failures() == {"softmax": 1}


def test_another_config_or_error_type_is_warned_again(monkeypatch, lenient):
    def flaky(x, *, config=None):
        raise (RuntimeError if x.shape[-1] < 100 else KeyError)("boom")

    _fake_kernel(monkeypatch, flaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cols in (50, 60, 600, 1000):  # BLOCK_N 64 twice, then 1024 twice
            K.softmax(torch.randn(2, cols, device=DEVICE))
    messages = _ours(caught)
    assert len(messages) == 2 and "RuntimeError" in messages[0] and "KeyError" in messages[1], messages
    assert K.dispatch_failures() == {"softmax": 4}


def test_a_value_error_from_deeper_code_is_a_failure_not_a_declined_input(monkeypatch, strict):
    def buggy(x, *, config=None):
        return json.loads("{not json")  # JSONDecodeError, a ValueError, raised inside json

    _fake_kernel(monkeypatch, buggy)
    with pytest.raises(K.KernelDispatchError, match="JSONDecodeError"):
        K.softmax(torch.randn(2, 8, device=DEVICE))


def test_an_input_the_launcher_declines_is_a_quiet_fallback_even_when_strict(monkeypatch, strict):
    def declining(x, *, config=None):
        raise ValueError("rows longer than 7 are not supported")

    _fake_kernel(monkeypatch, declining)
    x = torch.randn(2, 9, device=DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(K.softmax(x), torch.softmax(x, -1))
        K.softmax(x)
    (message,) = _ours(caught)
    assert "rejected this input" in message and "rows longer than 7" in message
    assert not any(issubclass(w.category, K.KernelDispatchFailure) for w in caught)
    assert K.dispatch_failures() == {}


def test_the_real_launcher_declining_is_not_a_failure(strict):
    q = torch.randn(1, 1, 4, 512, device=DEVICE)  # head_dim above the kernel's 256
    with pytest.warns(K.KernelFallbackWarning, match="head_dim must be in 1..256"):
        out = K.attention(q, q, q)
    torch.testing.assert_close(out, K.get_opspec("attention").reference(q, q, q))
    assert K.dispatch_failures() == {}


def test_an_unsupported_dtype_is_not_a_failure(strict):
    x = torch.randn(3, 40, dtype=torch.float64, device=DEVICE)
    with pytest.warns(K.KernelFallbackWarning, match="float64"):
        assert torch.equal(K.softmax(x), torch.softmax(x, -1))
    assert K.dispatch_failures() == {}


def test_a_broken_tuned_config_in_the_real_kernel_is_counted_and_retried(tmp_path, lenient):
    _tuned_softmax_config(tmp_path, {"BLOCK_N": 3, "num_warps": 1})  # tl.arange needs a power of two
    x = torch.randn(3, 200, device=DEVICE)
    with _device.override_device(*H100):
        with pytest.warns(K.KernelDispatchFailure, match=r"'BLOCK_N': 3.*retrying with the default") as caught:
            out = K.softmax(x)
        K.softmax(x)  # the default config is remembered for this signature: no second failure
    torch.testing.assert_close(out, torch.softmax(x, -1))
    assert "h100-sxm.json" in str(caught[0].message) and "kernel.py" in str(caught[0].message)
    assert K.dispatch_failures() == {"softmax": 1}


def test_a_broken_tuned_config_raises_under_strict(tmp_path, strict):
    _tuned_softmax_config(tmp_path, {"BLOCK_N": 3, "num_warps": 1})
    with _device.override_device(*H100):
        with pytest.raises(K.KernelDispatchError, match=r"'BLOCK_N': 3"):
            K.softmax(torch.randn(3, 200, device=DEVICE))


def test_the_counter_is_public_and_documented():
    assert "dispatch_failures" in K.__all__ and "KERNELAGENT_STRICT" in K.dispatch_failures.__doc__ + K.__doc__
    assert K.dispatch_failures() == {}


def test_on_hopper_without_an_entry_matmul_runs_its_tma_variant(strict):
    """sm_90's default matmul is the TMA/persistent variant (OPSPEC.arch_variants), other archs
    and the plain CPU lane keep kernel.py; the answer is correct either way."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(40, 72, generator=gen).to(DEVICE, torch.bfloat16)
    b = torch.randn(72, 24, generator=gen).to(DEVICE, torch.bfloat16)
    with _device.override_device(*H100):
        d = _dispatch.decide("matmul", (a, b), {})
        out = K.matmul(a, b)
    assert d.resolution.variant == "tma_persistent" and d.resolution.tier == "default"
    assert "tma_persistent" in d.reason and "sm_90" in d.reason
    assert d.resolution.config == {"NUM_PROGRAMS": 132}          # H100 SXM: one program per SM
    _dispatch.clear_caches()
    with _device.override_device("NVIDIA H100 PCIe", (9, 0)):
        assert _dispatch.decide("matmul", (a, b), {}).resolution.config == {"NUM_PROGRAMS": 114}
    _dispatch.clear_caches()
    with _device.override_device("NVIDIA A100-SXM4-80GB", (8, 0)):
        assert _dispatch.decide("matmul", (a, b), {}).resolution.variant == "kernel"
    torch.testing.assert_close(out.double(), a.double() @ b.double(), rtol=2 ** -7, atol=0.1)


def test_a_failing_arch_variant_falls_back_to_kernel_py_not_to_pytorch(lenient, monkeypatch):
    from kernelagent.kernels import _variants

    real_entry = _dispatch.kernel_entry

    def broken(op, variant=_variants.DEFAULT_VARIANT, sha256=None):
        if variant == "tma_persistent":
            def boom(*args, **kwargs):
                raise RuntimeError("simulated TMA launch failure")
            return boom, True
        return real_entry(op, variant, sha256)

    monkeypatch.setattr(_dispatch, "kernel_entry", broken)
    a, b = torch.randn(16, 32, device=DEVICE), torch.randn(32, 16, device=DEVICE)
    with _device.override_device(*H100):
        with pytest.warns(K.KernelDispatchFailure, match="simulated TMA launch failure.*kernel.py"):
            out = K.matmul(a, b)
    torch.testing.assert_close(out, a @ b, rtol=1e-5, atol=1e-5)
    assert K.dispatch_failures() == {"matmul": 1}
