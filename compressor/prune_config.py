"""Settings of the pruning pass: ``PruneConfig``, per-layer ``Override``s and the searchable space.

Per-layer ratio priority (lowest to highest), modelled on PyTorch's ``QConfigMapping``
(torch/ao/quantization/qconfig_mapping.py: global < object type < module-name regex < module name):

    1. ``ratio``                         the global target, applied to every prunable layer
    2. ``Override(kind="op_type")``      layer class name, e.g. "Conv2d", "Linear", "ConvTranspose2d"
    3. ``Override(kind="pattern")``      ``re.match`` on the module's qualified name, e.g. r"features\\.1\\d"
    4. ``Override(kind="name")``         the exact qualified name, e.g. "features.3"
    ``ignored_layers``                   never pruned, whatever the above say (same as ratio 0); a
                                         container's name ignores every layer inside it

Within one kind, the first matching override in the list wins (as in ``QConfigMapping``). A ratio
of 0 means "do not prune this layer" and is passed to torch-pruning as an ignored layer.

A "ratio" is torch-pruning's channel ratio: the fraction of a layer's *output* channels removed.
Because the next layer loses the same *input* channels, MACs fall roughly with (1 - ratio)^2:
ratio 0.5 leaves about a quarter of the MACs of the pruned convolutions.

``PruneConfig.search_space()`` declares what a hyper-parameter search may vary (Olive-style: the pass
owns its space) and ``PruneConfig.from_trial(trial)`` builds a config from an Optuna trial, so a
search never keeps its own list of pruning knobs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeplan.hardware_profiles.errors import config_error
from edgeplan.compressor.search_space import SearchParam

__all__ = ["Override", "PruneConfig", "SearchParam", "resolve_ratio", "MAX_RATIO"]

MAX_RATIO = 0.9  # above this a layer keeps too few channels to recover by fine-tuning

_PRIORITY = {"op_type": 1, "pattern": 2, "name": 3}


class Override(BaseModel):
    """A per-layer pruning ratio; ``kind`` says how ``value`` selects layers (see module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["op_type", "pattern", "name"]
    value: str = Field(min_length=1)
    ratio: float = Field(ge=0.0, le=MAX_RATIO)

    @field_validator("value")
    @classmethod
    def _valid_regex(cls, v: str, info: Any) -> str:
        if info.data.get("kind") == "pattern":
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regular expression {v!r}: {e}") from None
        return v


class PruneConfig(BaseModel):
    """Settings of one structured-pruning run (written into ``prune_report.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ratio: float = Field(0.5, ge=0.0, le=MAX_RATIO, description="fraction of output channels removed per layer")
    global_pruning: bool = Field(False, description="rank channels across layers instead of per layer")
    importance: Literal["magnitude", "taylor"] = Field(
        "magnitude", description="magnitude: L2 norm of weights; taylor: |w * dL/dw| (needs data)"
    )
    round_to: int | None = Field(None, description="keep channel counts multiples of this (1, 8 or 16)")
    ignored_layers: tuple[str, ...] = Field((), description="qualified module names never pruned")
    overrides: tuple[Override, ...] = Field((), description="per-layer ratios; see the priority above")
    taylor_samples: int = Field(64, ge=1, le=4096, description="samples used to compute Taylor gradients")

    @field_validator("round_to")
    @classmethod
    def _round_to(cls, v: int | None) -> int | None:
        if v not in (None, 1, 8, 16):
            raise ValueError("round_to must be 1, 8 or 16 (or unset)")
        return None if v == 1 else v

    @classmethod
    def build(cls, **kwargs: Any) -> "PruneConfig":
        """Validate like the constructor but raise ``ConfigError`` with a one-line message."""
        try:
            return cls(**kwargs)
        except ValidationError as e:
            raise config_error(e, "pruning setting", "config") from None

    @classmethod
    def search_space(cls) -> tuple[SearchParam, ...]:
        """What a search may vary: ratio in [0, 0.8], round_to in {1, 8, 16}, importance."""
        return (
            SearchParam("ratio", "float", low=0.0, high=0.8),
            SearchParam("round_to", "categorical", choices=(1, 8, 16)),
            SearchParam("importance", "categorical", choices=("magnitude", "taylor")),
        )

    @classmethod
    def from_trial(cls, trial: Any, base: "PruneConfig | None" = None, *, has_data: bool = True) -> "PruneConfig":
        """A config with the searchable settings suggested by ``trial``, the rest from ``base``.

        Without data Taylor importance cannot run, so ``importance`` is then fixed to magnitude
        (not suggested) rather than producing failing trials.
        """
        values = (base or cls()).model_dump()
        for p in cls.search_space():
            if p.name == "importance" and not has_data:
                values["importance"] = "magnitude"
                continue
            values[p.name] = p.suggest(trial, prefix="prune.")
        return cls.build(**values)


def resolve_ratio(name: str, op_type: str, config: PruneConfig) -> tuple[float, str]:
    """The ratio for one layer and where it came from ("global", "op_type:Conv2d", "pattern:...",
    "name:...", "ignored"). Pure: this is the documented priority, tested on its own."""
    if any(name == ig or name.startswith(ig + ".") for ig in config.ignored_layers):
        return 0.0, "ignored"  # a container name ignores every layer inside it
    best: tuple[int, float, str] | None = None
    for ov in config.overrides:
        if ov.kind == "name":
            hit = ov.value == name
        elif ov.kind == "pattern":
            hit = re.match(ov.value, name) is not None
        else:
            hit = ov.value == op_type
        if hit:
            prio = _PRIORITY[ov.kind]
            if best is None or prio > best[0]:  # strictly greater: the first override of a kind wins
                best = (prio, ov.ratio, f"{ov.kind}:{ov.value}")
    if best is None:
        return config.ratio, "global"
    return best[1], best[2]
