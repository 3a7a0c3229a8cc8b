"""The one table that maps library errors to one-line messages and exit codes.

Exit codes: 0 success, 1 a check failed, 2 bad input or usage, 3 an internal/runtime failure.
A traceback is printed only with ``--debug``.
"""

from __future__ import annotations

from edgeplan.hardware_profiles.errors import (
    CheckFailed,
    CompressionError,
    EdgeplanError,
    ExportError,
    InputError,
    MeasurementError,
    PlanError,
)

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3

# (exception type, exit code, message prefix). First match wins: keep subclasses above their bases.
ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (CheckFailed, EXIT_CHECK_FAILED, "check failed"),
    (InputError, EXIT_USAGE, "error"),
    (ExportError, EXIT_RUNTIME, "export failed"),
    (CompressionError, EXIT_RUNTIME, "compression failed"),
    (PlanError, EXIT_CHECK_FAILED, "no plan"),
    (MeasurementError, EXIT_RUNTIME, "measurement failed"),
    (EdgeplanError, EXIT_RUNTIME, "error"),
    (FileNotFoundError, EXIT_USAGE, "file not found"),
    (KeyboardInterrupt, 130, "interrupted"),
]


def classify(exc: BaseException) -> tuple[int, str]:
    """Return (exit code, one-line message) for an exception."""
    for etype, code, prefix in ERROR_TABLE:
        if isinstance(exc, etype):
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else etype.__name__
            return code, f"{prefix}: {text}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return EXIT_RUNTIME, f"internal error ({type(exc).__name__}): {text} (re-run with --debug for the traceback)"
