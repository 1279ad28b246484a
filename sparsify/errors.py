"""Exit codes and the exceptions that carry them (the CLI prints one line per error)."""

from __future__ import annotations

__all__ = [
    "EXIT_OK", "EXIT_INTERNAL", "EXIT_USAGE", "EXIT_GATE", "EXIT_STRICT", "EXIT_MISSING",
    "EXIT_SIGINT", "EXIT_SIGTERM",
    "SparsifyError", "UsageError", "InputError", "OutputError", "GateFailed",
    "MissingComponent", "Terminated",
]

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in sparsify
EXIT_USAGE = 2  # usage error or bad input (file, pattern, output path)
EXIT_GATE = 3  # a parity gate failed or could not be evaluated
EXIT_STRICT = 4  # `check --strict` found non-compliant targets
EXIT_MISSING = 5  # a required optional component (TensorRT, a GPU, an extra) is missing
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class SparsifyError(Exception):
    """An expected failure: the CLI prints ``str(self)`` on one line and exits ``exit_code``."""

    exit_code = EXIT_INTERNAL


class UsageError(SparsifyError):
    exit_code = EXIT_USAGE


class InputError(SparsifyError):
    """The input model (or a file it references) is missing, corrupt or hostile."""

    exit_code = EXIT_USAGE


class OutputError(SparsifyError):
    """The output cannot be written where the user asked."""

    exit_code = EXIT_USAGE


class GateFailed(SparsifyError):
    exit_code = EXIT_GATE


class MissingComponent(SparsifyError):
    exit_code = EXIT_MISSING


class Terminated(BaseException):
    """Raised from the SIGTERM handler so that ``finally`` blocks remove temporary files."""
