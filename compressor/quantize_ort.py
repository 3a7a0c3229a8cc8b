"""ONNX Runtime mechanics behind ``compressor.quantize``: pre-processing, static QDQ int8, dynamic int8,
fp16 conversion, per-layer sensitivity and the node groups that are often slower in int8 on CPU.

Everything here works on files and plain values; the policy (budgets, which variant to keep, what to
report) lives in ``compressor.quantize``. Measured facts that shaped this module (this 2-core AVX-512
VNNI CPU, ONNX Runtime 1.32, see shared/TOOLCHAIN.md):

- ``quant_pre_process`` (symbolic shape inference + ORT graph optimisation, which folds BatchNorm into
  Conv) must run first. Without it a legacy-exported resnet18 quantized into a model that was SLOWER
  than fp32 (12.7-17 ms vs 10 ms); with it 3.2 ms.
- Static QDQ with QUInt8 activations and QInt8 per-channel weights is the fast combination here
  (resnet18 9-10 ms -> 2.8-4.1 ms). QInt8 activations gave no speedup.
- ``quantize_dynamic`` on conv nets is 5-15x slower than fp32: it is for MatMul/Gemm-heavy models.
- ONNX Runtime's CPU provider inserts Cast nodes around kernels that lack float16 (its
  InsertCastTransformer), so an fp16 model runs on this CPU; it was about as fast as fp32 here
  (resnet18_like, 1 thread: 146.0 vs 147.7 ms), never faster. fp16 is for GPU targets.

The calibration ranges are computed once per quantization run and cached in a JSON file
(``quantize_static(calibration_cache_path=...)``), so the accuracy fallback and the speed variants,
which re-quantize with different ``nodes_to_exclude``, do not re-run calibration.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgeplan.hardware_profiles.errors import CompressionError, DataError, InputShapeError, ModelLoadError

__all__ = [
    "OrtInput",
    "ort_inputs",
    "make_feeds",
    "preprocess",
    "quantize_static_qdq",
    "quantize_dynamic_int8",
    "convert_fp16",
    "run_first_output",
    "node_sensitivity",
    "speed_groups",
    "count_op_types",
]

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# Ops quantize_dynamic quantizes by default (its IntegerOps registry) plus Gemm, which it handles as MatMul.
_DYNAMIC_OPS = {"MatMul", "Gemm", "Conv", "Attention", "LSTM", "Gather", "EmbedLayerNormalization"}


@dataclass(frozen=True)
class OrtInput:
    """One graph input with a concrete shape (symbolic batch -> 1) and its numpy dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _load(path: str | Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise ModelLoadError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def ort_inputs(model_or_path, input_shape: Sequence[tuple[int, ...]] | None = None) -> list[OrtInput]:
    """The model's graph inputs with concrete shapes.

    The first dimension, when symbolic, becomes 1 (batch 1). Any other symbolic dimension must be
    given through ``input_shape`` (one full shape per input, batch included); a guess there would
    calibrate on the wrong shape, so it is an error instead.
    """
    import onnx

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else _load(model_or_path)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    graph_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if input_shape is not None and len(input_shape) != len(graph_inputs):
        raise InputShapeError(f"--input-shape gives {len(input_shape)} shapes but the model has {len(graph_inputs)} inputs")
    for k, vi in enumerate(graph_inputs):
        t = vi.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        if input_shape is not None:
            specs.append(OrtInput(vi.name, tuple(int(d) for d in input_shape[k]), dtype))
            continue
        dims = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif i == 0:
                dims.append(1)
            else:
                raise InputShapeError(
                    f"input {vi.name!r} has a symbolic dimension {d.dim_param or '?'} at axis {i}; give --input-shape"
                )
        specs.append(OrtInput(vi.name, tuple(dims), dtype))
    return specs


def make_feeds(specs: Sequence[OrtInput], inputs: np.ndarray | None, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds: one dict per sample.

    ``inputs`` (N x sample shape) are user data for a single-input model. Without them every input
    gets random data from ``compressor.data.synthetic_data`` (standard normal floats, integers in
    [0, 100) for integer inputs such as token ids), which the caller must label as synthetic.
    """
    from edgeplan.compressor.data import synthetic_data

    if inputs is not None:
        if len(specs) != 1:
            raise DataError(f"--data gives one input array but the model has {len(specs)} inputs; calibrate without --data")
        spec = specs[0]
        want = spec.shape[1:]
        x = np.asarray(inputs)
        if tuple(x.shape[1:]) != tuple(want):
            raise DataError(f"data samples have shape {tuple(x.shape[1:])} but the model input {spec.name!r} expects {tuple(want)}")
        x = x.astype(spec.dtype, copy=False)
        return [{spec.name: x[i : i + 1]} for i in range(min(n, x.shape[0]))]
    per_input = [synthetic_data(s.shape[1:], n, seed=seed + k, dtype=s.dtype).inputs for k, s in enumerate(specs)]
    return [{s.name: arr[i : i + 1] for s, arr in zip(specs, per_input)} for i in range(n)]


def preprocess(src: str | Path, dst: str | Path) -> str:
    """``quant_pre_process`` into ``dst``; returns a note when a step had to be skipped.

    Symbolic shape inference fails on some graphs (it is a Python re-implementation of every op's
    shape rule); ORT's optimisation step is the part that matters for speed, so on failure we retry
    without symbolic shape inference and say so.
    """
    from onnxruntime.quantization import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(src), str(dst))
        _name_nodes(dst)
        return ""
    except Exception as e:  # noqa: BLE001 - shape inference raises arbitrary errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        try:
            with _quiet():
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
            _name_nodes(dst)
            return f"pre-processing without symbolic shape inference ({first})"
        except Exception as e2:  # noqa: BLE001
            raise CompressionError(f"ONNX Runtime quantization pre-processing failed: {str(e2).splitlines()[0] if str(e2) else type(e2).__name__}") from None


def _name_nodes(path: str | Path) -> None:
    """Give unnamed nodes a unique name: ``nodes_to_exclude`` and the report refer to nodes by name."""
    import onnx

    model = _load(path)
    taken = {n.name for n in model.graph.node if n.name}
    changed = False
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)
            changed = True
    if changed:
        onnx.save(model, str(path))


class _FeedReader:
    """A ``CalibrationDataReader`` over a list of feeds (ORT checks the interface by duck typing)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)

    def __iter__(self):
        return iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)


