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

    __slots__ = ("n", "head", "to", "cap", "nxt", "frm")

    def __init__(self, n: int) -> None:
        self.n = n
        self.head = [-1] * n
        self.to: list[int] = []
        self.cap: list[float] = []
        self.nxt: list[int] = []
        self.frm: list[int] = []

    @classmethod
    def from_arcs(cls, n: int, u: np.ndarray, v: np.ndarray, c: np.ndarray) -> "_FlowGraph":
        """Graph with arcs u[i] -> v[i] of capacity c[i] (arc 2i) and their reverse arcs (2i + 1)."""
        g = cls(n)
        m = len(u)
        frm = np.empty(2 * m, dtype=np.int64)
        to = np.empty(2 * m, dtype=np.int64)
        cap = np.zeros(2 * m)
        frm[0::2], frm[1::2] = u, v
        to[0::2], to[1::2] = v, u
        cap[0::2] = c
        # linked adjacency lists: nxt[a] = previous arc with the same tail, head[x] = last arc of x
        order = np.argsort(frm, kind="stable")
        tails = frm[order]
        nxt = np.full(2 * m, -1, dtype=np.int64)
        same = np.r_[False, tails[1:] == tails[:-1]]
        nxt[order[same]] = order[np.flatnonzero(same) - 1]
        head = np.full(n, -1, dtype=np.int64)
        last = np.r_[tails[1:] != tails[:-1], True] if m else np.zeros(0, dtype=bool)
        head[tails[last]] = order[last]
        g.head, g.nxt = head.tolist(), nxt.tolist()
        g.to, g.frm, g.cap = to.tolist(), frm.tolist(), cap.tolist()
        return g

    def add(self, u: int, v: int, c: float) -> None:
        if c <= 0.0 or u == v:
            return
        self.to.append(v)
        self.frm.append(u)
        self.cap.append(c)
        self.nxt.append(self.head[u])
        self.head[u] = len(self.to) - 1
        self.to.append(u)
        self.frm.append(v)
        self.cap.append(0.0)
        self.nxt.append(self.head[v])
        self.head[v] = len(self.to) - 1

    def warm_start(self, s: int, t: int, rounds: int = 6) -> bool:
        """Push (almost) all of the flow with SciPy's C max-flow, in a few rounds of int32 rounding.

        SciPy's ``maximum_flow`` takes int32 capacities only. Each round rounds the *residual* capacities
        down to multiples of ``U / 2**30``, where ``U`` bounds the flow still missing, so the rounded flow
        is feasible for the real capacities and is loaded into the residual graph. The flow still
        missing after a round is below (number of arcs) x (rounding step), so ``U`` shrinks by ~1e5 per
        round; after a few rounds it is far below float resolution and ``max_flow`` (pure Python) only
        confirms that no augmenting path is left. On a 1,000-node chain this is milliseconds where plain
        Dinic in Python needed seconds (hundreds of phases of long augmenting paths).
        Returns False (and changes nothing) when SciPy is unavailable.
        """
        try:
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import maximum_flow
        except ImportError:  # pragma: no cover - scipy ships with scikit-learn
            return False
        n_arcs = len(self.to)
        if n_arcs == 0:
            return True
        cap = np.asarray(self.cap, dtype=np.float64)
        frm = np.asarray(self.frm, dtype=np.int64)
        to = np.asarray(self.to, dtype=np.int64)
        finite = np.isfinite(cap)
        out_s = cap[(frm == s)]
        into_t = cap[(to == t)]
        bounds = [float(x.sum()) for x in (out_s, into_t) if np.isfinite(x).all()]
        bound = min(bounds) if bounds else float(cap[finite].sum())
        if not np.isfinite(bound) or bound <= 0:
            return True
        for _ in range(rounds):
            if bound < 1e-14:
                break
            scale = 2.0**30 / bound
            live = (cap > 0) & (frm != to)
            scaled = np.floor(np.minimum(np.where(finite, cap, bound), bound)[live] * scale)
            mat = coo_matrix((scaled, (frm[live], to[live])), shape=(self.n, self.n)).tocsr()
            mat.sum_duplicates()
            mat.data = np.minimum(mat.data, 2.0**30)
            mat.eliminate_zeros()
            res = maximum_flow(mat.astype(np.int32), s, t, method="edmonds_karp")
            if res.flow_value <= 0:
                break
            fl = res.flow.tocoo()
            pos = fl.data > 0
            fkeys = fl.row[pos].astype(np.int64) * self.n + fl.col[pos].astype(np.int64)
            fvals = fl.data[pos].astype(np.float64)
            forder = np.argsort(fkeys)
            fkeys, fvals = fkeys[forder], fvals[forder]
            # net flow per ordered pair (u, v) spread over the residual arcs u->v in order (vectorised)
            keys = frm * self.n + to
            idx = np.searchsorted(fkeys, keys)
            idx_c = np.minimum(idx, max(len(fkeys) - 1, 0))
            hit = (idx < len(fkeys)) & (fkeys[idx_c] == keys) if len(fkeys) else np.zeros(len(keys), dtype=bool)
            f_pair = np.where(hit & live, fvals[idx_c] if len(fkeys) else 0.0, 0.0) / scale
            order = np.argsort(keys, kind="stable")
            ks = keys[order]
            c = np.where(live, np.where(finite, cap, 4.0 * bound), 0.0)[order]
            cum = np.cumsum(c)
            starts = np.r_[True, ks[1:] != ks[:-1]]
            group_base = np.maximum.accumulate(np.where(starts, cum - c, 0.0))
            before = cum - c - group_base
            push_sorted = np.clip(f_pair[order] - before, 0.0, c)
            push = np.empty_like(push_sorted)
            push[order] = push_sorted
            cap = cap - push  # inf - x stays inf
            cap[np.arange(n_arcs) ^ 1] += push
            bound = min(bound, float(live.sum()) / scale)
        self.cap = cap.tolist()
        return True

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

    Fixed per-boundary costs (RTT, jitter, request overhead, per-inference overheads) are *not* part of this
    function: the caller enumerates the highest tier used and adds them (see ``split.solve``).
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
    """Build the layered flow graph with numpy (arc arrays, no per-arc Python calls) and cut it."""
    n = n_nodes
    L = K - 1  # levels 1..K-1 stored at index 0..L-1
    s = L * n
    t = s + 1
    n_aux_start = t + 1
    rows = np.array([j for j in range(len(tensor_consumers)) if tensor_consumers[j]], dtype=np.int64)
    cons_lists = [sorted(set(tensor_consumers[j])) for j in rows.tolist()]
    cons_flat = np.array([c for cl in cons_lists for c in cl], dtype=np.int64)
    cons_row = np.repeat(np.arange(len(rows)), [len(cl) for cl in cons_lists]).astype(np.int64)
    prod = np.asarray(tensor_producer, dtype=np.int64)[rows] if rows.size else np.zeros(0, dtype=np.int64)
    max_t = np.asarray(max_tier, dtype=np.int64)
    min_t = np.asarray(min_tier, dtype=np.int64) if min_tier is not None else None
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    cs: list[np.ndarray] = []

    def arcs(u, v, c) -> None:
        u = np.broadcast_to(np.asarray(u, dtype=np.int64), np.shape(v) if np.ndim(v) else np.shape(u))
        v = np.broadcast_to(np.asarray(v, dtype=np.int64), u.shape)
        c = np.broadcast_to(np.asarray(c, dtype=np.float64), u.shape)
        us.append(u.ravel())
        vs.append(v.ravel())
        cs.append(c.ravel())

    constant = float(node_cost[0].sum())
    diff = np.diff(node_cost, axis=0)  # [K-1, node]: c_k - c_{k-1}
    nodes = np.arange(n, dtype=np.int64)
    for k in range(1, K):
        d = diff[k - 1]
        x = (k - 1) * n + nodes
        pos, neg = d > 0, d < 0
        arcs(s, x[pos], d[pos])
        arcs(x[neg], t, -d[neg])
        constant += float(d[neg].sum())
        m = max_t < k
        arcs(s, x[m], INF)
        if min_t is not None:
            m = min_t >= k
            arcs(x[m], t, INF)
        if k + 1 < K:
            arcs(x, x + n, INF)
            if k in tie_levels:
                arcs(x + n, x, INF)
        base = (k - 1) * n
        if rows.size:
            # downward closure: consumer -> producer (infinite)
            pc = prod[cons_row]
            m = pc >= 0
            arcs(base + cons_flat[m], base + pc[m], INF)
            # transfer once per tensor: producer (or source) -> aux (weight), aux -> consumers (infinite)
            aux = n_aux_start + (k - 1) * len(rows) + np.arange(len(rows), dtype=np.int64)
            w = transfer_cost[k - 1, rows]
            tail = np.where(prod >= 0, base + np.maximum(prod, 0), s)
            pw = w > 0
            arcs(tail[pw], aux[pw], w[pw])
            mc = pw[cons_row]
            arcs(aux[cons_row[mc]], base + cons_flat[mc], INF)
    u = np.concatenate(us) if us else np.zeros(0, dtype=np.int64)
    v = np.concatenate(vs) if vs else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cs) if cs else np.zeros(0)
    keep = (c > 0) & (u != v)
    u, v, c = u[keep], v[keep], c[keep]
    g = _FlowGraph.from_arcs(n_aux_start + L * len(rows), u, v, c)
    g.warm_start(s, t)
    if g.max_flow(s, t) == INF:
        raise ValueError("infeasible tier constraints (infinite cut)")
    side = np.asarray(g.source_side(s), dtype=bool)
    cut = side[u] & ~side[v]
    flow = float(c[cut].sum())
    if flow == INF:
        raise ValueError("infeasible tier constraints (infinite cut)")
    labels = np.zeros(n, dtype=np.int64)
    for k in range(1, K):
        labels[~side[(k - 1) * n: k * n]] = k
    return labels, constant + flow
