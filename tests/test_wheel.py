"""An op is one folder: the wheel holds every op folder's files (found by discovery, not a list),
the SKU files and the prompts; installed alone, it lists the source tree's ops and runs one.

The wheel is built from a copy of the source tree (a stale ``build/`` in the checkout must not
mask a missing file), with one op folder and one config file added that packaging was never
told about. The installed wheel is imported in a subprocess that removes the editable-install
finder and any path into the checkout first, and then checks that every ``kernelagent`` module
it loaded came from the install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "kernelagent", "harness", "kernels", "prompts")
NEW_OP = "wheel_probe_op"  # a copy of softmax's folder: an op added as a folder only
NEW_CONFIG = "softmax/configs/wheel-probe.json"

pytestmark = pytest.mark.slow


def _op_folders(kernels: Path) -> list[str]:
    return sorted(p.name for p in kernels.iterdir()
                  if p.is_dir() and (p / "spec.py").is_file() and not p.name.startswith("_"))


def _shipped_files(folder: Path) -> list[Path]:
    """Every file of a folder that belongs in the package: not caches, not dotfiles (locks)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and not p.name.startswith(".") and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment: no build backend without isolation")
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for name in SOURCES:
        path = REPO / name
        (shutil.copytree(path, src / name, ignore=ignore) if path.is_dir() else shutil.copy2(path, src / name))
    shutil.copytree(src / "kernels" / "softmax", src / "kernels" / NEW_OP, ignore=ignore)
    config = src / "kernels" / NEW_CONFIG
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"schema": 1, "op": "softmax", "sku": "wheel-probe", "entries": []}))
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(src)], capture_output=True, text=True, timeout=300, cwd=src)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = out.glob("kernelagent-*.whl")
    return src, wheel


def test_wheel_holds_every_op_folder_sku_file_and_prompt(built):
    src, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    ops = _op_folders(src / "kernels")
    assert NEW_OP in ops and set(_op_folders(REPO / "kernels")) | {NEW_OP} == set(ops)
    missing = []
    for op in ops:
        folder = src / "kernels" / op
        for required in ("__init__.py", "spec.py", "kernel.py"):
            if not (folder / required).is_file():
                missing.append(f"kernels/{op}/{required} (not in the source tree)")
        for path in _shipped_files(folder):
            if f"kernelagent/kernels/{path.relative_to(src / 'kernels')}" not in names:
                missing.append(str(path.relative_to(src)))
    for folder, dest in (("kernelagent/skus", "kernelagent/skus"), ("prompts", "kernelagent/prompts"),
                         ("kernelagent/nightly/templates", "kernelagent/nightly/templates")):
        files = _shipped_files(src / folder)
        assert files, folder
        missing += [f"{folder}/{p.name}" for p in files if f"{dest}/{p.relative_to(src / folder)}" not in names]
    assert f"kernelagent/kernels/{NEW_CONFIG}" in names
    assert not missing, f"not in {wheel.name}: {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


_PROBE = r"""
import json, os, sys, warnings
repo = os.path.realpath(sys.argv[1])
# The checkout must not be importable: drop setuptools' editable finder and any path into it.
sys.meta_path[:] = [f for f in sys.meta_path
                    if not (getattr(f, "__module__", None) or type(f).__module__).startswith("__editable__")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p and os.path.realpath(p or os.getcwd()) != repo]
import torch
import kernelagent.kernels as K
from kernelagent.kernels import _dispatch, _sku, registry
from kernelagent import sku
ops = registry.op_names()
specs = {op: registry.get_opspec(op).name for op in ops}  # every spec.py imports from the wheel
x = torch.randn(3, 50)
decision = _dispatch.decide("softmax", (x,), {})
with warnings.catch_warnings():
    warnings.simplefilter("error", K.KernelFallbackWarning)
    ok = bool(torch.allclose(K.softmax(x), torch.softmax(x, -1), atol=1e-6))
loaded = {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.startswith("kernelagent")}
print(json.dumps({"ops": ops, "specs": specs, "kernel": decision.use_kernel, "ok": ok,
                  "interpreted": _dispatch.kernel_entry("softmax")[1], "failures": K.dispatch_failures(),
                  "skus": sorted(sku.load_skus()), "sku_dir": str(_sku.shipped_sku_dir()),
                  "outside": sorted(n for n, f in loaded.items()
                                    if f and not os.path.realpath(f).startswith(os.path.realpath(sys.argv[2])))}))
"""


def test_installed_wheel_lists_the_source_ops_and_runs_one(built, tmp_path):
    src, wheel = built
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNELAGENT_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(target), KERNELAGENT_INTERPRET="1", TRITON_INTERPRET="1", KERNELAGENT_STRICT="1",
               KERNELAGENT_LIBRARY=str(tmp_path / "library"), KERNELAGENT_SKU_DIR=str(tmp_path / "skus"))
    run = subprocess.run([sys.executable, "-c", _PROBE, str(REPO), str(target)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["outside"] == [], f"imported from outside the install: {got['outside']}"
    assert got["ops"] == _op_folders(src / "kernels")  # the source tree's ops, the new folder included
    assert got["specs"]["softmax"] == "softmax" and NEW_OP in got["specs"]
    assert got["kernel"] and got["interpreted"] and got["ok"] and got["failures"] == {}
    assert got["skus"] == sorted(p.stem for p in (REPO / "kernelagent" / "skus").glob("*.json"))
    assert got["sku_dir"].startswith(str(target))
