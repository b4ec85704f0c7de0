"""The `model` measurement backend: predicted latency/energy from the spec sheet and the static
compile report. It must be labelled predicted and rank obviously bad configs below good ones."""

from __future__ import annotations

import dataclasses
import math

import pytest

from kernelagent.harness import compile as hc
from kernelagent.kernels import get_opspec, kernel_path, op_names
from kernelagent.kernels.spec import Case
from kernelagent.sku import get_sku
from kernelagent.tuner import model

HAS_MATMUL = "matmul" in op_names()
GOOD = {"BLOCK_N": 4096, "num_warps": 8}
TINY = {"BLOCK_N": 64, "num_warps": 4}
FOUR = {"BLOCK_N": 4096, "num_warps": 4}


def softmax_call(rows=4096, cols=4096, dtype="fp16"):
    return get_opspec("softmax").build(Case(params={"batch": 0, "rows": rows, "cols": cols}, dtype=dtype))


def matmul_call(n):
    return get_opspec("matmul").build(Case(params={"batch": 0, "M": n, "N": n, "K": n, "bias": False,
                                                   "activation": None, "layout_b": "contiguous"}, dtype="fp16"))


def mm(bm, bn, bk, warps, stages):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": warps, "num_stages": stages}


MM_BIG, MM_MID, MM_TINY = mm(128, 128, 64, 8, 3), mm(64, 64, 32, 4, 3), mm(16, 16, 16, 2, 2)
MM_DEEP = mm(128, 128, 64, 4, 7)   # six 32 KiB stages in flight: 192 KiB, over the A100's 163 KiB


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    d = tmp_path_factory.getbasetemp() / "ka-compile-cache"
    d.mkdir(exist_ok=True)
    # Compile everything this module needs in one batch (one child process in the CPU lane);
    # model.estimate then reads the reports from the cache.
    jobs = [("softmax", softmax_call(), GOOD, 90), ("softmax", softmax_call(), TINY, 90),
            ("softmax", softmax_call(), FOUR, 90)]
    if HAS_MATMUL:
        jobs += [("matmul", matmul_call(2048), c, 90) for c in (MM_BIG, MM_MID, MM_TINY)]
        jobs += [("matmul", matmul_call(512), c, 90) for c in (MM_BIG, MM_MID)]
        jobs += [("matmul", matmul_call(2048), c, 80) for c in (MM_DEEP, MM_BIG)]
        jobs += [("matmul", matmul_call(4096), MM_BIG, 90)]
    reqs = []
    for op, call, cfg, arch in jobs:
        src = kernel_path(op)
        path, sha = hc._source_file(src, d)
        for ln in hc.capture_launches(src, op, call.args, dict(call.kwargs), cfg, d):
            reqs.append(ln.request(str(path), sha, arch))
    hc.compile_requests(reqs, cache_dir=d)
    return d


def test_estimate_is_labelled_predicted_with_a_breakdown(cache_dir):
    h100 = get_sku("h100")
    call = softmax_call()
    e = model.estimate("softmax", call, GOOD, h100, cache_dir=cache_dir)
    assert e.predicted is True and e.backend == "model" and e.feasible
    j = e.to_json()
    assert j["predicted"] is True and j["backend"] == "model" and "not measured" in j["conditions"]
    b = e.breakdown
    assert b["bound"] == "memory" and b["programs"] == 4096 and b["registers"] and b["blocks_per_sm"] >= 1
    # Never faster than the roofline, and a good config is within 2x of it.
    ideal = max(b["bytes"] / b["bandwidth_Bps"], b["flops"] / b["peak_flops"])
    assert ideal < e.latency_s < 2 * ideal + 10e-6
    assert 0 < e.energy_j <= h100.power_limit_w * e.latency_s


def test_tiny_tiles_rank_below_a_full_row_tile(cache_dir):
    h100 = get_sku("h100")
    ranked = model.rank("softmax", softmax_call(), [TINY, GOOD], h100, cache_dir=cache_dir)
    assert ranked[0][0] == GOOD
    good, tiny = ranked[0][1], ranked[1][1]
    assert tiny.latency_s > 2 * good.latency_s
    assert tiny.breakdown["inflight_bytes_per_block"] < good.breakdown["inflight_bytes_per_block"]


