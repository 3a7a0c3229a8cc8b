"""Gate budgets: what a model must satisfy, read from a config file and merged with command-line flags.

Where budgets come from (later wins, key by key):

1. a config file: ``--config FILE`` names one; otherwise the *current directory* is searched for
   ``edgeplan.toml`` (its ``[gate]`` table) and then ``pyproject.toml`` (its ``[tool.edgeplan.gate]``
   table; a pyproject without that table is ignored). Only the current directory is searched, not its
   parents: CI jobs run from the repository root, and a budget picked up from an unrelated parent
   folder would be a silent surprise.
2. command-line flags (``edgeplan gate --max-latency-ms 40``).

Values may be numbers or strings with the budget's own unit: ``max_latency_ms = 40`` or ``"40ms"``,
``max_size_mb = "8MB"``, ``min_accuracy = 0.97`` or ``"97%"``, ``max_regression_pct = "5%"``.
Anything else (``"latency<=fast"``, a negative or zero limit, an accuracy above 1, an unknown key) raises
``ConfigError`` naming the key and where it came from; the CLI exits 2. A unit that is not the budget's
own (``max_latency_ms = "40s"``) is refused rather than converted, so a budget never means something
other than what its name says.

Paths (``data``, ``baseline``) written in a config file are relative to that file's folder, so a
checked-in ``pyproject.toml`` works from any working directory; paths given as flags are relative to
the current directory, as usual.

MB here is 10**6 bytes (SI), for both ``max_size_mb`` and ``max_peak_memory_mb``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeplan.hardware_profiles.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["GateBudgets", "find_config", "load_budgets", "parse_budget_value", "merge_budgets", "BUDGET_KEYS"]


class GateBudgets(BaseModel):
    """Every budget is optional; ``None`` means "not checked". Limits are strictly positive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_latency_ms: float | None = Field(default=None, gt=0)
    max_energy_mj: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)
    max_peak_memory_mb: float | None = Field(default=None, gt=0)
    min_accuracy: float | None = Field(default=None, gt=0, le=1)
    max_regression_pct: float | None = Field(default=None, gt=0)
    target: str | None = None
    data: str | None = None
    baseline: str | None = None
    measure: bool = False
    strict: bool = False

    def has_budget(self) -> bool:
        return any(getattr(self, k) is not None for k in BUDGET_KEYS)


# Budget keys -> (unit suffixes accepted in strings, what a valid value looks like).
_NUMERIC: dict[str, tuple[tuple[str, ...], str]] = {
    "max_latency_ms": (("ms",), "a latency in ms, e.g. 40 or '40ms'"),
    "max_energy_mj": (("mj",), "an energy in mJ, e.g. 12.5 or '12.5mJ'"),
    "max_size_mb": (("mb",), "a size in MB (10^6 bytes), e.g. 8 or '8MB'"),
    "max_peak_memory_mb": (("mb",), "a memory size in MB (10^6 bytes), e.g. 64 or '64MB'"),
    "min_accuracy": (("%",), "a fraction in (0, 1], e.g. 0.97 or '97%'"),
    "max_regression_pct": (("%",), "a percentage > 0, e.g. 5 or '5%'"),
}
BUDGET_KEYS = tuple(_NUMERIC)
_STRINGS = ("target", "data", "baseline")
_BOOLS = ("measure", "strict")
_ALIASES = {"max_regression": "max_regression_pct"}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zA-Z%]*)\s*$")


def _label(key: str, where: str) -> str:
    """How the user wrote the key: ``--max-latency-ms`` on the command line, ``FILE [table]: key`` in a file."""
    if where != "command line":
        return f"{where}: {key}"
    return "--max-regression" if key == "max_regression_pct" else "--" + key.replace("_", "-")


