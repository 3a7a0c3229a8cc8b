"""Cost model: predicted latency, energy, peak memory and cloud cost of a graph on a hardware profile.

``predict(analysis, profile, batch=1) -> Prediction`` is a pure function of its inputs (no I/O, no
globals), fast (a 1,000-node graph takes a few ms), and is what the split planner calls per profile.

Per node (in execution order):

    compute_s = flops / (peak_gops[dtype] * efficiency[op_class, dtype])
    memory_s  = (param_bytes + activation bytes read and written) / (bandwidth * memory_efficiency[op_class])
    roof_s    = max(compute_s, memory_s)                                   # roofline
    overhead  = per_node_overhead_us + class_overhead_us[op_class]
    node_s    = roof_s + overhead                   (overhead_mode "additive": CPU runtimes)
              = max(roof_s, overhead)               (overhead_mode "max": GPU eager, launch-bound)

plus ``per_inference_overhead_us`` once. Nodes the runtime does not execute as separate kernels are
priced at zero (``NodeCost.bound == "fused"`` or ``"folded"``):

- *folded*: a node with no activation input (a weight DequantizeLinear, a shape computation on constants):
  ONNX Runtime constant-folds it when the session is created.
- *fused* (only op types listed in the profile's ``fusable_op_types``):
  an activation / BatchNormalization / residual Add whose first producer is a conv or gemm node (or a node
  already fused into one) whose output has no other consumer (ORT: ConvActivationFusion, Conv+BN folding,
  NCHWc Conv+Sum fusion, Gemm+activation); a DequantizeLinear all of whose consumers are int8 compute
  nodes and a QuantizeLinear right after an int8 compute node (ORT turns DQ -> Conv -> Q into QLinearConv);
  a Pad all of whose consumers are conv/pool nodes (PadFusion) and a Transpose all of whose consumers are
  MatMuls (MatMulTransposeFusion).
- *view*: Reshape/Flatten/Squeeze/Unsqueeze/Identity/Dropout move no data in ORT; they pay the per-node
  overhead only.

Why this shape: measured on this machine (benchmarks/RESULTS.md (cost model section)), summing unfused ONNX nodes
over-predicts a ResNet by ~30% because ORT runs Conv+BN+ReLU as one kernel; and a GPU at batch 1 spends
more time launching kernels than computing (shared/TOOLCHAIN.md), which only the ``max`` overhead mode
captures.

Peak memory = weights (all ``param_bytes``) + the maximum, over the execution order, of the bytes of live
activation tensors (a tensor is allocated when its producer runs and freed after its last consumer; graph
inputs are live from the start and graph outputs until the end). It ignores the runtime's arena rounding
and workspace, so measured RSS is higher.

Energy = ``active_power_w`` x latency (device only). Radio energy for bytes sent in a split is
``radio_energy_mj(bytes, link)``. Cloud $ per 1,000 inferences = ``price_usd_per_hour / 3600 x
latency_s / batch x 1000``: it assumes the whole instance is billed for exactly the inference time
(batch ``batch``, back-to-back requests, no idle time, no other tenants), i.e. a lower bound for real
traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgeplan.hardware_profiles.schema import HardwareProfile, LinkProfile
from edgeplan.planner.graph import GraphAnalysis

__all__ = [
    "ModelPrediction", "NodeCost", "Prediction", "peak_memory_bytes", "predict", "predict_model", "prediction_to_dict",
    "radio_energy_mj",
]

VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
_COMPUTE_CLASSES = frozenset({"conv", "dwconv", "convtranspose", "gemm"})


@dataclass(frozen=True)
class NodeCost:
    """Why a node costs what it costs: ``bound`` is compute, memory, overhead, fused, folded or view."""

    latency_ms: float
    compute_ms: float
    memory_ms: float
    bound: str


@dataclass(frozen=True)
class Prediction:
    profile: str
    batch: int
    node_latency_ms: tuple[float, ...]  # aligned with analysis.nodes
    node_costs: tuple[NodeCost, ...]  # aligned with analysis.nodes
    latency_ms: float
    energy_mj: float
    peak_memory_bytes: int
    cost_usd_per_1k: float | None
    throughput_per_s: float
    error_band_pct: float
    provenance: str
    warnings: tuple[str, ...] = ()

    @property
    def latency_range_ms(self) -> tuple[float, float]:
        band = self.error_band_pct / 100.0
        return (self.latency_ms * max(0.0, 1.0 - band), self.latency_ms * (1.0 + band))


def radio_energy_mj(n_bytes: int | float, link: LinkProfile) -> float | None:
    """Radio energy (mJ) to send ``n_bytes`` over ``link``: bytes x 8 x nJ/bit. None when the link's is unknown.

    Marginal energy only (Huang et al. MobiSys 2012 ``alpha_u`` term): the radio's base and tail power
    are not included, so this is a lower bound for sporadic transfers.
    """
    if link.radio_energy_nj_per_bit is None:
        return None
    return float(n_bytes) * 8.0 * link.radio_energy_nj_per_bit * 1e-6


def _consumers(analysis: GraphAnalysis) -> dict[str, list[int]]:
    cons: dict[str, list[int]] = {}
    for i, n in enumerate(analysis.nodes):
        for t in n.inputs:
            cons.setdefault(t, []).append(i)
    return cons


def peak_memory_bytes(analysis: GraphAnalysis, batch_scale: float = 1.0) -> int:
    """Weights + peak live activations over the execution order (see the module docstring)."""
    cons = _consumers(analysis)
    last_use: dict[str, int] = {}
    for t, users in cons.items():
        last_use[t] = max(users)
    n_nodes = len(analysis.nodes)
    for t in analysis.outputs:
        last_use[t] = n_nodes
    sizes = {name: info.bytes for name, info in analysis.tensors.items()}
    live: dict[str, int] = {t: sizes.get(t, 0) for t in analysis.inputs}
    live_bytes = sum(live.values())
    peak = live_bytes
    free_at: dict[int, list[str]] = {}
    for t, idx in last_use.items():
        free_at.setdefault(idx, []).append(t)
    for t in analysis.inputs:
        if t not in last_use:  # unused input: freed immediately
            free_at.setdefault(-1, []).append(t)
    for i, n in enumerate(analysis.nodes):
        for t in n.outputs:
            if t not in live:
                b = sizes.get(t, 0)
                live[t] = b
                live_bytes += b
        peak = max(peak, live_bytes)
        for t in free_at.get(i, ()):
            live_bytes -= live.pop(t, 0)
        for t in n.outputs:  # produced but never consumed and not a graph output
            if t not in last_use and t in live:
                live_bytes -= live.pop(t)
    return int(analysis.total_param_bytes + peak * batch_scale)


# Fusions that ORT makes only at ORT_ENABLE_ALL (x86 NCHWc layout: residual Add and one activation into the
# conv): the only rules still applied to ORT's own EXTENDED-level graph (see planner.ort_fusion).
_LAYOUT_LEVEL_FUSIONS = frozenset({"Add", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh"})


def _fusion_flags(analysis: GraphAnalysis, profile: HardwareProfile, runtime_graph: bool = False) -> list[str]:
    """Per node: '' (executed), 'folded', 'fused' or 'view'.

    ``runtime_graph``: ``analysis`` is ORT's optimised graph, where every node left runs (ORT already
    folded constants and fused QDQ groups); only the layout-level fusions are applied.
    """
    fusable = set(profile.fusable_op_types)
    if runtime_graph:
        fusable &= _LAYOUT_LEVEL_FUSIONS
    producer: dict[str, int] = {}
    for i, n in enumerate(analysis.nodes):
        for t in n.outputs:
            producer[t] = i
    cons = _consumers(analysis)
    graph_outputs = set(analysis.outputs)
    flags = [""] * len(analysis.nodes)
    # Epilogue state of the kernel a node belongs to: "conv" (a conv/gemm, or BN folded into it), "sum" (a
    # residual Add fused into it), "act" (an activation fused; nothing more fuses), None (not a conv kernel).
    # This is ORT's CPU pattern set: Conv[+BN][+Add][+one activation] and Gemm/MatMul[+bias][+activation].
    state: list[str | None] = [None] * len(analysis.nodes)

    def is_int8_compute(j: int) -> bool:
        m = analysis.nodes[j]
        return m.compute_dtype == "int8" and m.op_class != "quant"

    for i, n in enumerate(analysis.nodes):
        if not n.inputs and not runtime_graph:
            flags[i] = "folded"
            continue
        if n.op_type in VIEW_OPS:
            flags[i] = "view"
            continue
        if n.op_class in _COMPUTE_CLASSES:
            state[i] = "conv"
            continue
        if n.op_type not in fusable:
            continue
        if n.op_type in ("Pad", "Transpose"):
            # fused into every consumer: ORT's PadFusion (Pad -> Conv/Pool pads) and MatMulTransposeFusion
            # (Transpose -> MatMul becomes FusedMatMul with transA/transB)
            users = [u for t in n.outputs for u in cons.get(t, [])]
            into = ("conv", "dwconv", "pool") if n.op_type == "Pad" else ("gemm",)
            if users and all(analysis.nodes[u].op_class in into for u in users) and not (set(n.outputs) & graph_outputs):
                flags[i] = "fused"
            continue
        if n.op_type == "DequantizeLinear":
            users = [u for t in n.outputs for u in cons.get(t, [])]
            if users and all(is_int8_compute(u) for u in users) and not (set(n.outputs) & graph_outputs):
                flags[i] = "fused"
            continue
        if n.op_type == "QuantizeLinear":
            p = producer.get(n.inputs[0])
            if p is not None and (is_int8_compute(p) or analysis.nodes[p].compute_dtype == "int8" and state[p]):
                flags[i] = "fused"
            continue
        # BN / residual Add / activation: fuse into the single-consumer conv/gemm kernel that produced the input
        candidates = n.inputs[:2] if n.op_type == "Add" else n.inputs[:1]
        for t in candidates:
            p = producer.get(t)
            if p is None or state[p] is None or len(cons.get(t, [])) != 1 or t in graph_outputs:
                continue
            if n.op_type == "BatchNormalization" and state[p] == "conv":
                flags[i], state[i] = "fused", "conv"
            elif n.op_type == "Add" and state[p] == "conv":
                flags[i], state[i] = "fused", "sum"
            elif n.op_type not in ("Add", "BatchNormalization") and state[p] in ("conv", "sum"):
                flags[i], state[i] = "fused", "act"
            if flags[i]:
                break
    return flags


def predict(analysis: GraphAnalysis, profile: HardwareProfile, batch: int = 1) -> Prediction:
    """Predicted latency/energy/memory/cost of running ``analysis`` on ``profile`` at ``batch``.

    The analysis describes one run at ``analysis.batch`` (default 1); work that scales with the batch
    (FLOPs, activation bytes) is scaled by ``batch / analysis.batch``; weights are read once per run.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    analysed_batch = max(1, int(getattr(analysis, "batch", 1) or 1))
    scale = batch / analysed_batch
    rt = _runtime_of(analysis, profile)
    if rt is not None:
        costs = _carry(analysis, rt, _price_nodes(rt.analysis, profile, scale, _fusion_flags(rt.analysis, profile, True)))
        fusion = f"kernels as {rt.source} optimises the graph"
    else:
        costs = _price_nodes(analysis, profile, scale, _fusion_flags(analysis, profile))
        fusion = "fusion rules of the profile"
        if profile.fusion_source == "onnxruntime" and getattr(analysis, "runtime_note", None):
            fusion += f" ({analysis.runtime_note})"
    node_ms = tuple(c.latency_ms for c in costs)
    latency_ms = sum(node_ms) + profile.per_inference_overhead_us * 1e-3
    energy_mj = profile.active_power_w * latency_ms  # W x ms = mJ
    cost = None
    if profile.price_usd_per_hour is not None:
        cost = profile.price_usd_per_hour / 3600.0 * (latency_ms / 1e3) / batch * 1000.0
    warnings: list[str] = []
    unknown = getattr(analysis, "unknown_nodes", ()) or analysis.unknown_ops
    if unknown:
        warnings.append(f"{len(unknown)} node(s) without a FLOP formula were priced by bytes moved only: "
                        + ", ".join(list(unknown)[:5]))
    return Prediction(
        profile=profile.name,
        batch=batch,
        node_latency_ms=node_ms,
        node_costs=tuple(costs),
        latency_ms=latency_ms,
        energy_mj=energy_mj,
        peak_memory_bytes=peak_memory_bytes(analysis, scale),
        cost_usd_per_1k=cost,
        throughput_per_s=batch * 1e3 / latency_ms if latency_ms > 0 else float("inf"),
        error_band_pct=profile.error_band_pct,
        provenance=f"predicted from {profile.provenance_summary()}; {fusion}",
        warnings=tuple(warnings),
    )


