"""The library's table of ops: each ``kernels/<op>/`` folder with a ``spec.py`` is an op."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the package imports this module without torch; spec.py needs torch
    from .spec import OpSpec

KERNELS_DIR = Path(__file__).resolve().parent


class UnknownOpError(LookupError):
    """Raised for an op name the library does not have; the message lists the known ones."""


def op_names() -> list[str]:
    return sorted(p.name for p in KERNELS_DIR.iterdir()
                  if p.is_dir() and (p / "spec.py").is_file() and not p.name.startswith("_"))


def _check(name: str) -> None:
    if name not in op_names():
        raise UnknownOpError(f"unknown op {name!r}; registered ops: {', '.join(op_names())}")


def get_opspec(name: str) -> OpSpec:
    _check(name)
    return importlib.import_module(f"kernelagent.kernels.{name}.spec").OPSPEC


def kernel_path(name: str) -> Path:
    """The op's shipped Triton implementation: a self-contained candidate file."""
    _check(name)
    return KERNELS_DIR / name / "kernel.py"
