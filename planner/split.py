"""Split planner: where to cut a model between the device, an optional edge server, and the cloud.

Pure core, thin adapters. Everything below ``build_problem`` works on plain typed values (a DAG of
nodes with a cost per tier, tensors with bytes, links with bandwidth/RTT) and never touches a file:

- ``SplitProblem``: the DAG (nodes in topological order, tensors with producer/consumers), per-node
  latency on every tier, the tiers' power/price, the links, and the constraints (privacy, memory budget).
  ``build_problem(analysis, tiers, links, options)`` builds it from a ``GraphAnalysis``;
  ``tier_from_prediction(profile, prediction)`` and ``link_from_profile(link)`` adapt the cost model's and
  the profile registry's values.
- ``evaluate(problem, tiers_per_node)`` prices one assignment exactly (latency, device energy, cloud $,
  transferred bytes, device peak memory...). Every plan the tool reports is priced by this function.
- ``solve(problem, objective)`` returns the exact optimum over *all* downward-closed device sets (and for
  three tiers all nested pairs) by min-cut (``split_mincut``); ``best_prefix(problem, objective)`` the
  optimum over prefix cuts of the topological order (what Neurosurgeon searches; kept as a comparison).
- ``plan_split(problem, objective)`` returns the reference plans beside the best one.
- ``split_schedule.network_schedule`` gives the optimal cut as a function of uplink bandwidth.
- ``run_split(onnx_path, ...)`` is the driver the CLI calls (analysis + cost model + plans + schedule).

The cost model of a split (all predicted; the per-node latencies come from ``planner.cost`` per profile):

    latency = sum(device node ms) + [device overhead]
            + for each crossing tensor: serialise (wire bytes / ``SplitOptions.serialise_mb_per_s``)
                                        + uplink (bits / uplink Mbps)
            + RTT + jitter allowance (once per boundary that is used)
            + runtime request overhead (``SplitOptions.request_overhead_ms``, once per boundary that is used)
            + sum(cloud node ms) + [cloud per-inference overhead]
            + downlink of the graph outputs produced off the device (bits / downlink Mbps)

The request overhead is what the split runtime itself adds to every request that crosses a boundary,
whatever the link: HTTP framing, wire encode/decode, Python, the extra ONNX Runtime ``run`` call of each
part beyond what the tier profiles' per-inference overhead covers. It is measured, not derived:
``planner.runtime_overhead.measure_request_overhead_ms`` times real split requests of a tiny bundle
against a real ``edgeplan serve`` on loopback and subtracts the predicted compute; the default
(``DEFAULT_REQUEST_OVERHEAD_MS``) is that measurement on the development machine. A plan shows it apart
from the link time (``SplitPlan.request_overhead_ms`` vs ``network_ms``). The serialise rate is the
runtime's cost per byte of cut tensor beyond the link (wire encode/decode, HTTP body copies), measured the
same way: ``planner.runtime_overhead.measure_runtime_costs`` also runs a 256 kB-cut probe interleaved with
the tiny one and divides the extra bytes by the extra time; ``DEFAULT_SERIALISE_MB_PER_S`` is that
measurement on the development machine. It is part of ``network_ms``.

Execution is sequential (the device waits for the answer); a tensor read by several cloud nodes is sent
once; weights and constants never cross (they are not activations in ``GraphAnalysis``). Device energy =
device active energy (the cost model's energy per ms of device compute) + idle power while it waits
(including the RTT and the request overhead) + radio energy for the bytes sent and received
(``planner.cost.radio_energy_mj``, linear in bytes). Cloud cost = the cloud profile's $ per 1k inferences
per ms of cloud compute. All three are linear in the assignment (plus per-boundary fixed terms handled by
enumerating which tiers are used), so the min-cut is exact for any weighted combination
``Objective(latency, energy, cost)``.

Constraints and their exactness:
- Privacy: the raw input never leaves the device: every node that reads a graph input is pinned to the
  device (unless ``raw_input_may_leave``). ``keep_on_device_layers=N``: no tensor that has passed through
  fewer than N weighted layers (longest path, counting nodes with parameters) may leave the device.
  ``keep_on_device_node``: that node (and so its ancestors) runs on the device. All are exact (they are
  bounds on a node's tier, infinite edges in the min-cut).
- Device memory budget (weights of the device part + its live activations in execution order) is not a
  linear function of the cut. The planner checks it per candidate: if the unconstrained optimum fits it
  is reported as exact; otherwise the best feasible plan among (a Lagrangian sweep that charges device
  weight bytes, and every prefix cut) is reported with ``exact=False`` and a note.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from edgeplan.hardware_profiles.errors import ConfigError, PlanError

if TYPE_CHECKING:  # pragma: no cover
    from edgeplan.planner.graph import GraphAnalysis

# ------------------------------------------------------------------------------------------ values

WIRE_DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8")
#: What sending the cut tensors in a smaller dtype costs in fidelity (the bundle verifier measures it).
WIRE_FIDELITY: dict[str, str] = {
    "fp32": "exact (tensors sent as produced)",
    "fp16": "float16 rounding of the cut tensors (~5e-4 relative error per element); usually no accuracy change",
    "int8": "per-tensor affine int8 of the cut tensors (error ~0.4% of each tensor's range); check accuracy",
}
_FLOAT_DTYPES = {"float32", "float64", "float16", "bfloat16"}
TIER_ROLES_2 = ("device", "cloud")
TIER_ROLES_3 = ("device", "edge-server", "cloud")


@dataclass(frozen=True)
class Objective:
    """A linear objective ``latency * latency_ms + energy * energy_mj + cost * cost_usd_per_1k``.

    Named objectives carry a tiny tie-break on the other terms so that, e.g., the "cost" objective
    prefers the faster of two plans that cost the same (device-only and any plan that keeps everything on
    the device both cost $0).
    """

    latency: float = 1.0
    energy: float = 0.0
    cost: float = 0.0
    name: str = "latency"

    @classmethod
    def named(cls, name: str) -> "Objective":
        if name == "latency":
            return cls(1.0, 1e-9, 1e-9, "latency")
        if name == "energy":
            return cls(1e-9, 1.0, 1e-9, "energy")
        if name == "cost":
            return cls(1e-9, 1e-12, 1.0, "cost")
        raise ConfigError(f"unknown objective {name!r}: use latency, energy or cost")

    def combine(self, latency_ms: float, energy_mj: float, cost_usd_per_1k: float) -> float:
        return self.latency * latency_ms + self.energy * energy_mj + self.cost * cost_usd_per_1k


@dataclass(frozen=True)
class TierSpec:
    """One tier (device, edge server, cloud) as the planner needs it: plain numbers, no profile object.

    ``node_latency_ms`` is aligned with the analysis' nodes. ``overhead_ms`` is the per-inference fixed
    latency of running *any* part there (predicted total minus the sum of node latencies). The device's
    ``energy_mj_per_ms`` is the cost model's device energy per ms of compute (so a device-only plan has
    exactly the energy ``edgeplan predict`` reports); ``idle_power_w`` is what it draws while waiting.
    ``cost_usd_per_1k_per_ms`` prices a ms of compute on that tier (0 for devices you own).
    """

    name: str
    kind: str
    node_latency_ms: tuple[float, ...]
    overhead_ms: float = 0.0
    energy_mj_per_ms: float = 0.0
    idle_power_w: float = 0.0
    cost_usd_per_1k_per_ms: float = 0.0
    memory_bytes: int | None = None
    error_band_pct: float = 0.0
    provenance: str = ""


@dataclass(frozen=True)
class LinkSpec:
    """One network hop (tier k -> tier k+1). ``radio_mj_per_byte`` is None when unknown (counted as 0)."""

    name: str
    uplink_mbps: float
    downlink_mbps: float
    rtt_ms: float
    jitter_ms: float = 0.0
    radio_mj_per_byte: float | None = None


#: Per-request overhead of the split runtime, ms, charged once per network boundary a plan uses.
#: MEASURED, not fitted: ``planner.runtime_overhead.measure_runtime_costs(repeats=200-400)`` (real
#: ``edgeplan serve`` + ``SplitClient`` on loopback, 2-node bundle with a 16-byte cut tensor, each request
#: after 5 ms idle as real requests are spaced, wall time minus the host profile's predicted compute of both
#: parts, ~0.02 ms) run 9 times on the development machine (2-core AMD EPYC VM, shared; Python 3.11,
#: onnxruntime 1.32) on 2026-11-23 13:48-13:53 UTC at load average 0.5-0.9: medians 0.80-1.71 ms, their
#: median 1.31 ms. It is HTTP framing, wire encode/decode, Python and the ORT ``run`` call of each part, on a
#: path that has gone cold while the link was busy (back-to-back requests measured 0.56-0.86 ms; the earlier
#: default of 0.8 ms came from those and predicted fast links 1-2 ms low). Slower devices pay more (a
#: Raspberry Pi runs the same Python several times slower; not measured here): measure on the target with
#: ``measure_runtime_costs`` and pass ``--request-overhead-ms`` / ``SplitOptions(request_overhead_ms=...)``.
DEFAULT_REQUEST_OVERHEAD_MS = 1.3

#: The split runtime's cost per byte of cut tensor beyond the link's bits / bandwidth, as a rate in MB/s
#: (client wire encode, the HTTP body's copies, server wire decode), charged per crossing tensor as
#: ``wire bytes / rate``. MEASURED, not fitted: ``planner.runtime_overhead.measure_runtime_costs`` (a
#: 16-byte-cut and a 256 kB-cut probe bundle run interleaved, 5 ms idle before each request; the rate =
#: 262,128 more bytes / the difference of their median wall times minus predicted compute), the same 9 runs
#: as ``DEFAULT_REQUEST_OVERHEAD_MS``: 592-1080 MB/s, median 730 MB/s (back-to-back requests, measured
#: earlier the same day: 859-2881 MB/s). Slower devices pay more: measure on the target with
#: ``measure_runtime_costs`` and pass ``--serialise-mb-per-s`` / ``SplitOptions(serialise_mb_per_s=...)``.
DEFAULT_SERIALISE_MB_PER_S = 730.0


@dataclass(frozen=True)
class SplitOptions:
    """Constraints and knobs. ``serialise_mb_per_s`` is the split runtime's cost per byte of cut tensor
    beyond the link, as a rate (see ``DEFAULT_SERIALISE_MB_PER_S``; it matters only for large tensors on
    fast links). ``request_overhead_ms`` is the split runtime's own
    fixed cost per request (see ``DEFAULT_REQUEST_OVERHEAD_MS``), charged like the RTT: once per boundary
    that the plan uses; 0 prices the network and compute alone."""

    wire_dtype: str = "fp32"
    raw_input_may_leave: bool = False
    keep_on_device_layers: int = 0
    keep_on_device_node: str | None = None
    memory_budget_bytes: int | None = None
    serialise_mb_per_s: float = DEFAULT_SERIALISE_MB_PER_S
    request_overhead_ms: float = DEFAULT_REQUEST_OVERHEAD_MS


@dataclass(frozen=True)
class SplitProblem:
    """The planner's whole input, as plain arrays (built by ``build_problem``)."""

    node_names: tuple[str, ...]
    node_inputs: tuple[tuple[int, ...], ...]  # tensor indices read (activations only)
    node_outputs: tuple[tuple[int, ...], ...]
    node_flops: np.ndarray
    node_param_bytes: np.ndarray
    node_layers: np.ndarray  # 1 for nodes with parameters ("layers"), else 0
    tensor_names: tuple[str, ...]
    tensor_shapes: tuple[tuple[int, ...], ...]
    tensor_dtypes: tuple[str, ...]
    tensor_bytes: np.ndarray  # as produced
    tensor_wire_bytes: np.ndarray  # as sent (wire dtype applied to float tensors)
    tensor_producer: tuple[int, ...]  # -1 for graph inputs
    tensor_consumers: tuple[tuple[int, ...], ...]
    graph_inputs: tuple[int, ...]
    graph_outputs: tuple[int, ...]
    tiers: tuple[TierSpec, ...]
    links: tuple[LinkSpec, ...]  # len(tiers) - 1
    options: SplitOptions
    max_tier: tuple[int, ...]  # per node (privacy)
    # derived cost arrays: [metric][tier|boundary][node|tensor]; metric order: latency, energy, cost
    node_terms: np.ndarray  # [3, K, n]
    transfer_terms: np.ndarray  # [3, K-1, T]
    boundary_fixed: np.ndarray  # [3, K-1]   RTT + jitter + request overhead, charged when anything runs above
    tier_fixed: np.ndarray  # [3, K]      per-inference overheads, charged when the tier runs anything
    uplink_time_ms: np.ndarray  # [K-1, T] the bandwidth-dependent part of transfer latency
    # consumer lists in CSR form over the tensors that have consumers (for vectorised pricing)
    csr_tensors: np.ndarray | None = None  # tensor index per row
    csr_consumers: np.ndarray | None = None  # flat consumer node indices
    csr_ptr: np.ndarray | None = None  # row starts

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_tiers(self) -> int:
        return len(self.tiers)

    def weighted(self, objective: Objective) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        w = np.array([objective.latency, objective.energy, objective.cost])
        return (
            np.tensordot(w, self.node_terms, axes=1),
            np.tensordot(w, self.transfer_terms, axes=1),
            w @ self.boundary_fixed,
            w @ self.tier_fixed,
        )


@dataclass(frozen=True)
class CutTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    wire_dtype: str
    wire_bytes: int
    boundary: int  # 0: device -> next tier; 1: edge server -> cloud

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "shape": list(self.shape), "dtype": self.dtype, "bytes": self.bytes,
            "wire_dtype": self.wire_dtype, "wire_bytes": self.wire_bytes, "boundary": self.boundary,
        }


@dataclass(frozen=True)
class PartIO:
    """One part of a plan: what tier ``tier`` reads (produced below it, or graph inputs) and writes
    (read above it, or graph outputs). Composing the parts in tier order over a dict of tensors
    reproduces the model."""

    tier: int
    tier_name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    n_nodes: int

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "tier_name": self.tier_name, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "n_nodes": self.n_nodes}


@dataclass(frozen=True)
class SplitPlan:
    """One priced assignment of nodes to tiers. All numbers are predicted (see ``provenance``)."""

    name: str
    node_tiers: tuple[int, ...]
    tier_names: tuple[str, ...]
    cut_tensors: tuple[CutTensor, ...]
    latency_ms: float
    energy_mj: float
    cost_usd_per_1k: float
    transfer_bytes: int  # bytes sent up, all boundaries, as sent on the wire
    downlink_bytes: int
    tier_latency_ms: tuple[float, ...]  # compute per tier (incl. overhead)
    network_ms: float  # the link: RTT + jitter + serialise + uplink + downlink, used boundaries only
    device_compute_share: float  # share of the model's FLOPs that run on the device
    device_peak_memory_bytes: int
    objective_value: float
    sends_raw_input: bool
    feasible: bool
    exact: bool
    method: str
    wire_dtype: str = "fp32"
    error_band_pct: float = 0.0
    notes: tuple[str, ...] = ()
    parts: tuple[PartIO, ...] = ()
    # the runtime's own per-request cost (options.request_overhead_ms x boundaries used); latency_ms =
    # sum(tier_latency_ms) + network_ms + request_overhead_ms
    request_overhead_ms: float = 0.0

    @property
    def is_split(self) -> bool:
        return len(set(self.node_tiers)) > 1

    def nodes_on(self, tier: int) -> int:
        return sum(1 for t in self.node_tiers if t == tier)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tiers": list(self.tier_names),
            "nodes_per_tier": [self.nodes_on(k) for k in range(len(self.tier_names))],
            "cut_tensors": [c.to_dict() for c in self.cut_tensors],
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "cost_usd_per_1k": self.cost_usd_per_1k,
            "transfer_bytes": self.transfer_bytes,
            "downlink_bytes": self.downlink_bytes,
            "tier_latency_ms": list(self.tier_latency_ms),
            "network_ms": self.network_ms,
            "request_overhead_ms": self.request_overhead_ms,
            "device_compute_share": self.device_compute_share,
            "device_peak_memory_bytes": self.device_peak_memory_bytes,
            "objective_value": self.objective_value,
            "sends_raw_input": self.sends_raw_input,
            "feasible": self.feasible,
            "exact": self.exact,
            "method": self.method,
            "wire_dtype": self.wire_dtype,
            "wire_fidelity": WIRE_FIDELITY.get(self.wire_dtype, ""),
            "error_band_pct": self.error_band_pct,
            "notes": list(self.notes),
            "parts": [p.to_dict() for p in self.parts],
        }


