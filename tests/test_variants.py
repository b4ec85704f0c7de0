"""Kernel variants through the public surface: a second softmax added as a file only is tuned
(model backend, h100), wins at dispatch under a faked H100 identity and runs in the
interpreter with the right result; a variant edited afterwards is skipped and named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (REPO / "kernels" / "softmax" / "kernel.py").read_text()
# A variant is a file: the shipped kernel with a tuning space of its own (a literal TUNING_SPACE).
VARIANT = ('"""softmax, variant twopass: the shipped kernel with its own tuning space (a test variant)."""\n'
           'TUNING_SPACE = {"BLOCK_N": [1024, 2048, 4096], "num_warps": [4, 8]}\n' + SHIPPED)


def cli(*args: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1", **env_extra)
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", *args], capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.fixture
def lib(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    (root / "softmax" / "variants").mkdir(parents=True)
    (root / "softmax" / "variants" / "twopass.py").write_text(VARIANT)
    monkeypatch.setenv("KERNELAGENT_LIBRARY", str(root))
    from kernelagent.kernels import _dispatch

    _dispatch.clear_caches()
    yield root
    _dispatch.clear_caches()


def test_a_variant_is_a_file_with_its_own_space(lib):
    from kernelagent.kernels import _variants

    found = {v.name: v for v in _variants.variants("softmax")}
    assert set(found) >= {"kernel", "twopass"}
    v = found["twopass"]
    assert v.origin == "user" and v.tuning_space == {"BLOCK_N": [1024, 2048, 4096], "num_warps": [4, 8]}
    assert found["kernel"].origin == "shipped" and found["kernel"].tuning_space is None


def test_a_tuned_variant_wins_at_dispatch_and_a_tampered_one_is_skipped(lib, tmp_path):
    p = cli("tune", "--sku", "h100", "--op", "softmax", "--variant", "twopass", "--dtype", "fp32", "--trials", "3",
            "--max-cases", "1", "--seed", "2", "--examples", "2", "--min-predicted-gain", "0", "--json",
            "--library", str(lib), "--storage", f"sqlite:///{tmp_path / 'studies.db'}",
            env_extra={"KERNELAGENT_LIBRARY": str(lib)})
    assert p.returncode == 0, p.stderr[-3000:]
    (res,) = json.loads(p.stdout)
    assert res["variant"] == "twopass" and res["verified"] and res["library_action"] == "added", res
    assert res["default_latency_us"], "the baseline (kernel.py, default config) was not estimated"
    (entry,) = json.loads((lib / "softmax" / "configs" / "h100-sxm.json").read_text())["entries"]
    from kernelagent.kernels import _variants

    assert entry["variant"] == "twopass" and entry["kernel_sha256"] == _variants.get_variant("softmax", "twopass").sha256
    assert entry["provenance"]["variant_origin"] == "user"

    import kernelagent.kernels as K
    from kernelagent.kernels import _device, _dispatch

    cols = entry["bucket"]["cols"]
    x = torch.randn(3, cols)
    os.environ["KERNELAGENT_INTERPRET"] = "1"
    try:
        with _device.override_device("NVIDIA H100 80GB HBM3", (9, 0)):
            d = _dispatch.decide("softmax", (x,), {})
            assert d.use_kernel and d.resolution.variant == "twopass", d
            assert d.resolution.config == entry["config"]
            fn, _ = _dispatch.kernel_entry("softmax", "twopass")
            assert fn.__code__.co_filename == str(lib / "softmax" / "variants" / "twopass.py")
            torch.testing.assert_close(K.softmax(x), torch.softmax(x, -1))

            # Edited after tuning: its entry is stale, skipped with a warning naming the variant.
            (lib / "softmax" / "variants" / "twopass.py").write_text(VARIANT + "\n# edited\n")
            _dispatch.clear_caches()
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                d = _dispatch.decide("softmax", (x,), {})
            assert d.resolution.variant == "kernel" and d.resolution.tier == "default"
            assert any("variant 'twopass'" in str(w.message) and "stale" in str(w.message) for w in seen), \
                [str(w.message) for w in seen]
            torch.testing.assert_close(K.softmax(x), torch.softmax(x, -1))
    finally:
        os.environ.pop("KERNELAGENT_INTERPRET", None)


def test_nightly_inventory_names_the_variant_and_its_staleness(lib):
    from kernelagent import library
    from kernelagent.kernels import _variants
    from kernelagent.nightly.inventory import scan

    v = _variants.get_variant("softmax", "twopass")
    entry = {"dtype": "fp32", "bucket": {"cols": 1024}, "config": {"BLOCK_N": 1024, "num_warps": 4},
             "variant": "twopass", "kernel_sha256": v.sha256,
             "evidence": {"latency_us": 5.0, "energy_uj": None, "backend": "model", "measured": False, "trials": 3,
                          "speedup_vs_default": 1.2},
             "provenance": {"triton": "3", "torch": "2", "cuda": None, "device": "test", "date": "2026-12-03T00:00:00",
                            "method": "test"}}
    library.record_entry("softmax", "h100-sxm", entry, lib)
    items = [i for i in scan(["softmax"], library=lib, include_default=False)]
    assert [(i.variant, i.problem) for i in items] == [("twopass", None)]
    (lib / "softmax" / "variants" / "twopass.py").write_text(VARIANT + "\n# edited\n")
    _variants.clear_caches()
    from kernelagent.kernels import _configs

    _configs.clear_caches()
    (item,) = scan(["softmax"], library=lib, include_default=False)
    assert item.problem == "stale" and "variant 'twopass'" in item.problem_detail
    (lib / "softmax" / "variants" / "twopass.py").unlink()
    _configs.clear_caches()
    (item,) = scan(["softmax"], library=lib, include_default=False)
    assert item.problem == "stale" and "not in the library" in item.problem_detail


def test_an_unknown_variant_is_bad_input(lib, tmp_path):
    p = cli("tune", "--sku", "h100", "--op", "softmax", "--variant", "nope", "--measure", "model", "--trials", "1",
            "--library", str(lib), env_extra={"KERNELAGENT_LIBRARY": str(lib)})
    assert p.returncode == 2 and "no variant 'nope'" in p.stderr and "twopass" in p.stderr, p.stderr[-800:]
