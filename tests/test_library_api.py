"""The importable library: ``from kernelagent.kernels import <op>``, its dispatch, and config data.

CPU lane: kernels run through Triton's interpreter (conftest sets TRITON_INTERPRET=1 and
KERNELAGENT_INTERPRET=1 without CUDA), device identity is injected, config files are written to
temporary folders. ``gpu`` tests repeat the dispatch checks on a real device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

import kernelagent.kernels as K
from kernelagent import library
from kernelagent.harness.compare import compare
from kernelagent.kernels import _configs, _device, _dispatch
from kernelagent.kernels.spec import Call, Case

OPS = K.op_names()
HAS_CUDA = torch.cuda.is_available()

# Small inputs per op, in the params each spec's build() reads; an op added later without an
# entry here is covered by the generic hypothesis test below.
SMALL = {
    "softmax": {"batch": 0, "rows": 3, "cols": 129},
    "rms_norm": {"batch": 0, "rows": 3, "cols": 129},
    "layer_norm": {"batch": 0, "rows": 3, "cols": 129},
    "silu_mul": {"batch": 0, "rows": 3, "cols": 129},
    "rope": {"batch": 1, "heads": 2, "seq": 5, "head_dim": 16},
    "cross_entropy": {"rows": 5, "vocab": 129, "ignore_index": -100},
    "matmul": {"batch": 0, "M": 17, "N": 19, "K": 33, "bias": False, "activation": None,
               "layout_b": "contiguous"},
    "attention": {"batch": 1, "heads": 2, "seq": 17, "seq_kv": 17, "head_dim": 16, "causal": True,
                  "scale": None},
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No leaked identity, override folder or one-time state between tests."""
    for var in (_configs.LIBRARY_ENV, _device.DEVICE_NAME_ENV, _device.DEVICE_CC_ENV, _device.SKU_DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    if not HAS_CUDA:
        monkeypatch.setenv(_dispatch.INTERPRET_ENV, "1")
    _dispatch.clear_caches()
    yield
    _dispatch.clear_caches()


SKUS = {
    "h100-sxm": {"family": "hopper", "arch": "sm_90", "compute_capability": [9, 0],
                 "match": ["H100.*(SXM|HBM3)"]},
    "h100-pcie": {"family": "hopper", "arch": "sm_90", "compute_capability": [9, 0], "match": ["H100.*PCIe"]},
    "h200": {"family": "hopper", "arch": "sm_90", "compute_capability": [9, 0], "match": ["H200"]},
    "a100-sxm": {"family": "ampere", "arch": "sm_80", "compute_capability": [8, 0], "match": ["A100"]},
}


@pytest.fixture
def skus(tmp_path, monkeypatch):
    d = tmp_path / "skus"
    d.mkdir()
    for sku_id, data in SKUS.items():
        (d / f"{sku_id}.json").write_text(json.dumps({"id": sku_id, **data}))
    monkeypatch.setenv(_device.SKU_DIR_ENV, str(d))
    return d


@pytest.fixture
def lib(tmp_path, monkeypatch):
    d = tmp_path / "library"
    d.mkdir()
    monkeypatch.setenv(_configs.LIBRARY_ENV, str(d))
    return d


def entry(op="softmax", dtype="fp32", bucket=None, config=None, measured=True, sha=None, latency=10.0):
    return {
        "dtype": dtype,
        "bucket": bucket if bucket is not None else {"cols": 256},
        "config": config if config is not None else {"BLOCK_N": 64, "num_warps": 1},
        "kernel_sha256": sha or library.kernel_sha256(op),
        "evidence": {"latency_us": latency, "energy_uj": None, "backend": "gpu" if measured else "model",
                     "measured": measured, "trials": 8, "speedup_vs_default": 1.1 if measured else 1.5},
        "provenance": {"triton": "3.6.0", "torch": "2.11.0", "cuda": "12.8", "device": "NVIDIA H100 80GB HBM3",
                       "date": "2026-11-26T07:30:00+00:00", "method": "test"},
    }


def write_config(lib_dir, op, sku, entries, **header):
    path = lib_dir / op / "configs" / f"{sku}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "op": op, "sku": sku, **header, "entries": entries}))
    return path


def _upcast(call: Call) -> Call:
    up = lambda v: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
    return Call(tuple(up(a) for a in call.args), {k: up(v) for k, v in call.kwargs.items()})


def check_against_reference(op: str, call: Call, out: torch.Tensor) -> None:
    spec = K.get_opspec(op)
    native = spec.reference(*call.args, **call.kwargs)
    ref64 = spec.reference(*_upcast(call).args, **_upcast(call).kwargs) if spec.float64_reference else native
    assert out.shape == native.shape and out.dtype == native.dtype
    k = spec.tolerance.reduction_length(call) if spec.tolerance.reduction_length else None
    verdict = compare(out, ref64, native, spec.tolerance, k)
    assert verdict.ok, verdict.detail


# ---------------------------------------------------------------------------------------------
# The public API


def test_exports_every_op_as_a_function_with_the_reference_signature():
    import inspect

    for op in OPS:
        fn = getattr(K, op)
        assert inspect.isfunction(fn) and fn.__name__ == op
        assert inspect.signature(fn) == inspect.signature(K.get_opspec(op).reference)
        assert op in K.__all__ and op in dir(K)
    # Importing an op's subpackage again must not rebind the name to the module.
    import kernelagent.kernels.softmax.spec  # noqa: F401
    from kernelagent.kernels import softmax
    assert callable(softmax) and softmax is K.softmax


@pytest.mark.parametrize("op", sorted(SMALL))
def test_op_through_public_api_matches_reference_in_interpreter(op):
    if op not in OPS:
        pytest.skip(f"{op} is not in this checkout")
    spec = K.get_opspec(op)
    call = spec.build(Case(params=SMALL[op], dtype="fp32", seed=1))
    device = "cuda" if HAS_CUDA else "cpu"
    call = Call(tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in call.args),
                {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in call.kwargs.items()})
    decision = _dispatch.decide(op, call.args, dict(call.kwargs))
    assert decision.use_kernel, decision.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error", K.KernelFallbackWarning)  # a fallback would hide the kernel
        out = getattr(K, op)(*call.args, **call.kwargs)
    check_against_reference(op, _cpu(call), out.cpu())


