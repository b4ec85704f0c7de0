"""Prompt templates render from the state with every variable supplied, and carry the feedback."""

from pathlib import Path

import jinja2
import pytest

from kernelagent.agent import context
from kernelagent.agent.nodes import build_messages
from kernelagent.errors import BadInput
from kernelagent.prompts import PROMPT_VERSION, TEMPLATES, render


def _candidate(ctx, previous=None, history=()):
    return {"context": ctx, "previous": previous, "others": ["candidate 1: mismatch: worst error 9x"],
            "history": list(history)}


def test_version_and_files_are_package_data():
    import importlib.resources as res

    assert PROMPT_VERSION
    for name in TEMPLATES:
        assert res.files("kernelagent.prompts").joinpath(name).is_file()


def test_missing_variable_is_an_error_not_a_blank():
    with pytest.raises(jinja2.UndefinedError):
        render("reflect.j2", round=1, reason="mismatch")


def test_op_prompt_has_reference_signature_examples_and_history():
    ctx = context.gather("op", "softmax", "softmax", None)
    msgs = build_messages(_candidate(ctx, history=[{"round": 1, "slot": 0, "reason": "compile-error",
                                                    "summary": "unsupported tensor index"}]))
    system, user = msgs[0]["content"], msgs[1]["content"]
    assert "softmax(x: 'torch.Tensor', *, config: dict | None = None)" in system
    assert "torch.softmax(x, dim=-1)" in user and "kernels/softmax/kernel.py" in user
    assert "compile-error: unsupported tensor index" in user
    assert "Target GPU" not in user


def test_problem_prompt_and_reflection_carry_feedback():
    problem = Path(__file__).resolve().parents[1] / "kernelagent" / "examples" / "relu_problem.py"
    kind, target, entry = context.resolve_target(str(problem))
    ctx = context.gather(kind, target, entry, None)
    prev = {"round": 2, "reason": "mismatch", "feedback": "worst error 3.5x budget at index 17",
            "counterexample": {"params": {"rows": 1, "cols": 129}}, "source": "import triton\n"}
    msgs = build_messages(_candidate(ctx, previous=prev))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "class ModelNew(nn.Module)" in msgs[0]["content"]
    assert "torch.relu(x)" in msgs[1]["content"] and "relu_problem.py" in msgs[1]["content"]
    assert msgs[2]["content"].startswith("```python\nimport triton")
    reflect = msgs[3]["content"]
    assert "round 2" in reflect and "(mismatch)" in reflect
    assert "worst error 3.5x budget at index 17" in reflect
    assert '"cols": 129' in reflect and "candidate 1: mismatch" in reflect


def test_sku_facts_render():
    ctx = context.gather("op", "softmax", "softmax", "h100")   # an alias of h100-sxm
    assert ctx["sku"]["id"] == "h100-sxm"
    user = build_messages(_candidate(ctx))[1]["content"]
    assert "Target GPU: NVIDIA H100 SXM5" in user and "(SKU id `h100-sxm`)" in user
    assert "sm_count: 132" in user and "mem_bandwidth_gbps:" in user and "peak_tflops.bf16:" in user
    assert "sources" not in user and "datasheet" not in user
    with pytest.raises(BadInput, match="unknown SKU 'nope'"):
        context.sku_facts("nope")
