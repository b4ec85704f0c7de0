"""``ast.parse`` behind one process-wide lock.

CPython keeps the AST builder's recursion bookkeeping in interpreter state, not per thread: two
threads parsing at once can fail with ``SystemError: AST constructor recursion depth mismatch``
(seen with ``kernelagent generate --parallel 2`` on Python 3.11.7, CPython gh-106905). The agent
checks parallel candidates in threads, so every parse in kernelagent goes through here.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    with _LOCK:
        return ast.parse(source, filename=filename)