# ------------------------------------------------------------------------------------------ building


def _wire_bytes(nbytes: int, dtype: str, shape: tuple[int, ...], wire: str) -> int:
    if dtype not in _FLOAT_DTYPES or wire == "fp32":
        return int(nbytes)
    elems = int(np.prod(shape)) if shape else max(1, nbytes // 4)
    if wire == "fp16":
        return 2 * elems
    if wire == "int8":
        return elems + 8  # + scale and zero point
    raise ConfigError(f"unknown wire dtype {wire!r}: use {', '.join(WIRE_DTYPES)}")


def build_problem(
    analysis: "GraphAnalysis",
    tiers: Sequence[TierSpec],
    links: Sequence[LinkSpec],
    options: SplitOptions | None = None,
) -> SplitProblem:
    """Turn a graph analysis plus per-tier latencies and links into a ``SplitProblem`` (pure, O(n))."""
    options = options or SplitOptions()
    if not (np.isfinite(options.request_overhead_ms) and options.request_overhead_ms >= 0):
        raise ConfigError(f"the request overhead must be a finite number of ms >= 0, got {options.request_overhead_ms}")
    if not (np.isfinite(options.serialise_mb_per_s) and options.serialise_mb_per_s > 0):
        raise ConfigError(f"the serialise rate must be a finite number of MB/s > 0, got {options.serialise_mb_per_s}")
    if options.wire_dtype not in WIRE_DTYPES:
        raise ConfigError(f"unknown wire dtype {options.wire_dtype!r}: use {', '.join(WIRE_DTYPES)}")
    K = len(tiers)
    if K < 1 or K > 4:
        raise ConfigError("a split needs 1 to 4 tiers (device, [edge server,] cloud)")
    if len(links) != K - 1:
        raise ConfigError(f"{K} tiers need {K - 1} link(s), got {len(links)}")
    nodes = analysis.nodes
    n = len(nodes)
    for t in tiers:
        if len(t.node_latency_ms) != n:
            raise ConfigError(f"tier {t.name}: {len(t.node_latency_ms)} node latencies for {n} nodes")

    # tensors: graph inputs first, then node outputs in order
    tindex: dict[str, int] = {}
    names: list[str] = []
    producer: list[int] = []
    for name in analysis.inputs:
        if name not in tindex:
            tindex[name] = len(names)
            names.append(name)
            producer.append(-1)
    for i, nd in enumerate(nodes):
        for name in nd.outputs:
            if name in tindex:
                if producer[tindex[name]] != -1 or name not in analysis.inputs:
                    raise ConfigError(f"tensor {name!r} is produced twice: the graph is not in SSA form")
                continue
            tindex[name] = len(names)
            names.append(name)
            producer.append(i)
    consumers: list[list[int]] = [[] for _ in names]
    node_inputs: list[tuple[int, ...]] = []
    for i, nd in enumerate(nodes):
        ins: list[int] = []
        for name in nd.inputs:
            j = tindex.get(name)
            if j is None:
                raise ConfigError(f"node {nd.name!r} reads {name!r}, which no earlier node produces "
                                  "(nodes must be in topological order)")
            if producer[j] >= i:
                raise ConfigError(f"node {nd.name!r} reads {name!r} before it is produced")
            if j not in ins:
                ins.append(j)
                consumers[j].append(i)
        node_inputs.append(tuple(ins))
    node_outputs = tuple(tuple(tindex[nm] for nm in nd.outputs) for nd in nodes)

    infos = analysis.tensors
    shapes = tuple(tuple(infos[nm].shape) if nm in infos else () for nm in names)
    dtypes = tuple(infos[nm].dtype if nm in infos else "float32" for nm in names)
    tbytes = np.array([infos[nm].bytes if nm in infos else 0 for nm in names], dtype=np.int64)
    wbytes = np.array([_wire_bytes(int(b), d, s, options.wire_dtype) for b, d, s in zip(tbytes, dtypes, shapes)],
                      dtype=np.int64)
    gin = tuple(tindex[nm] for nm in analysis.inputs if nm in tindex)
    gout = tuple(tindex[nm] for nm in analysis.outputs if nm in tindex)

    # privacy: tier upper bounds
    max_tier = [K - 1] * n
    if not options.raw_input_may_leave:
        for j in gin:
            for c in consumers[j]:
                max_tier[c] = 0
    layers = np.array([1 if nd.params > 0 else 0 for nd in nodes], dtype=np.int64)
    if options.keep_on_device_layers > 0:
        depth = np.zeros(len(names), dtype=np.int64)  # weighted layers on the longest path to a tensor
        for i in range(n):
            d_in = max((int(depth[j]) for j in node_inputs[i]), default=0)
            for j in node_outputs[i]:
                depth[j] = d_in + int(layers[i])
        for j in range(len(names)):
            if depth[j] < options.keep_on_device_layers:
                for c in consumers[j]:
                    max_tier[c] = 0
        if not any(depth[j] >= options.keep_on_device_layers for j in gout):
            raise ConfigError(f"--keep-on-device {options.keep_on_device_layers}: the model has fewer weighted layers")
    if options.keep_on_device_node is not None:
        idx = [i for i, nd in enumerate(nodes) if nd.name == options.keep_on_device_node]
        if not idx:
            raise ConfigError(f"no node named {options.keep_on_device_node!r} in the model")
        max_tier[idx[0]] = 0

    # cost terms
    T = len(names)
    node_terms = np.zeros((3, K, n))
    transfer_terms = np.zeros((3, max(K - 1, 0), T))
    uplink_time = np.zeros((max(K - 1, 0), T))
    boundary_fixed = np.zeros((3, max(K - 1, 0)))
    tier_fixed = np.zeros((3, K))
    dev = tiers[0]
    idle = dev.idle_power_w  # W * ms = mJ
    ser_bytes_per_ms = options.serialise_mb_per_s * 1e3
    out_bytes_of_node = np.zeros(n)
    for j in gout:
        if producer[j] >= 0:
            out_bytes_of_node[producer[j]] += tbytes[j]
    radio0 = (links[0].radio_mj_per_byte or 0.0) if K > 1 else 0.0
    for k, tier in enumerate(tiers):
        lat = np.asarray(tier.node_latency_ms, dtype=np.float64)
        down_ms = np.zeros(n)
        if k > 0:
            for b in range(k):
                down_ms += out_bytes_of_node * 8.0 / (links[b].downlink_mbps * 1e3)
        node_terms[0, k] = lat + down_ms
        if k == 0:
            node_terms[1, k] = dev.energy_mj_per_ms * lat
        else:
            node_terms[1, k] = idle * (lat + down_ms) + radio0 * out_bytes_of_node
        node_terms[2, k] = tier.cost_usd_per_1k_per_ms * lat
        tier_fixed[0, k] = tier.overhead_ms
        tier_fixed[1, k] = (dev.energy_mj_per_ms if k == 0 else idle) * tier.overhead_ms
        tier_fixed[2, k] = tier.cost_usd_per_1k_per_ms * tier.overhead_ms
    for b, link in enumerate(links):
        up = wbytes * 8.0 / (link.uplink_mbps * 1e3)
        ser = wbytes / ser_bytes_per_ms
        uplink_time[b] = up
        transfer_terms[0, b] = ser + up
        if b == 0:
            transfer_terms[1, b] = dev.energy_mj_per_ms * ser + idle * up + (link.radio_mj_per_byte or 0.0) * wbytes
        else:
            transfer_terms[1, b] = idle * (ser + up)
        transfer_terms[2, b] = tiers[b].cost_usd_per_1k_per_ms * ser
        # once per used boundary: the device waits (idle power) through the RTT and the runtime's request overhead
        fixed = link.rtt_ms + link.jitter_ms + options.request_overhead_ms
        boundary_fixed[:, b] = (fixed, idle * fixed, 0.0)

    rows = [j for j in range(T) if consumers[j]]
    csr_cons = np.array([c for j in rows for c in consumers[j]], dtype=np.int64)
    csr_ptr = np.cumsum([0] + [len(consumers[j]) for j in rows])[:-1].astype(np.int64)
    return SplitProblem(
        csr_tensors=np.array(rows, dtype=np.int64),
        csr_consumers=csr_cons,
        csr_ptr=csr_ptr,
        node_names=tuple(nd.name for nd in nodes),
        node_inputs=tuple(node_inputs),
        node_outputs=node_outputs,
        node_flops=np.array([nd.flops for nd in nodes], dtype=np.float64),
        node_param_bytes=np.array([nd.param_bytes for nd in nodes], dtype=np.int64),
        node_layers=layers,
        tensor_names=tuple(names),
        tensor_shapes=shapes,
        tensor_dtypes=dtypes,
        tensor_bytes=tbytes,
        tensor_wire_bytes=wbytes,
        tensor_producer=tuple(producer),
        tensor_consumers=tuple(tuple(c) for c in consumers),
        graph_inputs=gin,
        graph_outputs=gout,
        tiers=tuple(tiers),
        links=tuple(links),
        options=options,
        max_tier=tuple(max_tier),
        node_terms=node_terms,
        transfer_terms=transfer_terms,
        boundary_fixed=boundary_fixed,
        tier_fixed=tier_fixed,
        uplink_time_ms=uplink_time,
    )


def with_uplink(problem: SplitProblem, uplink_mbps: float, boundary: int = 0) -> SplitProblem:
    """The same problem with link ``boundary``'s uplink set to ``uplink_mbps`` (used by the schedule)."""
    old = problem.links[boundary]
    links = list(problem.links)
    links[boundary] = replace(old, uplink_mbps=uplink_mbps)
    factor = old.uplink_mbps / uplink_mbps
    new_up = problem.uplink_time_ms.copy()
    delta = problem.uplink_time_ms[boundary] * (factor - 1.0)
    new_up[boundary] = problem.uplink_time_ms[boundary] * factor
    tt = problem.transfer_terms.copy()
    tt[0, boundary] += delta
    tt[1, boundary] += problem.tiers[0].idle_power_w * delta
    return replace(problem, links=tuple(links), uplink_time_ms=new_up, transfer_terms=tt)


# ------------------------------------------------------------------------------------------ pricing


def _crossings(problem: SplitProblem, labels: np.ndarray) -> list[tuple[int, int]]:
    """(boundary, tensor) pairs that cross: producer tier <= b < highest consumer tier."""
    rows = problem.csr_tensors
    if rows is None or rows.size == 0 or labels.size == 0:
        return []
    hi = np.maximum.reduceat(labels[problem.csr_consumers], problem.csr_ptr)
    prod = np.asarray(problem.tensor_producer, dtype=np.int64)[rows]
    lo = np.where(prod >= 0, labels[np.maximum(prod, 0)], 0)
    out: list[tuple[int, int]] = []
    for b in range(problem.n_tiers - 1):
        for j in rows[(lo <= b) & (hi > b)].tolist():
            out.append((b, j))
    return out


def part_io(problem: SplitProblem, node_tiers: Sequence[int] | np.ndarray) -> tuple[PartIO, ...]:
    """The parts of an assignment, in tier order (empty tiers are skipped)."""
    labels = np.asarray(node_tiers, dtype=np.int64)
    outs_set = set(problem.graph_outputs)
    parts = []
    for k in range(problem.n_tiers):
        members = np.flatnonzero(labels == k)
        if members.size == 0:
            continue
        ins: list[str] = []
        outs: list[str] = []
        seen_in: set[int] = set()
        for i in members:
            for j in problem.node_inputs[i]:
                p = problem.tensor_producer[j]
                if (p < 0 or labels[p] < k) and j not in seen_in:
                    seen_in.add(j)
                    ins.append(problem.tensor_names[j])
            for j in problem.node_outputs[i]:
                if j in outs_set or any(labels[c] > k for c in problem.tensor_consumers[j]):
                    outs.append(problem.tensor_names[j])
        parts.append(PartIO(k, problem.tiers[k].name, tuple(ins), tuple(outs), int(members.size)))
    return tuple(parts)


def device_peak_memory_bytes(problem: SplitProblem, labels: np.ndarray) -> int:
    """Weights of the device part + the peak of its live activations in execution order.

    A tensor is live from its production (graph inputs: from the start) until its last device consumer
    ran, or until the end of the device part if it is sent. The runtime's own arena overhead is not
    included; this is the quantity the memory budget is checked against.
    """
    on_dev = labels == 0
    if not on_dev.any():
        return 0
    weights = int(problem.node_param_bytes[on_dev].sum())
    n = problem.n_nodes
    last_use = {}
    for j, cons in enumerate(problem.tensor_consumers):
        p = problem.tensor_producer[j]
        if p >= 0 and not on_dev[p]:
            continue
        dev_cons = [c for c in cons if on_dev[c]]
        sent = any(not on_dev[c] for c in cons) or j in problem.graph_outputs
        last_use[j] = n if sent or not dev_cons else max(dev_cons)
    frees: dict[int, int] = {}
    live = 0
    for j, end in last_use.items():
        if problem.tensor_producer[j] < 0:
            live += int(problem.tensor_bytes[j])
            frees[end] = frees.get(end, 0) + int(problem.tensor_bytes[j])
    peak = live
    for i in range(n):
        if not on_dev[i]:
            continue
        for j in problem.node_outputs[i]:
            if j in last_use:
                live += int(problem.tensor_bytes[j])
                frees[last_use[j]] = frees.get(last_use[j], 0) + int(problem.tensor_bytes[j])
        peak = max(peak, live)
        live -= frees.pop(i, 0)
    return weights + peak


def evaluate(
    problem: SplitProblem,
    node_tiers: Sequence[int] | np.ndarray,
    objective: Objective | None = None,
    *,
    name: str = "plan",
    method: str = "evaluated",
    exact: bool = False,
    with_memory: bool = True,
    with_parts: bool | None = None,
) -> SplitPlan:
    """Price one assignment exactly. Does not check downward closure (``is_valid`` does).

    ``with_memory=False`` skips the device peak-memory simulation (and, unless ``with_parts``, the part
    inputs/outputs): the solver and the schedule price many candidates and need only the metrics."""
    objective = objective or Objective.named("latency")
    labels = np.asarray(node_tiers, dtype=np.int64)
    K = problem.n_tiers
    n = problem.n_nodes
    idx = np.arange(n)
    metrics = problem.node_terms[:, labels, idx].sum(axis=1) if n else np.zeros(3)
    used = [bool((labels == k).any()) for k in range(K)]
    for k in range(K):
        if used[k]:
            metrics = metrics + problem.tier_fixed[:, k]
    top = int(labels.max()) if n else 0
    sends_raw = False
    used_b = [b for b in range(K - 1) if top > b]
    for b in used_b:
        metrics = metrics + problem.boundary_fixed[:, b]
    cuts: list[CutTensor] = []
    up_bytes = 0
    req_ms = problem.options.request_overhead_ms * len(used_b)
    net_ms = sum(float(problem.links[b].rtt_ms + problem.links[b].jitter_ms) for b in used_b)
    crossing = _crossings(problem, labels)
    if crossing:
        bs = np.array([b for b, _ in crossing])
        js = np.array([j for _, j in crossing])
        tsum = problem.transfer_terms[:, bs, js].sum(axis=1)
        metrics = metrics + tsum
        net_ms += float(tsum[0])
    for b, j in crossing:
        up_bytes += int(problem.tensor_wire_bytes[j])
        if problem.tensor_producer[j] < 0:
            sends_raw = True
        cuts.append(CutTensor(
            name=problem.tensor_names[j], shape=problem.tensor_shapes[j], dtype=problem.tensor_dtypes[j],
            bytes=int(problem.tensor_bytes[j]), wire_dtype=problem.options.wire_dtype,
            wire_bytes=int(problem.tensor_wire_bytes[j]), boundary=b,
        ))
    down_bytes = 0
    for j in problem.graph_outputs:
        p = problem.tensor_producer[j]
        if p >= 0 and labels[p] > 0:
            down_bytes += int(problem.tensor_bytes[j])
            net_ms += sum(int(problem.tensor_bytes[j]) * 8.0 / (problem.links[b].downlink_mbps * 1e3)
                          for b in range(int(labels[p])))
    tier_ms = []
    for k in range(K):
        sel = labels == k
        ms = float(np.asarray(problem.tiers[k].node_latency_ms)[sel].sum()) if n else 0.0
        tier_ms.append(ms + (problem.tiers[k].overhead_ms if used[k] else 0.0))
    total_flops = float(problem.node_flops.sum())
    share = float(problem.node_flops[labels == 0].sum() / total_flops) if total_flops > 0 else (
        float((labels == 0).mean()) if n else 1.0)
    mem = device_peak_memory_bytes(problem, labels) if with_memory else 0
    notes: list[str] = []
    feasible = True
    if any(labels[i] > problem.max_tier[i] for i in range(n)):
        feasible = False
        notes.append("violates the privacy constraint (raw input or early activations leave the device)")
    budget = problem.options.memory_budget_bytes
    if budget is not None and with_memory and mem > budget:
        feasible = False
        notes.append(f"device part needs {mem / 1e6:.1f} MB > budget {budget / 1e6:.1f} MB")
    dev_mem = problem.tiers[0].memory_bytes
    if dev_mem is not None and with_memory and mem > dev_mem:
        feasible = False
        notes.append(f"device part needs {mem / 1e6:.1f} MB > device memory {dev_mem / 1e6:.1f} MB")
    if sends_raw:
        notes.append("sends the raw input off the device")
    band = max((problem.tiers[k].error_band_pct for k in range(K) if used[k]), default=0.0)
    lat, en, cost = (float(x) for x in metrics)
    return SplitPlan(
        name=name,
        node_tiers=tuple(int(x) for x in labels),
        tier_names=tuple(t.name for t in problem.tiers),
        cut_tensors=tuple(cuts),
        latency_ms=lat,
        energy_mj=en,
        cost_usd_per_1k=cost,
        transfer_bytes=up_bytes,
        downlink_bytes=down_bytes,
        tier_latency_ms=tuple(tier_ms),
        network_ms=net_ms,
        device_compute_share=share,
        device_peak_memory_bytes=mem,
        objective_value=objective.combine(lat, en, cost),
        sends_raw_input=sends_raw,
        feasible=feasible,
        exact=exact,
        method=method,
        wire_dtype=problem.options.wire_dtype,
        error_band_pct=band,
        notes=tuple(notes),
        parts=part_io(problem, labels) if (with_memory if with_parts is None else with_parts) else (),
        request_overhead_ms=req_ms,
    )


def is_valid(problem: SplitProblem, node_tiers: Sequence[int]) -> bool:
    """True when no node runs on a lower tier than any of its producers (downward closed)."""
    for i, ins in enumerate(problem.node_inputs):
        for j in ins:
            p = problem.tensor_producer[j]
            if p >= 0 and node_tiers[p] > node_tiers[i]:
                return False
    return True


# ------------------------------------------------------------------------------------------ solving


def _patterns(K: int, allow_device_empty: bool) -> list[tuple[int, ...]]:
    """Non-empty sets of tiers that may be used (device first)."""
    out = []
    for r in range(1, K + 1):
        for combo in combinations(range(K), r):
            if 0 not in combo and not allow_device_empty:
                continue
            out.append(combo)
    return out


def _solve_pattern(problem: SplitProblem, objective: Objective, pattern: tuple[int, ...],
                   min_tier: Sequence[int] | None = None,
                   extra_device_cost: np.ndarray | None = None) -> np.ndarray | None:
    from edgeplan.planner.split_mincut import min_cut_assignment

    K = problem.n_tiers
    n = problem.n_nodes
    node_cost, transfer_cost, _, _ = problem.weighted(objective)
    if extra_device_cost is not None:
        node_cost = node_cost.copy()
        node_cost[0] = node_cost[0] + extra_device_cost
    top = max(pattern)
    lo = min(pattern)
    max_tier = [min(m, top) for m in problem.max_tier]
    if any(m < lo for m in max_tier):
        return None  # e.g. "cloud only" while the raw input must stay on the device
    mins = [lo] * n
    if min_tier is not None:
        mins = [max(a, b) for a, b in zip(mins, min_tier)]
    if any(a > b for a, b in zip(mins, max_tier)):
        return None
    if len(pattern) == 1:
        return np.full(n, pattern[0], dtype=np.int64)
    ties = [k for k in range(1, K - 1) if k not in pattern and lo < k < top]
    try:
        labels, _ = min_cut_assignment(
            n_nodes=n, n_tiers=K, node_cost=node_cost, tensor_producer=problem.tensor_producer,
            tensor_consumers=problem.tensor_consumers, transfer_cost=transfer_cost, max_tier=max_tier,
            min_tier=mins, tie_levels=ties,
        )
    except ValueError:
        return None
    return labels


def _sinks(problem: SplitProblem) -> list[int]:
    """Nodes none of whose outputs is read by another node."""
    return [i for i in range(problem.n_nodes)
            if all(not problem.tensor_consumers[j] for j in problem.node_outputs[i])]


def _candidates(
    problem: SplitProblem,
    objective: Objective,
    *,
    require_offload: bool,
    allow_device_empty: bool,
    extra_device_cost: np.ndarray | None,
) -> list[np.ndarray]:
    K = problem.n_tiers
    n = problem.n_nodes
    pats = _patterns(K, allow_device_empty)
    out: list[np.ndarray] = []
    if require_offload:
        for pat in [p for p in pats if max(p) > 0]:
            for s in _sinks(problem):
                mt = [0] * n
                mt[s] = 1
                lab = _solve_pattern(problem, objective, pat, min_tier=mt, extra_device_cost=extra_device_cost)
                if lab is not None:
                    out.append(lab)
    else:
        for pat in pats:
            lab = _solve_pattern(problem, objective, pat, extra_device_cost=extra_device_cost)
            if lab is not None:
                out.append(lab)
    return out


def _best_of(problem: SplitProblem, objective: Objective, cands: list[np.ndarray], method: str) -> SplitPlan:
    best = None
    for lab in cands:
        plan = evaluate(problem, lab, objective, name="best", method=method, exact=True, with_memory=False)
        if best is None or plan.objective_value < best.objective_value - 1e-12:
            best = plan
    if best is None:
        raise PlanError("no assignment satisfies the constraints (privacy pins the model to the device?)")
    return evaluate(problem, best.node_tiers, objective, name="best", method=method, exact=True)


def _solve_with_offload(
    problem: SplitProblem,
    objective: Objective,
    *,
    allow_device_empty: bool,
    extra_device_cost: np.ndarray | None = None,
) -> tuple[SplitPlan, SplitPlan | None]:
    """(exact best, exact best plan that offloads at least one node or None).

    Two tiers and a single sink (most models): every plan that offloads anything runs the sink off the
    device, so "best" = min(device-only, best with the sink forced off) and one min-cut gives both.
    Otherwise one min-cut per tier pattern, and the offload plan is computed only when asked for.
    """
    K = problem.n_tiers
    method = "min-cut over all downward-closed sets (exact)"
    if K == 2 and len(_sinks(problem)) == 1 and problem.n_nodes > 0:
        off_c = _candidates(problem, objective, require_offload=True, allow_device_empty=allow_device_empty,
                            extra_device_cost=extra_device_cost)
        dev = np.zeros(problem.n_nodes, dtype=np.int64)
        best = _best_of(problem, objective, off_c + [dev], method)
        offload = _best_of(problem, objective, off_c, method) if off_c else None
        return best, offload
    cands = _candidates(problem, objective, require_offload=False, allow_device_empty=allow_device_empty,
                        extra_device_cost=extra_device_cost)
    return _best_of(problem, objective, cands, method), None


def solve(
    problem: SplitProblem,
    objective: Objective | None = None,
    *,
    require_offload: bool = False,
    allow_device_empty: bool | None = None,
    extra_device_cost: np.ndarray | None = None,
) -> SplitPlan:
    """Exact optimum over all downward-closed assignments (memory budget not applied; see ``plan_split``).

    Fixed per-boundary terms (RTT, jitter, request overhead, per-inference overheads) are not linear in the cut, so the
    solver enumerates the set of tiers used (3 patterns for 2 tiers, 7 for 3), solves a min-cut for each
    with the labels restricted to it, and prices every result exactly with ``evaluate``. Each pattern's
    min-cut value plus its fixed terms upper-bounds the true price of what it returns and equals the price
    of the optimum restricted to that pattern, so the best priced result is the exact optimum.
    ``require_offload`` asks for the best plan that runs at least one node off the device (each sink node
    is forced off in turn: every non-empty upward-closed set contains a sink).
    """
    objective = objective or Objective.named("latency")
    if allow_device_empty is None:
        allow_device_empty = problem.options.raw_input_may_leave
    if require_offload:
        cands = _candidates(problem, objective, require_offload=True, allow_device_empty=allow_device_empty,
                            extra_device_cost=extra_device_cost)
        return _best_of(problem, objective, cands, "min-cut over all downward-closed sets that offload (exact)")
    best, _ = _solve_with_offload(problem, objective, allow_device_empty=allow_device_empty,
                                  extra_device_cost=extra_device_cost)
    return best


def prefix_assignments(problem: SplitProblem) -> list[np.ndarray]:
    """Every 2-tier prefix cut of the topological order that respects the privacy bounds."""
    n = problem.n_nodes
    first = max([i + 1 for i, m in enumerate(problem.max_tier) if m == 0], default=0)
    out = []
    for p in range(first, n + 1):
        lab = np.zeros(n, dtype=np.int64)
        lab[p:] = problem.n_tiers - 1
        out.append(lab)
    return out


def best_prefix(problem: SplitProblem, objective: Objective | None = None) -> SplitPlan:
    """Optimum over prefix cuts (device runs nodes [0, p), the next tier(s) the rest), in O(n + tensors).

    For two tiers this is Neurosurgeon's search space; for three tiers the nested pair (p1 <= p2) is
    searched with a running minimum. Exact over prefixes only: on a DAG the min-cut (``solve``) can do
    better (e.g. cutting two branches of a residual block at different depths).
    """
    objective = objective or Objective.named("latency")
    node_cost, transfer_cost, bfix, tfix = problem.weighted(objective)
    n = problem.n_nodes
    K = problem.n_tiers
    first = [0] * K  # smallest allowed prefix end for boundary b (privacy)
    for b in range(K - 1):
        first[b] = max([i + 1 for i, m in enumerate(problem.max_tier) if m <= b], default=0)
    # T_b(p): transfer cost of boundary b when nodes [0, p) are below it
    Tb = np.zeros((max(K - 1, 1), n + 2))
    for j, cons in enumerate(problem.tensor_consumers):
        if not cons:
            continue
        pr = problem.tensor_producer[j]
        last = max(cons)
        for b in range(K - 1):
            Tb[b, pr + 1] += transfer_cost[b, j]
            Tb[b, last + 1] -= transfer_cost[b, j]
    Tb = np.cumsum(Tb, axis=1)[:, : n + 1]
    C = np.zeros((K, n + 1))
    C[:, 1:] = np.cumsum(node_cost, axis=1)
    ps = np.arange(n + 1)
    if K == 1:
        lab = np.zeros(n, dtype=np.int64)
    elif K == 2:
        tot = C[0] + (C[1, n] - C[1]) + Tb[0]
        tot = tot + np.where(ps > 0, tfix[0], 0.0) + np.where(ps < n, tfix[1] + bfix[0], 0.0)
        tot[: first[0]] = np.inf
        p = int(np.argmin(tot))
        lab = np.zeros(n, dtype=np.int64)
        lab[p:] = 1
    elif K == 3:
        A = C[0] - C[1] + Tb[0] + np.where(ps > 0, tfix[0], 0.0)
        A[: first[0]] = np.inf
        B = C[1] - C[2] + Tb[1] + np.where(ps < n, tfix[2] + bfix[1], 0.0) + C[2, n]
        B[: first[1]] = np.inf
        best_val, best_pair = np.inf, (n, n)
        run_min, run_arg = np.inf, -1
        for p2 in range(n + 1):
            # p1 == p2 (edge server empty): boundary 0 is used iff p2 < n
            v = A[p2] + B[p2] + (bfix[0] if p2 < n else 0.0)
            if v < best_val:
                best_val, best_pair = v, (p2, p2)
            if run_arg >= 0:
                v = run_min + tfix[1] + bfix[0] + B[p2]
                if v < best_val:
                    best_val, best_pair = v, (run_arg, p2)
            if A[p2] < run_min:
                run_min, run_arg = A[p2], p2
        lab = np.zeros(n, dtype=np.int64)
        lab[best_pair[0]:] = 1
        lab[best_pair[1]:] = 2
    else:
        raise ConfigError("prefix search supports up to 3 tiers")
    return evaluate(problem, lab, objective, name="best-prefix", method="exact over prefix cuts of the "
                    "topological order", exact=False)


def _memory_fallback(problem: SplitProblem, objective: Objective, unconstrained: SplitPlan) -> SplitPlan:
    """Best plan that fits the device memory budget: Lagrangian sweep on device weight bytes + prefixes."""
    cands: list[SplitPlan] = []
    pb = problem.node_param_bytes.astype(np.float64)
    if pb.sum() > 0:
        scale = abs(unconstrained.objective_value) / max(pb.sum(), 1.0)
        for lam in (0.1, 0.3, 1, 3, 10, 30, 100, 1e3, 1e4):
            try:
                plan = solve(problem, objective, extra_device_cost=lam * scale * pb)
            except PlanError:
                continue
            cands.append(plan)
    if problem.n_tiers == 2:
        for lab in prefix_assignments(problem):
            cands.append(evaluate(problem, lab, objective, with_memory=True))
    feas = [c for c in cands if c.feasible]
    if not feas:
        raise PlanError("no plan fits the device memory budget (even the smallest device part is too large)")
    best = min(feas, key=lambda c: c.objective_value)
    return replace(best, name="best", exact=False, method="best feasible among a Lagrangian sweep on device "
                   "weight bytes and all prefix cuts (the memory budget is not min-cut-exact)",
                   notes=best.notes + ("memory budget active: optimality not guaranteed over all DAG cuts",))


@dataclass(frozen=True)
class SplitPlans:
    """The reference plans beside the best one (the comparison table)."""

    best: SplitPlan
    device_only: SplitPlan
    cloud_only: SplitPlan
    best_prefix: SplitPlan | None
    best_offload: SplitPlan | None  # best plan with at least one node off the device, when best is device-only
    objective: Objective

    def all(self) -> list[SplitPlan]:
        out = [self.device_only, self.cloud_only, self.best]
        if self.best_offload is not None:
            out.append(self.best_offload)
        if self.best_prefix is not None:
            out.append(self.best_prefix)
        return out


def plan_split(problem: SplitProblem, objective: Objective | None = None) -> SplitPlans:
    """Best plan (exact; see ``solve``) under privacy and memory constraints, plus the reference plans.

    ``cloud_only`` is always reported as a reference; it sends the raw input and is marked infeasible
    when privacy is on.
    """
    objective = objective or Objective.named("latency")
    n = problem.n_nodes
    K = problem.n_tiers
    device_only = evaluate(problem, np.zeros(n, dtype=np.int64), objective, name="device-only",
                           method="reference", exact=False)
    cloud_only = evaluate(problem, np.full(n, K - 1, dtype=np.int64), objective, name="cloud-only",
                          method="reference", exact=False)
    best, off = _solve_with_offload(problem, objective, allow_device_empty=problem.options.raw_input_may_leave)
    if not best.feasible and problem.options.memory_budget_bytes is not None:
        best = _memory_fallback(problem, objective, best)
    elif not best.feasible:
        raise PlanError("; ".join(best.notes) or "the best plan is infeasible")
    offload = None
    if not best.is_split and K > 1 and max(best.node_tiers, default=0) == 0:
        if off is None:
            try:
                off = solve(problem, objective, require_offload=True)
            except PlanError:
                off = None
        offload = replace(off, name="best-offload") if off is not None else None
    prefix = None
    if K <= 3 and n > 0:
        prefix = best_prefix(problem, objective)
    return SplitPlans(best=best, device_only=device_only, cloud_only=cloud_only, best_prefix=prefix,
                      best_offload=offload, objective=objective)


# ------------------------------------------------------------------------------------------ adapters


def tier_from_prediction(profile: Any, prediction: Any) -> TierSpec:
    """A ``TierSpec`` from a ``HardwareProfile`` and ``planner.cost.predict``'s ``Prediction``.

    Energy and $ are taken *per ms* from the prediction (energy_mj / latency_ms, cost / latency_ms) so
    that the device-only and cloud-only plans match ``edgeplan predict`` exactly; the profile's powers are
    the fallback when the prediction has none.
    """
    node_ms = tuple(float(x) for x in prediction.node_latency_ms)
    total = float(prediction.latency_ms)
    overhead = max(0.0, total - sum(node_ms))
    kind = getattr(profile, "kind", "edge")
    e_per_ms = (float(prediction.energy_mj) / total) if total > 0 and getattr(prediction, "energy_mj", None) else (
        float(profile.active_power_w))
    price = getattr(profile, "price_usd_per_hour", None)
    pred_cost = getattr(prediction, "cost_usd_per_1k", None)
    if pred_cost and total > 0:
        c_per_ms = float(pred_cost) / total
    elif price:
        c_per_ms = float(price) / 3.6e6 * 1000.0
    else:
        c_per_ms = 0.0
    prov = getattr(prediction, "provenance", "") or ""
    if not isinstance(prov, str):
        prov = str(prov)
    return TierSpec(
        name=profile.name, kind=kind, node_latency_ms=node_ms, overhead_ms=overhead,
        energy_mj_per_ms=e_per_ms, idle_power_w=float(getattr(profile, "idle_power_w", 0.0)),
        cost_usd_per_1k_per_ms=c_per_ms, memory_bytes=getattr(profile, "memory_bytes", None),
        error_band_pct=float(getattr(prediction, "error_band_pct", getattr(profile, "error_band_pct", 0.0)) or 0.0),
        provenance=prov or f"predicted from profile {profile.name}",
    )


def link_from_profile(link: Any) -> LinkSpec:
    """A ``LinkSpec`` from a ``LinkProfile``; radio energy via ``planner.cost.radio_energy_mj`` (linear)."""
    from edgeplan.planner.cost import radio_energy_mj

    per_mb = radio_energy_mj(1_000_000, link)
    radio = None if per_mb is None else float(per_mb) / 1e6
    return LinkSpec(name=link.name, uplink_mbps=float(link.uplink_mbps), downlink_mbps=float(link.downlink_mbps),
                    rtt_ms=float(link.rtt_ms), jitter_ms=float(getattr(link, "jitter_ms", 0.0) or 0.0),
                    radio_mj_per_byte=radio)


def request_overhead_provenance(options: SplitOptions) -> str:
    """Where the request overhead in ``options`` comes from, for reports."""
    if options.request_overhead_ms == DEFAULT_REQUEST_OVERHEAD_MS:
        return ("default: measured on edgeplan's development machine (2-core x86 VM) with "
                "planner.runtime_overhead.measure_request_overhead_ms; slower devices pay more")
    return "given by the user (--request-overhead-ms)"


def serialise_provenance(options: SplitOptions) -> str:
    """Where the serialise rate in ``options`` comes from, for reports."""
    if options.serialise_mb_per_s == DEFAULT_SERIALISE_MB_PER_S:
        return ("default: measured on edgeplan's development machine (2-core x86 VM) with "
                "planner.runtime_overhead.measure_runtime_costs; slower devices are slower")
    return "given by the user (--serialise-mb-per-s)"


@dataclass(frozen=True)
class SplitResult:
    """What ``run_split`` returns: the plans, the schedule, and what was used to make them."""

    plans: SplitPlans
    schedule: Any  # split_schedule.NetworkSchedule | None
    problem: SplitProblem
    onnx_path: Path
    tier_profiles: tuple[Any, ...]
    link_profiles: tuple[Any, ...]
    planner_ms: float
    provenance: str
    bundle_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.onnx_path),
            "objective": self.plans.objective.name,
            "tiers": [t.name for t in self.problem.tiers],
            "links": [lk.name for lk in self.problem.links],
            "predicted": True,
            "provenance": self.provenance,
            "error_band_pct": max((t.error_band_pct for t in self.problem.tiers), default=0.0),
            "request_overhead_ms_per_boundary": self.problem.options.request_overhead_ms,
            "request_overhead_provenance": request_overhead_provenance(self.problem.options),
            "serialise_mb_per_s": self.problem.options.serialise_mb_per_s,
            "serialise_provenance": serialise_provenance(self.problem.options),
            "best": self.plans.best.name,
            "plans": [p.to_dict() for p in self.plans.all()],
            "schedule": self.schedule.to_dict() if self.schedule is not None else None,
            "planner_ms": self.planner_ms,
            "bundle": str(self.bundle_dir) if self.bundle_dir else None,
        }


