"""`generate --tune`: a verified kernel goes through the tuner into the library (scripted
loopback LLM, real harness, model backend): an op's kernel becomes a variant that dispatch
picks when it is not slower, and not when it is; a problem file's becomes a user module."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from fake_openai import FakeOpenAI, python_reply

from kernelagent import cli

REPO = Path(__file__).resolve().parents[1]
SOFTMAX = (REPO / "kernels" / "softmax" / "kernel.py").read_text()
RELU_PROBLEM = REPO / "kernelagent" / "examples" / "relu_problem.py"
RELU = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu_kernel(x_ptr, y_ptr, n_elements, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.where(x > 0, x, 0.0), mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        n = x.numel()
        _relu_kernel[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)
        return y
'''


def generate(monkeypatch, capsys, tmp_path, target, reply, *extra):
    lib = tmp_path / "lib"
    monkeypatch.setenv("KERNELAGENT_LIBRARY", str(lib))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI([reply]) as srv:
        monkeypatch.setattr(sys, "argv", ["kernelagent", "generate", str(target), "--base-url", srv.base_url,
                                          "--model", "fake-coder", "--parallel", "1", "--max-iters", "1",
                                          "--examples", "2", "--seed", "5", "--db", str(tmp_path / "agent.db"),
                                          "--out", str(tmp_path / "out"), "--tune", "--library", str(lib), "--json",
                                          *extra])
        with pytest.raises(SystemExit) as exc:
            cli.main()
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err[-3000:]
    return json.loads(out), lib


def _dispatched_variant(x):
    from kernelagent.kernels import _device, _dispatch

    _dispatch.clear_caches()
    os.environ["KERNELAGENT_INTERPRET"] = "1"
    try:
        with _device.override_device("NVIDIA H100 80GB HBM3", (9, 0)):
            d = _dispatch.decide("softmax", (x,), {})
            import kernelagent.kernels as K

            torch.testing.assert_close(K.softmax(x), torch.softmax(x, -1))
            return d.resolution.variant
    finally:
        os.environ.pop("KERNELAGENT_INTERPRET", None)
        _dispatch.clear_caches()


@pytest.mark.slow
def test_an_op_kernel_becomes_a_tuned_variant_that_dispatch_picks(monkeypatch, capsys, tmp_path):
    reply = python_reply(SOFTMAX, {"BLOCK_N": [1024, 2048, 4096], "num_warps": [4, 8]})
    res, lib = generate(monkeypatch, capsys, tmp_path, "softmax", reply, "--sku", "h100", "--tune-trials", "3",
                        "--tune-dtype", "fp32", "--min-predicted-gain", "0")
    kept = res["kept"]
    assert res["status"] == "accepted" and kept["kind"] == "variant" and kept["entries_written"] == 1, kept
    name = kept["variant"]
    side = json.loads((lib / "softmax" / "variants" / f"{name}.json").read_text())
    assert side["origin"] == "generated" and side["model"] == "fake-coder" and side["run_id"] == res["run_id"]
    assert "TUNING_SPACE" in (lib / "softmax" / "variants" / f"{name}.py").read_text()
    (entry,) = json.loads((lib / "softmax" / "configs" / "h100-sxm.json").read_text())["entries"]
    assert entry["variant"] == name and entry["evidence"]["measured"] is False
    assert _dispatched_variant(torch.randn(2, entry["bucket"]["cols"])) == name


@pytest.mark.slow
def test_a_slower_variant_is_kept_but_not_chosen(monkeypatch, capsys, tmp_path):
    reply = python_reply(SOFTMAX, {"BLOCK_N": [64], "num_warps": [1]})
    res, lib = generate(monkeypatch, capsys, tmp_path, "softmax", reply, "--sku", "h100", "--tune-trials", "2",
                        "--tune-dtype", "fp32", "--min-predicted-gain", "0")
    kept = res["kept"]
    assert kept["entries_written"] == 0 and "slower than the default" in kept["tuned"][0]["note"], kept
    assert (lib / "softmax" / "variants" / f"{kept['variant']}.py").is_file()
    assert _dispatched_variant(torch.randn(2, 4096)) == "kernel"


@pytest.mark.slow
def test_a_problem_kernel_becomes_a_user_module(monkeypatch, capsys, tmp_path):
    res, lib = generate(monkeypatch, capsys, tmp_path, RELU_PROBLEM, python_reply(RELU))
    kept = res["kept"]
    assert kept["kind"] == "module" and kept["added"], kept
    from kernelagent.kernels import load_module

    ModelNew = load_module(kept["name"], library=lib)
    x = torch.randn(4, 1000)
    torch.testing.assert_close(ModelNew()(x), torch.relu(x))
    entry = json.loads((lib / "modules" / kept["name"] / "entry.json").read_text())
    assert entry["provenance"]["origin"] == "generated" and entry["provenance"]["run_id"] == res["run_id"]
