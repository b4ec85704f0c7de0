"""The trusted harness: sandboxed, property-based verification of candidate kernels.

Public API (import from here): ``verify``, ``Verdict``, ``Reason``. The harness knows nothing
of the agent or the tuner; it verifies whatever candidate source it is given.
"""

from .verdict import Reason, Verdict


def verify(*args, **kwargs):
    """See :func:`kernelagent.harness.verify.verify` (imported lazily: it pulls in hypothesis)."""
    from .verify import verify as _verify

    return _verify(*args, **kwargs)


__all__ = ["Reason", "Verdict", "verify"]
