"""``kernelagent nightly``: re-verify, re-measure and gate the tuned library; history and report.

``run`` orchestrates one run, ``inventory`` reads the library defensively, ``gate`` is the
statistical regression gate (a pure function), ``measure`` and ``samples`` are the GPU and
replay measurement backends, ``history`` the SQLite store, ``report`` and ``plots`` the outputs.
See docs/NIGHTLY.md.
"""
