"""Pull a candidate file and its tuning space out of an untrusted LLM reply.

Nothing here executes the reply: code is located by its Markdown fences and checked with
``ast.parse`` only. Every way a reply can be unusable (prose only, an empty reply, several
competing files, output cut off at the token limit, an oversized file) becomes a
:class:`ReplyProblem` whose message is written for the model to act on in the next round.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any
from ..kernels._parse import parse

MAX_SOURCE_CHARS = 100_000
MAX_TUNING_PARAMS = 8
MAX_TUNING_VALUES = 32
PYTHON_TAGS = {"python", "py", "python3", ""}
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+.-]*)\s*$")


@dataclass(frozen=True)
class ReplyProblem:
    reason: str       # "no-code" | "several-blocks" | "truncated" | "too-long"
    message: str


@dataclass
class ExtractedReply:
    source: str | None = None
    tuning_space: dict[str, list] | None = None
    problem: ReplyProblem | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Block:
    tag: str
    body: str
    closed: bool


def _blocks(text: str) -> list[_Block]:
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, tag = m.group(1), m.group(2).lower()
        body, j = [], i + 1
        while j < len(lines):
            c = _FENCE.match(lines[j])
            if c and c.group(1)[0] == fence[0] and len(c.group(1)) >= len(fence) and not c.group(2):
                break
            body.append(lines[j])
            j += 1
        blocks.append(_Block(tag, "\n".join(body).strip("\n") + "\n", closed=j < len(lines)))
        i = j + 1
    return blocks


def _defines(source: str, entry: str) -> bool:
    try:
        tree = parse(source)
    except (SyntaxError, ValueError):
        return re.search(rf"^(def|class)\s+{re.escape(entry)}\b", source, re.M) is not None
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == entry for n in tree.body)


def _is_json_object(body: str) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def parse_tuning_space(body: str) -> tuple[dict[str, list] | None, str | None]:
    """A JSON object {param: [values]} of scalars, bounded in size; else (None, why)."""
    try:
        data = json.loads(body)
    except ValueError as e:
        return None, f"the json block is not valid JSON ({e})"
    if not isinstance(data, dict) or not data:
        return None, "the json block should be an object mapping parameter names to lists of values"
    if len(data) > MAX_TUNING_PARAMS:
        return None, f"the tuning space has {len(data)} parameters; keep it to {MAX_TUNING_PARAMS} or fewer"
    space: dict[str, list] = {}
    for name, vals in data.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w{0,63}", name):
            return None, f"tuning parameter name {name!r} is not an identifier"
        if not isinstance(vals, list) or not vals or len(vals) > MAX_TUNING_VALUES:
            return None, f"tuning parameter {name} needs a list of 1..{MAX_TUNING_VALUES} values"
        if not all(isinstance(v, (int, float, str, bool)) and not isinstance(v, dict) for v in vals):
            return None, f"tuning parameter {name}: values must be numbers, strings or booleans"
        space[name] = vals
    return space, None


def extract(text: str | None, *, entry: str, finish_reason: str | None = None) -> ExtractedReply:
    """Find the one candidate file (defining ``entry``) and the optional tuning space."""
    text = text or ""
    out = ExtractedReply()
    if not text.strip():
        out.problem = ReplyProblem("no-code", "the reply was empty; send the complete file in one ```python block")
        return out
    blocks = _blocks(text)
    cut = finish_reason == "length"
    json_blocks = [b for b in blocks if b.closed and (b.tag == "json" or (b.tag == "" and _is_json_object(b.body)))]
    code_blocks = [b for b in blocks if b.tag in PYTHON_TAGS and b not in json_blocks]

    if not blocks:
        # Some models omit fences; accept a bare reply only if the whole of it is a Triton file.
        if not cut and "triton" in text and _parses(text):
            out.source = text.strip() + "\n"
            out.notes.append("the reply had no code fence; took the whole reply as the file")
        elif cut:
            out.problem = ReplyProblem("truncated", "the reply was cut off at the token limit before any code "
                                       "block; answer with the code first and keep prose short")
        else:
            out.problem = ReplyProblem("no-code", "the reply had no ```python code block (prose only); "
                                       "send the complete file in one ```python block")
        return out

    open_code = [b for b in code_blocks if not b.closed]
    closed_code = [b for b in code_blocks if b.closed]
    if not closed_code:
        if open_code:
            out.problem = ReplyProblem("truncated", "the reply was cut off inside the code block (the token "
                                       "limit was reached or the closing ``` is missing); send a shorter, "
                                       "complete file")
        else:
            tags = ", ".join(sorted({b.tag or "untagged" for b in blocks}))
            out.problem = ReplyProblem("no-code", f"the reply had code blocks ({tags}) but no ```python block "
                                       "with the file")
        return out

    defining = [b for b in closed_code if _defines(b.body, entry)]
    if len(closed_code) == 1:
        chosen = closed_code[0]
    elif len(defining) == 1:
        chosen = defining[0]
        out.notes.append(f"ignored {len(closed_code) - 1} other python block(s) that do not define {entry}")
    else:
        out.problem = ReplyProblem("several-blocks", f"the reply had {len(closed_code)} python code blocks "
                                   f"({len(defining)} of them define {entry}); send the whole file as exactly "
                                   "one ```python block")
        return out
    if len(chosen.body) > MAX_SOURCE_CHARS:
        out.problem = ReplyProblem("too-long", f"the file is {len(chosen.body)} characters; the limit is "
                                   f"{MAX_SOURCE_CHARS}")
        return out
    out.source = chosen.body
    if cut:
        out.notes.append("the reply hit the token limit after the code block")
    if json_blocks:
        space, why = parse_tuning_space(json_blocks[-1].body)
        if why:
            out.notes.append(f"tuning space ignored: {why}")
        out.tuning_space = space
    return out


def _parses(text: str) -> bool:
    try:
        parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def syntax_feedback(source: str) -> str | None:
    """The SyntaxError with its line, for the model; None when the source parses."""
    try:
        parse(source)
        return None
    except (SyntaxError, ValueError) as e:
        msg = getattr(e, "msg", None) or str(e)
        lineno, offset = getattr(e, "lineno", None), getattr(e, "offset", None)
        line = (getattr(e, "text", None) or "").rstrip("\n")
        where = (f" (line {lineno}" + (f", column {offset}" if offset else "") + ")") if lineno else ""
        if not line:
            return f"SyntaxError: {msg}{where}"
        caret = " " * max(0, (offset or 1) - 1) + "^"
        return f"SyntaxError: {msg}{where}\n    {line}\n    {caret}"


def static_profile(source: str) -> dict[str, Any]:
    """What the kernel source does, counted from its AST (no execution): for analysis and ranking."""
    try:
        tree = parse(source)
    except (SyntaxError, ValueError):
        return {}
    kernels, loads, stores, loops, dots, atomics, autotuned = [], 0, 0, 0, 0, 0, False
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            decs = [ast.unparse(d) for d in node.decorator_list]
            if any("jit" in d for d in decs):
                kernels.append(node.name)
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.For, ast.While)):
                        loops += 1
            if any("autotune" in d for d in decs):
                autotuned = True
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            loads += name.endswith("tl.load") or name == "load"
            stores += name.endswith("tl.store") or name == "store"
            dots += name.endswith("tl.dot")
            atomics += ".atomic_" in name
    return {"kernels": kernels, "loads": loads, "stores": stores, "loops_in_kernels": loops,
            "dots": dots, "atomics": atomics, "autotune": autotuned, "lines": source.count("\n") + 1}
