"""The static allowlist: ordinary Triton code passes, every way out of it is refused by name.

The red-team corpus (tests/redteam/rt_static_*.py) runs whole candidates through verify; these
are the smaller cases, checked with the parser alone (no worker), so each rule is pinned.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kernelagent.harness.static_checks import check_candidate

KERNELS = Path(__file__).parent.parent / "kernels"

HEADER = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)
'''


def _check(body: str, entry: str | None = "op", **kw) -> list[tuple[str, str]]:
    return check_candidate(HEADER + textwrap.dedent(body), entry=entry, **kw)


@pytest.mark.parametrize("op", sorted(p.parent.name for p in KERNELS.glob("*/kernel.py")))
def test_every_shipped_kernel_passes_the_allowlist(op):
    assert check_candidate((KERNELS / op / "kernel.py").read_text(), entry=op) == []


ACCEPTED = {
    "liger style: libdevice from-import, autotune, heuristics, grid over META": '''
        from triton.language.extra.libdevice import rsqrt
        from triton.language.extra import libdevice


        @triton.autotune(configs=[triton.Config({"BLOCK": 128}, num_warps=4)], key=["n"])
        @triton.heuristics({"EVEN": lambda args: args["n"] % 2 == 0})
        @triton.jit
        def _k(x_ptr, y_ptr, n, stride, BLOCK: tl.constexpr, EVEN: tl.constexpr):
            row = tl.program_id(0).to(tl.int64)
            x_ptr += row * stride
            offs = tl.arange(0, BLOCK)
            x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
            for _ in tl.static_range(2):
                x = x * 1.0
            y = rsqrt(tl.abs(x) + 1.0) + libdevice.tanh(x) + tl.math.exp2(x)
            tl.store(y_ptr + row * stride + offs, y.to(y_ptr.dtype.element_ty), mask=offs < n)


        def op(x, *, config=None):
            y = torch.empty_like(x)
            grid = lambda META: (triton.cdiv(x.shape[0], 1),)
            _k[grid](x, y, x.shape[-1], x.stride(0))
            return y
    ''',
    "aliased imports and a literal getattr": '''
        from triton import jit as kernel
        from triton import cdiv
        import math


        @kernel
        def _k2(x_ptr, n, BLOCK: tl.constexpr):
            pass


        def op(x, *, config=None):
            block = int((config or {}).get("BLOCK", 128))
            y = torch.empty(x.shape, dtype=getattr(torch, "float32"), device=x.device)
            _copy[(cdiv(x.numel(), block),)](x, y, x.numel(), BLOCK=block)
            return y if math.isfinite(1.0) else y
    ''',
    "a KernelBench ModelNew with its own private state and an `input` parameter": '''
        import torch.nn as nn


        class ModelNew(nn.Module):
            def __init__(self, features):
                super().__init__()
                self.linear = nn.Linear(features, features)
                self._block = 128
                nn.init.zeros_(self.linear.bias)

            @torch.no_grad()
            def forward(self, input):
                y = torch.empty_like(input)
                with torch.no_grad():
                    _copy[(triton.cdiv(input.numel(), self._block),)](input, y, input.numel(), BLOCK=self._block)
                return y
    ''',
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_ordinary_styles_pass(name):
    entry = None if "ModelNew" in ACCEPTED[name] else "op"
    assert _check(ACCEPTED[name], entry=entry) == []


REJECTED = {
    # attribute and import routes to the process or to PyTorch internals
    "import torch.utils": ("import torch.utils\n\ndef op(x, *, config=None):\n    return x\n", "forbidden", "torch.utils"),
    "from torch import load": ("from torch import load\n\ndef op(x, *, config=None):\n    return x\n", "forbidden", "torch.load"),
    "triton.runtime driver": ("from triton.runtime import driver\n\ndef op(x, *, config=None):\n    return x\n",
                              "forbidden", "triton.runtime"),
    "a tensor's class": ("def op(x, *, config=None):\n    return x.__class__\n", "forbidden", "__class__"),
    "getattr to a dunder": ("def op(x, *, config=None):\n    return getattr(x, '__class__')\n", "forbidden", "__class__"),
    "private attribute of a value": ("def op(x, *, config=None):\n    return x._cdata\n", "forbidden", "_cdata"),
    "self is only self in a method": ("def op(self, *, config=None):\n    return self._cdata\n", "forbidden", "_cdata"),
    "re-binding self": ("import torch.nn as nn\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
                        "        self = torch\n        return self._C\n", "forbidden", "re-bound"),
    "host iteration builtins": ("def op(x, *, config=None):\n    return next(iter(x))\n", "forbidden", "iter"),
    "identity cache key": ("def op(x, *, config=None):\n    return id(x)\n", "forbidden", "id()"),
    "storage pointer": ("def op(x, *, config=None):\n    return x.data_ptr()\n", "forbidden", "data_ptr"),
    "module as a value": ("def op(x, *, config=None, m=tl):\n    return x\n", "forbidden", "used as a value"),
    "re-bound import": ("def op(x, *, config=None):\n    torch = x\n    return torch\n", "forbidden", "re-bound"),
    "metaclass": ("class M(type):\n    pass\n\nclass C(metaclass=M):\n    pass\n\ndef op(x, *, config=None):\n"
                  "    return x\n", "forbidden", "metaclass"),
    "a base class outside the allowlist": ("class C(dict):\n    pass\n\ndef op(x, *, config=None):\n    return x\n",
                                           "forbidden", "derive only"),
    "torch compute is a fallback": ("def op(x, *, config=None):\n    return torch.exp(x)\n", "pytorch-fallback", "torch.exp"),
    "undefined name": ("def op(x, *, config=None):\n    return undefined_thing(x)\n", "forbidden", "undefined_thing"),
    # jit bodies are Triton only
    "torch inside a kernel": ("@triton.jit\ndef _k(x_ptr):\n    y = torch.float32\n\ndef op(x, *, config=None):\n"
                              "    return x\n", "forbidden", "only the Triton language"),
    "a lambda inside a kernel": ("@triton.jit\ndef _k(x_ptr):\n    f = lambda v: v\n\ndef op(x, *, config=None):\n"
                                 "    return x\n", "forbidden", "nested functions"),
    "a kernel calling its argument": ("@triton.jit\ndef _k(x_ptr, cb):\n    cb(x_ptr)\n\ndef op(x, *, config=None):\n"
                                      "    return x\n", "forbidden", "calls cb()"),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_ways_out_are_refused_with_a_reason(name):
    body, reason, needle = REJECTED[name]
    entry = None if "ModelNew" in body else "op"
    problems = _check(body, entry=entry)
    assert problems, f"{name}: accepted"
    assert problems[0][0] == reason, problems
    assert any(needle in msg for _, msg in problems), problems


@pytest.mark.parametrize("imp, ok", [
    ("from triton.tools.tensor_descriptor import TensorDescriptor", True),
    ("import triton.tools.tensor_descriptor as td", True),
    ("from triton.tools import disasm", False),
    ("import triton.tools.compile", False),
    ("from triton.tools.tensor_descriptor import dataclass", False),
    ("from triton.tools.tensor_descriptor import _x", False),
])
def test_only_the_host_tma_descriptor_is_allowed_from_triton_tools(imp, ok):
    from kernelagent.harness.static_checks import check_candidate

    src = f'''
import torch
import triton
import triton.language as tl
{imp}


@triton.jit
def k(x_ptr, n, B: tl.constexpr):
    o = tl.arange(0, B)
    tl.store(x_ptr + o, tl.load(x_ptr + o, mask=o < n), mask=o < n)


def softmax(x, *, config=None):
    y = torch.empty_like(x)
    k[(1,)](y, x.numel(), B=16)
    return y
'''
    problems = check_candidate(src, "softmax")
    assert (problems == []) == ok, problems
