"""The trusted harness: sandboxed, property-based verification of candidate kernels.

Public API: ``verify``, ``Verdict``, ``Reason``. The harness knows nothing of the agent or the
tuner; it verifies whatever candidate source it is given. (``verify`` is imported eagerly: a
lazy wrapper would be shadowed by the ``verify`` submodule once anything imported it.)
"""

from .verdict import Reason, Verdict
from .verify import verify

__all__ = ["Reason", "Verdict", "verify"]
