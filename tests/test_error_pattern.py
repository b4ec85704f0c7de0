"""The pattern of a wrong output, as the agent's feedback states it (pure function; the wiring
into verdicts is tested with the harness)."""

from __future__ import annotations

import torch

from kernelagent.harness.error_pattern import ClassTally, describe


def _bad(out, ref, tol=1e-6):
    return (out - ref).abs() > tol


def test_tail_columns_rows_and_zeros():
    ref = torch.randn(8, 100) + 3
    out = ref.clone()
    out[:, 96:] = 0                      # the last tile never stored
    text = describe(out, ref, _bad(out, ref))
    assert "only the last 4 of 100 columns (from column 96)" in text and "in every row (8)" in text
    assert "all 0: never written" in text


def test_rows_the_grid_missed_and_a_constant_factor():
    ref = torch.randn(10, 16) + 5
    out = ref.clone()
    out[6:] *= 2.0
    text = describe(out, ref, _bad(out, ref))
    assert "only rows 6-9 of 10: the grid does not cover every row" in text
    assert "constant factor 2" in text


def test_every_element_and_tiles_after_the_first():
    ref = torch.randn(4, 64)
    out = ref + 1.0
    assert "every element is wrong" in describe(out, ref, _bad(out, ref))
    out = ref.clone()
    out[:, 16:] += 0.5
    assert "every column from 16 on (48 of 64; 16 is a power of two)" in describe(out, ref, _bad(out, ref))
    out = ref.clone()
    out[1, 3] += 1
    text = describe(out, ref, _bad(out, ref))
    assert "1 of 256 elements" in text and "columns 3 of 64" in text and "in rows 1 of 4" in text


def test_one_dtype_singled_out_only_when_the_others_passed():
    t = ClassTally()
    t.record({"dtype": "fp32", "layout": "contiguous"}, True)
    t.record({"dtype": "bf16", "layout": "contiguous"}, False)
    t.record({"dtype": "fp16", "layout": "transposed"}, True)
    assert t.describe() == "failed only with dtype bf16 (passed with fp16, fp32)"
    t.record({"dtype": "bf16", "layout": "contiguous"}, True)   # a smaller bf16 case passing (shrinking)
    assert t.describe() == "failed only with dtype bf16 (passed with fp16, fp32)"
    t.record({"dtype": "fp32", "layout": "contiguous"}, False)
    # fp32 failed too: not one dtype's fault; every failure so far was contiguous, though
    assert t.describe() == "failed only with layout contiguous (passed with transposed)"
    t.record({"dtype": "fp16", "layout": "transposed"}, False)
    assert t.describe() == ""


def test_a_marginal_error_on_a_tiny_output_claims_no_spatial_pattern():
    ref = torch.tensor([[1.0, 2.0, 1.02307]])
    out = torch.tensor([[1.0, 2.0, 1.07812]])
    text = describe(out, ref, _bad(out, ref, 0.053))
    assert "1 of 3 elements" in text and "column" not in text and "row" not in text


def test_a_tiny_unwritten_output_is_called_unwritten_not_a_wrong_formula():
    ref = torch.tensor([[1.0]])
    out = torch.tensor([[1.4865e17]])           # torch.empty garbage: the store was masked off
    text = describe(out, ref, _bad(out, ref))
    assert "every element" not in text and "probably never written" in text
