"""Corrections to Triton's CPU interpreter, applied wherever kernels are interpreted: the
harness's sandboxed worker, the library's ``KERNELAGENT_INTERPRET=1`` mode, and the test lane.

A kernel correct on a GPU must be correct in the interpreter, without special cases in the
kernel itself. Triton's interpreter stores
bf16 as uint16 and its ``create_dot`` multiplies those bit patterns as integers (errors ~1e10),
so any bf16 ``tl.dot`` looks wrong. Widening bf16 operands to fp32 before the product gives
the exact products that tensor cores compute, accumulated in fp32 as on the GPU.
"""

from __future__ import annotations


def patch_bf16_dot() -> bool:
    """Patch the interpreter's dot for bf16 operands; True if the patch is in place."""
    try:
        import numpy as np
        import triton.language as tl
        from triton.runtime import interpreter as interp
    except ImportError:  # pragma: no cover
        return False
    builder = getattr(interp, "InterpreterBuilder", None)
    convert = getattr(interp, "_convert_float", None)
    handle = getattr(interp, "TensorHandle", None)
    if builder is None or convert is None or handle is None or getattr(builder.create_dot, "_kernelagent", False):
        return getattr(getattr(builder, "create_dot", None), "_kernelagent", False)
    original = builder.create_dot

    def widen(t):
        if getattr(t.dtype, "scalar", t.dtype) == tl.bfloat16:
            return handle(convert(t.data, tl.bfloat16, tl.float32, None).view(np.float32), tl.float32)
        return t

    def create_dot(self, a, b, d, *args, **kwargs):
        return original(self, widen(a), widen(b), d, *args, **kwargs)

    create_dot._kernelagent = True
    create_dot.__wrapped__ = original
    builder.create_dot = create_dot
    return True