def _reader(feeds):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_FeedReader, CalibrationDataReader):  # type: ignore[misc]
        pass

    return Reader(feeds)


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer logs through the *root* logger (``logging.warning``), e.g. one "Axis 1 is
    out-of-range for weight ..." line per LayerNorm weight and calibration pass with per_channel=True.
    Raise the root level to ERROR for the call only, then restore it."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)


def quantize_static_qdq(
    pre_path: str | Path,
    out_path: str | Path,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    per_channel: bool = True,
    nodes_to_exclude: Iterable[str] = (),
    cache_path: str | Path | None = None,
) -> None:
    """Static int8 QDQ: QUInt8 activations, QInt8 weights (per channel by default), MinMax calibration."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        with _quiet():
            quantize_static(
                str(pre_path),
                str(out_path),
                _reader(feeds),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                nodes_to_exclude=sorted(set(nodes_to_exclude)),
                calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=None if cache_path is None else str(cache_path),
            )
    except Exception as e:  # noqa: BLE001 - ORT raises many types
        raise CompressionError(f"static int8 quantization failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def quantize_dynamic_int8(
    pre_path: str | Path,
    out_path: str | Path,
    *,
    per_channel: bool = False,
    nodes_to_exclude: Iterable[str] = (),
) -> None:
    """Dynamic int8: QInt8 weights, activations quantized at run time (DynamicQuantizeLinear)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet():
            quantize_dynamic(
                str(pre_path),
                str(out_path),
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                # quantize_dynamic rewrites Gemm into a MatMul named "<gemm>_MatMul" before it quantizes,
                # so an excluded Gemm must be excluded under that name too.
                nodes_to_exclude=sorted({x for n in nodes_to_exclude for x in (n, f"{n}_MatMul")}),
            )
    except Exception as e:  # noqa: BLE001
        raise CompressionError(f"dynamic int8 quantization failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


# Inputs that ONNX requires to be float32 whatever the data type (index per op type).
_FP32_SLOTS = {"Resize": (1, 2), "Upsample": (1,)}


def convert_fp16(src: str | Path, dst: str | Path, *, keep_io_types: bool = True) -> int:
    """Convert a float32 model to float16 (onnxconverter-common is not installed, so done here).

    - float32 initializers, ``Constant`` tensors and ``ConstantOfShape`` values become float16;
    - ``Cast(to=FLOAT)`` becomes ``Cast(to=FLOAT16)``;
    - with ``keep_io_types`` the graph inputs/outputs stay float32 with a Cast after each float input
      and before each float output, so callers feed and read float32 as before;
    - inputs that ONNX requires in float32 (Resize roi/scales, Upsample scales) get a Cast back;
    - value_info is dropped (it records float32 types); ONNX Runtime re-infers shapes.
    Values beyond the float16 range (65504) are clipped. Returns the number of converted initializers.
    Models with control-flow subgraphs (If/Loop/Scan) are refused rather than half converted.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = _load(src)
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise CompressionError("fp16 conversion of models with control flow (If/Loop/Scan) is not supported")
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16

    def to16(t):
        arr = numpy_helper.to_array(t).astype(np.float32)
        arr = np.clip(arr, -65504.0, 65504.0).astype(np.float16)
        return numpy_helper.from_array(arr, t.name)

    converted = 0
    for i, t in enumerate(list(g.initializer)):
        if t.data_type == F32:
            g.initializer[i].CopyFrom(to16(t))
            converted += 1
    for n in g.node:
        if n.op_type in ("Constant", "ConstantOfShape"):
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == F32:
                    a.t.CopyFrom(to16(a.t))
        elif n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == F32:
                    a.i = F16
    del g.value_info[:]
    new_nodes = []
    if keep_io_types:
        for vi in g.input:
            if vi.type.tensor_type.elem_type != F32:
                continue
            casted = f"{vi.name}__fp16"
            for n in g.node:
                for k, x in enumerate(n.input):
                    if x == vi.name:
                        n.input[k] = casted
            new_nodes.append(helper.make_node("Cast", [vi.name], [casted], to=F16, name=f"{vi.name}__cast_in"))
        for vo in g.output:
            if vo.type.tensor_type.elem_type != F32:
                continue
            inner = f"{vo.name}__fp16"
            for n in g.node:
                for k, x in enumerate(n.output):
                    if x == vo.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == vo.name:
                        n.input[k] = inner
            g.node.append(helper.make_node("Cast", [inner], [vo.name], to=F32, name=f"{vo.name}__cast_out"))
    else:
        for vi in list(g.input) + list(g.output):
            if vi.type.tensor_type.elem_type == F32:
                vi.type.tensor_type.elem_type = F16
    for n in g.node:
        for slot in _FP32_SLOTS.get(n.op_type, ()):
            if slot < len(n.input) and n.input[slot]:
                src_name = n.input[slot]
                fixed = f"{src_name}__fp32_{n.name or n.op_type}_{slot}"
                new_nodes.append(helper.make_node("Cast", [src_name], [fixed], to=F32, name=fixed))
                n.input[slot] = fixed
    # Topological order: input casts first, then the original nodes; the slot casts must come right
    # after their producers, which the simplest correct way is a re-sort.
    all_nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(_toposort(all_nodes, {vi.name for vi in g.input} | {t.name for t in g.initializer}))
    try:
        onnx.save(model, str(dst))
    except Exception as e:  # noqa: BLE001
        raise CompressionError(f"cannot write the fp16 model: {e}") from None
    return converted


def _toposort(nodes, available: set[str]):
    available = set(available) | {""}
    pending = list(nodes)
    out = []
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all(x in available for x in n.input):
                out.append(n)
                available.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:  # a cycle or an input we cannot see: keep the remaining order
            out.extend(rest)
            break
        pending = rest
    return out


def _session(path: str | Path, threads: int | None = None):
    from edgeplan.compressor.ort_timing import make_session

    try:
        return make_session(path, threads)
    except Exception as e:  # noqa: BLE001
        raise CompressionError(f"ONNX Runtime cannot run {Path(path).name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def run_first_output(path: str | Path, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """The first output over all feeds, concatenated along the batch axis (float32)."""
    sess = _session(path)
    name = sess.get_outputs()[0].name
    try:
        outs = [np.asarray(sess.run([name], f)[0]) for f in feeds]
    except Exception as e:  # noqa: BLE001 - ORT's own exception types (shape/type mismatch)
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataError(f"{Path(path).name}: ONNX Runtime cannot run it on the given inputs ({first})") from None
    return np.concatenate(outs, axis=0).astype(np.float32, copy=False)


def _with_outputs(model, names: Iterable[str]):
    """A copy of ``model`` whose graph also outputs the tensors ``names`` (type left to ORT)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return m


def _rel_err(ref: np.ndarray, x: np.ndarray) -> float:
    ref = ref.astype(np.float64).ravel()
    x = x.astype(np.float64).ravel()
    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(ref - x) / den) if den > 0 else float(np.linalg.norm(x) > 0)


