"""Does a compiled kernel fit on a SKU: shared memory, registers, threads, blocks per SM.

``check_feasible(report, sku)`` judges a ``compile.CompileReport`` against a SKU's limits
(re-exported by ``harness.compile``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compile import CompileReport

_RESERVED_SMEM_BYTES = 1024  # per block, reserved by the driver on sm_80 and newer


@dataclass(frozen=True)
class Feasibility:
    """Whether a compiled kernel can launch on a SKU, and how many blocks fit per SM."""

    feasible: bool
    reasons: tuple[str, ...] = ()     # why not (empty when feasible)
    warnings: tuple[str, ...] = ()    # feasible but costly (spills)
    blocks_per_sm: int = 0
    limited_by: str = ""              # registers | shared memory | threads | blocks
    occupancy: float = 0.0            # resident warps / max resident warps


def check_feasible(report: "CompileReport", sku: Any) -> Feasibility:
    """Shared memory against ``smem_per_block_bytes``, registers × threads against the SM's
    register file, threads against the block limit; resident blocks per SM from all of them."""
    if not report.ok:
        lines = [ln.strip() for ln in (report.error or "").splitlines() if ln.strip()]
        return Feasibility(False, (f"compile failed ({report.failure}): {lines[-1][:300] if lines else 'no message'}",))
    if report.arch != sku.arch:
        return Feasibility(False, (f"compiled for {report.arch}, SKU {sku.id} is {sku.arch}",))
    reasons, warnings = [], []
    threads = report.num_warps * sku.warp_size
    if threads > sku.max_threads_per_block:
        reasons.append(f"{threads} threads per block exceed the limit of {sku.max_threads_per_block}")
    if report.shared_bytes > sku.smem_per_block_bytes:
        reasons.append(f"shared memory {report.shared_bytes} B per block exceeds {sku.id}'s "
                       f"{sku.smem_per_block_bytes} B (smem_per_block_bytes)")
    regs = report.registers or 0
    # Registers are allocated per warp in units of 256.
    regs_per_warp = math.ceil(regs * sku.warp_size / 256) * 256
    regs_per_block = regs_per_warp * report.num_warps
    if regs > sku.max_registers_per_thread:
        reasons.append(f"{regs} registers per thread exceed {sku.max_registers_per_thread}")
    if regs_per_block > sku.registers_per_sm:
        reasons.append(f"{regs} registers × {threads} threads = {regs_per_block} exceed the SM's register file "
                       f"({sku.registers_per_sm})")
    if report.spill_bytes:
        warnings.append(f"spills {report.spill_store_bytes} B stores / {report.spill_load_bytes} B loads per thread")
    if reasons:
        return Feasibility(False, tuple(reasons), tuple(warnings))
    limits = {"blocks": sku.max_blocks_per_sm, "threads": sku.max_threads_per_sm // threads}
    if regs_per_block:
        limits["registers"] = sku.registers_per_sm // regs_per_block
    smem = report.shared_bytes + _RESERVED_SMEM_BYTES
    limits["shared memory"] = sku.smem_per_sm_bytes // smem
    limited_by = min(limits, key=lambda k: limits[k])
    bps = limits[limited_by]
    if bps < 1:
        return Feasibility(False, (f"no block fits on an SM ({limited_by})",), tuple(warnings))
    occ = bps * report.num_warps / (sku.max_threads_per_sm // sku.warp_size)
    return Feasibility(True, (), tuple(warnings), bps, limited_by, min(1.0, occ))
