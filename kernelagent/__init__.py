"""kernelagent: writes, verifies and tunes Triton GPU kernels per GPU SKU."""

__version__ = "0.1.0"