def test_spilling_ranks_below_the_same_config_without_spills(cache_dir):
    h100 = get_sku("h100")
    call = softmax_call()
    src = kernel_path("softmax")
    ln = hc.capture_launches(src, "softmax", call.args, config=FOUR, cache_dir=cache_dir)[0]
    plain = hc.compile_launches(src, [ln], h100, cache_dir)[0]
    capped_launch = dataclasses.replace(ln, options={**ln.options, "maxnreg": 32})
    spilled = hc.compile_launches(src, [capped_launch], h100, cache_dir)[0]
    assert plain.spill_bytes == 0 and spilled.spill_bytes > 0
    spec = get_opspec("softmax")
    args = (spec.flops(call), spec.bytes(call), "fp16", spec.shape_key(call))
    e_plain = model.estimate_launch(h100, ln, plain, hc.check_feasible(plain, h100), *args)
    e_spill = model.estimate_launch(h100, capped_launch, spilled, hc.check_feasible(spilled, h100), *args)
    assert e_spill.latency_s > 1.5 * e_plain.latency_s
    assert any("spills" in w for w in e_spill.warnings)


def test_higher_bandwidth_sku_is_faster_for_a_memory_bound_op(cache_dir):
    call = softmax_call()
    h100 = model.estimate("softmax", call, GOOD, get_sku("h100"), cache_dir=cache_dir)
    h200 = model.estimate("softmax", call, GOOD, get_sku("h200"), cache_dir=cache_dir)
    ratio = h100.latency_s / h200.latency_s
    assert 1.2 < ratio < 4800 / 3350 + 0.05


def test_amd_sku_uses_the_spec_sheet_alone():
    e = model.estimate("softmax", softmax_call(rows=256, cols=1024), {"BLOCK_N": 1024, "num_warps": 4},
                       get_sku("mi300x"))
    assert e.feasible and math.isfinite(e.latency_s) and e.predicted
    assert any("no static compile" in w for w in e.warnings)
    assert e.breakdown["registers"] is None


def test_infeasible_estimate_has_no_latency():
    h100 = get_sku("h100")
    bad = hc.CompileReport(arch="sm_90", kernel="k", ok=True, registers=32, num_warps=4, shared_bytes=300_000)
    ln = hc.KernelLaunch("k", {}, {"BLOCK_N": 128}, (), {"num_warps": 4}, (1000, 1, 1))
    e = model.estimate_launch(h100, ln, bad, hc.check_feasible(bad, h100), 1e6, 1e6, "fp16", {})
    assert not e.feasible and e.latency_s == math.inf and "smem_per_block_bytes" in e.reason
    assert e.to_json()["latency_s"] is None and e.to_json()["predicted"] is True


def test_tile_quantization():
    assert model.tile_efficiency({"BLOCK_N": 4096}, {"cols": 4096}) == 1.0
    assert model.tile_efficiency({"BLOCK_N": 8192}, {"cols": 4100}) == pytest.approx(4100 / 8192)
    assert model.tile_efficiency({"BLOCK_N": 1024}, {"cols": 4100}) == pytest.approx(4100 / 5120)
    e = model.tile_efficiency({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8},
                              {"M": 200, "N": 256, "K": 64})
    assert e == pytest.approx(200 / 256)


@pytest.mark.skipif(not HAS_MATMUL, reason="matmul op not in the library yet")
def test_matmul_tiny_tiles_and_few_programs_rank_below(cache_dir):
    h100 = get_sku("h100")
    ranked = model.rank("matmul", matmul_call(2048), [MM_TINY, MM_BIG, MM_MID], h100, cache_dir=cache_dir)
    order = [c for c, _ in ranked]
    assert order[-1] == MM_TINY
    big = next(e for c, e in ranked if c == MM_BIG)
    tiny = next(e for c, e in ranked if c == MM_TINY)
    assert big.breakdown["mma"] in ("wgmma", "mma.sync") and big.breakdown["bound"] == "compute"
    assert tiny.latency_s > 2 * big.latency_s
    # 512^3 with 128x128 tiles is 16 programs on 132 SMs; 64x64 gives 64 and wins.
    small = model.rank("matmul", matmul_call(512), [MM_BIG, MM_MID], h100, cache_dir=cache_dir)
    assert small[0][0] == MM_MID
    assert next(e for c, e in small if c == MM_BIG).breakdown["active_sms"] == 16


@pytest.mark.skipif(not HAS_MATMUL, reason="matmul op not in the library yet")
def test_matmul_shared_memory_over_the_sku_limit_is_infeasible(cache_dir):
    a100 = get_sku("a100")
    e = model.estimate("matmul", matmul_call(2048), MM_DEEP, a100, cache_dir=cache_dir)
    assert not e.feasible and "smem_per_block_bytes" in e.reason and e.latency_s == math.inf
    ranked = model.rank("matmul", matmul_call(2048), [MM_DEEP, MM_BIG], a100, cache_dir=cache_dir)
    assert ranked[0][0] == MM_BIG and ranked[-1][0] == MM_DEEP


