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
    # False when shape inference left a dimension unknown (it is then 1 here) or the whole shape
    # unknown (``shape == ()``, ``bytes == 0``); see ``GraphAnalysis.warnings``.
    exact: bool = True


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
    # Added fields (defaults keep the interface): nodes with known=False (no formula, or a shape the
    # formula needs is unknown), one-line warnings for the user, and the batch size analysed.
    unknown_nodes: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    batch: int = 1
    # What ONNX Runtime executes (``planner.ort_fusion.RuntimeGraph``), or None when not computed or when ORT
    # could not optimise the graph (``runtime_note`` says why); the cost model then uses its fusion rules.
    runtime: Any = field(default=None, compare=False, repr=False)
    runtime_note: str | None = None

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

    @property
    def total_activation_bytes(self) -> int:
        """Sum of every node's output bytes (each activation tensor written once)."""
        return sum(n.output_bytes for n in self.nodes)


# ============================================================================ implementation

import heapq  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from math import prod  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from edgeplan.hardware_profiles.errors import InputShapeError, ModelLoadError  # noqa: E402
from edgeplan.planner import graph_ops  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    import onnx

_TWO_GB = 2**31 - 1
# Integer/bool constants are shape, axes and index metadata (Reshape targets, Slice starts, Gather
# indices), never learned weights: they are not counted as params. int8/uint8/int32 constants are
# (quantized weights and biases), and so are float scales of QDQ models.
_NOT_PARAM_DTYPES = frozenset({"int64", "uint64", "bool", "object", "str"})
# Ops that must never be treated as constants even when all their inputs are constant.
_NONDETERMINISTIC = frozenset(
    "RandomNormal RandomUniform RandomNormalLike RandomUniformLike Multinomial Bernoulli Dropout".split()
)
_FLOAT16 = frozenset({"float16", "bfloat16"})
_FLOAT32 = frozenset({"float32", "float64"})
_INT8 = frozenset({"int8", "uint8", "int4", "uint4"})
_QDQ_COMPUTE = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def analyse(
    model: "onnx.ModelProto | str | Path",
    batch: int | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    qdq_as_int8: bool = True,
    runtime: bool = True,
    fold_constants: bool = True,
) -> GraphAnalysis:
    """Analyse an ONNX model: per-node op class, MACs/FLOPs, params and activation bytes.

    ``batch`` replaces a symbolic first dimension of every graph input (default 1). A graph input
    whose batch dimension is fixed to another value cannot be re-batched (its Reshape targets are
    baked in) and raises ``InputShapeError``. ``input_shapes`` (name -> full shape, batch included)
    overrides graph input shapes, e.g. for an ONNX model with a symbolic sequence length (``batch``,
    when also given, replaces their first dimension). Any other
    symbolic dimension of a graph input raises ``InputShapeError`` naming the input.

    How it works and why:

    - Shapes come from ``onnx.shape_inference`` with ``data_prop=True`` after the graph inputs are
      made concrete, so Shape->Gather->Concat->Reshape chains of dynamic-batch exports resolve.
      ORT contrib ops of QOperator models (QGemm, QLinearAdd, ...) get shapes from small rules in
      ``graph_ops.contrib_output_shape``. Tensors still unknown after that (static inference gives up
      on e.g. BERT's ``position_ids[:, :seq]``) get their shapes from one ONNX Runtime run on
      all-zero inputs (a warning says so). Only when that is impossible (external data, custom
      ops) is an unknown dimension taken as 1, the tensor marked ``exact=False`` and named in a
      warning; a formula that needs a wholly unknown shape marks its node ``known=False``.
    - Files are loaded without external data (initializer dims are enough; weights can be GBs);
      a proto over 2 GB goes through ``infer_shapes_path`` on a temporary external-data copy.
    - Constants: initializers, Constant nodes and every node whose inputs are all constants
      (Identity chains of the legacy torch exporter's shared weights, weight DequantizeLinear of QDQ
      models, Cast/Transpose of weights) are folded, as ONNX Runtime's constant folding does. They are
      not nodes of the analysis and their tensors are not activations. Each root constant is counted
      once as params of its *first* consumer in execution order, so shared weights count once.
    - ``compute_dtype`` is "int8" for QLinear*/Integer ops; for Conv/ConvTranspose/MatMul/Gemm whose
      weight and activation inputs are both produced by DequantizeLinear (QDQ form, which ORT fuses
      into integer kernels); and for any other node whose float inputs all come from
      DequantizeLinear and whose outputs all go to QuantizeLinear. Otherwise "fp16" when a float
      input is float16 or bfloat16, else "fp32" (int-only data ops on int8 tensors: "int8").
    - MAC/FLOP conventions: see ``planner.graph_ops``.
    - ``runtime=True`` also asks ONNX Runtime which kernels it would run (``planner.ort_fusion``: one
      session creation, no inference) and attaches the mapping as ``GraphAnalysis.runtime`` for the cost
      model. ``qdq_as_int8=False`` (used for ORT's own optimised graph) prices a standard op as float even
      when DequantizeLinear feeds it: there, ORT has already fused every QDQ group it can.
      ``fold_constants=False`` (also for ORT's optimised graph) keeps nodes whose inputs are all constants
      as nodes: ORT already folded what it folds, and what is left (e.g. the weight DequantizeLinear of a
      QDQ ConvTranspose it did not fuse) runs on every inference.
    """
    proto = _load(model)
    ort_source = None
    if runtime:
        import onnx

        ort_source = proto if isinstance(model, onnx.ModelProto) else None
    graph = proto.graph
    init_names = {t.name for t in graph.initializer}
    act_inputs = [vi for vi in graph.input if vi.name not in init_names]
    batch_value, batch_symbols = _fix_input_shapes(proto, act_inputs, batch, input_shapes or {})
    # Execution order first: shape inference walks nodes in file order, and some tools write
    # graphs that are not topologically sorted (the ONNX spec requires it; not everyone complies).
    order_warnings: list[str] = []
    ordered = _toposort(list(graph.node), {vi.name for vi in graph.input} | init_names, order_warnings)
    del graph.node[:]
    graph.node.extend(ordered)
    inferred = _infer_with_contrib(proto)
    g = inferred.graph

    # ---- shapes and dtypes of every tensor we can see
    value_infos: dict[str, Any] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            value_infos.setdefault(vi.name, vi)
    const_info: dict[str, tuple[tuple[int, ...], str]] = {}  # root constants: shape, dtype
    for t in g.initializer:
        const_info[t.name] = (tuple(int(d) for d in t.dims), _np_name(t.data_type))
    warnings: list[str] = []

    def resolved(vi: Any) -> bool:
        tt = vi.type.tensor_type
        return tt.HasField("shape") and all(
            d.HasField("dim_value") or (d.HasField("dim_param") and d.dim_param in batch_symbols) for d in tt.shape.dim)

    unresolved = [o for n in g.node for o in n.output
                  if o and o not in const_info and (o not in value_infos or not resolved(value_infos[o]))]
    from_ort = _shapes_from_ort(proto, unresolved, warnings) if unresolved else {}

    def tensor_info(name: str) -> TensorInfo:
        if name in from_ort:
            shape, dtype = from_ort[name]
            return TensorInfo(name, shape, dtype, _nbytes(shape, dtype))
        vi = value_infos.get(name)
        if vi is None:
            return TensorInfo(name, (), "unknown", 0, exact=False)
        tt = vi.type.tensor_type
        dtype = _np_name(tt.elem_type)
        if not tt.HasField("shape"):
            return TensorInfo(name, (), dtype, 0, exact=False)
        dims: list[int] = []
        exact = True
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param in batch_symbols:
                dims.append(batch_value)
            else:
                dims.append(1)
                exact = False
        shape = tuple(dims)
        return TensorInfo(name, shape, dtype, _nbytes(shape, dtype), exact=exact)

    def shape_of(name: str) -> tuple[int, ...] | None:
        if not name:
            return None
        if name in const_info:
            return const_info[name][0]
        info = tensor_info(name)
        if info.dtype == "unknown" or (not info.exact and not info.shape):
            return None  # no shape at all (e.g. the output of an op shape inference does not know)
        return info.shape  # guessed dims (exact=False) are 1 here and were warned about

    # ---- topological order and constant folding
    warnings.extend(order_warnings)
    nodes = list(g.node)  # already in execution order
    producer: dict[str, Any] = {}
    for n in nodes:
        for o in n.output:
            if o:
                producer[o] = n
    constant: set[str] = set(init_names)
    folded_inputs: dict[str, tuple[str, ...]] = {}  # folded tensor -> its constant inputs
    real_nodes = []
    for n in nodes:
        ins = [i for i in n.input if i]
        if n.op_type == "Constant" or (
            fold_constants and ins and all(i in constant for i in ins) and n.op_type not in _NONDETERMINISTIC
            and not _has_subgraph(n)
        ):
            for o in n.output:
                if o:
                    constant.add(o)
                    folded_inputs[o] = tuple(ins)
            if n.op_type == "Constant" and n.output:
                const_info[n.output[0]] = _constant_value_info(n)
        else:
            real_nodes.append(n)

    def roots(name: str, seen: set[str]) -> list[str]:
        """Root constants (initializers, Constant outputs) a folded tensor is computed from."""
        if name in seen:
            return []
        seen.add(name)
        if name in init_names or (name in folded_inputs and not folded_inputs[name]):
            return [name]
        out: list[str] = []
        for i in folded_inputs.get(name, ()):
            out.extend(roots(i, seen))
        return out

    consumers: dict[str, list[Any]] = {}
    for n in real_nodes:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)

    # ---- per-node stats
    counted: set[str] = set()
    tensors: dict[str, TensorInfo] = {}
    for vi in act_inputs:
        tensors[vi.name] = tensor_info(vi.name)
    stats: list[NodeStats] = []
    unknown_ops: list[str] = []
    unknown_nodes: list[str] = []
    used_names: set[str] = set()
    for idx, n in enumerate(real_nodes):
        name = n.name or f"{n.op_type}_{idx}"
        if name in used_names:
            name = f"{name}_{idx}"
        used_names.add(name)
        # If/Loop/Scan bodies read outer-scope tensors implicitly: they are inputs too (for splitting)
        reads = [*n.input, *sorted(_outer_names(n))] if _has_subgraph(n) else list(n.input)
        act_in = tuple(dict.fromkeys(i for i in reads if i and i not in constant))
        act_out = tuple(o for o in n.output if o)
        for o in act_out:
            tensors[o] = tensor_info(o)
            if not tensors[o].exact:
                warnings.append(f"tensor {o!r} (output of {name}, {n.op_type}) has an unknown shape or "
                                "dimension; taken as 1, its bytes are a lower bound")
        for i in act_in:
            if i not in tensors:
                tensors[i] = tensor_info(i)
        # params: root constants first consumed here
        params = param_bytes = 0
        seen: set[str] = set()
        for i in n.input:
            if not i or i not in constant:
                continue
            for r in roots(i, seen):
                if r in counted:
                    continue
                counted.add(r)
                shape, dtype = const_info.get(r, ((), "unknown"))
                if dtype in _NOT_PARAM_DTYPES:
                    continue
                numel = prod(shape)
                params += numel
                param_bytes += _nbytes(shape, dtype)
        attrs = {a.name: _attr(a) for a in n.attribute}
        ctx = graph_ops.OpContext(
            op_type=n.op_type, domain=n.domain, attrs=attrs,
            in_shapes=tuple(shape_of(i) for i in n.input),
            out_shapes=tuple(shape_of(o) for o in n.output),
        )
        op_class = graph_ops.op_class_of(n.op_type)
        known = True
        macs = flops = 0
        try:
            cost = graph_ops.op_cost(ctx)
        except graph_ops.ShapeMissing as e:
            cost = None
            known = False
            warnings.append(f"node {name} ({n.op_type}): {e} has an unknown shape; its MACs/FLOPs are not counted")
        except (IndexError, KeyError, ValueError, TypeError) as e:
            cost = None
            known = False
            warnings.append(f"node {name} ({n.op_type}): cannot apply the formula ({type(e).__name__}: {e})")
        else:
            if cost is None:
                known = False
                label = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
                if label not in unknown_ops:
                    unknown_ops.append(label)
        if cost is not None:
            op_class, macs, flops = cost.op_class, int(cost.macs), int(cost.flops)
        if not known:
            unknown_nodes.append(name)
        stats.append(NodeStats(
            name=name, op_type=n.op_type, op_class=op_class, inputs=act_in, outputs=act_out,
            macs=macs, flops=flops, params=params, param_bytes=param_bytes,
            input_bytes=sum(tensors[i].bytes for i in act_in),
            output_bytes=sum(tensors[o].bytes for o in act_out),
            compute_dtype=_compute_dtype(n, tensors, const_info, value_infos, producer, consumers, act_in,
                                         qdq_as_int8),
            known=known,
        ))
    for o in g.output:
        if o.name not in tensors and o.name not in constant:
            tensors[o.name] = tensor_info(o.name)
    if unknown_ops:
        warnings.insert(0, "no MAC/FLOP formula for op type(s) " + ", ".join(unknown_ops)
                        + ": those nodes are reported with known=False and are not in the totals")
    result = GraphAnalysis(
        nodes=tuple(stats),
        tensors=tensors,
        inputs=tuple(vi.name for vi in act_inputs),
        outputs=tuple(o.name for o in g.output),
        unknown_ops=tuple(unknown_ops),
        unknown_nodes=tuple(unknown_nodes),
        warnings=tuple(dict.fromkeys(warnings)),
        batch=batch_value,
    )
    if not runtime or not stats:
        return result
    from dataclasses import replace

    from edgeplan.planner.ort_fusion import runtime_graph

    rg, why = runtime_graph(ort_source, result, path=None if ort_source is not None else str(model),
                            input_shapes=dict(input_shapes) if input_shapes else None)
    return replace(result, runtime=rg, runtime_note=why)


