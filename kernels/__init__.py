"""The kernel library: ``from kernelagent.kernels import softmax``.

Importing this package loads torch and triton only; verification, tuning and the agent live
elsewhere and are never imported from here.
"""

from .registry import UnknownOpError, get_opspec, kernel_path, op_names

__all__ = ["UnknownOpError", "get_opspec", "kernel_path", "op_names"]
