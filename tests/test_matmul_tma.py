"""The Hopper matmul variant ``kernels/matmul/variants/tma_persistent.py`` (issue 14): it verifies
through the harness exactly as an LLM candidate would, its default config for the 4096^3 bf16
bench case compiles for sm_90 to wgmma fed by TMA without spills (and still compiles for sm_80),
inputs the copy engine cannot read take the pointer path and stay correct, its TMA operands are
host-side ``TensorDescriptor`` arguments (no global scratch, so no ``triton.set_allocator``), and dispatch runs
it from a library entry that names it."""

from __future__ import annotations

import json

import pytest
import torch

from kernelagent.kernels import _variants

VARIANT = _variants.get_variant("matmul", "tma_persistent")
SOURCE = VARIANT.path.read_text(encoding="utf-8")
# Small tiles, 3 programs walking many tiles each, both epilogue halves, TMA even for fp32:
# the harness's awkward shapes then exercise the persistent loop and every descriptor path.
SMALL = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 16, "GROUP_M": 2, "NUM_PROGRAMS": 3,
         "EPILOGUE_SUBTILE": 1, "USE_TMA": 1, "num_warps": 4, "num_stages": 2}
EPS = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
# CPU lane: the interpreter (conftest sets TRITON_INTERPRET=1). With a GPU: the real copy engine.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def tp():
    # Host-side descriptors (TensorDescriptor arguments): no triton.set_allocator needed on a GPU.
    return _variants.load_module(VARIANT)


def randn(*shape, gen, dtype):
    return torch.randn(*shape, generator=gen).to(device=DEVICE, dtype=dtype)


def reference64(a, b, bias=None, activation=None):
    from kernelagent.kernels.matmul.spec import reference

    return reference(a.double(), b.double(), None if bias is None else bias.double(), activation)


def assert_matches(c, a, b, bias=None, activation=None):
    ref = reference64(a, b, bias, activation)
    assert c.dtype == a.dtype and c.shape == ref.shape
    eps = EPS[a.dtype]
    # One rounding to the output dtype plus fp32 accumulation: a few ulps of the largest value.
    torch.testing.assert_close(c.double(), ref, rtol=2 * eps, atol=4 * eps * float(ref.abs().max()) + 1e-6)


def capture(a, b, config=None, **kwargs):
    from kernelagent.harness.compile import capture_launches

    (launch,) = capture_launches(VARIANT.path, "matmul", (a, b), kwargs, config)
    return launch


def launch_modes(a, b, config=None, **kwargs):
    """The access modes the launcher chose, read off the captured launch (nothing runs)."""
    launch = capture(a, b, config, **kwargs)
    return {k: launch.constexprs[k] for k in ("A_MODE", "B_MODE", "C_TMA", "A_BATCHED", "B_BATCHED")}


# Compiles one captured launch for sm_90 in a child without the interpreter and prints the
# compiled metadata's global scratch size (what a launch would ask triton.set_allocator for).
_SCRATCH_CHILD = r"""
import json, sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernelagent.harness.compile import CompileRequest, _base_jit, _decode, _load_module
req = CompileRequest.from_json(json.load(sys.stdin))
fn = _base_jit(getattr(_load_module(req.source_path, req.source_sha, "jit"), req.fn_name))
index = {n: i for i, n in enumerate(fn.arg_names)}
src = ASTSource(fn=fn, signature=dict(req.signature), constexprs={k: _decode(v) for k, v in req.constexprs.items()},
                attrs={(index[n],): [["tt.divisibility", 16]] for n in req.aligned if n in index})
kernel = triton.compile(src, target=GPUTarget("cuda", req.arch, 32), options=dict(req.options))
print(json.dumps({"global_scratch_size": int(kernel.metadata.global_scratch_size or 0)}))
"""


def global_scratch_bytes(launch, arch=90):
    import os
    import subprocess
    import sys

    req = launch.request(str(VARIANT.path), VARIANT.sha256, arch)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KERNELAGENT_INTERPRET")}
    out = subprocess.run([sys.executable, "-c", _SCRATCH_CHILD], input=json.dumps(req.to_json()), env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["global_scratch_size"]


def test_the_variant_is_found_with_its_own_space():
    space = VARIANT.tuning_space
    assert VARIANT.origin == "shipped"
    for knob in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages", "NUM_PROGRAMS",
                 "EPILOGUE_SUBTILE", "FLATTEN", "USE_TMA", "WARP_SPECIALIZE"):
        assert knob in space, knob
    assert 132 in space["NUM_PROGRAMS"]