# ----------------------------------------------------------------------------- helpers


def _load(model: Any) -> "onnx.ModelProto":
    """A private copy of the model (we rewrite input shapes), without external weight data."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        return m
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"analyse() needs an onnx.ModelProto or a path, not {type(model).__name__}")
    p = Path(model)
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such ONNX file")
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a corrupt file
        raise ModelLoadError(f"{p}: not a readable ONNX model ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None


def _fix_input_shapes(
    proto: Any, act_inputs: list[Any], batch: int | None, given: Mapping[str, Sequence[int]]
) -> tuple[int, set[str]]:
    """Make every activation input's shape concrete in place; return (batch, batch dim symbols)."""
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise InputShapeError(f"batch must be a positive integer, not {batch!r}")
    unknown = set(given) - {vi.name for vi in act_inputs}
    if unknown:
        names = ", ".join(vi.name for vi in act_inputs)
        raise InputShapeError(f"input shape given for {sorted(unknown)} but the model's inputs are: {names}")
    symbols: set[str] = set()
    batch_value = batch
    for vi in act_inputs:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise InputShapeError(f"model input {vi.name!r} is not a tensor; cannot analyse it")
        if vi.name in given:
            shape = [int(d) for d in given[vi.name]]
            if batch is not None and shape:
                shape[0] = batch  # an explicit batch wins over the batch dim of a given shape
            if any(d < 1 for d in shape):
                raise InputShapeError(f"input shape for {vi.name!r} must be positive, got {shape}")
            old = list(tt.shape.dim)
            if old and len(old) != len(shape):
                raise InputShapeError(
                    f"input {vi.name!r} has rank {len(old)} but the given shape {'x'.join(map(str, shape))} has rank {len(shape)}")
            for k, (d, want) in enumerate(zip(old, shape)):
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != want:
                    what = "batch dimension" if k == 0 else f"dimension {k}"
                    raise InputShapeError(
                        f"model input {vi.name!r} has a fixed {what} {d.dim_value}, the given shape "
                        f"{'x'.join(map(str, shape))} does not fit (re-export with dynamic axes to change it)")
            if old and old[0].HasField("dim_param"):
                symbols.add(old[0].dim_param)
            if shape and batch_value is None:
                batch_value = shape[0]
            _set_dims(tt, shape)
            continue
        if not tt.HasField("shape"):
            raise InputShapeError(f"model input {vi.name!r} has no shape; pass its shape (--input-shape)")
        dims = list(tt.shape.dim)
        shape = []
        for k, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
                if k == 0 and batch is not None and d.dim_value != batch:
                    raise InputShapeError(
                        f"model input {vi.name!r} has a fixed batch dimension {d.dim_value}; it cannot be analysed "
                        f"at batch {batch} (re-export it with a dynamic batch axis)")
            elif k == 0:
                if d.HasField("dim_param") and d.dim_param:
                    symbols.add(d.dim_param)
                shape.append(batch or 1)
            else:
                sym = d.dim_param or "?"
                raise InputShapeError(
                    f"model input {vi.name!r} has a symbolic dimension {sym!r} at axis {k}; pass its full shape "
                    "(--input-shape)")
        _set_dims(tt, shape)
    if batch_value is None:
        batch_value = batch or 1
    if batch is not None:
        batch_value = batch
    # Declared value_info/output shapes may carry stale symbols; inference recomputes them.
    del proto.graph.value_info[:]
    for o in proto.graph.output:
        if o.type.HasField("tensor_type") and o.type.tensor_type.HasField("shape"):
            for d in o.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in symbols:
                    d.Clear()
                    d.dim_value = batch_value
    return batch_value, symbols