def parse_budget_value(key: str, value: Any, where: str = "command line") -> float:
    """Parse one numeric budget (number, or string with the key's own unit). Raises ConfigError naming ``key``."""
    units, example = _NUMERIC[key]
    label = _label(key, where)
    if isinstance(value, bool):
        raise ConfigError(f"{label} = {value!r} is not valid: expected {example}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m or (m.group(2) and m.group(2).lower() not in units):
            raise ConfigError(f"{label} = {value!r} is not valid: expected {example}")
        number, unit = float(m.group(1)), m.group(2)
    else:
        raise ConfigError(f"{label} = {value!r} is not valid: expected {example}")
    if key == "min_accuracy" and unit == "%":
        number /= 100.0
    if not (number > 0) or number != number or number == float("inf"):
        raise ConfigError(f"{label} = {value!r} must be > 0 (expected {example})")
    if key == "min_accuracy" and number > 1:
        raise ConfigError(f"{label} = {value!r} is above 1: write a fraction like 0.97 or a percentage like '97%'")
    return number


def _normalise(raw: Mapping[str, Any], where: str, base_dir: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = _ALIASES.get(key, key)
        if value is None:
            continue
        if k in _NUMERIC:
            out[k] = parse_budget_value(k, value, where)
        elif k in _STRINGS:
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: {key} = {value!r} must be a non-empty string")
            if k in ("data", "baseline") and base_dir is not None and not Path(value).is_absolute() \
                    and ":" not in value:  # "pkg.module:function" specs are not paths
                value = str(base_dir / value)
            out[k] = value
        elif k in _BOOLS:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} = {value!r} must be true or false")
            out[k] = value
        else:
            valid = ", ".join(list(_NUMERIC) + list(_STRINGS) + list(_BOOLS))
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {valid}")
    return out


def _validated(values: dict[str, Any], where: str) -> GateBudgets:
    try:
        return GateBudgets(**values)
    except ValidationError as e:  # pragma: no cover - _normalise already checks every rule
        first = e.errors()[0]
        key = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{where}: {key}: {first['msg']}") from None


def find_config(cwd: str | Path | None = None) -> Path | None:
    """The config file the gate uses when ``--config`` is not given (see the module docstring), or None."""
    d = Path(cwd or Path.cwd())
    ep = d / "edgeplan.toml"
    if ep.is_file():
        return ep
    pp = d / "pyproject.toml"
    if pp.is_file():
        try:
            data = tomllib.loads(pp.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            return pp  # let load_budgets report it with the file named
        if isinstance(data.get("tool", {}).get("edgeplan", {}).get("gate"), dict):
            return pp
    return None


def _table_from_file(path: Path) -> tuple[dict[str, Any], str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); write budgets as key = value, e.g. max_latency_ms = 40") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    tool = data.get("tool", {}).get("edgeplan", {}).get("gate") if isinstance(data.get("tool"), dict) else None
    if isinstance(tool, dict):
        return tool, f"{path.name} [tool.edgeplan.gate]"
    gate = data.get("gate")
    if isinstance(gate, dict):
        return gate, f"{path.name} [gate]"
    if path.name == "pyproject.toml":
        raise ConfigError(f"{path}: no [tool.edgeplan.gate] table")
    raise ConfigError(f"{path}: no [gate] table (edgeplan.toml) or [tool.edgeplan.gate] table (pyproject.toml)")


def load_budgets(config: str | Path | None = None, *, cwd: str | Path | None = None) -> tuple[GateBudgets, Path | None]:
    """Budgets from ``config`` (or the file ``find_config`` finds), and the file used (None: no file)."""
    path = Path(config) if config is not None else find_config(cwd)
    if path is None:
        return GateBudgets(), None
    table, where = _table_from_file(path)
    return _validated(_normalise(table, where, path.resolve().parent), where), path


def merge_budgets(base: GateBudgets, flags: Mapping[str, Any]) -> GateBudgets:
    """``base`` with every non-None entry of ``flags`` (raw flag values: numbers or strings) on top."""
    over = _normalise({k: v for k, v in flags.items() if v is not None and v is not False}, "command line", None)
    return _validated({**base.model_dump(), **over}, "command line")
