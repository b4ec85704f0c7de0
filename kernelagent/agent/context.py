"""What the prompts show about a target: reference, SKU facts, the closest library kernels.

Everything here reads trusted inputs (the op registry, the user's problem file, the SKU
registry, the library's own kernels). A problem file is inspected with ``ast`` only; the
harness is the one that imports it, in its sandbox.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

from ..errors import BadInput, read_text_file
from ..kernels._parse import parse

MAX_EXAMPLE_CHARS = 7000
MAX_EXAMPLES = 2
MAX_SKU_FACTS = 24
_SKU_SKIP = {"id", "name", "sources", "notes", "aliases", "match", "static_compile"}
_COMMON_WORDS = {"self", "return", "import", "def", "class", "torch", "triton", "from", "none", "the",
                 "for", "in", "if", "else", "and", "or", "not", "is", "tl", "as", "with", "float", "int"}


def resolve_target(target: str) -> tuple[str, str, str]:
    """(kind, canonical target, entry): a registered op name, or a problem file's absolute path."""
    from ..kernels import op_names

    path = Path(target)
    if target in op_names():
        return "op", target, target
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise BadInput(f"problem file not found: {target}")
        _check_problem(_read(path), str(path))
        return "problem", str(path.resolve()), "ModelNew"
    raise BadInput(f"unknown target {target!r}: not a registered op ({', '.join(op_names())}) "
                   "and not a KernelBench problem file (.py)")


def _read(path: Path) -> str:
    try:
        return read_text_file(path, "problem file")
    except OSError as e:
        raise BadInput(f"cannot read problem file {path}: {e}") from None


def _check_problem(source: str, path: str) -> None:
    try:
        tree = parse(source)
    except (SyntaxError, ValueError) as e:
        raise BadInput(f"{path}: the problem file does not parse ({e})") from None
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    missing = [n for n in ("Model", "get_inputs", "get_init_inputs") if n not in names]
    if missing:
        raise BadInput(f"{path}: not a KernelBench-format problem file; missing {', '.join(missing)} "
                       "(it needs class Model(nn.Module), get_inputs() and get_init_inputs())")


def sku_facts(sku: str) -> dict[str, Any]:
    """{id, name, facts: [(key, value)], limits} for a SKU id or alias; BadInput if unknown."""
    from ..sku import get_sku

    spec = get_sku(sku)
    data = {k: v for k, v in spec.to_json().items() if k not in {"path", "origin"}}
    facts = []
    for key, value in _flatten(data):
        if key.split(".")[0] in _SKU_SKIP:
            continue
        facts.append((key, value))
        if len(facts) >= MAX_SKU_FACTS:
            break
    limits = {"warp_size": spec.warp_size, "max_threads_per_block": spec.max_threads_per_block,
              "smem_per_block_bytes": spec.smem_per_block_bytes}
    return {"id": spec.id, "name": spec.name, "facts": facts, "limits": limits}


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        elif isinstance(value, (int, float, str, bool)) and len(str(value)) <= 120:
            yield name, value


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z_][a-z0-9_]{2,}", text.lower())} - _COMMON_WORDS


def closest_kernels(target_text: str, target_name: str | None, limit: int = MAX_EXAMPLES) -> list[dict[str, str]]:
    """Library kernels ranked by word overlap with the target (the op's own kernel first)."""
    from ..kernels import kernel_path, op_names

    scored = []
    target_words = _words(target_text)
    for name in op_names():
        path = kernel_path(name)
        if not path.is_file():
            continue
        source = path.read_text()
        words = _words(source)
        overlap = len(target_words & words) / max(1, len(target_words | words))
        if name == target_name or re.search(rf"\b{re.escape(name)}\b", target_text):
            overlap += 1.0
        scored.append((overlap, name, source))
    scored.sort(key=lambda t: (-t[0], t[1]))
    out = []
    for _, name, source in scored[:limit]:
        if len(source) > MAX_EXAMPLE_CHARS:
            source = source[:MAX_EXAMPLE_CHARS] + "\n# … (truncated)\n"
        out.append({"name": f"kernels/{name}/kernel.py", "source": source})
    return out


def gather(kind: str, target: str, entry: str, sku: str | None) -> dict[str, Any]:
    """The context dict the prompt templates render."""
    ctx: dict[str, Any] = {"target_kind": kind, "entry": entry}
    if kind == "op":
        from ..kernels import get_opspec

        spec = get_opspec(target)
        params = list(inspect.signature(spec.reference).parameters.values())
        sig = ", ".join(str(p) for p in params)
        ctx.update(doc=spec.doc, reference=inspect.getsource(spec.reference).strip(),
                   signature=(sig + ", " if sig else "") + "*, config: dict | None = None",
                   dtypes=list(spec.dtypes), tuning_params=list(spec.tuning_space.names()),
                   problem_name="")
        text = spec.doc + "\n" + ctx["reference"]
        name = target
    else:
        path = Path(target)
        source = _read(path)
        _check_problem(source, str(path))
        ctx.update(doc="", reference=source.strip(), signature="", dtypes=[], tuning_params=[],
                   problem_name=path.name)
        text, name = source, None
    from ..kernels._inputs import LAYOUTS

    ctx["layouts"] = list(LAYOUTS) if kind == "op" else []
    ctx["interpreter"] = not _cuda_available()
    ctx["examples"] = closest_kernels(text, name)
    ctx["sku"] = sku_facts(sku) if sku else None
    return ctx


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