def predict_latency_ms(analysis: GraphAnalysis, profile: HardwareProfile) -> float:
    """``predict(analysis, profile).latency_ms`` at the analysed batch, without the per-node table, peak
    memory and energy (what ``planner.calibrate``'s fit evaluates thousands of times)."""
    rt = _runtime_of(analysis, profile)
    if rt is None:
        costs = _price_nodes(analysis, profile, 1.0, _fusion_flags(analysis, profile))
    else:
        opt = _price_nodes(rt.analysis, profile, 1.0, _fusion_flags(rt.analysis, profile, True))
        costs = [c for j, c in enumerate(opt) if j < len(rt.carrier) and rt.carrier[j] >= 0]
    return sum(c.latency_ms for c in costs) + profile.per_inference_overhead_us * 1e-3


def _runtime_of(analysis: GraphAnalysis, profile: HardwareProfile) -> Any:
    return getattr(analysis, "runtime", None) if profile.fusion_source == "onnxruntime" else None


def _carry(analysis: GraphAnalysis, rt: Any, opt_costs: list[NodeCost]) -> list[NodeCost]:
    """Costs of ORT's optimised nodes summed onto the original nodes that carry them (``RuntimeGraph``)."""
    sums: dict[int, list[NodeCost]] = {}
    for j, c in enumerate(opt_costs):
        k = rt.carrier[j] if j < len(rt.carrier) else -1
        if k >= 0:
            sums.setdefault(k, []).append(c)
    out: list[NodeCost] = []
    for i in range(len(analysis.nodes)):
        parts = sums.get(i)
        if not parts:
            out.append(NodeCost(0.0, 0.0, 0.0, "fused" if rt.role[i] == "fused" else "folded"))
            continue
        main = max(parts, key=lambda c: c.latency_ms)
        out.append(NodeCost(sum(c.latency_ms for c in parts), sum(c.compute_ms for c in parts),
                            sum(c.memory_ms for c in parts), main.bound))
    return out


