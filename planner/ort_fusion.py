"""What ONNX Runtime actually executes for a graph: its optimised graph, mapped back onto the original nodes.

The cost model used to *imitate* ORT's graph transformers with rules (``planner.cost._fusion_flags``:
Conv+BN+ReLU, DQ -> Conv -> Q into QLinearConv, ...). For int8 graphs the imitation was the largest error in
the held-out benchmark (benchmarks/RESULTS.md, cost model section): ORT leaves some ops in float with real
QuantizeLinear/DequantizeLinear nodes around them (LayerNormalization, Erf, Div, a ConvTranspose on x86 ...),
turns others into QLinearAdd/QLinearMul/QLinearSoftmax/QLinearMatMul (activation x activation attention
MatMuls too), and drops QDQ pairs around data-movement ops. Which of these happens depends on ORT's version
and its selectors. So instead of guessing, we ask ORT:

1. ``runtime_graph`` creates an ORT CPU session at ``ORT_ENABLE_EXTENDED`` (every hardware-independent
   fusion: constant folding, Conv+BN/activation fusion, QDQ -> QLinear*, Gemm/MatMul fusions, attention and
   GELU/LayerNorm fusions) with ``optimized_model_filepath`` set, so ORT writes the graph it would run. No
   inference is run. The layout-level (``ORT_ENABLE_ALL``) NCHWc transforms are x86-specific and stay with
   the rules (residual Add and activation fused into NCHWc convs), applied on top by ``planner.cost``.
2. The optimised graph is analysed with ``planner.graph.analyse(qdq_as_int8=False)``: a plain Conv there is a
   float kernel even when DequantizeLinear feeds it (ORT decided not to fuse it), while QLinear*/QGemm/
   *Integer ops are int8.
3. Each optimised node is mapped back to the original nodes through tensor names (ORT keeps the names of
   the tensors that survive): its *group* is the original node that produced its output plus every
   original node behind it whose output vanished from the optimised graph (fused into it). The group's
   *carrier* is its member with the most FLOPs (the Conv of DQ -> Conv -> Q), which carries the kernel's
   cost; the other members are ``fused``. Original nodes in no group were folded or eliminated by ORT
   (weight DequantizeLinear, Shape of a static shape, Identity, Dropout).

Per-original-node latencies therefore stay aligned with ``GraphAnalysis.nodes``, which is what the split
planner cuts. Cost: one ORT session creation per analysis (0.1-0.5 s for the examples here). When ORT
cannot create the session (custom ops, > 2 GB protos, a graph ORT rejects) ``runtime_graph`` returns None
with a reason, and the cost model falls back to the rules.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from edgeplan.planner.graph import GraphAnalysis

__all__ = ["RuntimeGraph", "runtime_graph"]

_TWO_GB = 2**31 - 1


@dataclass(frozen=True)
class RuntimeGraph:
    """ORT's optimised graph of an analysed model and how its nodes map onto the original ones."""

    analysis: "GraphAnalysis"  # of the optimised graph (compute_dtype int8 only for integer kernels)
    carrier: tuple[int, ...]  # per optimised node: index of the original node that carries its cost
    role: tuple[str, ...]  # per original node: "kernel" | "fused" | "folded"
    source: str  # e.g. "onnxruntime 1.32.0 ORT_ENABLE_EXTENDED"


def _optimised_proto(model_bytes: bytes | None, path: str | None) -> Any:
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="edgeplan-ortopt-") as tmp:
        out = os.path.join(tmp, "optimised.onnx")
        so.optimized_model_filepath = out
        ort.InferenceSession(model_bytes if model_bytes is not None else path, so, providers=["CPUExecutionProvider"])
        return onnx.load(out, load_external_data=True)


def _inject_shapes(proto: Any, original: "GraphAnalysis") -> None:
    """Give the optimised graph the shapes the original analysis already resolved (names are kept by ORT),
    so analysing it needs no extra shape inference run."""
    import numpy as np
    from onnx import helper

    known = {vi.name for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output)}
    for name, t in original.tensors.items():
        if name in known or not t.exact or t.dtype in ("unknown", "object", "str"):
            continue
        try:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
        except (TypeError, KeyError):
            continue
        proto.graph.value_info.append(helper.make_tensor_value_info(name, elem, list(t.shape)))


def runtime_graph(model: Any, original: "GraphAnalysis", *, path: str | None = None,
                  input_shapes: dict | None = None) -> tuple[RuntimeGraph | None, str | None]:
    """ORT's optimised graph for ``model`` (a ModelProto with its weights, or None with ``path``), mapped
    onto ``original`` (the analysis of the same model). Returns (RuntimeGraph, None) or (None, reason)."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a dependency
        return None, "onnxruntime is not importable"
    from edgeplan.planner.graph import analyse

    try:
        data = None
        if model is not None:
            if model.ByteSize() > _TWO_GB:
                return None, "model over 2 GB"
            data = model.SerializeToString()
        opt = _optimised_proto(data, path)
    except Exception as e:  # noqa: BLE001 - ORT raises its own types (custom ops, invalid graphs)
        return None, f"ONNX Runtime could not optimise the graph ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})"
    _inject_shapes(opt, original)
    try:
        ra = analyse(opt, batch=original.batch, input_shapes=input_shapes, qdq_as_int8=False, runtime=False,
                     fold_constants=False)
    except Exception as e:  # noqa: BLE001 - a contrib op our analysis cannot read: fall back to the rules
        return None, f"cannot analyse ONNX Runtime's optimised graph ({type(e).__name__}: {str(e)[:160]})"

    producer: dict[str, int] = {}
    for i, n in enumerate(original.nodes):
        for t in n.outputs:
            producer[t] = i
    surviving = set(ra.tensors) | set(ra.inputs) | set(ra.outputs)
    for n in ra.nodes:
        surviving.update(n.inputs)
        surviving.update(n.outputs)
    role = ["folded"] * len(original.nodes)
    carrier: list[int] = []
    for n in ra.nodes:
        heads = [producer[t] for t in n.outputs if t in producer]
        if not heads:  # only tensors ORT made up: charge the producer of its last input the original graph
            ins = [producer[t] for t in n.inputs if t in producer]  # knows (else the first node)
            heads = ins[-1:] if ins else [0] if original.nodes else []
        group: set[int] = set()
        stack = list(heads)
        while stack:
            i = stack.pop()
            if i in group:
                continue
            group.add(i)
            for t in original.nodes[i].inputs:
                p = producer.get(t)
                if p is not None and t not in surviving and role[p] == "folded" and p not in group:
                    stack.append(p)
        if not group:
            carrier.append(-1)
            continue
        anchor = max(sorted(group), key=lambda i: original.nodes[i].flops)
        for i in group:
            if role[i] != "kernel":
                role[i] = "fused"
        role[anchor] = "kernel"
        carrier.append(anchor)
    return RuntimeGraph(ra, tuple(carrier), tuple(role), f"onnxruntime {ort.__version__} ORT_ENABLE_EXTENDED"), None