def node_sensitivity(
    float_path: str | Path,
    quant_path: str | Path,
    feeds: Sequence[dict[str, np.ndarray]],
    candidates: Sequence[str],
) -> list[tuple[str, float]]:
    """Rank ``candidates`` (node names of the float model) by the error each adds, most sensitive first.

    One pass over a few feeds for each model with every candidate's output (and its float inputs)
    exposed as graph outputs. A node's score is the relative L2 error (quantized vs float) of its
    output minus the largest relative error among its inputs: the error this node adds on top of what
    it received. That costs two runs instead of one quantization per layer; it ignores how much later
    layers amplify the error, which is why the caller re-measures the real metric after each step.
    Tensors missing from the quantized model (renamed by the quantizer) get score 0.
    """
    import onnx

    fm = _load(float_path)
    qm = _load(quant_path)
    by_name = {n.name: n for n in fm.graph.node}
    inits = {t.name for t in fm.graph.initializer}
    q_tensors = {o for n in qm.graph.node for o in n.output} | {i.name for i in qm.graph.input}
    wanted: dict[str, tuple[str, list[str]]] = {}
    for name in candidates:
        n = by_name.get(name)
        if n is None or not n.output:
            continue
        ins = [x for x in n.input if x and x not in inits]
        wanted[name] = (n.output[0], ins)
    tensors = sorted({t for out, ins in wanted.values() for t in [out, *ins]})
    ft = [t for t in tensors if t in q_tensors]
    if not ft:
        return [(c, 0.0) for c in candidates]
    with tempfile.TemporaryDirectory(prefix="edgeplan-sens-") as d:
        fpath, qpath = Path(d) / "f.onnx", Path(d) / "q.onnx"
        onnx.save(_with_outputs(fm, ft), str(fpath))
        onnx.save(_with_outputs(qm, ft), str(qpath))
        fs, qs = _session(fpath), _session(qpath)
        fo = {o.name for o in fs.get_outputs()}
        qo = {o.name for o in qs.get_outputs()}
        names = [t for t in ft if t in fo and t in qo]
        errs: dict[str, list[float]] = {t: [] for t in names}
        for feed in feeds:
            fr = dict(zip(names, fs.run(names, feed)))
            qr = dict(zip(names, qs.run(names, feed)))
            for t in names:
                a, b = np.asarray(fr[t]), np.asarray(qr[t])
                if a.shape == b.shape and a.dtype.kind == "f":
                    errs[t].append(_rel_err(a, b))
    mean = {t: float(np.mean(v)) for t, v in errs.items() if v}
    scores = []
    for name in candidates:
        if name not in wanted or wanted[name][0] not in mean:
            scores.append((name, 0.0))
            continue
        out, ins = wanted[name]
        prior = max((mean.get(t, 0.0) for t in ins), default=0.0)
        scores.append((name, mean[out] - prior))
    scores.sort(key=lambda s: -s[1])
    return scores


