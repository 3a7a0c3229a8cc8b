"""Exact min-cut solver for the split problem over all downward-closed node sets (DADS-style, K tiers).

The construction (a tier assignment is a map ``label: node -> {0..K-1}`` that never decreases along a
data edge, i.e. every level set ``{v : label(v) >= k}`` is an *upward-closed* set and its complement a
downward-closed one):

- One binary variable per node and level ``k = 1..K-1``: ``x[k][v] = [label(v) >= k]``. In the flow
  graph "x = 1" means "on the sink side". ``x[k+1][v] <= x[k][v]`` is an infinite edge
  ``x[k][v] -> x[k+1][v]`` (this is Ishikawa's layered construction; for K = 2 it is exactly DADS).
- Node costs ``c_0, c_1, ..., c_{K-1}`` become ``c_0 + sum_k (c_k - c_{k-1}) x[k][v]``: a positive
  coefficient is an edge ``s -> x`` (paid when x is on the sink side), a negative one is the constant
  plus an edge ``x -> t`` (paid when x stays on the source side).
- Downward closure (a consumer never runs on a lower tier than its producer): for every data edge
  ``u -> v`` and level k an infinite edge ``x[k][v] -> x[k][u]``.
- A tensor that crosses boundary ``k-1 | k`` costs its transfer weight *once* however many consumers it
  has: an auxiliary node ``a`` with ``x[k][producer] -> a`` (the weight) and ``a -> x[k][c]`` (infinite)
  for each consumer c. A graph input's producer is the source itself.
- Upper bounds on a node's tier (privacy, "labels <= m") are infinite edges ``s -> x[k][v]``.

Every term above is exactly representable, so the minimum cut *is* the optimum of the linear objective
over all monotone assignments (all downward-closed device sets, and for K = 3 all nested pairs) — it is
verified against brute-force enumeration in tests/test_split.py.

The max-flow itself is a plain Dinic implementation on integer-free float capacities (numbers are in ms,
mJ and $ so they are far from float precision limits); it avoids networkx's per-call graph overhead and
solves a 1,000-node transformer graph in a few tens of milliseconds (benchmarks/bench_split.py).
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import numpy as np

INF = float("inf")
_EPS = 1e-12


class _FlowGraph:
    """Adjacency-list residual graph for Dinic's algorithm."""

    __slots__ = ("n", "head", "to", "cap", "nxt")

    def __init__(self, n: int) -> None:
        self.n = n
        self.head = [-1] * n
        self.to: list[int] = []
        self.cap: list[float] = []
        self.nxt: list[int] = []

    def add(self, u: int, v: int, c: float) -> None:
        if c <= 0.0 or u == v:
            return
        self.to.append(v)
        self.cap.append(c)
        self.nxt.append(self.head[u])
        self.head[u] = len(self.to) - 1
        self.to.append(u)
        self.cap.append(0.0)
        self.nxt.append(self.head[v])
        self.head[v] = len(self.to) - 1

    def max_flow(self, s: int, t: int) -> float:
        to, cap, nxt, head = self.to, self.cap, self.nxt, self.head
        n = self.n
        total = 0.0
        while True:
            level = [-1] * n
            level[s] = 0
            q = deque([s])
            while q:
                u = q.popleft()
                e = head[u]
                while e != -1:
                    if cap[e] > _EPS and level[to[e]] < 0:
                        level[to[e]] = level[u] + 1
                        q.append(to[e])
                    e = nxt[e]
            if level[t] < 0:
                return total
            it = list(head)
            # iterative DFS pushing blocking flow
            while True:
                pushed = self._dfs(s, t, level, it)
                if pushed <= _EPS:
                    break
                total += pushed
                if total == INF:
                    return total

    def _dfs(self, s: int, t: int, level: list[int], it: list[int]) -> float:
        to, cap, nxt = self.to, self.cap, self.nxt
        stack_nodes = [s]
        stack_edges: list[int] = []
        while stack_nodes:
            u = stack_nodes[-1]
            if u == t:
                f = INF
                for e in stack_edges:
                    if cap[e] < f:
                        f = cap[e]
                for e in stack_edges:
                    cap[e] -= f
                    cap[e ^ 1] += f
                return f
            e = it[u]
            advanced = False
            while e != -1:
                v = to[e]
                if cap[e] > _EPS and level[v] == level[u] + 1:
                    stack_nodes.append(v)
                    stack_edges.append(e)
                    advanced = True
                    break
                e = nxt[e]
                it[u] = e
            if not advanced:
                it[u] = -1
                level[u] = -2  # dead end: prune
                stack_nodes.pop()
                if stack_edges:
                    pe = stack_edges.pop()
                    pu = stack_nodes[-1]
                    it[pu] = nxt[pe]
        return 0.0

    def source_side(self, s: int) -> list[bool]:
        seen = [False] * self.n
        seen[s] = True
        q = deque([s])
        to, cap, nxt, head = self.to, self.cap, self.nxt, self.head
        while q:
            u = q.popleft()
            e = head[u]
            while e != -1:
                v = to[e]
                if cap[e] > _EPS and not seen[v]:
                    seen[v] = True
                    q.append(v)
                e = nxt[e]
        return seen


