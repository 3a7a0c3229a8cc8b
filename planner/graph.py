"""ONNX graph analysis: per-node op type, MACs/FLOPs, params, activation bytes; totals.

INTERFACE (fixed; other modules code against it):

    analyse(model: onnx.ModelProto | str | Path, batch: int | None = None) -> GraphAnalysis

- ``GraphAnalysis.nodes`` are in topological (execution) order.
- ``NodeStats.inputs`` / ``outputs`` name only *activation* tensors (graph inputs or produced by a
  node at run time). Weights, initializers and Constant/Identity nodes fed only by constants are
  folded into ``params``/``param_bytes`` and never appear as activations.
- ``GraphAnalysis.tensors`` maps every activation tensor name to its ``TensorInfo``.
- ``NodeStats.compute_dtype`` is "fp32", "fp16" or "int8" (QLinear*/QDQ-wrapped nodes are int8).
- ``NodeStats.known`` is False for an op type the analyser has no formula for: such nodes are
  listed in ``GraphAnalysis.unknown_ops``, never silently counted as zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # concrete (symbolic dims resolved with the batch size)
    dtype: str  # numpy dtype name: "float32", "float16", "int8", "uint8", "int64", ...
    bytes: int


@dataclass(frozen=True)
class NodeStats:
    name: str
    op_type: str
    op_class: str  # coarse class used by the cost model: conv, dwconv, gemm, elementwise, pool, norm, ...
    inputs: tuple[str, ...]  # activation tensors read
    outputs: tuple[str, ...]  # activation tensors written
    macs: int
    flops: int
    params: int
    param_bytes: int
    input_bytes: int
    output_bytes: int
    compute_dtype: str  # "fp32" | "fp16" | "int8"
    known: bool = True


@dataclass(frozen=True)
class GraphAnalysis:
    nodes: tuple[NodeStats, ...]
    tensors: dict[str, TensorInfo]
    inputs: tuple[str, ...]  # graph input tensor names (activations only)
    outputs: tuple[str, ...]  # graph output tensor names
    unknown_ops: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def total_params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def total_param_bytes(self) -> int:
        return sum(n.param_bytes for n in self.nodes)