def _set_dims(tt: Any, shape: Sequence[int]) -> None:
    tt.shape.Clear()
    for d in shape:
        tt.shape.dim.add().dim_value = int(d)


def _strip_weights(proto: Any, min_elements: int = 4096) -> "onnx.ModelProto":
    """A copy whose large float/int8 initializers are marked external with no data.

    ``infer_shapes`` serialises the whole model twice (in and out); only initializer *dims* matter to
    it, except the values of small int64 shape tensors, which are kept. Stripping makes inference
    cost independent of the weight size (resnet18: 45 MB of weights no longer copied).
    """
    import onnx

    light = onnx.ModelProto()
    light.CopyFrom(proto)
    big_types = (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.STRING)
    for t in light.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type in big_types or prod(t.dims) < min_elements:
            continue
        for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(f)
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        entry = t.external_data.add()
        entry.key, entry.value = "location", "edgeplan-stripped-for-shape-inference"
    return light


def _infer(proto: Any) -> "onnx.ModelProto":
    import onnx

    try:
        if proto.ByteSize() < _TWO_GB:
            return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
        with tempfile.TemporaryDirectory(prefix="edgeplan-shapes-") as d:
            src, dst = os.path.join(d, "in.onnx"), os.path.join(d, "out.onnx")
            onnx.save_model(proto, src, save_as_external_data=True, all_tensors_to_one_file=True,
                            location="in.onnx.data", size_threshold=1024)
            onnx.shape_inference.infer_shapes_path(src, dst, check_type=False, strict_mode=False, data_prop=True)
            return onnx.load(dst, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - InferenceError, ValidationError, protobuf errors
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"ONNX shape inference failed: {msg}") from None