@pytest.mark.slow
def test_it_verifies_through_the_harness_like_a_candidate():
    from kernelagent.harness import verify

    v = verify("matmul", SOURCE, examples=6, seed=1, candidate_name="tma_persistent.py")
    assert v.verified, (v.reason, v.detail)
    assert set(v.covered["dtype"]) == {"fp32", "fp16", "bf16"}
    v = verify("matmul", SOURCE, examples=8, seed=2, config=SMALL, candidate_name="tma_persistent.py")
    assert v.verified, (v.reason, v.detail)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("layout_a, layout_b, batch_a, batch_b", [
    ("rows", "rows", 0, 0), ("cols", "cols", 0, 0), ("rows", "cols", 3, 3),
    ("cols", "rows", 3, 0), ("rows", "rows", 0, 2),
])
def test_every_descriptor_path_is_taken_and_correct(tp, dtype, layout_a, layout_b, batch_a, batch_b):
    gen = torch.Generator().manual_seed(5)
    M, N, K = 40, 96, 48            # ragged in M and N against 32x64 tiles; 16-byte rows in every dtype

    def operand(rows, cols, layout, batch):
        lead = (batch,) if batch else ()
        if layout == "rows":
            return randn(*lead, rows, cols, gen=gen, dtype=dtype)
        return randn(*lead, cols, rows, gen=gen, dtype=dtype).mT

    a, b = operand(M, K, layout_a, batch_a), operand(K, N, layout_b, batch_b)
    bias = randn(N, gen=gen, dtype=dtype)
    modes = launch_modes(a, b, SMALL, bias=bias, activation="gelu")
    assert modes["A_MODE"] == (1 if layout_a == "rows" else 2) and modes["B_MODE"] == (1 if layout_b == "rows" else 2)
    assert modes["C_TMA"] and modes["A_BATCHED"] == bool(batch_a) and modes["B_BATCHED"] == bool(batch_b)
    assert_matches(tp.matmul(a, b, bias, "gelu", config=SMALL), a, b, bias, "gelu")




@pytest.mark.parametrize("case", ["b_sliced", "b_strided", "a_odd_rows", "expanded_batch", "k_zero"])
def test_inputs_tma_cannot_read_take_the_pointer_path_and_stay_correct(tp, case):
    gen = torch.Generator().manual_seed(11)
    dtype = torch.float16
    a = randn(37, 48, gen=gen, dtype=dtype)
    b = randn(48, 40, gen=gen, dtype=dtype)
    want = {"A_MODE": 1, "B_MODE": 0}
    if case == "b_sliced":
        b = randn(48, 43, gen=gen, dtype=dtype)[:, 1:41]     # starts 2 bytes past a 16-byte boundary
    elif case == "b_strided":
        b = randn(48, 80, gen=gen, dtype=dtype)[:, ::2]      # neither dim contiguous
    elif case == "a_odd_rows":
        a = randn(37, 45, gen=gen, dtype=dtype)              # 90-byte rows
        b = randn(45, 40, gen=gen, dtype=dtype)
        want = {"A_MODE": 0, "B_MODE": 1}                    # b's 80-byte rows qualify
    elif case == "expanded_batch":
        a = randn(48, gen=gen, dtype=dtype).expand(2, 37, 48)   # batch and row stride 0
        want = {"A_MODE": 0, "B_MODE": 1}
    elif case == "k_zero":
        a, b = randn(37, 0, gen=gen, dtype=dtype), randn(0, 40, gen=gen, dtype=dtype)
        want = {"A_MODE": 0, "B_MODE": 0}
    modes = launch_modes(a, b, SMALL)
    assert {k: modes[k] for k in want} == want, modes
    assert_matches(tp.matmul(a, b, config=SMALL), a, b)
    # With the default config too (the shape-dependent tile the library would use).
    assert_matches(tp.matmul(a, b), a, b)


def test_the_tma_flag_and_fp32_default_choose_the_pointer_path():
    gen = torch.Generator().manual_seed(2)
    a, b = randn(64, 64, gen=gen, dtype=torch.float32), randn(64, 64, gen=gen, dtype=torch.float32)
    assert launch_modes(a, b)["A_MODE"] == 0                          # fp32 default: pointers
    assert launch_modes(a, b, {"USE_TMA": 1})["A_MODE"] == 1
    h = a.to(torch.bfloat16), b.to(torch.bfloat16)
    assert launch_modes(*h)["B_MODE"] == 1 and launch_modes(*h, {"USE_TMA": 0})["B_MODE"] == 0


def test_descriptors_are_host_side_kernel_arguments():
    """TMA operands arrive as host TensorDescriptor arguments (typed ``tensordesc``), built with the
    launch's block shapes; the pointer path passes None. No device-side descriptor is built."""
    assert "tl.make_tensor_descriptor(" not in SOURCE and "set_allocator(" not in SOURCE
    gen = torch.Generator().manual_seed(4)
    a = randn(3, 40, 48, gen=gen, dtype=torch.bfloat16)
    b = randn(96, 48, gen=gen, dtype=torch.bfloat16).T            # transposed, broadcast over the batch
    sig = capture(a, b, SMALL).signature
    assert sig["a_desc"] == "tensordesc<bf16[1, 32, 16]>", sig      # rank 3: a batch of its own
    assert sig["b_desc"] == "tensordesc<bf16[64, 16]>", sig         # [N, K] view, block [BLOCK_N, BLOCK_K]
    assert sig["c_desc"] == "tensordesc<bf16[1, 32, 32]>", sig      # half of BLOCK_N per store
    sig = capture(a.float(), b.float()).signature                   # fp32 default: pointers only
    assert sig["a_desc"] == sig["b_desc"] == sig["c_desc"] == "constexpr", sig