# ---------------------------------------------------------------------------------------------
# The SM clock and the power limit (what `tune --measure model --system clocks,power-limit` predicts)

def at_clock(op, call, config, sku, cache_dir, fraction=None, power_limit_w=None):
    system = {}
    if fraction is not None:
        system["sm_clock_mhz"] = round(sku.boost_clock_mhz * fraction)
    if power_limit_w is not None:
        system["power_limit_w"] = power_limit_w
    return model.estimate(op, call, config, sku, cache_dir=cache_dir, system=system or None)


def test_memory_bound_softmax_loses_little_time_at_a_lower_sm_clock_and_saves_energy(cache_dir):
    h100 = get_sku("h100")
    spec = get_opspec("softmax")
    call = softmax_call()                                   # its first bench case, 4096 x 4096
    assert spec.bench_cases[0] == {"batch": 0, "rows": 4096, "cols": 4096}
    full = at_clock("softmax", call, GOOD, h100, cache_dir)
    low = at_clock("softmax", call, GOOD, h100, cache_dir, fraction=0.7)
    assert full.breakdown["bound"] == low.breakdown["bound"] == "memory"
    assert low.breakdown["sm_clock_mhz_effective"] == pytest.approx(0.7 * h100.boost_clock_mhz, abs=1)
    assert low.latency_s < 1.10 * full.latency_s and low.latency_s >= full.latency_s
    assert low.energy_j < 0.95 * full.energy_j
    assert low.predicted and "predicted" in low.to_json()["conditions"] and "1386 MHz" in low.to_json()["conditions"]
    # no system part is the boost clock and the spec sheet's limit
    boost = at_clock("softmax", call, GOOD, h100, cache_dir, fraction=1.0)
    assert boost.latency_s == full.latency_s and boost.energy_j == full.energy_j


@pytest.mark.skipif(not HAS_MATMUL, reason="matmul op not in the library yet")
def test_compute_bound_matmul_slows_as_one_over_the_clock(cache_dir):
    h100 = get_sku("h100")
    call = matmul_call(4096)
    full = at_clock("matmul", call, MM_BIG, h100, cache_dir)
    assert full.breakdown["bound"] == "compute"
    for f in (0.8, 0.7, 0.5):
        low = at_clock("matmul", call, MM_BIG, h100, cache_dir, fraction=f)
        assert low.latency_s / full.latency_s == pytest.approx(1 / f, rel=0.03)
        assert low.breakdown["power_w"] < full.breakdown["power_w"]


@pytest.mark.skipif(not HAS_MATMUL, reason="matmul op not in the library yet")
def test_a_power_limit_below_the_draw_lowers_the_clock(cache_dir):
    h100 = get_sku("h100")
    call = matmul_call(4096)
    free = at_clock("matmul", call, MM_BIG, h100, cache_dir)
    assert not free.breakdown["power_capped"] and free.breakdown["power_w"] <= h100.power_limit_w
    limit = 0.6 * free.breakdown["power_w"]
    capped = at_clock("matmul", call, MM_BIG, h100, cache_dir, power_limit_w=limit)
    b = capped.breakdown
    assert b["power_capped"] and b["power_w"] == pytest.approx(limit, rel=1e-3)
    assert b["sm_clock_mhz_effective"] < h100.boost_clock_mhz and capped.latency_s > 1.2 * free.latency_s
    assert "power-capped" in capped.to_json()["conditions"]
    # a limit above the draw changes nothing
    roomy = at_clock("matmul", call, MM_BIG, h100, cache_dir, power_limit_w=h100.power_limit_w)
    assert roomy.latency_s == free.latency_s


def test_system_settings_outside_the_model_are_refused():
    h100 = get_sku("h100")
    with pytest.raises(ValueError, match="unknown system settings"):
        model._system_point(h100, {"mem_clock_mhz": 1000})
    with pytest.raises(ValueError, match="below the model's range"):
        model._system_point(h100, {"sm_clock_mhz": 100})
    r, limit, warnings = model._system_point(h100, {"sm_clock_mhz": 2500, "power_limit_w": 500})
    assert r == 1.0 and limit == 500 and "above the spec sheet's boost clock" in warnings[0]