def static_candidates(quant_model_path: str | Path, float_model_path: str | Path) -> list[str]:
    """Nodes of the float model that the static quantizer quantized (they read a DequantizeLinear output)."""
    qm = _load(quant_model_path)
    float_names = {n.name for n in _load(float_model_path).graph.node}
    dq_out = {o for n in qm.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    out = []
    for n in qm.graph.node:
        if n.op_type in _QDQ_OPS or n.name not in float_names:
            continue
        if any(x in dq_out for x in n.input):
            out.append(n.name)
    return out


def dynamic_candidates(float_model_path: str | Path) -> list[str]:
    """Nodes that ``quantize_dynamic`` would quantize (by op type)."""
    return [n.name for n in _load(float_model_path).graph.node if n.op_type in _DYNAMIC_OPS and n.name]


def speed_groups(model_or_path) -> dict[str, list[str]]:
    """Node groups that are often slower in int8 than fp32 on this CPU, by node name.

    - ``depthwise``: Conv with ``group`` == input channels (weight shape [C, 1, k, k]);
    - ``squeeze_excitation``: the Mul that rescales by a Sigmoid/HardSigmoid gate, and the gate path
      back to its GlobalAveragePool/ReduceMean (at most 8 nodes);
    - ``concat``: Concat nodes.
    Measured motivation: an EfficientNet-style model quantized naively ran at about half its fp32
    speed here (issue 4); which of these groups is to blame depends on the model, hence variants.
    """
    import onnx

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else _load(model_or_path)
    g = model.graph
    init_shape = {t.name: tuple(t.dims) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    groups: dict[str, list[str]] = {"depthwise": [], "squeeze_excitation": [], "concat": []}
    for n in g.node:
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            w = init_shape.get(n.input[1]) if len(n.input) > 1 else None
            if group > 1 and w is not None and len(w) >= 2 and w[1] == 1:
                groups["depthwise"].append(n.name)
        elif n.op_type == "Concat":
            groups["concat"].append(n.name)
        elif n.op_type == "Mul":
            for x in n.input:
                gate = producer.get(x)
                if gate is None or gate.op_type not in ("Sigmoid", "HardSigmoid"):
                    continue
                path = [gate]
                cur = gate
                found = False
                for _ in range(8):
                    if not cur.input or cur.input[0] not in producer:
                        break
                    cur = producer[cur.input[0]]
                    path.append(cur)
                    if cur.op_type in ("GlobalAveragePool", "ReduceMean"):
                        found = True
                        break
                if found:
                    groups["squeeze_excitation"].extend([n.name] + [p.name for p in path])
                    break
    return {k: sorted(set(v) - {""}) for k, v in groups.items()}


def count_op_types(path: str | Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in _load(path).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts
