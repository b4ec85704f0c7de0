"""The inputs reach the cases naive kernels get wrong.

Two halves. (1) Each op's strategy really draws each hard input class: sliced and row-step
layouts (NaN in the gaps), masked -inf logits, rows with a large common offset, more rows than
a grid cap, more columns than one capped tile, ranks 1 and 4, empty dims, and a bench-size
case when the budget allows it. (2) A naive-but-plausible candidate that is right on the old
inputs is wrong on the new class, and ``verify`` rejects it with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from kernelagent.kernels import spec as kspec
from kernelagent.kernels.registry import get_opspec, kernel_path, op_names
from kernelagent.kernels.spec import SINGLE_TILE_CAP, Case

CPU_BUDGET = 1 << 15       # the CPU lane's max_numel (KERNELAGENT_CPU_MAX_NUMEL default)
GPU_BUDGET = 1 << 24       # the GPU lane's

pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]

interpreter_only = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter lane only")


def draws(op: str, max_numel: int = CPU_BUDGET, n: int = 400, seed: int = 0) -> list[Case]:
    """n Cases from the op's own strategy (generation only: no inputs are built)."""
    out: list[Case] = []

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(get_opspec(op).strategy(max_numel))
    def collect(case):
        out.append(case)

    collect()
    return out


ROW_OPS = ["softmax", "rms_norm", "layer_norm", "silu_mul"]


# ---------------------------------------------------------------------------------------------
# (1) The strategies draw every class.


@pytest.mark.parametrize("op", op_names())
def test_every_op_draws_the_sliced_and_row_step_layouts(op):
    cases = draws(op, n=300)
    layouts = {c.layout for c in cases} | {c.params.get("layout_b") for c in cases}
    assert {"sliced", "row_step"} <= layouts, f"{op}: layouts drawn {sorted(map(str, layouts))}"


@pytest.mark.parametrize("op", ROW_OPS)
def test_row_ops_draw_wide_rows_many_rows_and_ranks_one_and_four(op):
    cases = draws(op, n=1000)  # a 1025-row case is about 1 draw in 100 (it costs seconds to run)
    params = [c.params for c in cases]
    plain_rows = 256 if op == "silu_mul" else 64
    assert any(p["cols"] > SINGLE_TILE_CAP for p in params), "no row wider than one capped tile"
    assert any(p["rows"] > 1024 for p in params), "no row count past a 1024-program grid cap"
    assert any(p["rows"] > plain_rows and p["cols"] <= 64 for p in params), "no many-narrow-rows case"
    assert any(p.get("rank") == 1 for p in params), "no rank-1 input"
    assert any(isinstance(p.get("batch"), list) and len(p["batch"]) == 2 for p in params), "no rank-4 input"
    # and every draw stays within the element budget
    for c in cases[:150]:
        assert math.prod(kspec.row_shape(c.params)) <= CPU_BUDGET


@pytest.mark.parametrize("op,mode_key", [("softmax", "neg_inf"), ("cross_entropy", "neg_inf")])
def test_logit_ops_draw_masked_minus_inf(op, mode_key):
    modes = {c.params.get(mode_key) for c in draws(op, n=200)}
    assert {"some", "all_but_one"} <= modes


@pytest.mark.parametrize("op", ["softmax", "cross_entropy"])
def test_masked_rows_keep_the_reference_finite(op):
    spec = get_opspec(op)
    seen = set()
    for case in draws(op, n=200):
        mode = case.params.get("neg_inf")
        if not mode or (op == "softmax" and math.prod(kspec.row_shape(case.params)) > 4096):
            continue
        call = spec.build(case)
        x = call.args[0]
        if mode == "all_but_one":
            assert bool((torch.isfinite(x).sum(-1) == 1).all()), "all but one entry per row is -inf"
        ref = spec.reference(*[a.double() if a.is_floating_point() else a for a in call.args], **call.kwargs)
        assert bool(torch.isfinite(ref).all()), case.describe()
        seen.add(mode)
    assert seen == {"some", "all_but_one"}


def test_cross_entropy_draws_rows_past_the_mean_block():
    # The shipped kernel's final mean reads 1024 losses per step: more rows take a loop.
    assert any(c.params["rows"] > 1024 for c in draws("cross_entropy", n=1000))


