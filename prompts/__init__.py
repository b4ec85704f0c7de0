"""Prompt templates for the kernel-writing agent, versioned with the code.

The templates are jinja2 files next to this module. ``PROMPT_VERSION`` changes whenever a
template's wording changes, so a recorded run (and its request hashes) says which prompts
produced it. Rendering is strict: a variable the caller forgot is an error, not a blank.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PROMPT_VERSION = "2026-12-03.2"
TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATES = ("system.j2", "generate.j2", "reflect.j2")


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **variables) -> str:
    """Render template ``name`` (e.g. ``"generate.j2"``) with ``variables``; strict about gaps."""
    return _environment().get_template(name).render(**variables).strip() + "\n"


__all__ = ["PROMPT_VERSION", "TEMPLATES", "render"]