def min_cut_assignment(
    *,
    n_nodes: int,
    n_tiers: int,
    node_cost: np.ndarray,  # [tier, node], weighted objective units, >= 0
    tensor_producer: Sequence[int],  # -1 = graph input (source side, tier 0)
    tensor_consumers: Sequence[Sequence[int]],
    transfer_cost: np.ndarray,  # [boundary, tensor], >= 0
    max_tier: Sequence[int],  # per node upper bound on its tier
    min_tier: Sequence[int] | None = None,  # per node lower bound (used to force "at least one node off device")
    tie_levels: Sequence[int] = (),  # levels k with x[k] == x[k+1]: no node may sit exactly on tier k
) -> tuple[np.ndarray, float]:
    """Return (tier per node, objective value) minimising sum(node costs) + sum(transfer costs).

    Fixed per-boundary costs (RTT, jitter, per-inference overheads) are *not* part of this function: the
    caller enumerates the highest tier used and adds them (see ``split.solve``).
    """
    K = n_tiers
    if K == 1 or n_nodes == 0:
        return np.zeros(n_nodes, dtype=np.int64), float(node_cost[0].sum()) if n_nodes else 0.0
    # Normalise so that the largest finite coefficient is ~1: the residual threshold (_EPS) is then
    # relative, whatever the objective's unit ($ per 1k inferences are ~1e-4, ms are ~1e1).
    node_cost = np.asarray(node_cost, dtype=np.float64)
    transfer_cost = np.asarray(transfer_cost, dtype=np.float64)
    scale = max(float(np.abs(node_cost).max(initial=0.0)), float(np.abs(transfer_cost).max(initial=0.0)), 1e-300)
    labels, value = _solve_scaled(n_nodes, K, node_cost / scale, tensor_producer, tensor_consumers,
                                  transfer_cost / scale, max_tier, min_tier, tuple(tie_levels))
    return labels, value * scale


def _solve_scaled(n_nodes, K, node_cost, tensor_producer, tensor_consumers, transfer_cost, max_tier, min_tier,
                  tie_levels):
    L = K - 1  # levels 1..K-1 stored at index 0..L-1
    s = L * n_nodes
    t = s + 1
    n_aux_start = t + 1
    # one aux per (level, tensor with at least one consumer)
    live = [j for j in range(len(tensor_consumers)) if tensor_consumers[j]]
    g = _FlowGraph(n_aux_start + L * len(live))

    def var(level: int, v: int) -> int:  # level in 1..K-1
        return (level - 1) * n_nodes + v

    constant = float(node_cost[0].sum())
    diff = np.diff(node_cost, axis=0)  # [K-1, node]: c_k - c_{k-1}
    for k in range(1, K):
        d = diff[k - 1]
        for v in range(n_nodes):
            a = float(d[v])
            x = var(k, v)
            if a > 0:
                g.add(s, x, a)
            elif a < 0:
                constant += a
                g.add(x, t, -a)
            if max_tier[v] < k:
                g.add(s, x, INF)
            if min_tier is not None and min_tier[v] >= k:
                g.add(x, t, INF)
            if k + 1 < K:
                g.add(x, var(k + 1, v), INF)
                if k in tie_levels:
                    g.add(var(k + 1, v), x, INF)
    # downward closure and transfers
    aux = n_aux_start
    for j in live:
        p = tensor_producer[j]
        cons = sorted(set(tensor_consumers[j]))
        for k in range(1, K):
            w = float(transfer_cost[k - 1, j])
            if p >= 0:
                for c in cons:
                    g.add(var(k, c), var(k, p), INF)
            tail = s if p < 0 else var(k, p)
            g.add(tail, aux, w if w > 0 else 0.0)
            if w > 0:
                for c in cons:
                    g.add(aux, var(k, c), INF)
            aux += 1
    flow = g.max_flow(s, t)
    if flow == INF:
        raise ValueError("infeasible tier constraints (infinite cut)")
    side = g.source_side(s)
    labels = np.zeros(n_nodes, dtype=np.int64)
    for k in range(1, K):
        base = (k - 1) * n_nodes
        for v in range(n_nodes):
            if not side[base + v]:
                labels[v] = k
    return labels, constant + flow
