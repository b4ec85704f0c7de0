"""Static targeting: compile the softmax kernel for sm_80 / sm_90 with no GPU, read shared memory,
registers and spills, check feasibility against SKUs, and hit the disk cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kernelagent.errors import BadInput
from kernelagent.harness import compile as hc
from kernelagent.kernels import get_opspec, kernel_path
from kernelagent.kernels.spec import Case
from kernelagent.sku import get_sku

GOOD = {"BLOCK_N": 4096, "num_warps": 8}
ABSURD = {"BLOCK_N": 1 << 21, "num_warps": 4}   # past Triton's 2**20-element tensor limit


def softmax_call(rows=64, cols=4096, dtype="fp16"):
    return get_opspec("softmax").build(Case(params={"batch": 0, "rows": rows, "cols": cols}, dtype=dtype))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # Shared by name with test_model_backend.py, so one session compiles each kernel once.
    d = tmp_path_factory.getbasetemp() / "ka-compile-cache"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def compiled(cache_dir):
    """One batch (one child process under the interpreter lane) for the whole module."""
    src = kernel_path("softmax")
    path, sha = hc._source_file(src, cache_dir)
    good = hc.capture_launches(src, "softmax", softmax_call().args, config=GOOD, cache_dir=cache_dir)[0]
    absurd = hc.capture_launches(src, "softmax", softmax_call().args, config=ABSURD, cache_dir=cache_dir)[0]
    # 32 fp16 elements per thread need ~46 registers; capping at 32 forces spills quickly.
    four = hc.capture_launches(src, "softmax", softmax_call().args, config={"BLOCK_N": 4096, "num_warps": 4},
                               cache_dir=cache_dir)[0]
    capped = four.request(str(path), sha, 90)
    capped = hc.CompileRequest(**{**capped.__dict__, "options": {**capped.options, "maxnreg": 32}})
    reqs = {"sm80": good.request(str(path), sha, 80), "sm90": good.request(str(path), sha, 90),
            "absurd": absurd.request(str(path), sha, 90), "capped": capped}
    t0 = time.perf_counter()
    reports = hc.compile_requests(list(reqs.values()), cache_dir=cache_dir)
    first_s = time.perf_counter() - t0
    return {"reqs": reqs, "reports": dict(zip(reqs, reports)), "first_s": first_s, "launch": good}


def test_capture_types_the_signature_like_triton():
    launch = hc.capture_launches(kernel_path("softmax"), "softmax", softmax_call(rows=37, cols=1000).args,
                                 config={"BLOCK_N": 1024, "num_warps": 4, "ROWS": 1})
    assert len(launch) == 1
    ln = launch[0]
    assert ln.fn_name == "_softmax_fwd_kernel" and ln.grid == (37, 1, 1) and ln.programs == 37
    assert ln.signature["x_ptr"] == "*fp16" and ln.signature["y_ptr"] == "*fp16"
    assert ln.signature["n_cols"] == "i32"
    # stride_xc == 1 is specialised to a constexpr, as Triton's launcher does.
    assert ln.signature["stride_xc"] == "constexpr" and ln.constexprs["stride_xc"] == 1
    assert ln.constexprs["BLOCK_N"] == 1024 and ln.constexprs["SINGLE_TILE"] is True
    assert ln.options["num_warps"] == 4
    assert "x_ptr" in ln.aligned and "n_cols" not in ln.aligned  # 1000 % 16 != 0


def test_capture_bf16_and_strided_layout():
    call = get_opspec("softmax").build(Case(params={"batch": 2, "rows": 3, "cols": 100}, dtype="bf16",
                                            layout="strided"))
    ln = hc.capture_launches(kernel_path("softmax"), "softmax", call.args, config={"BLOCK_N": 128, "num_warps": 2})[0]
    assert ln.signature["x_ptr"] == "*bf16" and ln.signature["stride_xc"] == "i32"  # stride 2, not specialised
    assert ln.grid[0] == 1 and ln.constexprs["ROWS"] == 16    # 6 narrow rows share one program (default ROWS)


def test_static_compile_sm80_and_sm90(compiled):
    for key, arch in (("sm80", "sm_80"), ("sm90", "sm_90")):
        r = compiled["reports"][key]
        assert r.ok, r.error
        assert r.arch == arch and r.kernel == "_softmax_fwd_kernel"
        assert 16 <= r.registers <= 128          # 16 fp16 elements per thread, no spills
        assert r.spill_bytes == 0
        assert 0 < r.shared_bytes <= 1024         # reduction scratch only
        assert r.num_warps == 8 and r.mma == "none"
    assert get_sku("a100").arch == "sm_80"
    f80 = hc.check_feasible(compiled["reports"]["sm80"], get_sku("a100"))
    f90 = hc.check_feasible(compiled["reports"]["sm90"], get_sku("h100"))
    assert f80.feasible and f90.feasible
    assert f90.blocks_per_sm == 8 and f90.limited_by == "threads"   # 2048 threads / 256


def test_absurd_block_is_infeasible_with_a_reason(compiled):
    r = compiled["reports"]["absurd"]
    assert not r.ok and r.failure == "compile"
    f = hc.check_feasible(r, get_sku("h100"))
    assert not f.feasible and "numel" in f.reasons[0]


def test_register_cap_spills_and_is_reported(compiled):
    r = compiled["reports"]["capped"]
    assert r.ok and r.registers <= 32
    assert r.spill_store_bytes > 0 and r.spill_load_bytes > 0
    f = hc.check_feasible(r, get_sku("h100"))
    assert f.feasible and any("spills" in w for w in f.warnings)


def test_second_call_hits_the_disk_cache(compiled, cache_dir):
    t0 = time.perf_counter()
    again = hc.compile_requests(list(compiled["reqs"].values()), cache_dir=cache_dir)
    assert all(r.cached for r in again)
    assert time.perf_counter() - t0 < 2.0
    first = compiled["reports"]
    assert [(r.registers, r.shared_bytes, r.ok) for r in again] == \
           [(r.registers, r.shared_bytes, r.ok) for r in first.values()]
    # The key separates everything that changes the answer.
    tv = hc._triton_version()
    keys = {q.cache_key(tv) for q in compiled["reqs"].values()}
    assert len(keys) == len(compiled["reqs"])


def test_shared_memory_and_register_limits_against_skus():
    h100, a100, l40s = get_sku("h100"), get_sku("a100"), get_sku("l40s")
    base = dict(kernel="k", ok=True, registers=64, num_warps=4)
    big = hc.CompileReport(arch="sm_90", shared_bytes=200 * 1024, **base)
    assert hc.check_feasible(big, h100).feasible
    too_big = hc.CompileReport(arch="sm_90", shared_bytes=240 * 1024, **base)
    f = hc.check_feasible(too_big, h100)
    assert not f.feasible and "smem_per_block_bytes" in f.reasons[0] and "232448" in f.reasons[0]
    # 120 KiB fits an A100 block but not an L40S one (99 KiB).
    mid = dict(shared_bytes=120 * 1024, **base)
    assert hc.check_feasible(hc.CompileReport(arch="sm_80", **mid), a100).feasible
    assert not hc.check_feasible(hc.CompileReport(arch="sm_89", **mid), l40s).feasible
    regs = hc.CompileReport(arch="sm_90", kernel="k", ok=True, registers=255, num_warps=32)
    f = hc.check_feasible(regs, h100)
    assert not f.feasible and "register file" in " ".join(f.reasons)
    wrong = hc.CompileReport(arch="sm_80", **base)
    assert not hc.check_feasible(wrong, h100).feasible
    # Occupancy: 96 KiB blocks -> two per H100 SM, limited by shared memory.
    f = hc.check_feasible(hc.CompileReport(arch="sm_90", shared_bytes=96 * 1024, **base), h100)
    assert f.blocks_per_sm == 2 and f.limited_by == "shared memory"


def test_parse_ptxas_log():
    log = ("ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
           "ptxas info    : Function properties for k\n"
           "    128 bytes stack frame, 168 bytes spill stores, 172 bytes spill loads\n"
           "ptxas info    : Used 32 registers, used 1 barriers, 128 bytes cumulative stack size\n")
    assert hc.parse_ptxas_log(log) == {"registers": 32, "stack_bytes": 128, "spill_store_bytes": 168,
                                       "spill_load_bytes": 172}


def test_parse_arch():
    assert hc.parse_arch("sm_90") == 90 and hc.parse_arch("sm_90a") == 90 and hc.parse_arch(80) == 80
    assert hc.parse_arch(get_sku("b200")) == 100
    with pytest.raises(BadInput, match="untested"):
        hc.parse_arch(get_sku("mi300x"))
    with pytest.raises(BadInput):
        hc.parse_arch("gfx942")


ADD_KERNEL = '''
import triton
import triton.language as tl


@triton.jit
def _add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)
'''


def test_source_text_compiles_in_process_without_the_interpreter(cache_dir):
    # The module compiles in a process where TRITON_INTERPRET is off (as on a GPU machine or in
    # the tuner), and never touches the variable itself. A fresh process: this one imported
    # triton under the interpreter (conftest), which no unset variable undoes.
    script = (
        "import json, os, sys\n"
        "from kernelagent.harness import compile as hc\n"
        "sig = {'x_ptr': '*fp32', 'y_ptr': '*fp32', 'out_ptr': '*fp32', 'n': 'i32', 'BLOCK': 'constexpr'}\n"
        "r = hc.compile_kernel(sys.stdin.read(), '_add_kernel', sig, {'BLOCK': 1024}, 'sm_90', num_warps=4,\n"
        "                      aligned=('x_ptr', 'y_ptr', 'out_ptr'), cache_dir=sys.argv[1], use_cache=False,\n"
        "                      isolate=False)\n"
        "print(json.dumps({'ok': r.ok, 'error': r.error, 'registers': r.registers, 'spill': r.spill_bytes,\n"
        "                  'shared': r.shared_bytes, 'env': 'TRITON_INTERPRET' in os.environ}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KERNELAGENT_INTERPRET")}
    p = subprocess.run([sys.executable, "-c", script, str(cache_dir)], input=ADD_KERNEL, capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["ok"], r["error"]
    assert r["registers"] and r["registers"] < 64 and r["spill"] == 0 and r["shared"] <= 4096
    assert not r["env"]


def test_interpreter_in_this_process_is_refused_without_isolation(monkeypatch, cache_dir):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
    from kernelagent.errors import EnvironmentProblem

    with pytest.raises(EnvironmentProblem):
        hc.compile_kernel(ADD_KERNEL, "_add_kernel", sig, {"BLOCK": 256}, 90, cache_dir=cache_dir,
                          use_cache=False, isolate=False)


@pytest.mark.gpu
def test_static_resources_match_the_runtime_compile():
    """On a GPU: compile statically for this device's arch and compare with what Triton's own
    launch compiled and loaded (shared memory and registers must agree exactly)."""
    import torch

    from kernelagent.kernels.softmax.kernel import _softmax_fwd_kernel

    cc = torch.cuda.get_device_capability()
    call = softmax_call(rows=64, cols=4096)
    x = call.args[0].cuda()
    y = torch.empty_like(x)
    launch = hc.capture_launches(kernel_path("softmax"), "softmax", (x,), config=GOOD)[0]
    compiled = _softmax_fwd_kernel[(64,)](x, y, 4096, x.stride(0), x.stride(1), y.stride(0),
                                          BLOCK_N=4096, SINGLE_TILE=True, num_warps=8)
    torch.cuda.synchronize()
    compiled._init_handles()
    static = hc.compile_launches(kernel_path("softmax"), [launch], cc[0] * 10 + cc[1], use_cache=False)[0]
    assert static.ok, static.error
    assert static.shared_bytes == compiled.metadata.shared
    assert static.registers == compiled.n_regs
    assert static.spill_bytes == 0 and compiled.n_spills == 0


@pytest.mark.slow
def test_a_pathological_compile_times_out_and_the_rest_go_on(cache_dir):
    src = kernel_path("softmax")
    path, sha = hc._source_file(src, cache_dir)
    call = softmax_call()
    fast = hc.capture_launches(src, "softmax", call.args, config={"BLOCK_N": 1024, "num_warps": 4})[0]
    slow = hc.capture_launches(src, "softmax", call.args, config={"BLOCK_N": 8192, "num_warps": 1})[0]
    reqs = [fast.request(str(path), sha, 90), slow.request(str(path), sha, 90), fast.request(str(path), sha, 80)]
    reports = hc.compile_requests(reqs, cache_dir=cache_dir, use_cache=False, isolate=True, timeout=3)
    assert [r.ok for r in reports] == [True, False, True]
    assert reports[1].failure == "timeout" and "exceeded 3s" in reports[1].error
    assert reports[2].arch == "sm_80"
    assert not hc.check_feasible(reports[1], get_sku("h100")).feasible
