"""The memory-bound library ops (rms_norm, layer_norm, silu_mul, rope, cross_entropy).

Each op's ``kernel.py`` is imported alone from its file, as the harness imports a candidate,
and checked against its own float64 reference with the error budget documented in
``kernels.spec.Tolerance``. On a machine without CUDA the kernels run through Triton's
interpreter (tests/conftest.py sets TRITON_INTERPRET), so sizes stay small.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from kernelagent.kernels.registry import get_opspec, kernel_path
from kernelagent.kernels.spec import Call, Case, eps

# Triton's interpreter emulates the GPU in numpy, which warns where the GPU silently gives inf
# (exp(-g) for a very negative SiLU gate) or NaN (0/0, the all-ignored cross-entropy).
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")]

OPS = ["rms_norm", "layer_norm", "silu_mul", "rope", "cross_entropy"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def load_kernel_module(op: str):
    spec = importlib.util.spec_from_file_location(f"candidate_{op}", kernel_path(op))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry(op: str):
    return getattr(load_kernel_module(op), op)


def _to_device(a):
    return a.to(DEVICE) if isinstance(a, torch.Tensor) else a


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.pow(2).mean().sqrt()


def budget_ratio(op: str, call: Call, out: torch.Tensor) -> float:
    """max_i |out_i - r_i| / allowed_i, with the Tolerance budget (<= 1 passes).

    r is the float64 reference, n PyTorch's own result in the input dtype. Outputs equal to r
    pass even where the budget is 0 (e.g. a loss of exactly 0). Non-finite values must match
    the reference's exactly.
    """
    spec = get_opspec(op)
    tol = spec.tolerance
    r = spec.reference(*[a.to(torch.float64) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                         for a in call.args], **call.kwargs)
    n = spec.reference(*call.args, **call.kwargs).to(torch.float64)
    o = out.detach().cpu().to(torch.float64)
    finite = torch.isfinite(r)
    if not torch.equal(torch.isfinite(o), finite) or not torch.equal(o[~finite].nan_to_num(), r[~finite].nan_to_num()):
        return math.inf
    r, n, o = r[finite], n[finite], o[finite]
    if r.numel() == 0:
        return 0.0
    k = tol.reduction_length(call) if tol.reduction_length is not None else 0
    d = n - r
    allowed = (tol.ulps * eps(out.dtype) * (r.abs() + _rms(r))
               + tol.torch_factor * (d.abs() + _rms(d))
               + tol.ulps * eps(torch.float32) * math.sqrt(k) * _rms(r))
    err = (o - r).abs()
    ratio = torch.where(err == 0, torch.zeros_like(err), err / allowed)
    return float(ratio.max())


def run_and_check(op: str, call: Call, config: dict | None = None) -> torch.Tensor:
    spec = get_opspec(op)
    args = tuple(_to_device(a) for a in call.args)
    out = entry(op)(*args, **call.kwargs, config=config)
    expected = spec.reference(*call.args, **call.kwargs)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == expected.dtype, f"{op}: dtype {out.dtype}, reference {expected.dtype}"
    assert out.shape == expected.shape, f"{op}: shape {tuple(out.shape)}, reference {tuple(expected.shape)}"
    for a in args:
        if isinstance(a, torch.Tensor) and a.numel():
            same = out.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()
            assert not same, f"{op} returned an input's storage"
    ratio = budget_ratio(op, call, out)
    assert ratio <= 1.0, f"{op}: error {ratio:.3g}x the budget (config={config})"
    return out


def case_call(op: str, params: dict, dtype="fp32", layout="contiguous", dist="normal", scale=1.0, seed=0) -> Call:
    return get_opspec(op).build(Case(params=params, dtype=dtype, layout=layout, dist=dist, scale=scale, seed=seed))


# ---------------------------------------------------------------------------------------------
# Property-based: the op's own strategy, at interpreter-friendly sizes.


@pytest.mark.parametrize("op", OPS)
def test_matches_float64_reference_within_budget(op):
    spec = get_opspec(op)

    @settings(deadline=None, max_examples=15, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(spec.strategy(2**14))
    def check(case):
        run_and_check(op, spec.build(case))

    check()


# ---------------------------------------------------------------------------------------------
# The budget helper is a real check.


def test_budget_rejects_wrong_answers():
    call = case_call("rms_norm", {"batch": 0, "rows": 4, "cols": 129})
    good = entry("rms_norm")(*call.args)
    assert budget_ratio("rms_norm", call, good) <= 1.0
    assert budget_ratio("rms_norm", call, good * (1 + 1e-3)) > 1.0
    assert budget_ratio("rms_norm", call, torch.zeros_like(good)) > 1.0
    # Forgetting the weight is caught too.
    unweighted = entry("rms_norm")(call.args[0], torch.ones_like(call.args[1]))
    assert budget_ratio("rms_norm", call, unweighted) > 1.0

    ce = case_call("cross_entropy", {"rows": 6, "vocab": 300, "ignore_index": -100})
    loss = entry("cross_entropy")(*ce.args)
    assert budget_ratio("cross_entropy", ce, loss) <= 1.0
    # Averaging over all rows instead of the non-ignored ones is a different number.
    wrong_mean = loss * (ce.args[1] != -100).sum() / ce.args[1].numel()
    assert budget_ratio("cross_entropy", ce, wrong_mean) > 1.0
    assert budget_ratio("cross_entropy", ce, torch.tensor(float("nan"))) == math.inf


# ---------------------------------------------------------------------------------------------
# Edge cases: awkward sizes, layouts, and non-default configs from each tuning space.


@pytest.mark.parametrize("cols", [1, 127, 4097])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_rms_norm_sizes(cols, dtype):
    run_and_check("rms_norm", case_call("rms_norm", {"batch": 0, "rows": 3, "cols": cols}, dtype=dtype))


@pytest.mark.parametrize("config", [{"BLOCK_N": 64, "num_warps": 1}, {"BLOCK_N": 1024, "num_warps": 8},
                                    {"BLOCK_N": 16384, "num_warps": 32}])
@pytest.mark.parametrize("layout", ["strided", "transposed"])
def test_rms_norm_configs_and_layouts(config, layout):
    call = case_call("rms_norm", {"batch": 2, "rows": 3, "cols": 4097}, dtype="fp16", layout=layout, dist="pareto")
    run_and_check("rms_norm", call, config=config)


@pytest.mark.parametrize("config", [None, {"BLOCK_N": 256, "num_warps": 2}])
@pytest.mark.parametrize("cols", [1, 129, 4097])
def test_layer_norm_sizes_and_configs(cols, config):
    run_and_check("layer_norm", case_call("layer_norm", {"batch": 0, "rows": 3, "cols": cols}, dtype="bf16",
                                          layout="strided"), config=config)


@pytest.mark.parametrize("config", [None, {"BLOCK_N": 128, "num_warps": 4}])
def test_layer_norm_large_common_offset(config):
    # mean 1e4, std 1 in fp32: the naive E[x^2] - E[x]^2 or an unshifted mean loses the result.
    x = (1e4 + torch.randn(4, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).float()
    w, b = torch.randn(1000), torch.randn(1000)
    run_and_check("layer_norm", Call(args=(x, w, b)), config=config)


def test_layer_norm_without_affine():
    x = torch.randn(5, 300)
    run_and_check("layer_norm", Call(args=(x, None, None)))
    run_and_check("layer_norm", Call(args=(x, torch.randn(300), None), kwargs={"eps": 1e-3}),
                  config={"BLOCK_N": 64, "num_warps": 1})


@pytest.mark.parametrize("shape", [(1, 1), (3, 4097), (2, 3, 129), (5,), ()])
def test_silu_mul_shapes(shape):
    g = torch.randn(shape, dtype=torch.float64).to(torch.bfloat16)
    u = torch.randn(shape, dtype=torch.float64).to(torch.bfloat16)
    run_and_check("silu_mul", Call(args=(g, u)))


@pytest.mark.parametrize("config", [{"BLOCK_M": 8, "BLOCK_N": 32, "num_warps": 1},
                                    {"BLOCK_M": 1, "BLOCK_N": 4096, "num_warps": 16}])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_silu_mul_configs(config, layout):
    call = case_call("silu_mul", {"batch": 2, "rows": 9, "cols": 257}, dtype="fp16", layout=layout, dist="laplace")
    run_and_check("silu_mul", call, config=config)


def test_silu_mul_extreme_gates():
    g = torch.tensor([[-1e4, -100.0, -88.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 100.0, 1e4]])
    run_and_check("silu_mul", Call(args=(g, torch.ones_like(g))))


@pytest.mark.parametrize("config", [None, {"BLOCK_S": 1, "num_warps": 1}, {"BLOCK_S": 128, "num_warps": 8}])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
def test_rope_configs_and_layouts(config, layout):
    call = case_call("rope", {"batch": 2, "heads": 2, "seq": 33, "head_dim": 34}, dtype="bf16", layout=layout)
    run_and_check("rope", call, config=config)


@pytest.mark.parametrize("op,args", [
    ("rope", (torch.randn(1, 2, 5, 8).bfloat16(), torch.randn(5, 4), torch.randn(5, 4))),
    ("rope", (torch.randn(1, 2, 5, 8).half(), torch.randn(5, 4).bfloat16(), torch.randn(5, 4).bfloat16())),
    ("silu_mul", (torch.randn(3, 7).half(), torch.randn(3, 7).bfloat16())),
])
def test_mixed_dtypes_promote_like_pytorch(op, args):
    run_and_check(op, Call(args=args))


def test_rope_smallest():
    run_and_check("rope", case_call("rope", {"batch": 1, "heads": 1, "seq": 1, "head_dim": 2}, dtype="fp16"))


@pytest.mark.parametrize("vocab", [1, 2, 4097])
def test_cross_entropy_sizes(vocab):
    run_and_check("cross_entropy", case_call("cross_entropy", {"rows": 5, "vocab": vocab, "ignore_index": -100},
                                             dtype="bf16", scale=30.0))


@pytest.mark.parametrize("config", [{"BLOCK_V": 256, "num_warps": 1}, {"BLOCK_V": 32768, "num_warps": 32}])
def test_cross_entropy_configs_large_logits(config):
    call = case_call("cross_entropy", {"rows": 4, "vocab": 5000, "ignore_index": -1}, layout="transposed",
                     scale=1000.0)
    run_and_check("cross_entropy", call, config=config)


def test_cross_entropy_llama3_vocab():
    # The vocab streams through in chunks: 128256 logits per row never sit on chip at once.
    run_and_check("cross_entropy", case_call("cross_entropy", {"rows": 2, "vocab": 128256, "ignore_index": -100},
                                             dtype="bf16", scale=30.0, seed=3))


def test_cross_entropy_ignored_rows_neg_inf_logits_and_strided_target():
    logits = torch.randn(6, 50)
    logits[1, 10:] = -float("inf")      # masked-out vocab entries
    logits[2, :] = -float("inf")        # a fully masked row, ignored below
    target = torch.tensor([[3, 0], [4, 0], [-100, 0], [7, 0], [0, 0], [-100, 0]])[:, 0]   # stride 2
    assert target.stride(0) == 2 and target[2] == -100
    run_and_check("cross_entropy", Call(args=(logits, target)))


def test_cross_entropy_all_ignored_is_nan_like_torch():
    logits = torch.randn(3, 10)
    target = torch.full((3,), -100, dtype=torch.int64)
    out = entry("cross_entropy")(logits, target)
    assert out.shape == () and torch.isnan(out)
    assert torch.isnan(torch.nn.functional.cross_entropy(logits, target))


def test_cross_entropy_is_bitwise_deterministic_and_fresh():
    call = case_call("cross_entropy", {"rows": 9, "vocab": 3000, "ignore_index": 0}, dtype="fp32", scale=30.0)
    a = entry("cross_entropy")(*call.args, config={"BLOCK_V": 512, "num_warps": 4})
    b = entry("cross_entropy")(*call.args, config={"BLOCK_V": 512, "num_warps": 4})
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert a.data_ptr() != b.data_ptr()


# ---------------------------------------------------------------------------------------------
# Inputs the kernels refuse, with a message.


@pytest.mark.parametrize("op,args", [
    ("rms_norm", (torch.randn(4, 8), torch.randn(7))),
    ("layer_norm", (torch.randn(4, 8), torch.randn(8), torch.randn(9))),
    ("silu_mul", (torch.randn(4, 8), torch.randn(4, 9))),
    ("rope", (torch.randn(1, 2, 3, 8), torch.randn(3, 4), torch.randn(3, 8))),
    ("rope", (torch.randn(1, 2, 3, 7), torch.randn(3, 3), torch.randn(3, 3))),
    ("rope", (torch.randn(2, 3, 8), torch.randn(3, 4), torch.randn(3, 4))),
    ("cross_entropy", (torch.randn(4, 8), torch.zeros(5, dtype=torch.int64))),
    ("cross_entropy", (torch.randn(4, 8), torch.zeros(4, dtype=torch.int32))),
    ("cross_entropy", (torch.randn(2, 4, 8), torch.zeros(2, dtype=torch.int64))),
])
def test_rejects_bad_shapes(op, args):
    with pytest.raises(ValueError, match=op):
        entry(op)(*args)


@pytest.mark.parametrize("op,args,config", [
    ("rms_norm", (torch.randn(2, 8), torch.randn(8)), {"BLOCK_N": 100}),
    ("layer_norm", (torch.randn(2, 8), None, None), {"num_warps": 3}),
    ("silu_mul", (torch.randn(2, 8), torch.randn(2, 8)), {"BLOCK_M": 0}),
    ("rope", (torch.randn(1, 1, 2, 8), torch.randn(2, 4), torch.randn(2, 4)), {"BLOCK_S": 48}),
    ("cross_entropy", (torch.randn(2, 8), torch.zeros(2, dtype=torch.int64)), {"BLOCK_V": 1000}),
])
def test_rejects_configs_that_are_not_powers_of_two(op, args, config):
    with pytest.raises(ValueError, match="power of two"):
        entry(op)(*args, config=config)


# ---------------------------------------------------------------------------------------------
# Spec consistency: what the library and tuner read matches what the kernel does.


@pytest.mark.parametrize("op,key_name,sizes", [
    ("rms_norm", "cols", [1, 100, 4096, 100000]), ("layer_norm", "cols", [1, 100, 4096, 100000]),
    ("silu_mul", "cols", [1, 100, 14336]), ("rope", "head_dim", [2, 64, 128, 256]),
    ("cross_entropy", "vocab", [1, 1000, 128256]),
])
def test_spec_default_config_matches_kernel(op, key_name, sizes):
    spec = get_opspec(op)
    for size in sizes:
        assert spec.default_config({key_name: size}) == load_kernel_module(op).default_config(size)


@pytest.mark.parametrize("op", OPS)
def test_bench_cases_build_keys_and_default_configs_are_valid(op):
    spec = get_opspec(op)
    names = spec.tuning_space.names()
    for params in spec.bench_cases:
        # Building a real LLM-size case is too big for this lane; shape_key needs only shapes.
        small = {k: (min(v, 8) if k in ("rows", "batch", "heads", "seq") else v) for k, v in params.items()}
        call = spec.build(Case(params=small))
        key = spec.shape_key(call)
        cfg = spec.default_config(key)
        assert sorted(cfg) == sorted(names)
        for p in spec.tuning_space.params:
            assert cfg[p.name] in p.values, f"{op}: default {p.name}={cfg[p.name]} is outside the tuning space"
        assert spec.tuning_space.constraint(cfg, {**params, **key}) is None
        assert spec.flops(call) > 0 and spec.bytes(call) > 0


def test_cross_entropy_cases_ignore_some_rows_never_all():
    spec = get_opspec("cross_entropy")
    for seed in range(20):
        for rows, ignore_index in [(2, -100), (7, 0), (64, -1)]:
            call = spec.build(Case(params={"rows": rows, "vocab": 11, "ignore_index": ignore_index}, seed=seed))
            ignored = int((call.args[1] == ignore_index).sum())
            assert 1 <= ignored < rows
            valid = call.args[1][call.args[1] != ignore_index]
            assert bool(((valid >= 0) & (valid < 11)).all())


# ---------------------------------------------------------------------------------------------
# Several narrow rows per program (ROWS): the row count is rarely a multiple of ROWS.


@pytest.mark.parametrize("op", ["softmax", "rms_norm", "layer_norm"])
@pytest.mark.parametrize("rows, cols, config", [
    (37, 100, {"BLOCK_N": 128, "num_warps": 4, "ROWS": 16}),
    (5, 64, {"BLOCK_N": 64, "num_warps": 1, "ROWS": 8}),
    (66, 200, {"BLOCK_N": 256, "num_warps": 2, "ROWS": 4}),
    (9, 700, {"BLOCK_N": 256, "num_warps": 4, "ROWS": 16}),   # several tiles a row: ROWS is ignored
    (40, 96, None),                                             # the default: 16 rows of 128 lanes
])
def test_row_kernels_tile_several_narrow_rows(op, rows, cols, config):
    call = case_call(op, {"batch": 0, "rows": rows, "cols": cols}, dtype="bf16", layout="strided", seed=rows)
    run_and_check(op, call, config=config)


@pytest.mark.parametrize("op", ["softmax", "rms_norm", "layer_norm"])
def test_narrow_rows_share_a_program_by_default(op):
    from kernelagent.harness.compile import capture_launches
    from kernelagent.kernels import kernel_path

    call = case_call(op, {"batch": 0, "rows": 1000, "cols": 96}, dtype="bf16")
    (launch,) = capture_launches(kernel_path(op), op, call.args, dict(call.kwargs), None)
    assert launch.constexprs["ROWS"] == 16 and tuple(launch.grid)[0] == 63   # ceil(1000 / 16) programs
    wide = case_call(op, {"batch": 0, "rows": 10, "cols": 4096}, dtype="bf16")
    (launch,) = capture_launches(kernel_path(op), op, wide.args, dict(wide.kwargs), None)
    assert launch.constexprs["ROWS"] == 1 and tuple(launch.grid)[0] == 10
    assert get_opspec(op).tuning_space.constraint is not None
    assert get_opspec(op).tuning_space.constraint({"BLOCK_N": 256, "num_warps": 4, "ROWS": 4}, {"cols": 4096})