def _price_nodes(analysis: GraphAnalysis, profile: HardwareProfile, scale: float, flags: list[str]) -> list[NodeCost]:
    bw = profile.memory_bandwidth_gbps * 1e9
    ovh_s = profile.per_node_overhead_us * 1e-6
    additive = profile.overhead_mode == "additive"
    class_ovh = profile.class_overhead_us
    block = profile.conv_channel_block
    row_ovh = profile.row_overhead_ns
    q8_ns = profile.int8_output_ns
    nhwc = _nhwc_int8_pools(analysis) if profile.fusion_source == "onnxruntime" else frozenset()
    costs: list[NodeCost] = []
    for i, (n, flag) in enumerate(zip(analysis.nodes, flags)):
        if flag in ("folded", "fused"):
            costs.append(NodeCost(0.0, 0.0, 0.0, flag))
            continue
        if flag == "view":
            costs.append(NodeCost(ovh_s * 1e3, 0.0, 0.0, "view"))
            continue
        dtype = "fp32" if i in nhwc else n.compute_dtype  # MLAS NhwcMaxPool runs at the float pooling rate
        peak = profile.peak_for(dtype) * 1e9
        eff = profile.efficiency_for(n.op_class, dtype)
        flops = n.flops
        extra_s = 0.0
        if block > 1 and n.compute_dtype == "fp32" and n.op_class in ("conv", "dwconv"):
            in_s, out_s = _nc_shape(analysis, n.inputs), _nc_shape(analysis, n.outputs)
            flops *= _channel_padding(n, in_s, out_s, block)
            if n.op_class == "conv":
                mult, extra_s = _filter_set_terms(n, in_s, out_s, profile)
                flops *= mult
                extra_s *= scale
        compute_s = flops * scale / (peak * eff)
        moved = n.param_bytes + (n.input_bytes + n.output_bytes) * scale
        memory_s = moved / (bw * profile.memory_efficiency_for(n.op_class))
        roof = max(compute_s, memory_s)
        node_ovh_s = ovh_s + class_ovh.get(n.op_class, 0.0) * 1e-6 + extra_s
        if n.compute_dtype == "int8" and q8_ns and n.op_class in _COMPUTE_CLASSES:
            node_ovh_s += q8_ns * 1e-9 * (n.output_bytes * scale)  # uint8/int8 outputs: 1 byte per element
        row_ns = row_ovh.get(n.op_class) if n.compute_dtype == "fp32" else None  # NCHWc kernels are fp32 only
        if row_ns:
            node_ovh_s += row_ns * 1e-9 * _output_rows(analysis, n, block) * scale
        if additive:
            t = roof + node_ovh_s
            bound = "compute" if compute_s >= memory_s else "memory"
        else:
            t = max(roof, node_ovh_s)
            bound = "overhead" if node_ovh_s > roof else ("compute" if compute_s >= memory_s else "memory")
        costs.append(NodeCost(t * 1e3, compute_s * 1e3, memory_s * 1e3, bound))
    return costs


