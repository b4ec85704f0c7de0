"""Expected failures and their exit codes (0 ok, 1 check failed, 2 bad input, 3 environment).

Raise these from anywhere a user-facing command runs; ``kernelagent.cli.main`` turns them into
one ``error: …`` line on stderr and the exit code, with no traceback.
"""


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
