"""Per-op cost formulas for ``planner.graph``: op class, MACs and FLOPs of one ONNX node.

Conventions (every number ``edgeplan inspect`` prints follows them):

- **MACs** are multiply-accumulates of the dense-compute ops only: Conv/ConvTranspose (and their
  QLinear/Integer/fused forms), Gemm/MatMul (batched included), Einsum, and the gate matmuls of
  LSTM/GRU/RNN. Every other op has ``macs == 0``. Bias additions are not MACs.
- **FLOPs** = ``2 * MACs`` for those ops, plus one FLOP per output element for a bias (Conv, Gemm
  ``C``). Other ops are counted per element, with the small per-element constants below
  (``_PER_ELEMENT``): element-wise ops (activations included, transcendental or not) 1 per output
  element (variadic Sum/Max/Min/Mean: ``inputs - 1``), BatchNormalization 2 (inference: scale and
  shift), LayerNorm/InstanceNorm/GroupNorm 8 (mean 1, variance 3, normalise 2, affine 2), Softmax 5
  (max, sub, exp, sum, div), pooling ``output elements * kernel size``, global pooling and Reduce*
  one per *input* element, Resize 1 per output element for nearest and 2 per interpolated axis for
  linear (8 for cubic), Quantize/DequantizeLinear 2. Data-movement ops (Reshape, Transpose, Concat,
  Gather, Pad, ...) are 0 FLOPs: they cost bytes, which ``NodeStats.input_bytes/output_bytes``
  carry. These ops are memory-bound; the cost model prices them by bytes, not by this FLOP count.
- ConvTranspose MACs are counted from the *input* side (``N * Cin * prod(in_spatial) * Cout/g *
  prod(kernel)``, as fvcore does): each input element is multiplied by the whole kernel once.
  torch-pruning's counter uses output positions instead and over-counts by ``prod(out_spatial) /
  prod(in_spatial)`` (4x for a stride-2 layer); see tests/test_graph.py.
- An op type without a formula here returns ``None`` and the node is reported as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Callable

Shape = tuple[int, ...]


class ShapeMissing(Exception):
    """A formula needs the shape of an input/output that shape inference could not determine."""


@dataclass(frozen=True)
class OpContext:
    """What a formula sees: the node's op type, attributes and the shape of every input/output slot.

    ``in_shapes``/``out_shapes`` follow the node's input/output positions (weights and other
    constants included); a missing optional input or an unknown shape is ``None``.
    """

    op_type: str
    domain: str
    attrs: dict[str, Any]
    in_shapes: tuple[Shape | None, ...]
    out_shapes: tuple[Shape | None, ...]

    def inp(self, i: int) -> Shape:
        if i >= len(self.in_shapes) or self.in_shapes[i] is None:
            raise ShapeMissing(f"input {i}")
        return self.in_shapes[i]  # type: ignore[return-value]

    def out(self, i: int = 0) -> Shape:
        if i >= len(self.out_shapes) or self.out_shapes[i] is None:
            raise ShapeMissing(f"output {i}")
        return self.out_shapes[i]  # type: ignore[return-value]

    def has_input(self, i: int) -> bool:
        return i < len(self.in_shapes) and self.in_shapes[i] is not None

    def n_out(self, i: int = 0) -> int:
        return prod(self.out(i))

    def n_in(self, i: int = 0) -> int:
        return prod(self.inp(i))


@dataclass(frozen=True)
class OpCost:
    op_class: str
    macs: int
    flops: int


# ----------------------------------------------------------------------------- op type -> class

ELEMENTWISE = frozenset(
    """Add Sub Mul Div Pow Sqrt Reciprocal Neg Abs Exp Log Relu LeakyRelu PRelu Elu Selu Celu Sigmoid
    HardSigmoid HardSwish Tanh Erf Gelu Softplus Softsign Mish Clip Floor Ceil Round Sign Sin Cos Tan
    Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Max Min Mean Sum Where Equal Less LessOrEqual Greater
    GreaterOrEqual And Or Xor Not IsNaN IsInf Mod BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot
    ThresholdedRelu Shrink CumSum FastGelu BiasGelu QuickGelu BiasAdd""".split()
)
NORM = frozenset(
    "BatchNormalization LayerNormalization InstanceNormalization GroupNormalization "
    "SkipLayerNormalization SimplifiedLayerNormalization SkipSimplifiedLayerNormalization "
    "RMSNormalization LpNormalization MeanVarianceNormalization LRN".split()
)
POOL = frozenset(
    "MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool ReduceMean ReduceSum "
    "ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare "
    "ArgMax ArgMin QLinearGlobalAveragePool QLinearAveragePool".split()
)
DATA = frozenset(
    """Reshape Transpose Concat Split Slice Gather GatherElements GatherND Flatten Squeeze Unsqueeze
    Shape Size Expand Cast CastLike Pad Identity Dropout Tile ScatterND ScatterElements Scatter Range
    ConstantOfShape NonZero OneHot DepthToSpace SpaceToDepth Trilu ReverseSequence Compress
    SplitToSequence ConcatFromSequence SequenceAt SequenceConstruct EyeLike QLinearConcat""".split()
)
QUANT = frozenset("QuantizeLinear DequantizeLinear DynamicQuantizeLinear".split())
SOFTMAX = frozenset("Softmax LogSoftmax Hardmax".split())
RESIZE = frozenset("Resize Upsample".split())
CONV = frozenset("Conv QLinearConv ConvInteger FusedConv NhwcConv".split())
GEMM = frozenset("Gemm QGemm MatMul QLinearMatMul MatMulInteger FusedMatMul FusedGemm MatMulIntegerToFloat "
                 "DynamicQuantizeMatMul Einsum LSTM GRU RNN".split())

# Ops whose compute runs in int8 whatever the dtypes around them (QOperator / integer forms).
INT8_OPS = frozenset("QLinearConv QLinearMatMul QGemm ConvInteger MatMulInteger QLinearAdd QLinearMul "
                     "QLinearSigmoid QLinearLeakyRelu QLinearGlobalAveragePool QLinearAveragePool "
                     "QLinearConcat QLinearSoftmax DynamicQuantizeMatMul MatMulIntegerToFloat".split())

_PER_ELEMENT = {
    "BatchNormalization": 2, "LayerNormalization": 8, "InstanceNormalization": 8, "GroupNormalization": 8,
    "SkipLayerNormalization": 9, "SimplifiedLayerNormalization": 5, "SkipSimplifiedLayerNormalization": 6,
    "RMSNormalization": 5, "LpNormalization": 3, "MeanVarianceNormalization": 6,
    "Softmax": 5, "LogSoftmax": 6, "Hardmax": 2,
    "QuantizeLinear": 2, "DequantizeLinear": 2, "DynamicQuantizeLinear": 4,
}


def _conv(ctx: OpContext, x: int, w: int, b: int | None) -> OpCost:
    ws = ctx.inp(w)
    out = ctx.n_out()
    macs = out * ws[1] * prod(ws[2:])  # W: [Cout, Cin/group, *kernel]
    flops = 2 * macs + (out if b is not None and ctx.has_input(b) else 0)
    group = int(ctx.attrs.get("group", 1))
    return OpCost("dwconv" if group > 1 else "conv", macs, flops)


def _conv_transpose(ctx: OpContext) -> OpCost:
    ws = ctx.inp(1)  # W: [Cin, Cout/group, *kernel]
    macs = ctx.n_in(0) * ws[1] * prod(ws[2:])
    flops = 2 * macs + (ctx.n_out() if ctx.has_input(2) else 0)
    return OpCost("convtranspose", macs, flops)


def _gemm(ctx: OpContext, bias: int = 2) -> OpCost:
    a = ctx.inp(0)
    k = a[0] if int(ctx.attrs.get("transA", 0)) else a[1]
    out = ctx.n_out()
    macs = out * k
    return OpCost("gemm", macs, 2 * macs + (out if ctx.has_input(bias) else 0))


def _matmul(ctx: OpContext, a_idx: int = 0) -> OpCost:
    a = ctx.inp(a_idx)
    if ctx.op_type == "FusedMatMul" and int(ctx.attrs.get("transA", 0)) and len(a) >= 2:
        k = a[-2]
    else:
        k = a[-1]
    macs = ctx.n_out() * k
    return OpCost("gemm", macs, 2 * macs)


def _einsum(ctx: OpContext) -> OpCost:
    """MACs = output elements * product of the contracted (summed-over) index sizes."""
    eq = str(ctx.attrs.get("equation", b"")).replace(" ", "")
    lhs = eq.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for i, term in enumerate(lhs):
        shape = ctx.inp(i)
        pre, post = term.split("...") if "..." in term else (term, "")
        dims = list(zip(pre, shape[: len(pre)])) + list(zip(post, shape[len(shape) - len(post):]))
        for c, d in dims:
            sizes[c] = max(sizes.get(c, 1), d)
    if "->" in eq:
        out_letters = set(eq.split("->")[1])
    else:  # implicit output: the letters that appear exactly once
        joined = "".join(t.replace("...", "") for t in lhs)
        out_letters = {c for c in joined if joined.count(c) == 1}
    macs = ctx.n_out() * prod(d for c, d in sizes.items() if c not in out_letters)
    return OpCost("gemm", macs, 2 * macs)


def _rnn(ctx: OpContext, gates: int) -> OpCost:
    x = ctx.inp(0)  # [seq, batch, input] (layout 0) or [batch, seq, input] (layout 1)
    hidden = int(ctx.attrs.get("hidden_size", ctx.inp(2)[-1]))
    dirs = 2 if ctx.attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
    seq_batch = x[0] * x[1]
    macs = seq_batch * dirs * gates * hidden * (x[2] + hidden)
    elementwise = seq_batch * dirs * hidden * (3 * gates)  # gate biases, activations, state updates
    return OpCost("gemm", macs, 2 * macs + elementwise)


def _pool(ctx: OpContext) -> OpCost:
    op = ctx.op_type
    if op in ("MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"):
        k = prod(int(v) for v in ctx.attrs.get("kernel_shape", [1]))
        return OpCost("pool", 0, ctx.n_out() * k)
    return OpCost("pool", 0, ctx.n_in(0))  # global pools and reductions read every input element once


def _resize(ctx: OpContext) -> OpCost:
    mode = ctx.attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    out = ctx.n_out()
    if mode == "nearest":
        return OpCost("resize", 0, out)
    try:
        x = ctx.inp(0)
        axes = sum(1 for a, b in zip(x, ctx.out()) if a != b) or 1
    except ShapeMissing:
        axes = 2
    per_axis = 8 if mode == "cubic" else 2
    return OpCost("resize", 0, out * per_axis * axes)


def _elementwise(ctx: OpContext) -> OpCost:
    out = ctx.n_out()
    if ctx.op_type in ("Sum", "Max", "Min", "Mean"):
        n = sum(1 for s in ctx.in_shapes if s is not None)
        return OpCost("elementwise", 0, out * max(n - 1, 1))
    return OpCost("elementwise", 0, out)


def _per_element(op_class: str) -> Callable[[OpContext], OpCost]:
    def f(ctx: OpContext) -> OpCost:
        n = ctx.n_in(0) if ctx.op_type == "DynamicQuantizeLinear" else ctx.n_out()
        if ctx.op_type == "LRN":
            return OpCost(op_class, 0, n * (int(ctx.attrs.get("size", 1)) + 3))
        return OpCost(op_class, 0, n * _PER_ELEMENT.get(ctx.op_type, 1))
    return f


def _data(ctx: OpContext) -> OpCost:
    return OpCost("data", 0, 0)


_FORMULAS: dict[str, Callable[[OpContext], OpCost]] = {
    "Conv": lambda c: _conv(c, 0, 1, 2),
    "FusedConv": lambda c: _conv(c, 0, 1, 2),
    "NhwcConv": lambda c: _conv(c, 0, 1, 2),
    "QLinearConv": lambda c: _conv(c, 0, 3, 8),
    "ConvInteger": lambda c: _conv(c, 0, 1, None),
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "FusedGemm": _gemm,
    "QGemm": lambda c: _gemm(c, bias=6),
    "MatMul": _matmul,
    "FusedMatMul": _matmul,
    "MatMulInteger": _matmul,
    "MatMulIntegerToFloat": _matmul,
    "DynamicQuantizeMatMul": _matmul,
    "QLinearMatMul": _matmul,
    "Einsum": _einsum,
    "LSTM": lambda c: _rnn(c, 4),
    "GRU": lambda c: _rnn(c, 3),
    "RNN": lambda c: _rnn(c, 1),
    "QLinearAdd": lambda c: OpCost("elementwise", 0, c.n_out()),
    "QLinearMul": lambda c: OpCost("elementwise", 0, c.n_out()),
    "QLinearSigmoid": lambda c: OpCost("elementwise", 0, c.n_out()),
    "QLinearLeakyRelu": lambda c: OpCost("elementwise", 0, c.n_out()),
    "QLinearSoftmax": lambda c: OpCost("softmax", 0, 5 * c.n_out()),
}
for _op in ELEMENTWISE:
    _FORMULAS.setdefault(_op, _elementwise)
for _op in NORM:
    _FORMULAS.setdefault(_op, _per_element("norm"))
for _op in SOFTMAX:
    _FORMULAS.setdefault(_op, _per_element("softmax"))
for _op in QUANT:
    _FORMULAS.setdefault(_op, _per_element("quant"))
for _op in POOL:
    _FORMULAS.setdefault(_op, _pool)
for _op in RESIZE:
    _FORMULAS.setdefault(_op, _resize)
for _op in DATA:
    _FORMULAS.setdefault(_op, _data)


def _broadcast(a: Shape, b: Shape) -> Shape:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    return tuple(x if y == 1 else y for x, y in zip(a, b))


def contrib_output_shape(op_type: str, attrs: dict[str, Any], in_shapes: tuple[Shape | None, ...]) -> Shape | None:
    """Output shape of the ONNX Runtime contrib ops that ``onnx.shape_inference`` does not know.

    ORT's QOperator quantization emits them (QGemm, QLinearAdd, ...); without these rules every
    tensor after the first one would have an unknown shape. ``None`` when no rule applies.
    """
    def get(i: int) -> Shape | None:
        return in_shapes[i] if i < len(in_shapes) else None

    if op_type == "QGemm" and get(0) is not None and get(3) is not None:
        a, b = get(0), get(3)
        m = a[1] if int(attrs.get("transA", 0)) else a[0]
        n = b[0] if int(attrs.get("transB", 0)) else b[1]
        return (m, n)
    if op_type in ("QLinearAdd", "QLinearMul") and get(0) is not None and get(3) is not None:
        return _broadcast(get(0), get(3))  # type: ignore[arg-type]
    if op_type in ("QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax") and get(0) is not None:
        return get(0)
    if op_type == "QLinearGlobalAveragePool" and get(0) is not None:
        x = get(0)
        if int(attrs.get("channels_last", 0)):
            return (x[0], *(1 for _ in x[1:-1]), x[-1])  # type: ignore[index]
        return (x[0], x[1], *(1 for _ in x[2:]))  # type: ignore[index]
    if op_type == "QLinearConcat":
        parts = [get(i) for i in range(2, len(in_shapes), 3)]
        if parts and all(p is not None for p in parts):
            axis = int(attrs.get("axis", 0)) % len(parts[0])  # type: ignore[arg-type]
            out = list(parts[0])  # type: ignore[arg-type]
            out[axis] = sum(p[axis] for p in parts)  # type: ignore[index]
            return tuple(out)
    return None


def has_formula(op_type: str) -> bool:
    return op_type in _FORMULAS


def op_class_of(op_type: str) -> str:
    """The coarse class of an op type (``other`` when unknown); independent of shapes."""
    if op_type in CONV:
        return "conv"
    if op_type == "ConvTranspose":
        return "convtranspose"
    for names, cls in ((GEMM, "gemm"), (ELEMENTWISE, "elementwise"), (NORM, "norm"), (SOFTMAX, "softmax"),
                       (POOL, "pool"), (RESIZE, "resize"), (DATA, "data"), (QUANT, "quant")):
        if op_type in names:
            return cls
    if op_type in ("QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu"):
        return "elementwise"
    if op_type == "QLinearSoftmax":
        return "softmax"
    return "other"


def op_cost(ctx: OpContext) -> OpCost | None:
    """MACs/FLOPs of one node, or ``None`` when the op type has no formula.

    Raises ``ShapeMissing`` when the formula needs a shape that is unknown.
    """
    f = _FORMULAS.get(ctx.op_type)
    if f is None:
        return None
    return f(ctx)
