"""Network schedule: the optimal cut as a function of the uplink bandwidth, with exact breakpoints.

For a fixed assignment, every objective term that depends on the uplink bandwidth ``bw`` is
``bits / bw`` (transfer time, and the device's idle energy during it), so each cut's objective is a line
``a + b * u`` in ``u = 1 / bw``. The optimum over all cuts is the lower envelope of those lines, a
concave piecewise-linear function of ``u``. The envelope is found exactly with the Eisner-Severance
recursion: solve at both ends; if the two optimal cuts differ, solve again where their lines cross; if
the optimum there is no better than the two lines, the crossing is a breakpoint, otherwise recurse on
both halves with the new cut. That needs ``2 * segments - 1`` exact solves (each a min-cut; see
``split.solve``), not a bandwidth grid, and the breakpoints are exact up to float rounding.

When a device memory budget is active the per-bandwidth optimum comes from a heuristic fallback (see
``split.plan_split``), and the schedule is marked ``exact=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeplan.planner.split import (
    Objective,
    PartIO,
    SplitPlan,
    SplitProblem,
    _memory_fallback,
    evaluate,
    part_io,
    solve,
    with_uplink,
)


@dataclass(frozen=True)
class ScheduleSegment:
    """Within ``[min_mbps, max_mbps)`` of uplink bandwidth, ``cut_tensors`` is optimal."""

    min_mbps: float
    max_mbps: float
    cut_tensors: tuple[str, ...]
    node_tiers: tuple[int, ...]
    nodes_on_device: int
    transfer_bytes: int
    latency_ms_at_min: float  # predicted at min_mbps
    latency_ms_at_max: float  # predicted at max_mbps
    objective_at_min: float
    objective_at_max: float
    parts: tuple[PartIO, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_mbps": self.min_mbps, "max_mbps": self.max_mbps, "cut_tensors": list(self.cut_tensors),
            "nodes_on_device": self.nodes_on_device, "transfer_bytes": self.transfer_bytes,
            "latency_ms_at_min": self.latency_ms_at_min, "latency_ms_at_max": self.latency_ms_at_max,
            "parts": [p.to_dict() for p in self.parts],
        }


@dataclass(frozen=True)
class NetworkSchedule:
    segments: tuple[ScheduleSegment, ...]  # in increasing bandwidth
    boundary: int
    objective: str
    exact: bool
    solves: int  # how many exact solves it took

    @property
    def breakpoints_mbps(self) -> tuple[float, ...]:
        return tuple(s.min_mbps for s in self.segments[1:])

    def cut_for(self, bandwidth_mbps: float) -> ScheduleSegment:
        """The segment a runtime should use at ``bandwidth_mbps`` (clamped to the covered range)."""
        for seg in self.segments:
            if bandwidth_mbps < seg.max_mbps:
                return seg
        return self.segments[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "link_boundary": self.boundary,
            "objective": self.objective,
            "exact": self.exact,
            "solves": self.solves,
            "breakpoints_mbps": list(self.breakpoints_mbps),
            "segments": [s.to_dict() for s in self.segments],
        }


def network_schedule(
    problem: SplitProblem,
    objective: Objective | None = None,
    *,
    min_mbps: float = 0.5,
    max_mbps: float = 1000.0,
    boundary: int = 0,
    max_solves: int = 200,
) -> NetworkSchedule:
    """Optimal plan per uplink bandwidth of link ``boundary`` over ``[min_mbps, max_mbps]``."""
    objective = objective or Objective.named("latency")
    exact = problem.options.memory_budget_bytes is None
    solves = 0

    def best_at(bw: float) -> SplitPlan:
        nonlocal solves
        solves += 1
        pb = with_uplink(problem, bw, boundary)
        plan = solve(pb, objective)
        if not plan.feasible and pb.options.memory_budget_bytes is not None:
            plan = _memory_fallback(pb, objective, plan)
        return plan

    cache: dict[tuple[int, ...], tuple[float, float]] = {}

    def line(plan: SplitPlan) -> tuple[float, float]:
        key = plan.node_tiers
        if key not in cache:
            u1, u2 = 1.0 / max_mbps, 1.0 / min_mbps
            f1 = evaluate(with_uplink(problem, 1.0 / u1, boundary), key, objective, with_memory=False).objective_value
            f2 = evaluate(with_uplink(problem, 1.0 / u2, boundary), key, objective, with_memory=False).objective_value
            b = (f2 - f1) / (u2 - u1)
            cache[key] = (f1 - b * u1, b)
        return cache[key]

    # work in u = 1 / bandwidth; u_lo is the fastest link
    u_lo, u_hi = 1.0 / max_mbps, 1.0 / min_mbps
    p_lo, p_hi = best_at(max_mbps), best_at(min_mbps)
    breaks: list[tuple[float, SplitPlan]] = []  # (u where the plan starts to be optimal, plan) moving to larger u

    def rec(ua: float, pa: SplitPlan, ub: float, pbp: SplitPlan) -> None:
        if pa.node_tiers == pbp.node_tiers or solves >= max_solves:
            if pa.node_tiers != pbp.node_tiers:
                breaks.append(((ua + ub) / 2, pbp))
            return
        a1, b1 = line(pa)
        a2, b2 = line(pbp)
        if abs(b1 - b2) < 1e-15:
            breaks.append(((ua + ub) / 2, pbp))
            return
        u = (a2 - a1) / (b1 - b2)
        u = min(max(u, ua), ub)
        pm = best_at(1.0 / u)
        am, bm = line(pm)
        fm = am + bm * u
        f_lines = a1 + b1 * u
        tol = 1e-9 * max(1.0, abs(f_lines))
        if fm >= f_lines - tol or pm.node_tiers in (pa.node_tiers, pbp.node_tiers):
            breaks.append((u, pbp))
            return
        rec(ua, pa, u, pm)
        rec(u, pm, ub, pbp)

    rec(u_lo, p_lo, u_hi, p_hi)
    # assemble segments in increasing bandwidth = decreasing u
    pieces: list[tuple[float, float, SplitPlan]] = []  # (u_start, u_end, plan), u increasing
    u_start, cur = u_lo, p_lo
    for u, plan in sorted(breaks, key=lambda x: x[0]):
        pieces.append((u_start, u, cur))
        u_start, cur = u, plan
    pieces.append((u_start, u_hi, cur))
    # merge adjacent identical plans
    merged: list[list[Any]] = []
    for ua, ub, plan in pieces:
        if merged and merged[-1][2].node_tiers == plan.node_tiers:
            merged[-1][1] = ub
        else:
            merged.append([ua, ub, plan])
    segments = []
    for ua, ub, plan in reversed(merged):  # increasing bandwidth
        lo_bw, hi_bw = 1.0 / ub, 1.0 / ua
        at_lo = evaluate(with_uplink(problem, lo_bw, boundary), plan.node_tiers, objective, with_memory=False)
        at_hi = evaluate(with_uplink(problem, hi_bw, boundary), plan.node_tiers, objective, with_memory=False)
        segments.append(ScheduleSegment(
            min_mbps=float(lo_bw), max_mbps=float(hi_bw),
            cut_tensors=tuple(c.name for c in plan.cut_tensors if c.boundary == boundary),
            node_tiers=plan.node_tiers, nodes_on_device=int(np.sum(np.asarray(plan.node_tiers) == 0)),
            transfer_bytes=plan.transfer_bytes,
            latency_ms_at_min=at_lo.latency_ms, latency_ms_at_max=at_hi.latency_ms,
            objective_at_min=at_lo.objective_value, objective_at_max=at_hi.objective_value,
            parts=part_io(problem, plan.node_tiers),
        ))
    return NetworkSchedule(segments=tuple(segments), boundary=boundary, objective=objective.name,
                           exact=exact and solves < max_solves, solves=solves)
