"""Test lane selection: without a CUDA GPU, Triton runs through its interpreter."""

import os
import tempfile

import pytest

# The user library (kernels._configs.user_library_dir) is read by every kernel call: point it
# at an empty folder of this session, so a developer's own tuned entries never leak into tests.
os.environ["KERNELAGENT_LIBRARY"] = tempfile.mkdtemp(prefix="kernelagent-test-library-")
# A library kernel that raises fails the test instead of quietly running PyTorch's reference
# (kernels._failures); tests of the fallback itself unset it.
os.environ.setdefault("KERNELAGENT_STRICT", "1")

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover - torch is a hard dependency
    HAS_CUDA = False

if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("KERNELAGENT_INTERPRET", "1")
if os.environ.get("TRITON_INTERPRET") == "1":
    # Tests that load a kernel.py directly get the same interpreter as the worker and library.
    from kernelagent.kernels._interpreter import patch_interpreter

    patch_interpreter()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (gpu marker); this is the CPU lane")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def isolated_dispatch(monkeypatch, tmp_path):
    """The library's dispatch with no device injection, the interpreter on, an empty library of
    this test's own, and fresh caches before and after."""
    from kernelagent.kernels import _configs, _device, _dispatch

    for var in (_configs.LIBRARY_ENV, _device.DEVICE_NAME_ENV, _device.DEVICE_CC_ENV, _device.SKU_DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(_dispatch.INTERPRET_ENV, "1")
    monkeypatch.setenv(_configs.LIBRARY_ENV, str(tmp_path / "library"))
    _dispatch.clear_caches()
    yield tmp_path / "library"
    _dispatch.clear_caches()