@pytest.mark.parametrize("op", ["rms_norm", "layer_norm"])
def test_norm_ops_draw_rows_with_a_large_common_offset(op):
    cases = [c for c in draws(op, n=400) if c.params.get("offset")]
    assert {c.dtype for c in cases} == {"fp32", "fp16", "bf16"}
    case = next(c for c in cases if c.dtype == "fp32" and math.prod(kspec.row_shape(c.params)) > 1)
    x = get_opspec(op).build(case).args[0].double()
    mean, std = x.mean(), x.std()
    assert mean > 1e3 * std, f"mean {mean:.3g} is not far larger than the spread {std:.3g}"


def test_new_layouts_have_the_strides_they_promise_and_nan_gaps():
    gen = kspec.generator(0)
    s = kspec.tensor((5, 7), "fp32", "normal", 1.0, gen, "sliced")
    assert s.stride() == (10, 1) and s.storage_offset() == 1
    r = kspec.tensor((5, 7), "bf16", "normal", 1.0, gen, "row_step")
    assert r.stride() == (14, 1)
    r4 = kspec.tensor((2, 3, 4, 6), "fp16", "normal", 1.0, gen, "row_step")
    assert r4.stride() == (2 * 3 * 4 * 6, 2 * 4 * 6, 2 * 6, 1)
    assert r4.reshape(-1, 6).stride() == (12, 1)  # flattening keeps the gaps: no copy hides them
    for t in (s, r, r4):
        assert bool(torch.isfinite(t).all())
        base = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage())
        assert int(torch.isnan(base).sum()) == base.numel() - t.numel()  # every gap is NaN
    # Same seed, same values whatever the layout (the new layouts copy the logical tensor).
    a = kspec.tensor((3, 4), "fp32", "normal", 1.0, kspec.generator(1), "contiguous")
    b = kspec.tensor((3, 4), "fp32", "normal", 1.0, kspec.generator(1), "sliced")
    assert torch.equal(a, b)


@pytest.mark.parametrize("op", op_names())
def test_a_large_budget_draws_a_bench_case(op):
    spec = get_opspec(op)
    # Ops whose bench inputs are all larger than the GPU lane's 2**24 draw them once the budget
    # covers the smallest (a bigger-memory lane); below that they cannot.
    fits = op in ("softmax", "rms_norm", "layer_norm", "rope", "matmul")
    budget = GPU_BUDGET if fits else min(_bench_numel(op, c) for c in spec.bench_cases)
    bench = [dict(c) for c in spec.bench_cases]

    def is_bench(p):  # a bench case, perhaps with a class on top (an offset, GQA heads)
        return any(all(p.get(k) == v for k, v in c.items() if k not in ("heads_kv",)) for c in bench)

    drawn = [dict(c.params) for c in draws(op, max_numel=budget, n=150)]
    assert any(is_bench(p) for p in drawn), f"{op}: no bench case drawn at max_numel={budget}"
    if not fits:
        small = [dict(c.params) for c in draws(op, max_numel=GPU_BUDGET, n=100)]
        assert not any(is_bench(p) for p in small)


def _bench_numel(op: str, c) -> int:
    if op == "cross_entropy":
        return c["rows"] * c["vocab"]
    if op == "attention":
        return c["batch"] * c["heads"] * max(c["seq"], c["seq_kv"]) * c["head_dim"]
    if op == "matmul":
        return max(c["batch"], 1) * max(c["M"] * c["K"], c["K"] * c["N"], c["M"] * c["N"])
    if op == "rope":
        return c["batch"] * c["heads"] * c["seq"] * c["head_dim"]
    return math.prod(kspec.row_shape(c))


# ---------------------------------------------------------------------------------------------
# Empty dims: drawn when EMPTY_CASES is on; the shipped kernels handle them.

EMPTY_OPS = ["softmax", "rms_norm", "layer_norm", "silu_mul", "rope", "matmul", "attention"]


