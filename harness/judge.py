"""The parent's judgement of one ``call`` reply: audit claims, input integrity, output bytes.

``judge_call`` turns a worker's reply (``protocol.CallReply``) and the shared file into either
the output tensor or a failing outcome. What the worker claims can only convict; what acquits
(inputs unchanged, output size, dtype and shape, the bytes themselves) is read here, by the
parent, from the shared file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.spec import DTYPE_NAMES, Case
from .protocol import CallReply, Malformed
from .verdict import Reason
from .wire import WIRE_DTYPES, tensor_from_bytes


@dataclass
class Outcome:
    status: str                       # "pass" | "fail" | "skip"
    reason: str | None = None
    detail: str = ""
    case: Case | None = None
    worst_ratio: float | None = None
    fatal: bool = False               # the worker is gone; stop evaluating
    informative: bool = True          # would an all-zeros output have failed this case?
    cpu_s: float | None = None        # CPU the worker had used when it was stopped (timeouts)


def reason_of(value, default: Reason) -> Reason:
    try:
        return Reason(value)
    except (ValueError, TypeError):
        return default


def judge_call(worker, inp, raw_reply: dict):
    """(output tensor, its bytes) or a failing ``Outcome``. Raises ``Malformed`` (or a
    ``WireError``) for a reply that breaks the protocol; the caller makes that a crash."""
    r = CallReply.parse(raw_reply)

    def fail(reason: Reason, detail: str) -> Outcome:
        return Outcome("fail", reason.value, detail, inp.case)

    if not r.ok:
        return fail(reason_of(r.reason, Reason.RUNTIME_ERROR), r.detail)
    if r.launches < 1:
        return fail(Reason.NO_KERNEL, "no @triton.jit kernel of the candidate was launched during the call")
    if r.bad_ops:
        ops = ", ".join(f"aten.{k}×{v}" for k, v in sorted(r.bad_ops.items())[:12])
        return fail(Reason.PYTORCH_FALLBACK, f"PyTorch computed outside the Triton kernels during the call: {ops}")
    if r.host_reads:
        what = ", ".join(f"{k}×{v}" for k, v in sorted(r.host_reads.items())[:8])
        return fail(Reason.PYTORCH_FALLBACK, "tensor values reached Python during the call (compute outside the "
                    f"Triton kernels): {what}")
    if r.out_type != "torch.Tensor":
        return fail(Reason.NOT_TENSOR, f"the output is a {r.out_type[:200]}, not a plain torch.Tensor")
    # Input integrity, decided here: the bytes in the shared file against the pristine copy.
    now = worker.shm_read(0, len(inp.image))
    if now != inp.image:
        moved = [i for i, (lo, hi) in enumerate(inp.ranges) if now[lo:hi] != inp.image[lo:hi]]
        where = f"at position(s) {moved}" if moved else "next to its inputs (out of bounds)"
        return fail(Reason.INPUT_MUTATION, f"the candidate modified its input memory {where} "
                    "(seen by the parent in the shared inputs)")
    if r.mutated_inputs:
        return fail(Reason.INPUT_MUTATION, f"the candidate modified its input(s) at position(s) {r.mutated_inputs[:16]} "
                    "(seen by the worker on the device)")
    if r.aliases_input:
        return fail(Reason.OUTPUT_REUSE, "the output shares memory with an input")
    if r.reuses_previous_output:
        return fail(Reason.OUTPUT_REUSE, "the output reuses the memory of an earlier call's output (caching)")
    if r.changed_after_return or r.threads_added > 0:
        return fail(Reason.DEFERRED_WRITE, "the output changed after the call returned, or the call left threads running")
    if not r.out_launched:
        return fail(Reason.NO_KERNEL, "the output was not written by a Triton launch of this call: its storage was "
                    "not an argument of any launch of the candidate's kernels (built or copied by PyTorch instead)")
    if r.out_shape is None:
        raise Malformed("a tensor output without its description")
    exp_shape, exp_dtype = list(inp.ref64.shape), inp.native.dtype
    if r.out_shape != exp_shape:
        return fail(Reason.SHAPE, f"output shape {tuple(r.out_shape)}, expected {tuple(exp_shape)}")
    if not (r.out_dtype in WIRE_DTYPES or r.out_dtype.startswith("torch.")):
        raise Malformed(f"unknown output dtype {r.out_dtype[:40]!r}")  # the worker names others "torch.*"
    if WIRE_DTYPES.get(r.out_dtype) is not exp_dtype:
        return fail(Reason.DTYPE, f"output dtype {r.out_dtype[:40]}, expected {DTYPE_NAMES.get(exp_dtype, exp_dtype)}")
    if not r.out_written or r.out_nbytes != inp.out_bytes:
        raise Malformed(f"the output ({r.out_nbytes!r} bytes) was not written to the shared file "
                        f"({inp.out_bytes} bytes expected)")
    raw = worker.shm_read(inp.out_off, inp.out_bytes)   # a private copy: the worker cannot change it now
    return tensor_from_bytes(exp_dtype, exp_shape, raw), raw


def zeros_would_fail(out: torch.Tensor, inp, target) -> bool:
    """Is this case informative: would an all-zeros output have failed it?"""
    from .compare import compare

    return not compare(torch.zeros_like(out), inp.ref64, inp.native, target.tolerance,
                       target.reduction_length(inp.call)).ok
