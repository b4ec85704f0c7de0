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


def _drawn(op: str, n: int = 150) -> tuple[set, set]:
    """The dtypes and layouts the harness actually draws for ``op`` (its strategy, as verify uses it)."""
    from hypothesis import HealthCheck, given, settings

    from kernelagent.kernels import get_opspec

    seen_dtypes, seen_layouts = set(), set()

    @settings(max_examples=n, database=None, suppress_health_check=list(HealthCheck), deadline=None)
    @given(get_opspec(op).strategy(1 << 15))
    def draw(case):
        seen_dtypes.add(case.dtype)
        seen_layouts.add(case.layout)

    draw()
    return seen_dtypes, seen_layouts


@pytest.mark.parametrize("op", ["softmax", "matmul"])
def test_the_op_prompt_states_what_the_harness_draws(op):
    import re

    from kernelagent.kernels._inputs import LAYOUTS

    ctx = dict(context.gather("op", op, op, None), verify_timeout=90.0)   # as gather_context sets it
    system = build_messages(_candidate(ctx))[0]["content"]
    dtypes = set(re.search(r"dtypes ([a-z0-9, ]+);", system).group(1).split(", "))
    layouts = set(re.search(r"layouts ([a-z_, ]+);", system).group(1).split(", "))
    drawn_dtypes, drawn_layouts = _drawn(op)
    assert dtypes == drawn_dtypes and layouts == drawn_layouts == set(LAYOUTS), (dtypes, layouts)
    assert "Triton's interpreter on the CPU" in system and "a budget of 90 CPU seconds" in system


def test_the_problem_prompt_states_seeding_inputs_and_the_config_channel():
    problem = Path(__file__).resolve().parents[1] / "kernelagent" / "examples" / "relu_problem.py"
    kind, target, entry = context.resolve_target(str(problem))
    system = build_messages(_candidate(context.gather(kind, target, entry, None)))[0]["content"]
    assert "same `torch.manual_seed`" in system and "same order with the same initialisation" in system
    assert "get_inputs()" in system and "fp16" not in system and "transposed" not in system
    assert "module-level `CONFIG` dict" in system
    # and the harness does what the prompt says: the worker sets CONFIG before constructing ModelNew
    worker = (Path(__file__).resolve().parents[1] / "harness" / "worker.py").read_text()
    assert "module.CONFIG = dict(config)" in worker and "torch.manual_seed(init_seed)" in worker