def run_split(
    onnx_path: str | Path,
    *,
    tiers: Sequence[str],
    links: Sequence[str],
    objective: str | Objective = "latency",
    options: SplitOptions | None = None,
    batch: int = 1,
    schedule: bool = True,
    min_mbps: float = 0.5,
    max_mbps: float = 1000.0,
    progress: Callable[[str], None] | None = None,
) -> SplitResult:
    """Analyse ``onnx_path``, predict every node on every tier, and plan the split (the CLI's driver).

    ``tiers`` are profile names (device first), ``links`` link names or specs (``20mbps/40ms``), one per
    hop. The schedule covers the first hop's uplink from ``min_mbps`` to ``max_mbps``.
    """
    import time

    from edgeplan.hardware_profiles import load_link, load_profile
    from edgeplan.planner.cost import predict
    from edgeplan.planner.graph import analyse
    from edgeplan.planner.split_schedule import network_schedule

    if len(tiers) < 2:
        raise ConfigError("a split needs at least two tiers (an edge device and a cloud)")
    if len(links) != len(tiers) - 1:
        raise ConfigError(f"{len(tiers)} tiers need {len(tiers) - 1} link(s), got {len(links)}")
    obj = objective if isinstance(objective, Objective) else Objective.named(objective)
    profiles = tuple(load_profile(t) for t in tiers)
    link_profiles = tuple(load_link(lk) for lk in links)
    if progress:
        progress("analysing the graph")
    analysis = analyse(str(onnx_path), batch=batch)
    specs = []
    provs = []
    for prof in profiles:
        if progress:
            progress(f"predicting on {prof.name}")
        pred = predict(analysis, prof, batch=batch)
        spec = tier_from_prediction(prof, pred)
        specs.append(spec)
        provs.append(f"{prof.name}: {spec.provenance} (+-{spec.error_band_pct:.0f}%)")
    problem = build_problem(analysis, specs, [link_from_profile(lk) for lk in link_profiles], options)
    t0 = time.perf_counter()
    plans = plan_split(problem, obj)
    planner_ms = (time.perf_counter() - t0) * 1e3
    sched = network_schedule(problem, obj, min_mbps=min_mbps, max_mbps=max_mbps) if schedule else None
    return SplitResult(plans=plans, schedule=sched, problem=problem, onnx_path=Path(onnx_path),
                       tier_profiles=profiles, link_profiles=link_profiles, planner_ms=planner_ms,
                       provenance="; ".join(provs))


