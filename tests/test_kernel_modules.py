"""Each op's kernel.py is imported once, as ``kernelagent.kernels.<op>.kernel``, by dispatch and by
its spec.py alike; the package imports without torch (so the CLI's SKU commands stay instant)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kernelagent.kernels as K
from kernelagent.kernels import _dispatch


def test_dispatch_and_spec_use_one_kernel_module():
    entry, _ = _dispatch.kernel_entry("matmul")
    module = sys.modules[_dispatch.kernel_module_name("matmul")]
    assert entry is module.matmul
    spec = K.get_opspec("matmul")
    assert spec.default_config({"M": 64, "N": 64, "K": 64, "dtype": "fp32"}) == module.default_config(64, 64, 64, 4)
    assert [n for n in sys.modules if n.endswith((".kernel", "._shipped.matmul")) and "matmul" in n] == \
        ["kernelagent.kernels.matmul.kernel"]


def _run(code: str, **env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KERNELAGENT_INTERPRET", "TRITON_INTERPRET")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_interpret_set_after_the_spec_loaded_still_interprets_the_kernel():
    # The spec (and the public function) exist before KERNELAGENT_INTERPRET is set; kernel.py is
    # imported only by the first call, so it is defined for the interpreter.
    got = _run(
        "import json, os, sys, warnings, torch\n"
        "from kernelagent.kernels import matmul, _dispatch, KernelFallbackWarning\n"
        "before = 'kernelagent.kernels.matmul.kernel' in sys.modules\n"
        "os.environ['KERNELAGENT_INTERPRET'] = '1'\n"
        "a, b = torch.randn(17, 33), torch.randn(33, 19)\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('error', KernelFallbackWarning)\n"
        "    ok = bool(torch.allclose(matmul(a, b), a @ b, atol=1e-2))\n"
        "print(json.dumps({'before': before, 'interpreted': _dispatch.kernel_entry('matmul')[1], 'ok': ok}))\n",
        KERNELAGENT_STRICT="1")
    assert got == {"before": False, "interpreted": True, "ok": True}


def test_the_package_and_its_sku_reader_import_without_torch():
    got = _run("import json, sys\n"
               "import kernelagent.kernels, kernelagent.kernels._sku, kernelagent.sku\n"
               "print(json.dumps({'torch': 'torch' in sys.modules, 'ops': kernelagent.kernels.op_names()}))\n")
    assert got == {"torch": False, "ops": K.op_names()}


def test_op_folders_and_public_functions_do_not_collide():
    """`import kernelagent.kernels.<op>.kernel as m` gives the module dispatch uses, while
    `kernelagent.kernels.<op>` stays the callable public function (both orders of import)."""
    got = _run(
        "import json, torch\n"
        "import kernelagent.kernels.softmax.kernel as m\n"
        "import kernelagent.kernels as K\n"
        "from kernelagent.kernels import _dispatch\n"
        "K.rms_norm\n"
        "import kernelagent.kernels.rms_norm.kernel as r\n"
        "print(json.dumps({'m': m.__name__, 'same': _dispatch.kernel_entry('softmax')[0] is m.softmax,\n"
        "                  'fn': callable(K.softmax) and not hasattr(K.softmax, '__path__'), 'r': r.__name__,\n"
        "                  'y': list(K.softmax(torch.randn(2, 3)).shape)}))\n")
    assert got == {"m": "kernelagent.kernels.softmax.kernel", "same": True, "fn": True,
                   "r": "kernelagent.kernels.rms_norm.kernel", "y": [2, 3]}