def _load(path_or_source, name: str):
    source = path_or_source.read_text() if hasattr(path_or_source, "read_text") else path_or_source
    path = f"/tmp/{name}.py"
    with open(path, "w") as f:  # triton.jit reads the source from the file
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _is_empty(op: str, case: Case) -> bool:
    spec = get_opspec(op)
    call = spec.build(case)
    ref = spec.reference(*call.args, **call.kwargs)
    return ref.numel() == 0


@interpreter_only
@pytest.mark.parametrize("op", EMPTY_OPS)
def test_empty_dims_are_drawn_and_the_shipped_kernels_return_empty_outputs(op, monkeypatch):
    monkeypatch.setattr(kspec, "EMPTY_CASES", True)
    spec = get_opspec(op)
    cases = [c for c in draws(op, n=300) if _is_empty(op, c)]
    assert cases, f"{op}: no empty case drawn with EMPTY_CASES on"
    fn = getattr(_load(kernel_path(op), f"shipped_{op}_empty"), op)
    for case in cases[:25]:
        call = spec.build(case)
        ref = spec.reference(*call.args, **call.kwargs)
        out = fn(*call.args, **call.kwargs)
        assert type(out) is torch.Tensor and out.shape == ref.shape and out.dtype == ref.dtype, case.describe()
    monkeypatch.setattr(kspec, "EMPTY_CASES", False)
    assert not any(_is_empty(op, c) for c in draws(op, n=100))


# Empty-output cases stay off until the harness accepts them. Today the worker dies mapping
# an empty shared-input file (mmap "length is greater than file size": verdict crash), and
# verify.py then demands a launch of the candidate's kernel that wrote the output (launches
# >= 1, out_launched) where a correct kernel launches nothing for an empty output. This test
# becomes an unexpected pass (a failure: strict) once fixed; then set spec.EMPTY_CASES = True.
@interpreter_only
@pytest.mark.xfail(strict=True, reason="the harness rejects a correct kernel on an empty input "
                   "(worker crash on an empty shared file; no-kernel when nothing is launched)")
def test_verify_accepts_a_correct_kernel_on_an_empty_input():
    from kernelagent.harness import verify

    empty = dataclasses.replace(get_opspec("softmax"), strategy=lambda max_numel: st.just(
        Case(params={"batch": 0, "rows": 0, "cols": 7})))
    nonempty = Case(params={"batch": 0, "rows": 3, "cols": 7})
    both = dataclasses.replace(empty, strategy=lambda max_numel: st.sampled_from(
        [nonempty, Case(params={"batch": 0, "rows": 0, "cols": 7})]))
    verdict = verify(both, kernel_path("softmax").read_text(), examples=4, seed=1)
    assert verdict.verified, f"{verdict.reason}: {verdict.detail}"


# ---------------------------------------------------------------------------------------------
# (2) Naive-but-plausible candidates: right on the old inputs, wrong on a new class, rejected.

# Copies strided/transposed inputs (stride(-1) != 1) but assumes a unit-stride row is dense:
# row r starts at r * n_cols. Sliced rows (row stride n + 3) and row-step views break that.
SOFTMAX_DENSE_ROWS = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * n_cols + offs, mask=mask, other=-float("inf")).to(tl.float32)
    e = tl.where(mask, tl.exp(x - tl.max(x, axis=0)), 0.0)
    tl.store(y_ptr + row * n_cols + offs, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty), mask=mask)


def softmax(x):
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.shape[-1]
    if x.stride(-1) != 1:
        x = x.contiguous()
    x2 = x.reshape(-1, n)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    _softmax_kernel[(x2.shape[0],)](x2, y, n, BLOCK=triton.next_power_of_2(n))
    return y.reshape(x.shape)
'''

# Online softmax over 128-wide tiles with a scalar running max, no guard for a tile that is
# all -inf: exp(m_old - m_new) = exp(-inf - -inf) = NaN when a row's first tile is masked.
SOFTMAX_ONLINE_UNGUARDED = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, n_cols, stride_r, stride_c, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    m = -float("inf")
    l = 0.0
    for start in range(0, n_cols, BLOCK):
        cols = start + offs
        x = tl.load(x_ptr + row * stride_r + cols * stride_c, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    for start in range(0, n_cols, BLOCK):
        cols = start + offs
        x = tl.load(x_ptr + row * stride_r + cols * stride_c, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        tl.store(y_ptr + row * n_cols + cols, (tl.exp(x - m) / l).to(y_ptr.dtype.element_ty), mask=cols < n_cols)


def softmax(x):
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    _softmax_kernel[(x2.shape[0],)](x2, y, n, x2.stride(0), x2.stride(1), BLOCK=128)
    return y.reshape(x.shape)
'''

# One pass: var = E[x^2] - E[x]^2 in fp32 (clamped at 0). Fine for data near zero; noise
# when the mean is far larger than the spread.
LAYER_NORM_ONE_PASS = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _ln_kernel(x_ptr, w_ptr, b_ptr, y_ptr, n_cols, eps, stride_r, stride_c, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    s1 = tl.zeros([BLOCK], tl.float32)
    s2 = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + offs
        x = tl.load(x_ptr + row * stride_r + cols * stride_c, mask=cols < n_cols, other=0.0).to(tl.float32)
        s1 += x
        s2 += x * x
    mean = tl.sum(s1, axis=0) / n_cols
    var = tl.maximum(tl.sum(s2, axis=0) / n_cols - mean * mean, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    for start in range(0, n_cols, BLOCK):
        cols = start + offs
        mask = cols < n_cols
        x = tl.load(x_ptr + row * stride_r + cols * stride_c, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * n_cols + cols, ((x - mean) * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)


def layer_norm(x, weight, bias, eps=1e-5):
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    _ln_kernel[(x2.shape[0],)](x2, weight.contiguous(), bias.contiguous(), y, n, eps,
                               x2.stride(0), x2.stride(1), BLOCK=min(triton.next_power_of_2(n), 1024))
    return y.reshape(x.shape)
'''

# One tile per row, capped at 16384 lanes: columns past the cap are never read or written.
RMS_NORM_CAPPED_TILE = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _rms_kernel(x_ptr, w_ptr, y_ptr, n_cols, eps, stride_r, stride_c, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * stride_r + offs * stride_c, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * n_cols + offs, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def rms_norm(x, weight, eps=1e-6):
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    block = min(triton.next_power_of_2(n), 16384)
    _rms_kernel[(x2.shape[0],)](x2, weight.contiguous(), y, n, eps, x2.stride(0), x2.stride(1), BLOCK=block)
    return y.reshape(x.shape)
'''

# A grid capped at 1024 programs, one row each, no loop: rows past 1024 are never written.
SOFTMAX_CAPPED_GRID = SOFTMAX_DENSE_ROWS.replace(
    "    if x.stride(-1) != 1:\n        x = x.contiguous()\n", "    x = x.contiguous()\n").replace(
    "_softmax_kernel[(x2.shape[0],)]", "_softmax_kernel[(min(x2.shape[0], 1024),)]")


def _budget_ratio(op: str, call, out) -> float:
    from kernelagent.harness.compare import compare

    spec = get_opspec(op)
    r = spec.reference(*[a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                         for a in call.args], **call.kwargs)
    n = spec.reference(*call.args, **call.kwargs)
    k = spec.tolerance.reduction_length(call) if spec.tolerance.reduction_length else None
    return compare(out, r, n, spec.tolerance, k).worst_ratio


def _right_on(op, fn, cases) -> list[float]:
    spec = get_opspec(op)
    return [_budget_ratio(op, call, fn(*call.args, **call.kwargs)) for call in map(spec.build, cases)]


def _verify(op: str, source: str, examples: int, seed: int):
    from kernelagent.harness import verify

    return verify(op, source, examples=examples, seed=seed)


@interpreter_only
def test_softmax_assuming_dense_rows_is_right_on_old_layouts_and_rejected_on_sliced_ones():
    fn = _load(SOFTMAX_DENSE_ROWS, "naive_softmax_dense").softmax
    params = {"batch": 2, "rows": 5, "cols": 33}
    old = [Case(params=params, layout=lay, seed=3) for lay in ("contiguous", "strided", "transposed")]
    assert max(_right_on("softmax", fn, old)) <= 1.0
    new = [Case(params=params, layout=lay, seed=3) for lay in ("sliced", "row_step")]
    assert min(_right_on("softmax", fn, new)) > 1.0  # inf: it reads the NaN gaps
    verdict = _verify("softmax", SOFTMAX_DENSE_ROWS, examples=8, seed=11)
    assert not verdict.verified and verdict.reason in ("nonfinite", "mismatch"), verdict.detail
    assert verdict.counterexample["layout"] in ("sliced", "row_step")


@interpreter_only
def test_unguarded_online_softmax_is_right_without_masks_and_rejected_on_masked_rows():
    fn = _load(SOFTMAX_ONLINE_UNGUARDED, "naive_softmax_online").softmax
    params = {"batch": 0, "rows": 3, "cols": 1000}
    assert max(_right_on("softmax", fn, [Case(params=params, seed=s) for s in range(3)]
                         + [Case(params=dict(params, neg_inf="some"), seed=1)])) <= 1.0
    masked = Case(params=dict(params, neg_inf="all_but_one"), seed=2)
    assert _right_on("softmax", fn, [masked])[0] > 1.0
    verdict = _verify("softmax", SOFTMAX_ONLINE_UNGUARDED, examples=12, seed=2)  # a seed whose draws include a wide masked row
    assert not verdict.verified and verdict.reason in ("nonfinite", "mismatch"), verdict.detail
    assert verdict.counterexample["params"].get("neg_inf") == "all_but_one"


@interpreter_only
def test_one_pass_layer_norm_variance_is_right_near_zero_and_rejected_on_offset_rows():
    fn = _load(LAYER_NORM_ONE_PASS, "naive_layer_norm").layer_norm
    params = {"batch": 0, "rows": 4, "cols": 1000}
    plain = [Case(params=params, dtype=dt, dist=d, seed=1) for dt in ("fp32", "fp16")
             for d in ("normal", "lognormal", "pareto")]
    assert max(_right_on("layer_norm", fn, plain)) <= 1.0
    offset = [Case(params=dict(params, offset=1e4), dtype="fp32", seed=1),
              Case(params=dict(params, offset=1e3), dtype="fp16", seed=1)]
    assert min(_right_on("layer_norm", fn, offset)) > 1.0
    verdict = _verify("layer_norm", LAYER_NORM_ONE_PASS, examples=12, seed=3)
    assert not verdict.verified and verdict.reason in ("mismatch", "nonfinite"), verdict.detail
    assert verdict.counterexample["params"].get("offset")


@interpreter_only
def test_rms_norm_with_one_capped_tile_is_right_up_to_the_cap_and_rejected_past_it():
    fn = _load(RMS_NORM_CAPPED_TILE, "naive_rms_norm").rms_norm
    assert max(_right_on("rms_norm", fn, [Case(params={"batch": 0, "rows": 2, "cols": c}, seed=1)
                                          for c in (1, 129, SINGLE_TILE_CAP)])) <= 1.0
    assert _right_on("rms_norm", fn, [Case(params={"batch": 0, "rows": 1, "cols": SINGLE_TILE_CAP + 1})])[0] > 1.0
    verdict = _verify("rms_norm", RMS_NORM_CAPPED_TILE, examples=16, seed=2)
    assert not verdict.verified and verdict.reason in ("mismatch", "nonfinite"), verdict.detail
    assert verdict.counterexample["params"]["cols"] > SINGLE_TILE_CAP


@interpreter_only
def test_softmax_with_a_capped_grid_is_wrong_past_the_cap_the_strategy_reaches():
    # Too slow to find through verify on the CPU lane (a 1025-row case is ~1 draw in 100 and
    # costs seconds), so: the strategy reaches the cap, and the kernel is wrong there.
    fn = _load(SOFTMAX_CAPPED_GRID, "naive_softmax_grid").softmax
    assert max(_right_on("softmax", fn, [Case(params={"batch": 0, "rows": 64, "cols": 9}, seed=1)])) <= 1.0
    past = next(c for c in draws("softmax", n=1000) if c.params["rows"] > 1024)
    case = dataclasses.replace(past, params=dict(past.params, cols=min(past.params["cols"], 4)))
    assert _right_on("softmax", fn, [case])[0] > 1.0