_NHWC_INT8_POOLS = frozenset({"MaxPool", "QLinearAveragePool", "QLinearGlobalAveragePool"})


def _nhwc_int8_pools(analysis: GraphAnalysis) -> frozenset[int]:
    """Indices of 8-bit pooling nodes that ORT runs channels-last (in ORT's optimised graph).

    At ORT_ENABLE_ALL, ORT's NHWC transformer runs QLinearConv channels-last, pushes the layout through
    8-bit element-wise ops (QLinearAdd ...) and runs an 8-bit MaxPool / QLinear(Global)AveragePool in that
    region with MLAS's NHWC kernels, at about the float pooling rate. The same pool elsewhere runs ORT's
    generic NCHW loop (measured here: an 8-bit MaxPool of 32 x 64 x 64, 3x3 stride 2, 917 us against 62 us
    in float), which is what the fitted int8 pool efficiency describes. Pricing every 8-bit pool like the slow
    one put 0.52 ms (28 %) of a 1.6 ms int8 ResNet on its one MaxPool.
    """
    nodes = analysis.nodes
    if not any(n.op_type in _NHWC_INT8_POOLS and n.compute_dtype == "int8" for n in nodes):
        return frozenset()
    producer = {t: i for i, n in enumerate(nodes) for t in n.outputs}
    region: set[int] = set()
    pools: set[int] = set()
    for i, n in enumerate(nodes):  # execution order, so a node's producer is classified before it
        if n.compute_dtype != "int8":
            continue
        p = producer.get(n.inputs[0]) if n.inputs else None
        fed = p is not None and p in region
        if n.op_type == "QLinearConv":
            region.add(i)
        elif fed and n.op_type in _NHWC_INT8_POOLS:
            region.add(i)
            pools.add(i)
        elif fed and n.op_class == "elementwise":
            region.add(i)
    return frozenset(pools)


