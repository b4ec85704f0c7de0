"""`kernelagent compile OP --sku SKU`: the static compile for a SKU's architecture on a machine
without a GPU — what the kernel uses, and exit 1 for a config that does not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", "compile", *args], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ))


@pytest.mark.slow
@pytest.mark.parametrize("op, kernel", [("matmul", "_matmul_tma_persistent_kernel"),
                                        ("attention", "_attention_fwd_kernel")])
def test_on_sm90_the_default_matmul_and_attention_use_wgmma_and_tma_without_spills(op, kernel):
    p = run(op, "--sku", "h100", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    (launch,) = out["launches"]
    rep = launch["report"]
    assert out["arch"] == "sm_90" and out["measured"] is False and launch["fits"] and launch["kernel"] == kernel
    assert rep["mma"] == "wgmma" and rep["tma"] and rep["spill_bytes"] == 0 and rep["registers"] <= 255


@pytest.mark.slow
def test_attention_128x128_tiles_fit_sm90_without_spills():
    p = run("attention", "--sku", "h100", "--json", "--config",
            '{"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}')
    assert p.returncode == 0, p.stderr[-2000:]
    (launch,) = json.loads(p.stdout)["launches"]
    assert launch["fits"] and launch["report"]["spill_bytes"] == 0 and launch["report"]["tma"]


@pytest.mark.slow
def test_a_too_big_tile_does_not_fit_and_an_ampere_build_has_no_tma():
    big = run("matmul", "--sku", "h100", "--config",
              '{"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "num_warps": 8, "num_stages": 4}')
    assert big.returncode == 1 and "DOES NOT FIT" in big.stdout and "exceeds h100-sxm's" in big.stdout
    a100 = json.loads(run("matmul", "--sku", "a100", "--json").stdout)
    assert a100["variant"] == "kernel" and a100["launches"][0]["report"]["tma"] is False


@pytest.mark.parametrize("args, message", [
    (("softmax", "--sku", "h100", "--config", '{"BLOCK_N": 12'), "--config is not JSON"),
    (("nope", "--sku", "h100"), "unknown op 'nope'"),
    (("softmax", "--sku", "mi300x"), "no static compile target"),
    (("softmax", "--sku", "h100", "--dtype", "fp8"), "does not take dtype 'fp8'"),
])
def test_bad_input_is_exit_2_with_the_fix(args, message):
    p = run(*args)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
