"""Settings of ``edgeplan optimize`` (the search) and its constraint syntax.

Constraints are written ``METRIC<=LIMIT`` or ``METRIC>=LIMIT`` with METRIC one of
``CONSTRAINT_METRICS`` (e.g. ``latency_ms<=50``, ``accuracy_drop<=1``). They go to Optuna through its
constraints mechanism (``constraints_func``: value - limit <= 0 is feasible), not as penalties, and
the final Pareto front keeps only plans that satisfy them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeplan.hardware_profiles.errors import ConfigError, config_error

OBJECTIVES = ("latency", "accuracy", "energy", "cost", "size")
CONSTRAINT_METRICS = ("latency_ms", "energy_mj", "cost_usd_per_1k", "size_mb", "accuracy", "accuracy_drop",
                      "peak_memory_mb", "transfer_bytes")
_CONSTRAINT_RE = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


class Constraint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    op: Literal["<=", ">="]
    limit: float

    def violation(self, value: float) -> float:
        """<= 0 when satisfied (Optuna's convention)."""
        return value - self.limit if self.op == "<=" else self.limit - value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.limit:g}"


def parse_constraint(text: str) -> Constraint:
    m = _CONSTRAINT_RE.match(text)
    if not m:
        raise ConfigError(f"malformed constraint {text!r}: expected METRIC<=NUMBER or METRIC>=NUMBER, "
                          f"e.g. latency_ms<=50 (metrics: {', '.join(CONSTRAINT_METRICS)})")
    metric, op, limit = m.group(1), m.group(2), float(m.group(3))
    if metric not in CONSTRAINT_METRICS:
        raise ConfigError(f"unknown constraint metric {metric!r} in {text!r}; valid: {', '.join(CONSTRAINT_METRICS)}")
    return Constraint(metric=metric, op=op, limit=limit)


class SearchSettings(BaseModel):
    """Everything that defines a study. Written to ``settings.json`` in the output folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    target: str
    cloud: str | None = None
    link: str = "4g"
    data: str | None = None
    objectives: tuple[str, ...] = ("latency", "accuracy", "size")
    constraints: tuple[Constraint, ...] = ()
    trials: int = Field(12, ge=1, le=100_000)
    timeout_s: float | None = Field(None, gt=0)
    sampler: Literal["nsga2", "tpe", "random"] = "nsga2"
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    out_dir: str = "edgeplan-out"
    trust_model: bool = False
    input_shape: str | None = None
    max_bundles: int = Field(6, ge=0, le=100)
    proxy_samples: int = Field(64, ge=8, le=100_000)
    eval_samples: int = Field(512, ge=8, le=1_000_000)
    measure_repeats: int = Field(20, ge=3, le=10_000)
    full_eval: bool = True
    # the split runtime's per-request overhead for pricing split plans (None: split.DEFAULT_REQUEST_OVERHEAD_MS)
    request_overhead_ms: float | None = Field(None, ge=0)
    # the split runtime's cost per cut byte, as a rate (None: split.DEFAULT_SERIALISE_MB_PER_S)
    serialise_mb_per_s: float | None = Field(None, gt=0, allow_inf_nan=False)

    def given_runtime_costs(self) -> dict[str, float]:
        """The split runtime costs the user gave, as ``SplitOptions`` keyword arguments (defaults omitted)."""
        pairs = (("request_overhead_ms", self.request_overhead_ms), ("serialise_mb_per_s", self.serialise_mb_per_s))
        return {k: v for k, v in pairs if v is not None}

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [o for o in v if o not in OBJECTIVES]
        if bad or not v:
            raise ValueError(f"unknown objective(s) {', '.join(bad) or '(none)'}; valid: {', '.join(OBJECTIVES)}")
        if len(set(v)) != len(v):
            raise ValueError("objectives repeat")
        return v

    @classmethod
    def build(cls, **kwargs) -> "SearchSettings":
        try:
            return cls(**kwargs)
        except ValidationError as e:
            raise config_error(e, "optimize setting", "settings") from None