def _infer_with_contrib(proto: Any, max_rounds: int = 4) -> "onnx.ModelProto":
    """``_infer`` plus shapes of ORT contrib ops (QGemm, QLinearAdd, ...) that ONNX does not know.

    Each round adds the contrib outputs it can compute as value_info and re-runs ONNX inference, so
    shapes flow through the standard ops after them. Plain ONNX models take one round. Rounds are
    capped: a QOperator transformer alternates contrib and standard ops ~16 times (3.4 s of
    re-inference measured); what is left after the cap comes from the single ORT run in
    ``_shapes_from_ort`` (0.8 s for the same model).
    """
    import onnx

    inferred = _infer(_strip_weights(proto))
    for _ in range(max_rounds):
        g = inferred.graph
        known: dict[str, Any] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                known.setdefault(vi.name, vi)
        init = {t.name: (tuple(int(d) for d in t.dims), t.data_type) for t in g.initializer}

        def shape(name: str) -> tuple[int, ...] | None:
            if name in init:
                return init[name][0]
            vi = known.get(name)
            if vi is None or not all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim):
                return None
            return tuple(int(d.dim_value) for d in vi.type.tensor_type.shape.dim)

        def elem(name: str) -> int:
            if name in init:
                return init[name][1]
            vi = known.get(name)
            return vi.type.tensor_type.elem_type if vi is not None else onnx.TensorProto.FLOAT

        added = []
        for n in g.node:
            if n.domain != "com.microsoft" or not n.output or not n.output[0] or n.output[0] in known:
                continue
            out = graph_ops.contrib_output_shape(n.op_type, {a.name: _attr(a) for a in n.attribute},
                                                 tuple(shape(i) if i else None for i in n.input))
            if out is None:
                continue
            if n.op_type == "QGemm":
                et = elem(n.input[8]) if len(n.input) > 8 and n.input[8] else onnx.TensorProto.FLOAT
            else:
                et = elem(n.input[0]) if n.op_type != "QLinearConcat" else elem(n.input[2])
            added.append(onnx.helper.make_tensor_value_info(n.output[0], et, list(out)))
        if not added:
            return inferred
        inferred.graph.value_info.extend(added)
        inferred = _infer(inferred)
    return inferred