def _nc_shape(analysis: GraphAnalysis, names: tuple[str, ...]) -> tuple[int, ...] | None:
    """Shape of the first of ``names`` when it is [N, C, H, ...] with C > 0, else None."""
    t = analysis.tensors.get(names[0]) if names else None
    return tuple(int(d) for d in t.shape) if t is not None and len(t.shape) >= 3 and t.shape[1] > 0 else None


def _output_rows(analysis: GraphAnalysis, n: Any, block: int) -> int:
    """N x ceil(C / block) x H of a node's first output [N, C, H, (W)] (1 for other ranks)."""
    s = _nc_shape(analysis, n.outputs)
    return 1 if s is None else s[0] * -(-s[1] // block) * s[2]


def _channel_padding(n: Any, in_s: tuple[int, ...] | None, out_s: tuple[int, ...] | None, block: int) -> float:
    """FLOP multiplier of a conv whose input and output channels are rounded up to ``block`` (NCHWc);
    ``in_s``/``out_s``: its input/output [N, C, H, ...] (``_nc_shape``)."""
    cin, cout = ((s[1] if s else None) for s in (in_s, out_s))
    f = 1.0
    # ORT's NCHWc conv reads an input with fewer channels than a block (the 3-channel stem) unpadded, in NCHW
    for c in ((cout,) if n.op_class == "dwconv" or (cin or 0) < block else (cin, cout)):
        if c:
            f *= (-(-c // block) * block) / c
    return f


def _filter_set_terms(n: Any, cin_s: tuple[int, ...] | None, out_s: tuple[int, ...] | None,
                      profile: HardwareProfile) -> tuple[float, float]:
    """(compute multiplier, extra seconds before batch scaling) of an fp32 NCHWc conv: short filter sets and the
    per-output cost of 1x1 convs (see ``HardwareProfile.partial_filter_set``)."""
    if cin_s is None or out_s is None:
        return 1.0, 0.0
    out_elems = math.prod(out_s)
    # MACs per output element / input channels = kernel area (group 1: ``conv`` excludes depthwise)
    pointwise = n.macs <= out_elems * cin_s[1]
    mult = 1.0
    penalty = profile.partial_filter_set.get("pointwise" if pointwise else "kxk", 0.0)
    s = profile.conv_filter_set_blocks
    if penalty and s > 1:
        blocks = -(-out_s[1] // profile.conv_channel_block)
        mult += penalty * (s * -(-blocks // s) / blocks - 1.0)
    extra_s = profile.pointwise_output_ns * 1e-9 * out_elems if pointwise else 0.0
    return mult, extra_s


def prediction_to_dict(pred: Prediction, analysis: GraphAnalysis, top: int | None = None) -> dict[str, Any]:
    """JSON-ready dict: totals, error band, provenance and a per-layer list (execution order).

    ``top`` keeps only the ``top`` most expensive layers in ``layers`` (still in execution order).
    """
    layers = []
    for i, (n, c) in enumerate(zip(analysis.nodes, pred.node_costs)):
        layers.append({
            "index": i, "name": n.name, "op_type": n.op_type, "op_class": n.op_class, "dtype": n.compute_dtype,
            "flops": n.flops, "latency_ms": c.latency_ms, "compute_ms": c.compute_ms, "memory_ms": c.memory_ms,
            "bound": c.bound,
        })
    if top is not None:
        keep = sorted(range(len(layers)), key=lambda i: -layers[i]["latency_ms"])[:top]
        layers = [layers[i] for i in sorted(keep)]
    lo, hi = pred.latency_range_ms
    return {
        "kind": "prediction",
        "profile": pred.profile,
        "batch": pred.batch,
        "latency_ms": pred.latency_ms,
        "latency_range_ms": [lo, hi],
        "energy_mj": pred.energy_mj,
        "peak_memory_bytes": pred.peak_memory_bytes,
        "cost_usd_per_1k": pred.cost_usd_per_1k,
        "throughput_per_s": pred.throughput_per_s,
        "error_band_pct": pred.error_band_pct,
        "provenance": pred.provenance,
        "warnings": list(pred.warnings),
        "layers": layers,
    }


@dataclass(frozen=True)
class ModelPrediction:
    """What ``edgeplan predict`` shows: the prediction plus the analysis and where the ONNX file came from."""

    prediction: Prediction
    analysis: GraphAnalysis
    onnx_path: str
    model_format: str


def predict_model(
    spec: str,
    target: str,
    *,
    batch: int = 1,
    trust_model: bool = False,
    weights: str | None = None,
    input_shape: str | None = None,
) -> ModelPrediction:
    """Load any model spec, export/analyse it as ONNX and ``predict`` it on ``target`` at ``batch``.

    The profile is resolved first, so a wrong ``--target`` fails before any model is loaded.
    """
    from edgeplan.hardware_profiles.registry import load_profile
    from edgeplan.planner.graph import analyse
    from edgeplan.planner.onnx_intake import onnx_for_model

    profile = load_profile(target)
    if batch < 1:
        from edgeplan.hardware_profiles.errors import InputError

        raise InputError("--batch must be >= 1")
    mo = onnx_for_model(spec, trust_model=trust_model, weights=weights, input_shape=input_shape)
    analysis = analyse(str(mo.onnx_path))  # the model's own batch (symbolic -> 1); predict() rescales
    pred = predict(analysis, profile, batch=batch)
    return ModelPrediction(pred, analysis, str(mo.onnx_path), mo.loaded.format)
