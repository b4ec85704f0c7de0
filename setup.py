"""Package discovery, so that adding an op is adding a folder.

``pyproject.toml`` holds the metadata and ``[tool.setuptools] package-dir``, which maps the
repository's top-level folders under the one import root (``harness/`` is
``kernelagent.harness``, ``kernels/`` is ``kernelagent.kernels``; see ARCHITECTURE.md).
setuptools' own ``find`` names packages after their folder (``kernels.softmax``) and cannot
apply that mapping, so this file does: every folder under a mapped folder is a package under
the mapped name (namespace discovery, so data folders such as ``kernelagent/skus`` and
``kernels/<op>/configs`` are packages too, as setuptools wants for the data they hold). Which
data files ship is globbed in ``pyproject.toml``; ``tests/test_wheel.py`` builds the wheel and
checks that every op folder's files, the SKU files and the prompts are in it.
"""

from pathlib import Path

import tomllib
from setuptools import find_namespace_packages, setup

ROOT = Path(__file__).resolve().parent


def discover() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    packages = []
    for name, folder in sorted(mapping.items()):
        packages.append(name)
        found = find_namespace_packages(str(ROOT / folder), exclude=["__pycache__", "*.__pycache__"])
        packages += [f"{name}.{sub}" for sub in found]
    return sorted(set(packages))


setup(packages=discover())