def _shapes_from_ort(proto: Any, names: list[str], warnings: list[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes that static inference left unknown, read from one ONNX Runtime run on zero inputs.

    Static inference gives up on some shape arithmetic (e.g. BERT's ``position_ids[:, :seq]`` Slice
    of a buffer, Expand of a computed shape). Running the graph once with all-zero inputs of the
    analysed shapes, with those tensors added as outputs, gives their real shapes. Data-dependent
    shapes (NonZero, TopK with a computed k) are those of that zero input, which the warning says.
    Skipped (the dims stay 1, flagged ``exact=False``) for models with external data or ops ORT
    cannot run.
    """
    import numpy as np
    import onnx

    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return {}
    if any(n.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft") for n in proto.graph.node):
        return {}
    try:
        from edgeplan.compressor.ort_timing import make_session

        m = onnx.ModelProto()
        m.CopyFrom(proto)
        existing = {o.name for o in m.graph.output}
        m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in existing)
        sess = make_session(m.SerializeToString(), optimize=False)
        inits = {t.name for t in m.graph.initializer}
        feeds = {}
        for vi in m.graph.input:
            if vi.name in inits:
                continue
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            feeds[vi.name] = np.zeros(shape, dtype=onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        outs = sess.run(names, feeds)
    except Exception as e:  # noqa: BLE001 - best effort: the static result (flagged) stands
        warnings.append(f"could not run the model in ONNX Runtime to resolve {len(names)} unknown shape(s): "
                        f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__}")
        return {}
    warnings.append(f"shapes of {len(names)} tensor(s) that static shape inference could not determine were "
                    "taken from one ONNX Runtime run on all-zero inputs")
    return {n: (tuple(int(d) for d in np.shape(v)), str(np.asarray(v).dtype)) for n, v in zip(names, outs)
            if isinstance(v, np.ndarray)}


def _toposort(nodes: list[Any], available: set[str], warnings: list[str]) -> list[Any]:
    """Kahn's algorithm, stable (ties keep file order). Subgraph nodes wait for outer-scope names."""
    produced = {o for n in nodes for o in n.output if o}
    needs: list[set[str]] = []
    for n in nodes:
        req = {i for i in n.input if i} | _outer_names(n)
        needs.append({r for r in req if r in produced and r not in available})
    waiting: dict[str, list[int]] = {}
    missing = [len(r) for r in needs]
    for k, req in enumerate(needs):
        for r in req:
            waiting.setdefault(r, []).append(k)
    ready = [k for k, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    done: set[str] = set()
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for o in nodes[k].output:
            if o and o not in done:
                done.add(o)
                for j in waiting.get(o, ()):
                    missing[j] -= 1
                    if missing[j] == 0:
                        heapq.heappush(ready, j)
    if len(order) < len(nodes):
        placed = set(order)
        rest = [k for k in range(len(nodes)) if k not in placed]
        warnings.append(f"the graph has a cycle or a tensor produced twice; {len(rest)} node(s) kept in file order")
        order.extend(rest)
    return [nodes[k] for k in order]


def _has_subgraph(n: Any) -> bool:
    import onnx

    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)


def _outer_names(n: Any) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    import onnx

    out: set[str] = set()
    for a in n.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
        for sg in graphs:
            local = {i.name for i in sg.input} | {t.name for t in sg.initializer}
            for sn in sg.node:
                local.update(o for o in sn.output if o)
            for sn in sg.node:
                out.update(i for i in sn.input if i and i not in local)
                out.update(x for x in _outer_names(sn) if x not in local)
    return out


def _np_name(elem_type: int) -> str:
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type).name)
    except Exception:  # noqa: BLE001 - UNDEFINED, STRING on some versions
        return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"