def _cpu(call: Call) -> Call:
    c = lambda v: v.cpu() if isinstance(v, torch.Tensor) else v
    return Call(tuple(c(a) for a in call.args), {k: c(v) for k, v in call.kwargs.items()})


def test_ops_added_later_run_through_the_kernel():
    """Any registered op without a hand-picked size: drawn from its own strategy."""
    from hypothesis import HealthCheck, given, settings

    later = [o for o in OPS if o not in SMALL]
    if not later:
        pytest.skip("every registered op has a hand-picked size above")
    for op in later:
        spec = K.get_opspec(op)

        @settings(max_examples=2, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(spec.strategy(256))
        def run(case):
            call = spec.build(case)
            out = getattr(K, op)(*call.args, **call.kwargs)
            check_against_reference(op, call, out)

        run()


def test_cpu_without_interpret_uses_the_reference_silently(monkeypatch):
    monkeypatch.delenv(_dispatch.INTERPRET_ENV)
    x = torch.randn(4, 33)
    decision = _dispatch.decide("softmax", (x,), {})
    assert not decision.use_kernel and _dispatch.INTERPRET_ENV in decision.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(K.softmax(x), torch.softmax(x, dim=-1))


def test_unsupported_dtype_falls_back_with_exactly_one_warning(monkeypatch):
    monkeypatch.setenv(_dispatch.INTERPRET_ENV, "1")  # CPU tensors would take the kernel but for the dtype
    x = torch.randn(3, 40, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert torch.equal(K.softmax(x), torch.softmax(x, -1))
    ours = [w for w in caught if issubclass(w.category, K.KernelFallbackWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "torch.float64" in str(ours[0].message) and "reference" in str(ours[0].message)


def test_integer_input_gets_the_references_own_answer_with_one_warning(monkeypatch):
    monkeypatch.setenv(_dispatch.INTERPRET_ENV, "1")
    x = torch.arange(12).reshape(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            try:
                expected = torch.softmax(x, -1)
            except RuntimeError as e:  # PyTorch has no integer softmax: the same error, not a new one
                with pytest.raises(RuntimeError, match=str(e)[:30]):
                    K.softmax(x)
            else:
                assert torch.equal(K.softmax(x), expected)
    ours = [w for w in caught if issubclass(w.category, K.KernelFallbackWarning)]
    assert len(ours) == 1 and "torch.int64" in str(ours[0].message)


def test_kernel_value_error_falls_back_once(monkeypatch):
    def rejecting(x, *, config=None):
        raise ValueError("rows longer than 7 are not supported")

    monkeypatch.setitem(_dispatch._kernels, "softmax", (rejecting, True))
    monkeypatch.setenv(_dispatch.INTERPRET_ENV, "1")
    x = torch.randn(2, 9)
    with pytest.warns(K.KernelFallbackWarning, match="rows longer than 7"):
        out = K.softmax(x)
    assert torch.equal(out, torch.softmax(x, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K.softmax(x)  # second time: no warning


def test_failing_tuned_config_retries_the_default(monkeypatch, skus, lib):
    monkeypatch.delenv("KERNELAGENT_STRICT", raising=False)  # the fallback itself is under test
    entry_fn, interpreted = _dispatch.kernel_entry("softmax")
    seen = []

    def picky(x, *, config=None):
        seen.append(config)
        if config["BLOCK_N"] == 64:
            raise RuntimeError("out of resources: shared memory")
        return entry_fn(x, config=config)

    monkeypatch.setitem(_dispatch._kernels, "softmax", (picky, interpreted))
    write_config(lib, "softmax", "h100-sxm", [entry(bucket={"cols": 256}, config={"BLOCK_N": 64, "num_warps": 1})])
    x = torch.randn(3, 200, device="cuda" if HAS_CUDA else "cpu")
    with _device.override_device("NVIDIA H100 80GB HBM3", (9, 0)):
        with pytest.warns(K.KernelFallbackWarning, match="retrying with the default"):
            out = K.softmax(x)
        K.softmax(x)  # the failed config is not tried again for this signature
    assert [c["BLOCK_N"] for c in seen] == [64, 256, 256]
    torch.testing.assert_close(out, torch.softmax(x, -1))
    assert K.dispatch_failures() == {"softmax": 1}


def test_importing_the_library_pulls_in_no_agent_dependencies():
    code = (
        "import sys, json, torch\n"
        "from kernelagent.kernels import softmax, op_names\n"
        "y = softmax(torch.randn(2, 8))\n"
        "triton_loaded = 'triton' in sys.modules\n"
        "for op in op_names():\n"
        "    __import__('kernelagent.kernels', fromlist=[op])\n"
        "    getattr(sys.modules['kernelagent.kernels'], op)\n"
        "y = softmax(torch.randn(2, 8))\n"
        "from kernelagent.kernels import _dispatch\n"
        "d = _dispatch.decide('softmax', (torch.randn(2, 8),), {})\n"
        "heavy = [m for m in ('hypothesis', 'optuna', 'langgraph', 'openai') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'kernel': d.use_kernel, 'triton': triton_loaded}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KERNELAGENT_INTERPRET", "TRITON_INTERPRET")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # CPU tensors without KERNELAGENT_INTERPRET run the reference, and softmax alone needs no triton.
    assert result == {"heavy": [], "kernel": False, "triton": False}


def test_interpret_env_sets_triton_interpret_before_kernels_load():
    code = (
        "import os, json, torch\n"
        "from kernelagent.kernels import softmax, _dispatch\n"
        "set_by_import = os.environ.get('TRITON_INTERPRET')\n"
        "x = torch.randn(3, 50)\n"
        "d = _dispatch.decide('softmax', (x,), {})\n"
        "ok = bool(torch.allclose(softmax(x), torch.softmax(x, -1), atol=1e-6))\n"
        "print(json.dumps([set_by_import, d.use_kernel, _dispatch.kernel_entry('softmax')[1], ok]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["KERNELAGENT_INTERPRET"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["1", True, True, True]


def test_torch_compile_fullgraph_traces_the_custom_op(monkeypatch):
    calls = []
    real_dispatch = _dispatch.dispatch
    monkeypatch.setattr(_dispatch, "dispatch", lambda op, a, k: calls.append(op) or real_dispatch(op, a, k))
    torch._dynamo.reset()

    def f(x):
        return K.softmax(x * 2.0) + 1.0

    x = torch.randn(5, 100, device="cuda" if HAS_CUDA else "cpu")
    out = torch.compile(f, fullgraph=True)(x)
    torch.testing.assert_close(out, torch.softmax(x * 2.0, -1) + 1.0)
    assert calls == ["softmax"]  # the compiled graph called the op, which dispatched to the kernel
    torch._dynamo.reset()


def test_fake_impl_gives_shape_and_dtype_for_every_op():
    from torch._subclasses.fake_tensor import FakeTensorMode

    for op in OPS:
        if op not in SMALL:
            continue
        call = K.get_opspec(op).build(Case(params=SMALL[op], dtype="bf16", seed=0))
        expected = K.get_opspec(op).reference(*call.args, **call.kwargs)
        with FakeTensorMode() as mode:
            fake_call = Call(tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in call.args),
                             {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v
                              for k, v in call.kwargs.items()})
            getattr(K, op)  # registers kernelagent::<op>
            out = getattr(torch.ops.kernelagent, op)(*fake_call.args, **fake_call.kwargs)
        assert out.shape == expected.shape and out.dtype == expected.dtype, op


def test_autograd_through_the_custom_op_uses_the_reference_backward():
    x = torch.randn(4, 37, requires_grad=True)
    w = torch.randn(37)
    K.softmax(x).mul(w).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    torch.softmax(x2, -1).mul(w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


# ---------------------------------------------------------------------------------------------
# Device → SKU


def test_match_sku_prefers_specific_pattern_and_compute_capability(skus):
    assert _device.match_sku("NVIDIA H100 80GB HBM3", (9, 0))["id"] == "h100-sxm"
    assert _device.match_sku("NVIDIA H100 PCIe", (9, 0))["id"] == "h100-pcie"
    assert _device.match_sku("nvidia a100-sxm4-80gb", (8, 0))["id"] == "a100-sxm"
    assert _device.match_sku("NVIDIA Imaginary X9000", (9, 9)) is None  # matches no shipped or user SKU
    assert _device.match_sku("NVIDIA H100 PCIe", (9, 0), directory=skus / "missing") is None


def test_malformed_sku_file_is_an_error_for_tools_and_skipped_at_runtime(skus, lib):
    (skus / "broken.json").write_text(json.dumps({"id": "broken", "match": ["X"]}))
    with pytest.raises(_device.SkuFileError, match="broken.json"):
        _device.match_sku("NVIDIA H100 PCIe", (9, 0))
    write_config(lib, "softmax", "h100-pcie", [entry(config={"BLOCK_N": 111, "num_warps": 1})])
    identity = _device.DeviceIdentity("NVIDIA H100 PCIe", (9, 0))
    with pytest.warns(RuntimeWarning, match="broken.json"):
        assert _configs.resolve("softmax", "fp32", {"cols": 256}, identity).tier == "sku"


# ---------------------------------------------------------------------------------------------
# Config data: lookup order, buckets, staleness, predicted vs measured, validation


def test_bucket_rounds_integers_up_and_keeps_flags():
    assert _configs.bucket_of({"cols": 1000, "rows": 1, "zero": 0, "causal": True, "act": None}) == \
        {"cols": 1024, "rows": 1, "zero": 0, "causal": True, "act": None}
    assert _configs.bucket_distance({"cols": 1024}, {"cols": 4096}) == 2.0
    assert _configs.bucket_distance({"seq": 64, "causal": True}, {"seq": 64, "causal": False}) is None


def test_lookup_order_sku_then_family_then_compute_capability_then_default(skus, lib):
    identity = _device.DeviceIdentity("NVIDIA H100 PCIe", (9, 0))
    key = {"cols": 200}
    exact = write_config(lib, "softmax", "h100-pcie", [entry(config={"BLOCK_N": 111, "num_warps": 1})])
    family = write_config(lib, "softmax", "h200", [entry(config={"BLOCK_N": 222, "num_warps": 1})])
    write_config(lib, "softmax", "a100-sxm", [entry(config={"BLOCK_N": 333, "num_warps": 1})])
    other = write_config(lib, "softmax", "unlisted-gpu", [entry(config={"BLOCK_N": 444, "num_warps": 1})],
                         family="other", compute_capability=[9, 0])

    def resolve():
        _dispatch.clear_caches()
        r = _configs.resolve("softmax", "fp32", key, identity)
        return r.tier, r.config["BLOCK_N"]

    assert resolve() == ("sku", 111)
    exact.unlink()
    assert resolve() == ("family", 222)
    family.unlink()
    assert resolve() == ("compute_capability", 444)  # a100 (cc 8.0) is neither family nor cc
    other.unlink()
    tier, block = resolve()
    assert tier == "default" and block == K.get_opspec("softmax").default_config(key)["BLOCK_N"]
    # No SKU matches the name: the compute capability still finds the A100's file.
    _dispatch.clear_caches()
    r = _configs.resolve("softmax", "fp32", key, _device.DeviceIdentity("NVIDIA A-new-thing", (8, 0)))
    assert (r.tier, r.config["BLOCK_N"]) == ("compute_capability", 333)
    # A dtype with no entry anywhere: default.
    assert _configs.resolve("softmax", "bf16", key, identity).tier == "default"


def test_override_folder_is_consulted_before_the_package(skus, lib, monkeypatch, tmp_path):
    package = tmp_path / "package_kernels"
    write_config(package, "softmax", "h100-sxm", [entry(config={"BLOCK_N": 1, "num_warps": 1})])
    write_config(lib, "softmax", "h100-sxm", [entry(config={"BLOCK_N": 2, "num_warps": 1})])
    monkeypatch.setattr(_configs, "KERNELS_DIR", package)
    identity = _device.DeviceIdentity("NVIDIA H100 80GB HBM3", (9, 0))
    assert _configs.resolve("softmax", "fp32", {"cols": 256}, identity).config["BLOCK_N"] == 2
    monkeypatch.delenv(_configs.LIBRARY_ENV)
    assert _configs.resolve("softmax", "fp32", {"cols": 256}, identity).config["BLOCK_N"] == 1


def test_nearest_bucket_within_the_same_dtype(skus, lib):
    write_config(lib, "softmax", "h100-sxm", [
        entry(bucket={"cols": 64}, config={"BLOCK_N": 64, "num_warps": 1}),
        entry(bucket={"cols": 4096}, config={"BLOCK_N": 4096, "num_warps": 8}),
        entry(dtype="bf16", bucket={"cols": 1024}, config={"BLOCK_N": 1, "num_warps": 1}),
    ])
    identity = _device.DeviceIdentity("NVIDIA H100 80GB HBM3", (9, 0))
    r = _configs.resolve("softmax", "fp32", {"cols": 1000}, identity)  # bucket 1024: 2 from 4096, 4 from 64
    assert (r.config["BLOCK_N"], r.bucket) == (4096, {"cols": 4096})
    assert _configs.resolve("softmax", "fp32", {"cols": 100}, identity).config["BLOCK_N"] == 64


def test_stale_kernel_hash_is_skipped_with_one_warning(skus, lib):
    stale = hashlib.sha256(b"some older kernel.py").hexdigest()
    write_config(lib, "softmax", "h100-sxm", [
        entry(bucket={"cols": 256}, config={"BLOCK_N": 9, "num_warps": 1}, sha=stale),
        entry(bucket={"cols": 1024}, config={"BLOCK_N": 1024, "num_warps": 4}),
    ])
    identity = _device.DeviceIdentity("NVIDIA H100 80GB HBM3", (9, 0))
    with pytest.warns(RuntimeWarning, match="stale") as caught:
        r = _configs.resolve("softmax", "fp32", {"cols": 256}, identity)
        _configs.resolve("softmax", "fp32", {"cols": 128}, identity)
    assert r.config["BLOCK_N"] == 1024  # the fresh neighbour, not the stale exact bucket
    assert len([w for w in caught if "stale" in str(w.message)]) == 1


def test_predicted_entries_only_when_nothing_measured(skus, lib):
    identity = _device.DeviceIdentity("NVIDIA H100 80GB HBM3", (9, 0))
    write_config(lib, "softmax", "h100-sxm", [
        entry(bucket={"cols": 256}, config={"BLOCK_N": 7, "num_warps": 1}, measured=False)])
    r = _configs.resolve("softmax", "fp32", {"cols": 256}, identity)
    assert (r.config["BLOCK_N"], r.measured) == (7, False)
    # A measured entry in a neighbouring bucket, even from a family member, beats a prediction.
    write_config(lib, "softmax", "h200", [entry(bucket={"cols": 512}, config={"BLOCK_N": 512, "num_warps": 4})])
    _dispatch.clear_caches()
    r = _configs.resolve("softmax", "fp32", {"cols": 256}, identity)
    assert (r.config["BLOCK_N"], r.measured, r.tier) == (512, True, "family")


def test_a_predicted_tie_does_not_replace_the_default(skus, lib):
    """The model's "winner" within its own uncertainty is a tie-break: the default stays."""
    identity = _device.DeviceIdentity("NVIDIA H100 80GB HBM3", (9, 0))
    tie = entry(bucket={"cols": 4096}, config={"BLOCK_N": 512, "num_warps": 2}, measured=False)
    tie["evidence"].update(speedup_vs_default=1.02, uncertainty_rel=0.15)
    write_config(lib, "softmax", "h100-sxm", [tie])
    r = _configs.resolve("softmax", "fp32", {"cols": 4096}, identity)
    assert r.tier == "default" and r.config == _softmax_default(4096)
    clear = entry(bucket={"cols": 4096}, config={"BLOCK_N": 512, "num_warps": 2}, measured=False)
    clear["evidence"].update(speedup_vs_default=1.4, uncertainty_rel=0.15)
    write_config(lib, "softmax", "h100-sxm", [clear])
    _dispatch.clear_caches()
    r = _configs.resolve("softmax", "fp32", {"cols": 4096}, identity)
    assert (r.config["BLOCK_N"], r.measured) == (512, False)


def _softmax_default(cols: int) -> dict:
    from kernelagent.kernels.registry import get_opspec

    return dict(get_opspec("softmax").default_config({"cols": cols}))


@pytest.mark.parametrize("breakage, needle", [
    (lambda d: "{not json", "not valid JSON"),
    (lambda d: {**d, "schema": 2}, "schema must be 1"),
    (lambda d: {**d, "entries": [{**d["entries"][0], "evidence": {**d["entries"][0]["evidence"], "backend": "guess"}}]},
     "evidence.backend"),
    (lambda d: {**d, "entries": [{**d["entries"][0], "bucket": {"cols": 1000}}]}, "not bucketed"),
    (lambda d: {**d, "entries": [d["entries"][0], d["entries"][0]]}, "repeats"),
    (lambda d: {**d, "sku": "h200"}, "sku must be"),
])
def test_malformed_config_file_raises_naming_the_file(skus, lib, breakage, needle):
    path = write_config(lib, "softmax", "h100-sxm", [entry()])
    broken = breakage(json.loads(path.read_text()))
    path.write_text(broken if isinstance(broken, str) else json.dumps(broken))
    identity = _device.DeviceIdentity("NVIDIA H100 80GB HBM3", (9, 0))
    with pytest.raises(_configs.ConfigFileError, match=needle) as err:
        _configs.resolve("softmax", "fp32", {"cols": 256}, identity)
    assert str(path) in str(err.value)


def test_dispatch_uses_the_found_config_and_logs_the_source_once(skus, lib, caplog, monkeypatch):
    entry_fn, interpreted = _dispatch.kernel_entry("softmax")
    seen = []
    monkeypatch.setitem(_dispatch._kernels, "softmax",
                        (lambda x, *, config=None: seen.append(config) or entry_fn(x, config=config), interpreted))
    write_config(lib, "softmax", "h100-sxm", [entry(bucket={"cols": 256}, config={"BLOCK_N": 64, "num_warps": 2})])
    x = torch.randn(3, 200, device="cuda" if HAS_CUDA else "cpu")
    caplog.set_level(logging.INFO, logger="kernelagent.kernels")
    with _device.override_device("NVIDIA H100 80GB HBM3", (9, 0)):
        for _ in range(2):
            out = K.softmax(x)
    assert seen == [{"BLOCK_N": 64, "num_warps": 2}] * 2
    torch.testing.assert_close(out, torch.softmax(x, -1))
    logged = [r.getMessage() for r in caplog.records if r.name == "kernelagent.kernels"]
    assert len(logged) == 1 and "sku match h100-sxm" in logged[0], logged


def test_malformed_file_surfaces_through_the_public_call(skus, lib):
    (lib / "softmax" / "configs").mkdir(parents=True)
    bad = lib / "softmax" / "configs" / "h100-sxm.json"
    bad.write_text('{"schema": 1}')
    with _device.override_device("NVIDIA H100 80GB HBM3", (9, 0)):
        with pytest.raises(_configs.ConfigFileError, match="h100-sxm.json"):
            K.softmax(torch.randn(2, 8, device="cuda" if HAS_CUDA else "cpu"))


# ---------------------------------------------------------------------------------------------
# Writing the library


def test_record_entry_predicted_never_overwrites_measured(skus, tmp_path):
    measured = entry(config={"BLOCK_N": 1, "num_warps": 1}, measured=True)
    predicted = entry(config={"BLOCK_N": 2, "num_warps": 1}, measured=False)
    out = library.record_entry("softmax", "h100-sxm", predicted, tmp_path)
    assert out.action == "added"
    assert library.record_entry("softmax", "h100-sxm", measured, tmp_path).action == "replaced"
    assert library.record_entry("softmax", "h100-sxm", predicted, tmp_path).action == "kept"
    data = json.loads(out.path.read_text())
    assert [e["config"]["BLOCK_N"] for e in data["entries"]] == [1]
    assert (data["family"], data["compute_capability"]) == ("hopper", [9, 0])  # from the SKU file
    newer = entry(config={"BLOCK_N": 3, "num_warps": 1}, measured=True)
    assert library.record_entry("softmax", "h100-sxm", newer, tmp_path).action == "replaced"
    _configs.validate_file(json.loads(out.path.read_text()), str(out.path), "softmax", "h100-sxm")
    with pytest.raises(_configs.ConfigFileError, match="latency_us"):
        library.record_entry("softmax", "h100-sxm", {**newer, "evidence": {**newer["evidence"], "latency_us": -1}},
                             tmp_path)
    with pytest.raises(K.UnknownOpError):
        library.record_entry("no_such_op", "h100-sxm", newer, tmp_path)


def _record_many(args):
    worker, library_dir, count = args
    for i in range(count):
        bucket = {"cols": 1 << (worker * count + i)}
        library.record_entry("softmax", "h100-sxm", entry(bucket=bucket, latency=1.0 + i), library_dir)
    return worker


def test_concurrent_record_entry_loses_nothing(skus, tmp_path):
    workers, count = 4, 6
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        assert sorted(pool.map(_record_many, [(w, str(tmp_path), count) for w in range(workers)])) == \
            list(range(workers))
    path = library.config_path("softmax", "h100-sxm", tmp_path)
    data = json.loads(path.read_text())
    _configs.validate_file(data, str(path), "softmax", "h100-sxm")
    assert sorted(e["bucket"]["cols"] for e in data["entries"]) == [1 << n for n in range(workers * count)]
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_kernel_sha256_is_the_hash_of_kernel_py():
    for op in OPS:
        assert library.kernel_sha256(op) == hashlib.sha256(K.kernel_path(op).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# GPU lane


@pytest.mark.gpu
@pytest.mark.parametrize("op", sorted(SMALL))
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_gpu_dispatch_runs_the_kernel_and_matches(op, dtype):
    if op not in OPS:
        pytest.skip(f"{op} is not in this checkout")
    spec = K.get_opspec(op)
    call = spec.build(Case(params=SMALL[op], dtype=dtype, seed=3))
    to = lambda v: v.cuda() if isinstance(v, torch.Tensor) else v
    args, kwargs = tuple(to(a) for a in call.args), {k: to(v) for k, v in call.kwargs.items()}
    decision = _dispatch.decide(op, args, kwargs)
    assert decision.use_kernel, decision.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error", K.KernelFallbackWarning)
        out = getattr(K, op)(*args, **kwargs)
    torch.cuda.synchronize()
    check_against_reference(op, call, out.cpu())


@pytest.mark.gpu
def test_gpu_identity_picks_the_config_for_the_real_device(skus, lib):
    name = torch.cuda.get_device_name()
    cc = torch.cuda.get_device_capability()
    sku_file = skus / "this-gpu.json"
    sku_file.write_text(json.dumps({"id": "this-gpu", "family": "test", "arch": "sm_x",
                                    "compute_capability": list(cc), "match": [f"^{re.escape(name)}$"]}))
    _dispatch.clear_caches()
    write_config(lib, "softmax", "this-gpu", [entry(bucket={"cols": 256}, config={"BLOCK_N": 128, "num_warps": 4})])
    x = torch.randn(64, 256, device="cuda", dtype=torch.float32)
    decision = _dispatch.decide("softmax", (x,), {})
    assert decision.use_kernel and decision.resolution.tier == "sku" and decision.resolution.sku == "this-gpu"
    torch.testing.assert_close(K.softmax(x), torch.softmax(x, -1))


@pytest.mark.gpu
def test_gpu_unsupported_dtype_falls_back():
    x = torch.randn(4, 64, device="cuda", dtype=torch.float64)
    with pytest.warns(K.KernelFallbackWarning, match="float64"):
        out = K.softmax(x)
    torch.testing.assert_close(out, torch.softmax(x, -1))
