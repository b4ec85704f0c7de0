"""Untrusted replies: every malformed shape becomes a problem with feedback, never a crash."""

import pytest

from kernelagent.agent.replies import extract, parse_tuning_space, static_profile, syntax_feedback
from kernelagent.harness.static_checks import check_candidate
from kernelagent.kernels import kernel_path

GOOD = kernel_path("softmax").read_text()


def fenced(src, tag="python"):
    return f"```{tag}\n{src.strip()}\n```\n"


def test_one_python_block_and_tuning_space():
    got = extract("Sure.\n" + fenced(GOOD) + fenced('{"BLOCK_N": [256, 512], "num_warps": [4]}', "json"),
                  entry="softmax")
    assert got.problem is None
    assert got.source.strip() == GOOD.strip()
    assert got.tuning_space == {"BLOCK_N": [256, 512], "num_warps": [4]}


@pytest.mark.parametrize("text", ["", "   \n", "I would write a kernel that tiles the rows and uses tl.max.",
                                  "Use `tl.exp` here."])
def test_prose_or_empty_is_no_code(text):
    got = extract(text, entry="softmax")
    assert got.source is None and got.problem.reason == "no-code"
    assert "```python" in got.problem.message


def test_several_competing_blocks_rejected_but_helper_blocks_ignored():
    two = fenced(GOOD) + "or alternatively\n" + fenced(GOOD.replace("BLOCK_N", "BLOCK"))
    got = extract(two, entry="softmax")
    assert got.source is None and got.problem.reason == "several-blocks"
    assert "2 python code blocks" in got.problem.message

    usage = fenced("y = softmax(torch.randn(4, 8))")
    got = extract(fenced(GOOD) + "Usage:\n" + usage, entry="softmax")
    assert got.problem is None and "def softmax(" in got.source
    assert any("ignored 1 other" in n for n in got.notes)


def test_truncated_reply():
    cut = "```python\n" + GOOD[: len(GOOD) // 2]
    got = extract(cut, entry="softmax", finish_reason="length")
    assert got.source is None and got.problem.reason == "truncated"
    assert extract("Let me think step by step about tiling", entry="softmax",
                   finish_reason="length").problem.reason == "truncated"


def test_unfenced_triton_file_is_accepted_but_unfenced_prose_is_not():
    got = extract(GOOD, entry="softmax")
    assert got.problem is None and got.notes
    assert extract("import os\nprint('triton')\nthis isn't python: it's prose", entry="softmax").problem.reason == "no-code"


def test_non_python_blocks_only():
    got = extract(fenced("pip install triton", "bash"), entry="softmax")
    assert got.problem.reason == "no-code" and "bash" in got.problem.message


def test_bad_tuning_space_is_a_note_not_a_rejection():
    got = extract(fenced(GOOD) + fenced('{"BLOCK_N": "big"}', "json"), entry="softmax")
    assert got.problem is None and got.tuning_space is None
    assert any("tuning space ignored" in n for n in got.notes)
    assert parse_tuning_space("[1, 2]")[0] is None
    assert parse_tuning_space('{"bad name": [1]}')[0] is None
    assert parse_tuning_space('{"A": [1, {"x": 2}]}')[0] is None


def test_malicious_code_is_only_parsed_and_rejected_by_static_checks(tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("still here")
    evil = ("import os\nimport shutil\n" + GOOD +
            f"\nshutil.rmtree({str(tmp_path)!r})\nos.remove({str(canary)!r})\n")
    got = extract(fenced(evil), entry="softmax")
    assert got.problem is None  # extraction never runs code ...
    reasons = {r for r, _ in check_candidate(got.source, "softmax")}
    assert "forbidden" in reasons  # ... and the static checks reject it before the sandbox
    assert canary.read_text() == "still here"


def test_syntax_feedback_points_at_the_line():
    msg = syntax_feedback("def f(:\n    return 1\n")
    assert "SyntaxError" in msg and "line 1" in msg and "def f(:" in msg
    assert syntax_feedback(GOOD) is None


def test_static_profile_counts_kernel_features():
    prof = static_profile(GOOD)
    assert prof["kernels"] == ["_softmax_fwd_kernel"]
    assert prof["loads"] >= 2 and prof["stores"] >= 2 and prof["loops_in_kernels"] >= 2
    assert static_profile("def (") == {}


def test_any_text_is_handled_without_raising():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from(["```python\n", "```\n", "```json\n", "~~~\n", "def softmax(x):\n", "@triton.jit\n",
                              "import os\n", '{"BLOCK": [1, 2]}\n', "\x00", "  return (\n", "triton", "\n"])
    texts = st.one_of(st.text(max_size=300), st.lists(st.one_of(pieces, st.text(max_size=20)), max_size=25).map("".join))

    @settings(max_examples=60, deadline=None, database=None)
    @given(texts, st.sampled_from([None, "stop", "length"]))
    def check(text, finish):
        got = extract(text, entry="softmax", finish_reason=finish)
        assert (got.source is None) != (got.problem is None)
        if got.source is not None:
            check_candidate(got.source, "softmax")
            syntax_feedback(got.source)
            static_profile(got.source)

    check()
