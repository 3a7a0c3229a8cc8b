"""Library error types shared by every edgeplan layer.

They live in the lowest layer (``hardware_profiles``) because imports flow one way
(hardware_profiles <- compressor <- planner <- cli) and every layer raises them.
The CLI maps each type to a one-line message and an exit code in ``edgeplan.cli.errors``.
Messages are written for the user: one line, what is wrong and what to do.
"""

from __future__ import annotations


class EdgeplanError(Exception):
    """Base class: an expected failure with a user-facing one-line message."""


class InputError(EdgeplanError):
    """Bad user input (a file, a value, an option). Exit code 2."""


class ModelLoadError(InputError):
    """A model file is missing, truncated, corrupt, or of an unknown format."""


class UntrustedModelError(InputError):
    """Loading would unpickle (execute) code and ``--trust-model`` was not given."""


class InputShapeError(InputError):
    """The model's input shape is unknown, malformed, or does not fit the model."""


class DataError(InputError):
    """A data file (``--data``) is missing, malformed, or does not fit the model."""


class ProfileError(InputError):
    """A hardware or link profile is unknown or malformed (the message names the field)."""


class ConfigError(InputError):
    """A budget, constraint, recipe or config value is malformed."""


class ExportError(EdgeplanError):
    """A model could not be exported to ONNX or the export does not match the original."""


class CompressionError(EdgeplanError):
    """A compression pass failed as a whole (partial failures are reported, not raised)."""


class PlanError(EdgeplanError):
    """No valid plan exists under the given constraints."""


class MeasurementError(EdgeplanError):
    """A measurement could not be taken (runtime failure, missing device)."""


class CheckFailed(EdgeplanError):
    """A check ran and failed (a gate budget, a bundle verification). Exit code 1."""


def config_error(exc: Exception, what: str, default_loc: str = "config") -> ConfigError:
    """A one-line ``ConfigError`` from a pydantic ``ValidationError`` (its first error, with its field path):
    ``invalid <what> <field>: <message>``. Duck-typed so this module needs no pydantic import."""
    errs = exc.errors() if hasattr(exc, "errors") else [{}]
    first = errs[0] if errs else {}
    where = ".".join(str(x) for x in first.get("loc", ())) or default_loc
    return ConfigError(f"invalid {what} {where}: {first.get('msg', 'invalid value')}")
