"""Pareto selection and hypervolume on plain sequences (pure functions, no Optuna, no files).

An objective is a (name, direction) pair, direction "min" or "max". Points are dicts of metric values.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

DIRECTIONS: dict[str, str] = {
    "latency": "min",
    "accuracy": "max",
    "energy": "min",
    "cost": "min",
    "size": "min",
}
# objective name -> metric key in a plan's metrics dict
METRIC_OF: dict[str, str] = {
    "latency": "latency_ms",
    "accuracy": "accuracy",
    "energy": "energy_mj",
    "cost": "cost_usd_per_1k",
    "size": "size_mb",
}


def _as_min(points: Sequence[Mapping[str, float]], objectives: Sequence[str]) -> np.ndarray:
    """Matrix of objective values turned into minimisation (max objectives negated)."""
    arr = np.array([[float(p[METRIC_OF[o]]) for o in objectives] for p in points], dtype=float).reshape(len(points), len(objectives))
    for j, o in enumerate(objectives):
        if DIRECTIONS[o] == "max":
            arr[:, j] = -arr[:, j]
    return arr


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_indices(points: Sequence[Mapping[str, float]], objectives: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point: the first is kept)."""
    if not points:
        return []
    arr = _as_min(points, objectives)
    keep: list[int] = []
    for i in range(len(arr)):
        if any(dominates(arr[j], arr[i]) for j in range(len(arr)) if j != i):
            continue
        if any(np.array_equal(arr[i], arr[k]) for k in keep):
            continue
        keep.append(i)
    return keep


def hypervolume(points: Sequence[Mapping[str, float]], objectives: Sequence[str],
                reference: Mapping[str, float]) -> float:
    """Hypervolume dominated by ``points`` up to ``reference`` (exact, inclusion-exclusion-free sweep).

    Uses Optuna's implementation (WFG) on the minimisation form; points beyond the reference are dropped.
    """
    from optuna._hypervolume import compute_hypervolume

    if not points:
        return 0.0
    arr = _as_min(points, objectives)
    ref = _as_min([reference], objectives)[0]
    arr = arr[np.all(arr < ref, axis=1)]
    if len(arr) == 0:
        return 0.0
    return float(compute_hypervolume(arr, ref))