def _itemsize(dtype: str) -> int:
    import numpy as np

    if dtype in ("int4", "uint4", "float4_e2m1"):
        return 1  # rounded up: packed two per byte on disk, counted as one here
    try:
        return int(np.dtype(dtype).itemsize)
    except TypeError:
        return {"bfloat16": 2}.get(dtype, 1 if dtype.startswith("float8") else 0)


def _nbytes(shape: Sequence[int], dtype: str) -> int:
    if dtype in ("int4", "uint4", "float4_e2m1"):
        return (prod(shape) + 1) // 2
    return prod(shape) * _itemsize(dtype)


def _constant_value_info(n: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of a Constant node's value (any of its value_* attributes)."""
    for a in n.attribute:
        if a.name == "value":
            return tuple(int(d) for d in a.t.dims), _np_name(a.t.data_type)
        if a.name == "sparse_value":
            return tuple(int(d) for d in a.sparse_tensor.dims), _np_name(a.sparse_tensor.values.data_type)
        if a.name == "value_float":
            return (), "float32"
        if a.name == "value_floats":
            return (len(a.floats),), "float32"
        if a.name == "value_int":
            return (), "int64"
        if a.name == "value_ints":
            return (len(a.ints),), "int64"
        if a.name in ("value_string", "value_strings"):
            return (len(a.strings),) if a.name == "value_strings" else (), "object"
    return (), "unknown"


def _attr(a: Any) -> Any:
    import onnx

    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return None  # subgraphs are not needed by any formula
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode("utf-8", "replace") for x in v]
    return v


