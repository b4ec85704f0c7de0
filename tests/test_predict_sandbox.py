"""Predicting an untrusted kernel's latency (the model backend, the agent's race) runs its code
only in a sandbox: the launcher and module body execute in a worker without the interpreter,
and what comes back is parsed as a claim."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kernelagent.harness.predict import PredictError, SandboxedCapture, _launch
from kernelagent.sku import get_sku
from kernelagent.tuner import model

REPO = Path(__file__).resolve().parents[1]
SOFTMAX = (REPO / "kernels" / "softmax" / "kernel.py").read_text()


def test_a_sandboxed_prediction_matches_the_in_process_one_and_the_module_body_stays_inside(tmp_path):
    marker = tmp_path / "ran-in-the-parent"
    source = SOFTMAX + f'''

try:  # an untrusted module body: it must not run in the parent
    open({str(marker)!r}, "w").write("x")
except OSError:
    pass
'''
    sku = get_sku("h100")
    from kernelagent.kernels import get_opspec
    from kernelagent.kernels.spec import Case

    spec = get_opspec("softmax")
    call = spec.build(Case(params={"batch": 0, "rows": 1024, "cols": 2048}, dtype="fp32", seed=0))
    trusted = model.estimate(spec, call, {"BLOCK_N": 2048, "num_warps": 4}, sku)
    with SandboxedCapture(source, "softmax", filename="gen_x.py") as cap:
        sandboxed = model.estimate(spec, call, {"BLOCK_N": 2048, "num_warps": 4}, sku, capture=cap)
        bad = model.estimate(spec, call, {"BLOCK_N": 100, "num_warps": 4}, sku, capture=cap)  # not a power of 2
    assert sandboxed.feasible and sandboxed.latency_s == pytest.approx(trusted.latency_s, rel=1e-9)
    assert not marker.exists()
    assert not bad.feasible and "must be a power of 2" in bad.reason


@pytest.mark.parametrize("forged", [
    "not a dict",
    {"fn_name": "k", "signature": {}, "constexprs": {}, "aligned": [], "options": {}, "grid": [1, 1]},
    {"fn_name": "k", "signature": {}, "constexprs": {}, "aligned": [], "options": {}, "grid": [-1, 1, 1]},
    {"fn_name": "k", "signature": {}, "constexprs": {}, "aligned": [], "options": {}, "grid": [1 << 30, 1 << 30, 4]},
    {"fn_name": "k", "signature": {"x": 3}, "constexprs": {}, "aligned": [], "options": {}, "grid": [1, 1, 1]},
    {"fn_name": "k", "signature": {}, "constexprs": {}, "aligned": [], "options": {"num_warps": 0}, "grid": [1, 1, 1]},
    {"fn_name": "k", "signature": {}, "constexprs": {}, "aligned": [], "options": {"num_warps": [4]}, "grid": [1, 1, 1]},
])
def test_a_forged_launch_in_the_reply_is_an_error_not_a_crash(forged):
    with pytest.raises(PredictError):
        _launch(forged)


def test_a_candidate_that_kills_its_worker_is_a_prediction_error():
    source = "import os\nimport torch\n\ndef softmax(x, *, config=None):\n    os._exit(3)\n"
    with SandboxedCapture(source, "softmax") as cap:
        with pytest.raises(PredictError, match="sandboxed capture failed"):
            cap.capture([((torch.empty(4, 4),), {}, None)], arch=90)
