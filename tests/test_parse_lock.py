"""Every parse of Python source in kernelagent goes through one lock (kernels/_parse.py).

A run with --parallel 2 died with CPython's "AST constructor recursion depth mismatch": the AST
builder's bookkeeping is shared between threads, and the agent checks candidates in threads.
The race is in CPython and rare, so this test holds the class shut: no direct ``ast.parse``
(or ``compile(..., ast.PyCF_ONLY_AST)``) anywhere but the locked helper."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("kernelagent", "harness", "kernels", "prompts")


def test_no_unlocked_ast_parse():
    offenders = []
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            if path.name == "_parse.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(r"\bast\.parse\(|PyCF_ONLY_AST", code) and not code.lstrip().startswith(("\"", "'")):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "parse through kernelagent.kernels._parse.parse:\n" + "\n".join(offenders)


def test_the_locked_parse_is_a_real_parse():
    from kernelagent.kernels._parse import parse

    tree = parse("def f(x):\n    return x + 1\n")
    assert tree.body[0].name == "f"