def _dtype_of(name: str, tensors: dict[str, TensorInfo], const_info: dict, value_infos: dict) -> str:
    if name in tensors:
        return tensors[name].dtype
    if name in const_info:
        return const_info[name][1]
    vi = value_infos.get(name)
    return _np_name(vi.type.tensor_type.elem_type) if vi is not None else "unknown"


def _compute_dtype(n: Any, tensors, const_info, value_infos, producer, consumers, act_in,
                   qdq_as_int8: bool = True) -> str:
    if n.op_type in graph_ops.INT8_OPS:
        return "int8"
    in_names = [i for i in n.input if i]
    dq_fed = [i for i in in_names if i in producer and producer[i].op_type == "DequantizeLinear"]
    if not qdq_as_int8:
        pass  # ORT's optimised graph: only integer kernels are int8, a DequantizeLinear-fed op runs in float
    elif n.op_type in _QDQ_COMPUTE:
        data_in = in_names[:2]  # activation and weight (the bias may stay float or int32-DQ)
        if len(data_in) == 2 and all(i in dq_fed for i in data_in):
            return "int8"
    elif n.op_type not in graph_ops.QUANT:
        float_in = [i for i in in_names if _dtype_of(i, tensors, const_info, value_infos) in _FLOAT16 | _FLOAT32]
        outs = [o for o in n.output if o]
        if float_in and all(i in dq_fed for i in float_in) and outs and all(
            consumers.get(o) and all(c.op_type == "QuantizeLinear" for c in consumers[o]) for o in outs
        ):
            return "int8"
    dtypes = [_dtype_of(i, tensors, const_info, value_infos) for i in (act_in or in_names)]
    if any(d in _FLOAT16 for d in dtypes):
        return "fp16"
    if any(d in _FLOAT32 for d in dtypes):
        return "fp32"
    if any(d in _INT8 for d in dtypes):
        return "int8"
    return "fp32"


# ----------------------------------------------------------------------------- JSON


def analysis_to_dict(analysis: GraphAnalysis) -> dict[str, Any]:
    """A JSON-ready dict: totals, graph inputs/outputs, nodes (execution order), unknown ops, warnings."""

    def tdict(name: str) -> dict[str, Any]:
        t = analysis.tensors.get(name)
        if t is None:
            return {"name": name, "shape": None, "dtype": None, "bytes": None, "exact": False}
        return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "bytes": t.bytes, "exact": t.exact}

    return {
        "batch": analysis.batch,
        "total": {
            "macs": analysis.total_macs,
            "flops": analysis.total_flops,
            "params": analysis.total_params,
            "param_bytes": analysis.total_param_bytes,
            "activation_bytes": analysis.total_activation_bytes,
            "nodes": len(analysis.nodes),
        },
        "inputs": [tdict(n) for n in analysis.inputs],
        "outputs": [tdict(n) for n in analysis.outputs],
        "unknown_ops": list(analysis.unknown_ops),
        "unknown_nodes": list(analysis.unknown_nodes),
        "warnings": list(analysis.warnings),
        "conventions": "MACs: multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul/Einsum/RNN only; "
                       "FLOPs: 2*MACs + bias adds + per-element counts of other ops (planner/graph_ops.py)",
        "nodes": [
            {
                "name": s.name, "op_type": s.op_type, "op_class": s.op_class,
                "inputs": list(s.inputs), "outputs": list(s.outputs),
                "output_shapes": [list(analysis.tensors[o].shape) if o in analysis.tensors else None for o in s.outputs],
                "macs": s.macs, "flops": s.flops, "params": s.params, "param_bytes": s.param_bytes,
                "input_bytes": s.input_bytes, "output_bytes": s.output_bytes,
                "compute_dtype": s.compute_dtype, "known": s.known,
            }
            for s in analysis.nodes
        ],
    }
