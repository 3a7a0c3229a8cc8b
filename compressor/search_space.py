"""``SearchParam``: one searchable setting a compression pass declares (shared by every pass).

A pass's config class returns a tuple of these from ``search_space()``; ``planner.search`` builds the
Optuna space from them (``suggest(trial, prefix="<pass>.")``), never from a hand-kept list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class SearchParam:
    """``kind`` "categorical" (``choices``), "int" or "float" (``low``..``high``, optionally ``log``)."""

    name: str
    kind: Literal["categorical", "int", "float"]
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False

    def suggest(self, trial: Any, prefix: str = "") -> Any:
        """Ask an Optuna trial (duck-typed: suggest_categorical/int/float) for a value named prefix+name."""
        name = prefix + self.name
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)