def test_bad_configs_are_refused_with_the_fix(tp):
    a = torch.randn(8, 8, device=DEVICE)
    for config, message in [({"BLOCK_N": 512}, "TMA box"), ({"NUM_PROGRAMS": 0}, "NUM_PROGRAMS"),
                            ({"BLOCK_N": 16, "EPILOGUE_SUBTILE": 1}, "halves"), ({"nope": 1}, "unknown")]:
        with pytest.raises(ValueError, match=message):
            tp.matmul(a, a, config=config)


def _launch(report):
    (launch,) = report["launches"]
    return launch, launch["report"]


@pytest.mark.slow
def test_the_default_config_compiles_for_sm90_to_wgmma_fed_by_tma_without_spills():
    from kernelagent.cli_compile import static_report

    out = static_report("matmul", "h100", variant="tma_persistent")
    launch, rep = _launch(out)
    assert out["case"]["M"] == out["case"]["N"] == out["case"]["K"] == 4096 and out["dtype"] == "bf16"
    assert rep["ok"] and rep["mma"] == "wgmma" and rep["tma"], rep
    assert rep["spill_bytes"] == 0 and rep["registers"] <= 255 and launch["fits"], (rep, launch["reasons"])
    assert launch["grid"][0] == 132 and launch["blocks_per_sm"] >= 1
    # Host-side descriptors: the compiled kernel asks for no global scratch, so a launch needs no
    # triton.set_allocator (device-side ones needed 384 bytes and raised without it).
    big = torch.empty(4096, 4096, dtype=torch.bfloat16)
    assert global_scratch_bytes(capture(big, big)) == 0
    # The fused bias + gelu epilogue, in halves, does not spill either (kernel.py's does).
    gelu = dict(out["case"], bias=True, activation="gelu")
    launch, rep = _launch(static_report("matmul", "h100", variant="tma_persistent", case=gelu))
    assert rep["tma"] and rep["mma"] == "wgmma" and rep["spill_bytes"] == 0 and launch["fits"], rep
    # A100: no TMA there; Triton lowers the descriptors to ordinary loads and it still fits.
    launch, rep = _launch(static_report("matmul", "a100", variant="tma_persistent"))
    assert rep["ok"] and rep["mma"] == "mma.sync" and not rep["tma"] and launch["fits"], rep


@pytest.mark.slow
def test_dispatch_runs_the_variant_from_a_library_entry(tp, tmp_path, monkeypatch):
    import kernelagent.kernels as K
    from kernelagent import library
    from kernelagent.kernels import _device, _dispatch

    monkeypatch.setenv("KERNELAGENT_LIBRARY", str(tmp_path))
    monkeypatch.setenv("KERNELAGENT_INTERPRET", "1")
    config = dict(SMALL, FLATTEN=1, WARP_SPECIALIZE=0)
    entry = {"dtype": "bf16", "bucket": {"M": 64, "N": 128, "K": 64, "dtype": "bf16"}, "config": config,
             "variant": "tma_persistent", "kernel_sha256": VARIANT.sha256,
             "evidence": {"latency_us": 5.0, "energy_uj": None, "backend": "model", "measured": False, "trials": 1,
                          "speedup_vs_default": 2.0},  # predicted: used only as a clear win
             "provenance": {"triton": "3", "torch": "2", "cuda": None, "device": "test",
                            "date": "2026-12-03T00:00:00", "method": "test"}}
    library.record_entry("matmul", "h100-sxm", entry, tmp_path)
    _dispatch.clear_caches()
    gen = torch.Generator().manual_seed(3)
    a = randn(50, 64, gen=gen, dtype=torch.bfloat16)
    b = randn(100, 64, gen=gen, dtype=torch.bfloat16).T     # an nn.Linear weight: a transposed descriptor
    try:
        with _device.override_device("NVIDIA H100 80GB HBM3", (9, 0)):
            d = _dispatch.decide("matmul", (a, b), {})
            assert d.use_kernel and d.resolution.variant == "tma_persistent", d
            assert d.resolution.config == config
            fn, _ = _dispatch.kernel_entry("matmul", "tma_persistent", VARIANT.sha256)
            assert fn.__code__.co_filename == str(VARIANT.path)
            assert_matches(K.matmul(a, b), a, b)
            assert not K.dispatch_failures(), K.dispatch_failures()
    finally:
        _dispatch.clear_caches()
    assert json.loads((tmp_path / "matmul" / "configs" / "h100-sxm.json").read_text())["entries"][0]["variant"] \
        == "tma_persistent"
