"""`kernelagent …` run in the test's own process (fast; monkeypatches apply), for tests."""

from __future__ import annotations

import contextlib
import io
import os
import sys


def cli(*args, env_unset=()):
    """Run the CLI with ``args``: (exit code, stdout, stderr). ``env_unset``: variables removed
    for the call and restored after."""
    from kernelagent.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, {k: os.environ.pop(k) for k in env_unset if k in os.environ}
    sys.argv = ["kernelagent", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.update(saved_env)
    return code, out.getvalue(), err.getvalue()
