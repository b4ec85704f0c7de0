"""Expected failures and their exit codes (0 ok, 1 check failed, 2 bad input, 3 environment).

Raise these from anywhere a user-facing command runs; ``kernelagent.cli.main`` turns them into
one ``error: …`` line on stderr and the exit code, with no traceback.
"""

from pathlib import Path


class KernelAgentError(Exception):
    exit_code = 1


class CheckFailed(KernelAgentError):
    """The check or gate the command runs did not pass (exit 1)."""

    exit_code = 1


class BadInput(KernelAgentError):
    """Unknown op/SKU, missing or malformed file, bad option (exit 2)."""

    exit_code = 2


class EnvironmentProblem(KernelAgentError):
    """No GPU/NVML where one is required, dead endpoint, missing tool (exit 3)."""

    exit_code = 3


def read_text_file(path: Path, what: str) -> str:
    """A user-supplied source file as text, or a BadInput naming it (missing, binary, not UTF-8)."""
    if not path.is_file():
        raise BadInput(f"{what} not found: {path}")
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # what some Windows editors save; its NULs are not binary
        raise BadInput(f"{what} {path} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    if b"\x00" in raw:
        raise BadInput(f"{what} {path} is a binary file, not Python source")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
