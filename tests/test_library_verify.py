"""Every shipped op passes `kernelagent verify <op> kernels/<op>/kernel.py` with the harness's
full default property budget, on this machine (the CPU interpreter here)."""

import pytest

from kernelagent.harness import verify
from kernelagent.harness.verify import DEFAULT_EXAMPLES
from kernelagent.kernels import kernel_path, op_names


@pytest.mark.parametrize("op", op_names())
def test_shipped_kernel_verifies_with_the_full_budget(op):
    verdict = verify(op, kernel_path(op).read_text(), seed=20261126, timeout=600)
    assert verdict.verified, f"{op}: {verdict.reason}: {verdict.detail}"
    assert verdict.trials >= DEFAULT_EXAMPLES // 2  # some draws may be skipped (non-finite reference)
    assert verdict.worst_error_ratio is not None and verdict.worst_error_ratio <= 1.0
