"""Every valid output layout crosses the worker's reply (issue 17): a 1-element view with
non-unit strides (which torch calls contiguous, so ``contiguous()`` keeps its strides and the
byte view refused it: the worker crashed encoding a correct answer), transposed and sliced
outputs, and zero-size ones."""

import os

import pytest
import torch

from kernelagent.harness.wire import flat_bytes, tensor_bytes


def _layouts():
    base = torch.arange(40, dtype=torch.float32)
    return {
        "1x1 of a (1, 5) row": torch.arange(5.0).reshape(1, 5)[:, :1],
        "1x1 stride (7, 3)": base.as_strided((1, 1), (7, 3)),
        "1x1 stride (7, 3) offset 11": base.as_strided((1, 1), (7, 3), 11),
        "1 elem stride 3": base.as_strided((1,), (3,), 2),
        "transposed": base[:24].reshape(4, 6).mT,
        "sliced rows": base.reshape(5, 8)[:, 1:4],
        "bf16 single": torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16)[1:2],
        "empty (0, 3) stride (1, 7)": base.as_strided((0, 3), (1, 7)),
        "0-d": torch.tensor(4.5),
    }


@pytest.mark.parametrize("name", list(_layouts()))
def test_tensor_bytes_is_the_row_major_elements_of_any_layout(name):
    t = _layouts()[name]
    raw = tensor_bytes(t)
    assert len(raw) == t.numel() * t.element_size()
    back = torch.frombuffer(bytearray(raw), dtype=t.dtype) if raw else torch.empty(0, dtype=t.dtype)
    assert torch.equal(back.reshape(t.shape), t.contiguous())
    assert flat_bytes(t).numel() == len(raw)


PROBLEM = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return x * 2.0


def get_inputs():
    return [{inputs}]


def get_init_inputs():
    return []
'''

CANDIDATE = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _twice_kernel(x_ptr, y_ptr, rows, cols, sxr, sxc, syr, syc, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < rows * cols
    r, c = i // cols, i % cols
    x = tl.load(x_ptr + r * sxr + c * sxc, mask=m)
    tl.store(y_ptr + r * syr + c * syc, x * 2.0, mask=m)


class ModelNew(nn.Module):
    def forward(self, x):
        y = {alloc}
        rows, cols = x.shape
        _twice_kernel[(triton.cdiv(x.numel(), 64),)](x, y, rows, cols, x.stride(0), x.stride(1),
                                                     y.stride(0), y.stride(1), BLOCK=64)
        return y
'''

CASES = {
    # the reproducer: empty_like of a strided 1x1 input keeps its strides
    "empty_like of x = randn(1, 5)[:, :1]": ("torch.randn(1, 5)[:, :1]", "torch.empty_like(x)"),
    "as_strided 1x1 (7, 3) output": ("torch.randn(1, 1)",
                                     "torch.empty(32, dtype=x.dtype).as_strided((1, 1), (7, 3))"),
    "transposed output": ("torch.randn(5, 7)", "torch.empty(x.shape[1], x.shape[0], dtype=x.dtype).mT"),
    "sliced output": ("torch.randn(3, 4)", "torch.empty(3, 9, dtype=x.dtype)[:, 2:6]"),
}


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter lane only")
@pytest.mark.parametrize("name", list(CASES))
def test_a_correct_output_in_any_layout_verifies(tmp_path, name):
    from kernelagent.harness import verify

    inputs, alloc = CASES[name]
    problem = tmp_path / "twice.py"
    problem.write_text(PROBLEM.format(inputs=inputs))
    v = verify(str(problem), CANDIDATE.format(alloc=alloc), examples=3, seed=7)
    assert v.verified, (v.reason, v.detail[:1500])
