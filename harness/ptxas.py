"""ptxas: registers and spills of compiled PTX, read from ``ptxas -v``.

Without a GPU the compiled object never loads, so Triton never learns ``n_regs``; running the
bundled ``ptxas`` on the PTX with the flags Triton itself passes gives the same allocation.
:func:`_mma_kind` names the tensor-core instruction family the PTX uses.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> dict:
    regs = _PTXAS_REGS.findall(log)
    spill = _PTXAS_SPILL.findall(log)
    out = {"registers": max(int(r) for r in regs) if regs else None, "stack_bytes": 0,
           "spill_store_bytes": 0, "spill_load_bytes": 0}
    if spill:
        out["stack_bytes"] = max(int(s[0]) for s in spill)
        out["spill_store_bytes"] = max(int(s[1]) for s in spill)
        out["spill_load_bytes"] = max(int(s[2]) for s in spill)
    return out


def _ptxas_for(arch: int) -> str:
    from triton.backends.nvidia import compiler as nv

    try:
        return nv.get_ptxas(arch).path
    except TypeError:  # older Triton: get_ptxas() takes no arch
        return nv.get_ptxas().path


def _ptxas_resources(ptx: str, arch: int, opts: Any) -> dict:
    """Registers and spills of the PTX under ptxas -v with the flags Triton itself uses."""
    from triton.backends.nvidia import compiler as nv

    cmd = [_ptxas_for(arch), "-v", f"--gpu-name={nv.sm_arch_from_capability(arch)}"]
    if not getattr(opts, "enable_fp_fusion", True):
        cmd.append("--fmad=false")
    if getattr(opts, "ptx_options", None):
        cmd += opts.ptx_options.split(" ")
    try:  # Triton 3.9 adds this to dodge a ptxas 13.x bug; it changes allocation, so mirror it.
        if "--regAllocOptLevel=2" in inspect.getsource(nv.CUDABackend.make_cubin):
            cmd.append("--regAllocOptLevel=2")
    except (OSError, TypeError):
        pass
    with tempfile.TemporaryDirectory(prefix="ka-ptxas-") as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run(cmd + [str(src), "-o", str(Path(d) / "k.cubin")], capture_output=True, text=True,
                           timeout=600)
    log = r.stdout + r.stderr
    if r.returncode != 0:
        raise RuntimeError(f"ptxas -v failed ({r.returncode}): {log[-2000:]}")
    return parse_ptxas_log(log)


def ptx_features(ptx: str) -> dict[str, bool]:
    """Hopper/Blackwell features visible in the PTX: TMA (bulk tensor copies through a tensor
    map), warp specialisation (register reallocation between warp groups), mbarrier pipelines."""
    return {"tma": "cp.async.bulk.tensor" in ptx,
            "warp_specialized": "setmaxnreg" in ptx,
            "mbarrier": "mbarrier." in ptx}


def _mma_kind(ptx: str) -> str:
    if "tcgen05.mma" in ptx:
        return "tcgen05"
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    if re.search(r"\bmma\.sync\b", ptx):
        return "mma.sync"
    return "none"