def split_model(
    spec: str | Path,
    *,
    tiers: Sequence[str],
    links: Sequence[str],
    objective: str = "latency",
    options: SplitOptions | None = None,
    trust_model: bool = False,
    weights: str | Path | None = None,
    input_shape: str | None = None,
    batch: int = 1,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    schedule_parts: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SplitResult:
    """``edgeplan split`` as one call: model intake -> ONNX -> ``run_split`` -> (optional) bundle of the best plan.

    The bundle records the tier profiles (roles target / edge-server / cloud) and links with their content
    hashes, the predicted metrics of the best plan, and the network schedule.
    """
    from edgeplan.planner.onnx_intake import onnx_for_model

    if progress:
        progress("loading the model")
    mo = onnx_for_model(spec, trust_model=trust_model, weights=weights, input_shape=input_shape)
    result = run_split(mo.onnx_path, tiers=tiers, links=links, objective=objective, options=options, batch=batch,
                       progress=progress)
    if out_dir is None:
        return result
    from edgeplan.planner.bundle import write_bundle

    if progress:
        progress("writing the bundle")
    roles = ["target"] + (["edge-server"] if len(tiers) == 3 else [f"tier{i}" for i in range(1, len(tiers) - 1)]) + [
        "cloud"]
    profiles = dict(zip(roles, result.tier_profiles))
    link_roles = {("link" if i == 0 else f"link{i + 1}"): lk for i, lk in enumerate(result.link_profiles)}
    shapes = {name: (shape, dt) for name, shape, dt in zip(result.problem.tensor_names, result.problem.tensor_shapes,
                                                          result.problem.tensor_dtypes)}
    bundle = write_bundle(
        out_dir, plan=result.plans.best, source_onnx=mo.onnx_path, source_sha256=mo.loaded.sha256,
        profiles=profiles, links=link_roles, objective=result.plans.objective.name,
        predicted_provenance=result.provenance, schedule=result.schedule, schedule_parts=schedule_parts,
        tensor_shapes=shapes, overwrite=overwrite,
    )
    return replace(result, bundle_dir=bundle)


__all__ = [
    "CutTensor", "DEFAULT_REQUEST_OVERHEAD_MS", "DEFAULT_SERIALISE_MB_PER_S", "LinkSpec", "PartIO", "part_io",
    "Objective", "SplitOptions", "SplitPlan", "SplitPlans", "SplitProblem", "SplitResult", "TierSpec", "WIRE_DTYPES",
    "WIRE_FIDELITY", "best_prefix", "build_problem", "device_peak_memory_bytes", "evaluate", "is_valid",
    "link_from_profile", "plan_split", "prefix_assignments", "request_overhead_provenance", "run_split",
    "serialise_provenance", "solve", "split_model", "tier_from_prediction", "with_uplink",
]
