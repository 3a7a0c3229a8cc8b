"""Calibration: measure micro-benchmarks with ONNX Runtime here and fit a hardware profile to them.

``calibrate(name, output, threads=None, quick=False) -> CalibrationResult`` writes a valid profile TOML
(atomically) whose numbers are measured on this machine or fitted to measurements made here.

What is measured (ONNX Runtime CPU EP, ``intra_op_num_threads`` pinned, sequential execution, all graph
optimisations; per benchmark 5 rounds of [3 warm-up runs, then as many timed runs as fit in 0.1 s, at least
7], rounds interleaved across all micro-benchmarks (``time_models_ms``), and the smallest of the 5 round
medians; with 1 thread the clock is the inference thread's CPU time -- see ``time_model_ms`` for why):

- chains of ``K`` identical layers, so that the per-run fixed cost is shared: 3x3 conv + ReLU, 1x1 conv +
  ReLU, depthwise 3x3 conv + ReLU, MatMul + bias (transformer linear), element-wise Add/Sigmoid,
  MaxPool/AveragePool, LayerNormalization, Softmax, attention-style activation x activation MatMuls,
  head Transposes, DCGAN-style ConvTranspose (k4 s2), each at several sizes; the conv/dwconv/gemm/
  convtranspose graphs also as int8 QDQ models (``quant_pre_process`` then static QDQ, QUInt8 activations, QInt8 per-channel
  weights: the fast combination on x86, see shared/TOOLCHAIN.md);
- chains of 1, 16 and 64 tiny Adds: per-node dispatch overhead and per-run overhead;
- one large MatMul (fp32 and int8); ``peak_gops`` is the highest rate any conv/MatMul micro-benchmark
  reached (so efficiencies are relative to what ORT's own kernels reach here, not to a datasheet we do not
  have for a VM);
- a 64 MiB numpy copy: ``memory_bandwidth_gbps`` (2 x bytes / time).

How it is fitted: every micro-benchmark is analysed with ``planner.graph.analyse`` and priced with
``planner.cost.predict`` -- the *same* code path used for real models -- and the profile's efficiencies
(per op class, with int8 overrides for conv/dwconv/convtranspose/gemm), memory efficiencies,
``per_node_overhead_us`` and ``per_inference_overhead_us`` are chosen by bounded non-linear
least squares on log(predicted / measured). Fitting in log space weights a 10 % miss on a 20 us graph like
a 10 % miss on a 20 ms graph. Op classes that no micro-benchmark exercises (resize,
quant, other) get values copied from a related fitted class and are marked ``estimate``.

``error_band_pct`` is fitted too: 1.5 x the 90th percentile of the absolute relative residual, at least
15 %. It describes the micro-benchmarks; the held-out error on whole models is in
benchmarks/RESULTS.md (cost model section).

Run it on the target itself (a Raspberry Pi, a Jetson's CPU) with the performance governor and the
thread count you will deploy with; the governor and CPU model are recorded in ``calibration``.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeplan.hardware_profiles.atomic import atomic_write_text
from edgeplan.hardware_profiles.errors import InputError, MeasurementError
from edgeplan.hardware_profiles.registry import profile_from_toml, profile_to_toml
from edgeplan.hardware_profiles.schema import OP_CLASSES, HardwareProfile, Provenance

__all__ = [
    "CalibrationPoint", "CalibrationResult", "calibrate", "copy_bandwidth_gbps", "fit_profile", "micro_benchmarks",
    "time_model_ms", "time_models_ms",
]

ORT_CPU_FUSABLE = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "BatchNormalization", "Add",
                   "QuantizeLinear", "DequantizeLinear", "Pad", "Transpose")
OPSET = 17


@dataclass(frozen=True)
class CalibrationPoint:
    name: str  # e.g. "conv3x3 c64 h28 x4 fp32"
    dtype: str
    op_class: str
    measured_ms: float
    predicted_ms: float  # with the fitted profile

    @property
    def error_pct(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms * 100.0


@dataclass(frozen=True)
class CalibrationResult:
    profile: HardwareProfile
    path: Path
    points: tuple[CalibrationPoint, ...]
    median_abs_error_pct: float
    seconds: float


# ------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class _Bench:
    name: str
    op_class: str
    model: object  # onnx.ModelProto
    input_shape: tuple[int, ...]
    quantize: bool = False


def _model(nodes, inp, out, inits):
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "bench", [inp], [out], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeplan-calibrate")
    m.ir_version = 8
    _ = TensorProto
    return m


def _vi(name, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _init(name, arr):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _conv_chain(c: int, h: int, k: int, layers: int, group: int, rng) -> object:
    from onnx import helper

    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = rng.standard_normal((c, c // group, k, k)).astype(np.float32) * (2.0 / (c // group * k * k)) ** 0.5
        inits += [_init(f"w{i}", w), _init(f"b{i}", rng.standard_normal(c) * 0.01)]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
                                      pads=[k // 2] * 4, group=group, name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    return _model(nodes, _vi("x", (1, c, h, h)), _vi(x, (1, c, h, h)), inits)


def _pointwise_pairs(c: int, expand: int, h: int, pairs: int, rng) -> object:
    """1x1 convs that expand ``c`` -> ``expand * c`` channels and reduce back, + ReLU (inverted-residual style)."""
    from onnx import helper

    nodes, inits = [], []
    x, cx = "x", c
    for i in range(2 * pairs):
        co = c * expand if i % 2 == 0 else c
        w = rng.standard_normal((co, cx, 1, 1)).astype(np.float32) * (2.0 / cx) ** 0.5
        inits += [_init(f"w{i}", w), _init(f"b{i}", rng.standard_normal(co) * 0.01)]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[1, 1], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x, cx = f"r{i}", co
    return _model(nodes, _vi("x", (1, c, h, h)), _vi(x, (1, c, h, h)), inits)


def _stem_conv(c: int, h: int, rng) -> object:
    """The first conv of an image model: 3 input channels, 3x3, stride 2, + ReLU."""
    from onnx import helper

    w = rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * (2.0 / 27) ** 0.5
    inits = [_init("w", w), _init("b", rng.standard_normal(c) * 0.01)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              name="stem"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return _model(nodes, _vi("x", (1, 3, h, h)), _vi("y", (1, c, h // 2, h // 2)), inits)


def _single_conv(cin: int, cout: int, h: int, k: int, stride: int, rng) -> object:
    from onnx import helper

    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * (2.0 / (cin * k * k)) ** 0.5
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], pads=[k // 2] * 4,
                              strides=[stride, stride], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    ho = (h + 2 * (k // 2) - k) // stride + 1
    return _model(nodes, _vi("x", (1, cin, h, h)), _vi("y", (1, cout, ho, ho)),
                  [_init("w", w), _init("b", rng.standard_normal(cout) * 0.01)])


# Single fp32 convs whose shapes the chains above miss: output channels that leave MLAS's last filter set of
# 4 channel blocks short (8, 16, 24, 40 channels), and 1x1 convs with few input channels (mobile expansions).
# (cin, cout, h, k, stride)
_CONV_SHAPES = (
    (64, 8, 28, 3, 1), (128, 8, 14, 3, 1), (32, 16, 56, 3, 1), (96, 16, 14, 3, 1), (64, 24, 28, 3, 1),
    (160, 24, 14, 3, 1), (48, 40, 28, 3, 1), (128, 40, 14, 3, 1), (64, 8, 32, 5, 1), (256, 16, 7, 3, 1),
    (48, 96, 28, 3, 1), (96, 192, 14, 3, 2), (160, 320, 7, 3, 1), (24, 64, 56, 5, 1),
    (16, 256, 56, 1, 1), (8, 64, 112, 1, 1), (24, 144, 56, 1, 1), (16, 96, 56, 1, 1), (32, 192, 28, 1, 1),
    (192, 8, 28, 1, 1), (96, 16, 28, 1, 1), (144, 24, 28, 1, 1), (64, 40, 28, 1, 1), (320, 1280, 7, 1, 1),
)


def _gemm_chain(s: int, d: int, layers: int, rng) -> object:
    from onnx import helper

    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        inits += [_init(f"w{i}", rng.standard_normal((d, d)) / d**0.5), _init(f"b{i}", rng.standard_normal(d) * 0.01)]
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"bias{i}"))
        x = f"a{i}"
    return _model(nodes, _vi("x", (1, s, d)), _vi(x, (1, s, d)), inits)


def _convtranspose(cin: int, cout: int, h: int, rng) -> object:
    """One DCGAN-style upsampling layer: ConvTranspose k4 s2 p1 (doubles H and W) + ReLU."""
    from onnx import helper

    w = rng.standard_normal((cin, cout, 4, 4)).astype(np.float32) * (1.0 / (cin * 4)) ** 0.5
    inits = [_init("w", w), _init("b", rng.standard_normal(cout) * 0.01)]
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], kernel_shape=[4, 4], strides=[2, 2],
                              pads=[1, 1, 1, 1], name="convt"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return _model(nodes, _vi("x", (1, cin, h, h)), _vi("y", (1, cout, 2 * h, 2 * h)), inits)


def _attention_matmul(heads: int, s: int, d: int, layers: int) -> object:
    """Activation x activation MatMuls as in attention: [1,H,S,D] x [1,H,D,S] -> [1,H,S,S] -> x [1,H,S,D]."""
    from onnx import helper

    nodes = []
    x = "x"
    for i in range(layers):
        nodes.append(helper.make_node("Transpose", [x], [f"t{i}"], perm=[0, 1, 3, 2], name=f"transpose{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"t{i}"], [f"s{i}"], name=f"scores{i}"))
        nodes.append(helper.make_node("MatMul", [f"s{i}", x], [f"o{i}"], name=f"context{i}"))
        x = f"o{i}"
    return _model(nodes, _vi("x", (1, heads, s, d)), _vi(x, (1, heads, s, d)), [])


def _transpose_chain(shape: tuple[int, ...], layers: int) -> object:
    """Transposes that swap axes 1 and 2 back and forth (as multi-head attention reshapes do)."""
    from onnx import helper

    nodes = []
    x = "x"
    for i in range(layers):
        nodes.append(helper.make_node("Transpose", [x], [f"y{i}"], perm=[0, 2, 1, 3], name=f"transpose{i}"))
        x = f"y{i}"
    out_shape = shape if layers % 2 == 0 else (shape[0], shape[2], shape[1], shape[3])
    return _model(nodes, _vi("x", shape), _vi(x, out_shape), [])


def _unary_chain(op: str, shape: tuple[int, ...], layers: int, **attrs) -> object:
    from onnx import helper

    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        ins = [x]
        if op in ("Add", "Mul"):
            ins = [x, "x"]  # residual-style: two activation inputs, nothing to fuse into
        if op == "LayerNormalization":
            inits += [_init(f"g{i}", np.ones(shape[-1])), _init(f"be{i}", np.zeros(shape[-1]))]
            ins = [x, f"g{i}", f"be{i}"]
        nodes.append(helper.make_node(op, ins, [f"y{i}"], name=f"{op.lower()}{i}", **attrs))
        x = f"y{i}"
    return _model(nodes, _vi("x", shape), _vi(x, shape), inits)


def micro_benchmarks(quick: bool = False, seed: int = 0) -> list[_Bench]:
    """The micro-benchmark graphs (see the module docstring); ``quick`` keeps 1-2 sizes per class."""
    rng = np.random.default_rng(seed)
    L = 4
    conv = [(16, 56), (32, 56), (64, 28), (128, 14), (256, 7)]
    conv1 = [(64, 56), (128, 28), (256, 14), (512, 7)]
    dw = [(32, 112), (96, 56), (192, 28), (384, 14), (960, 7)]
    gemm = [(1, 256), (1, 1024), (16, 256), (64, 384), (128, 768)]
    elem = [4096, 65536, 401408]
    if quick:  # tests: one size per class, int8 only for conv and MatMul (each int8 graph costs a quantization)
        conv, conv1, dw, gemm, elem = conv[2:3], conv1[1:2], dw[2:3], gemm[2:3], elem[1:2]
    out: list[_Bench] = []
    for q in (False, True):
        tag = "int8" if q else "fp32"
        for c, h in conv:
            out.append(_Bench(f"conv3x3 c{c} h{h} x{L} {tag}", "conv", _conv_chain(c, h, 3, L, 1, rng), (1, c, h, h), q))
        for s, d in gemm:
            out.append(_Bench(f"matmul s{s} d{d} x{L} {tag}", "gemm", _gemm_chain(s, d, L, rng), (1, s, d), q))
        if quick and q:
            continue
        for c, h in conv1:
            out.append(_Bench(f"conv1x1 c{c} h{h} x{L} {tag}", "conv", _conv_chain(c, h, 1, L, 1, rng), (1, c, h, h), q))
        for c, h in dw:
            out.append(_Bench(f"dwconv3x3 c{c} h{h} x{L} {tag}", "dwconv", _conv_chain(c, h, 3, L, c, rng), (1, c, h, h), q))
    if not quick:
        # small convs, where the fixed cost per conv kernel shows (pruned and mobile models are made of them),
        # channel counts that are not multiples of the NCHWc block, and the 3-channel stem conv
        for c, h in ((24, 10), (12, 20), (72, 5)):
            out.append(_Bench(f"conv3x3 small c{c} h{h} x{L} fp32", "conv", _conv_chain(c, h, 3, L, 1, rng), (1, c, h, h)))
        for c, h in ((12, 20), (24, 10), (60, 5), (20, 28)):
            for q in (False, True):
                out.append(_Bench(f"pointwise c{c}<->{6 * c} h{h} {'int8' if q else 'fp32'}", "conv",
                                  _pointwise_pairs(c, 6, h, 2, rng), (1, c, h, h), q))
        for c, h in ((72, 20), (144, 10), (360, 5)):
            for q in (False, True):
                out.append(_Bench(f"dwconv3x3 small c{c} h{h} x{L} {'int8' if q else 'fp32'}", "dwconv",
                                  _conv_chain(c, h, 3, L, c, rng), (1, c, h, h), q))
        for c, h in ((16, 224), (32, 160)):
            out.append(_Bench(f"stem conv3x3s2 c3->{c} h{h} fp32", "conv", _stem_conv(c, h, rng), (1, 3, h, h)))
        for cin, cout, h, k, st in _CONV_SHAPES:
            out.append(_Bench(f"conv{k}x{k}s{st} c{cin}->{cout} h{h} fp32", "conv",
                              _single_conv(cin, cout, h, k, st, rng), (1, cin, h, h)))
    for n in elem:
        out.append(_Bench(f"add n{n} x{L}", "elementwise", _unary_chain("Add", (1, n), L), (1, n)))
        out.append(_Bench(f"sigmoid n{n} x{L}", "elementwise", _unary_chain("Sigmoid", (1, n), L), (1, n)))
        if not quick:  # int8: QLinearAdd / QLinearMul kernels
            out.append(_Bench(f"add n{n} x{L} int8", "elementwise", _unary_chain("Add", (1, n), L), (1, n), True))
            out.append(_Bench(f"mul n{n} x{L} int8", "elementwise", _unary_chain("Mul", (1, n), L), (1, n), True))
    for cin, h in ([(256, 8), (128, 16), (64, 32), (64, 4), (32, 8)] if not quick else [(128, 8)]):
        for q in ((False, True) if not quick else (False,)):
            out.append(_Bench(f"convtranspose4x4s2 c{cin} h{h} {'int8' if q else 'fp32'}", "convtranspose",
                              _convtranspose(cin, cin // 2, h, rng), (1, cin, h, h), q))
    for hh, s, d in ([(2, 64, 64), (12, 128, 64), (4, 256, 32)] if not quick else [(4, 64, 32)]):
        out.append(_Bench(f"attention-matmul h{hh} s{s} d{d} x{L}", "gemm", _attention_matmul(hh, s, d, L), (1, hh, s, d)))
        if not quick:  # activation x activation QLinearMatMul
            out.append(_Bench(f"attention-matmul h{hh} s{s} d{d} x{L} int8", "gemm", _attention_matmul(hh, s, d, L),
                              (1, hh, s, d), True))
    for hh, s, d in ([(12, 128, 64), (4, 64, 32)] if not quick else [(4, 64, 32)]):
        # one Transpose per graph: ORT cancels consecutive inverse Transposes, so a chain would measure nothing
        out.append(_Bench(f"transpose h{hh} s{s} d{d}", "data", _transpose_chain((1, hh, s, d), 1), (1, hh, s, d)))
    pools = [(32, 56), (128, 14)] if not quick else [(64, 28)]
    for c, h in pools:
        for op in ("MaxPool", "AveragePool") if not quick else ("MaxPool",):
            for q in ((False, True) if not quick else (False,)):  # int8: MaxPool between dropped Q/DQ, QLinearAveragePool
                out.append(_Bench(f"{op.lower()}3x3 c{c} h{h} x{L}{' int8' if q else ''}", "pool",
                                  _unary_chain(op, (1, c, h, h), L, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                                  (1, c, h, h), q))
    for s, d in ([(128, 768), (32, 256)] if not quick else [(64, 256)]):
        out.append(_Bench(f"layernorm s{s} d{d} x{L}", "norm", _unary_chain("LayerNormalization", (1, s, d), L, axis=-1),
                          (1, s, d)))
    for h, s in ([(12, 128), (4, 64)] if not quick else [(4, 64)]):
        for q in ((False, True) if not quick else (False,)):  # int8: QLinearSoftmax
            out.append(_Bench(f"softmax h{h} s{s} x{L}{' int8' if q else ''}", "softmax",
                              _unary_chain("Softmax", (1, h, s, s), L, axis=-1), (1, h, s, s), q))
    if not quick:  # an op ORT keeps in float inside a QDQ model: real DequantizeLinear/QuantizeLinear around it
        for s, d in ((128, 768), (65, 192)):
            out.append(_Bench(f"layernorm s{s} d{d} x{L} int8 (float op, real Q/DQ)", "quant",
                              _unary_chain("LayerNormalization", (1, s, d), L, axis=-1), (1, s, d), True))
    for k in ((1, 16, 64) if not quick else (1, 32)):
        out.append(_Bench(f"tiny add n16 x{k}", "elementwise", _unary_chain("Add", (1, 16), k), (1, 16)))
    if not quick:
        out.extend(_random_network_benches())
    # the achievable GEMM rate (peak)
    big = (256, 1024) if not quick else (128, 512)
    out.append(_Bench(f"peak matmul s{big[0]} d{big[1]} x2 fp32", "gemm", _gemm_chain(big[0], big[1], 2, rng), (1, *big)))
    if not quick:
        out.append(_Bench(f"peak matmul s{big[0]} d{big[1]} x2 int8", "gemm", _gemm_chain(big[0], big[1], 2, rng),
                          (1, *big), True))
    return out


def _random_network_benches() -> list[_Bench]:
    """``planner.calibrate_nets.random_networks`` exported to ONNX as users' models are, each fp32 and int8 QDQ."""
    import onnx
    import torch

    from edgeplan.compressor.export import export_onnx
    from edgeplan.planner.calibrate_nets import random_networks

    out: list[_Bench] = []
    with tempfile.TemporaryDirectory(prefix="edgeplan-calib-nets-") as tmp:
        for i, net in enumerate(random_networks()):
            path = Path(tmp) / f"net{i}.onnx"
            export_onnx(net.module, (torch.randn(net.input_shape),), path, input_names=["x"], check=False)
            proto = onnx.load(str(path))
            for q in (False, True):
                out.append(_Bench(f"{net.name} {'int8' if q else 'fp32'}", "network", proto, net.input_shape, q))
    return out


# ------------------------------------------------------------------------------------------ timing


def time_models_ms(paths: list[str | Path], threads: int, min_time_s: float = 0.1, rounds: int = 5,
                   clock: str = "auto", on_error: Callable[[int, Exception], None] | None = None) -> list[float]:
    """``time_model_ms`` for many models, *interleaved*: round r times every model once before round r + 1.

    Why: on a shared VM the slow-downs come in bursts (other tenants, the hypervisor) of seconds to minutes
    that thread CPU time cannot remove. Back-to-back rounds of one model fall into the same burst; rounds
    spread over the whole run do not, so the smallest round median is much more repeatable (measured here:
    the same 24 models timed twice 15 minutes apart with back-to-back rounds differed by up to 50 %).
    ``on_error(i, exc)`` is called for a model whose session cannot be created or run (its result is NaN);
    without it the exception propagates.
    """
    from edgeplan.compressor.ort_timing import make_session, random_feeds

    sessions: list = []
    for i, p in enumerate(paths):
        try:
            sess = make_session(p, threads)
            sessions.append((sess, random_feeds(sess, batch=1)))
        except Exception as e:  # noqa: BLE001 - ORT raises its own types
            if on_error is None:
                raise
            on_error(i, e)
            sessions.append(None)
    best = [math.inf] * len(paths)
    for _ in range(rounds):
        for i, sf in enumerate(sessions):
            if sf is None:
                continue
            try:
                best[i] = min(best[i], _round_median_ms(sf[0], sf[1], threads, min_time_s, clock))
            except Exception as e:  # noqa: BLE001
                if on_error is None:
                    raise
                on_error(i, e)
                sessions[i] = None
    return [b if b < math.inf else float("nan") for b in best]


def _round_median_ms(sess, feeds: dict, threads: int, min_time_s: float, clock: str) -> float:
    use_cpu = clock == "cpu" or (clock == "auto" and threads == 1)
    now = time.thread_time if use_cpu else time.perf_counter
    for _ in range(3):
        sess.run(None, feeds)
    samples: list[float] = []
    t_end = time.perf_counter() + min_time_s
    while (len(samples) < 7 or time.perf_counter() < t_end) and len(samples) < 2000:
        t0 = now()
        sess.run(None, feeds)
        samples.append((now() - t0) * 1e3)
    return float(np.median(samples))


def time_model_ms(path: str | Path, threads: int, min_time_s: float = 0.1, rounds: int = 3,
                  feeds: dict | None = None, clock: str = "auto") -> float:
    """Latency of one ``run()`` in ms: the smallest of ``rounds`` round medians.

    Each round is 3 warm-up runs then timed runs for ``min_time_s`` (at least 7), and its median is taken.

    Clock (``clock="auto"``): with ``threads == 1`` ORT executes every kernel on the calling thread, so the
    calling thread's CPU time (``time.thread_time``) *is* the inference latency on an idle machine, and it
    excludes the time the thread spent preempted by other processes. On the shared 2-core machine this was
    developed on (load average 3-12 from other jobs) wall-clock medians of a 2.6 ms conv chain read 8-11 ms
    while thread-CPU medians read 2.7-2.9 ms (min of either: 2.57 ms), so thread CPU time is what we use for
    1 thread. With more threads the work runs on ORT's pool threads, so we fall back to wall-clock time
    (``clock="wall"`` forces it) and the minimum over rounds rejects bursts of foreign load.
    """
    from edgeplan.compressor.ort_timing import make_session, random_feeds

    sess = make_session(path, threads)
    feeds = feeds if feeds is not None else random_feeds(sess, batch=1)
    return min(_round_median_ms(sess, feeds, threads, min_time_s, clock) for _ in range(rounds))


def _quantize(src: Path, dst: Path, shape: tuple[int, ...]) -> None:
    from edgeplan.compressor.quantize_ort import preprocess, quantize_static_qdq

    pre = dst.with_suffix(".pre.onnx")
    preprocess(src, pre)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
    quantize_static_qdq(pre, dst, feeds, per_channel=True)


def copy_bandwidth_gbps(quick: bool = False) -> float:
    """GB/s of a 64 MiB (16 MiB with ``quick``) float32 copy, 2 x bytes / best thread CPU time of 7 (3)."""
    n = (16 if quick else 64) * 1024 * 1024 // 4
    a = np.ones(n, dtype=np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = math.inf
    for _ in range(3 if quick else 7):
        t0 = time.thread_time()  # numpy copies on the calling thread: CPU time ignores preemption (see time_model_ms)
        np.copyto(b, a)
        best = min(best, time.thread_time() - t0)
    return 2 * a.nbytes / max(best, 1e-6) / 1e9


MLAS_FILTER_SET_BLOCKS = 4  # MaximumFilterSetSize of MLAS's NCHWc conv (onnxruntime/core/mlas/lib/snchwc.cpp)


def nchwc_block() -> tuple[int, str]:
    """The channel block ORT's x86 NCHWc convolutions use here (16 with AVX-512F, 8 with AVX2, else 1), from
    the CPU flags in /proc/cpuinfo (MLAS picks its kernels from the same flags), and where that came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                if "avx512f" in flags:
                    return 16, "CPU flag avx512f in /proc/cpuinfo (MLAS NCHWc block 16)"
                if "avx2" in flags:
                    return 8, "CPU flag avx2 in /proc/cpuinfo (MLAS NCHWc block 8)"
                return 1, "no avx2/avx512f flag in /proc/cpuinfo: no NCHWc blocking"
    except OSError:
        pass
    return 1, "/proc/cpuinfo has no flags line (not x86 Linux): no NCHWc blocking"


def _cpu_mhz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


# ------------------------------------------------------------------------------------------ fitting

_FIT_EFF = ("conv", "dwconv", "convtranspose", "gemm", "elementwise", "norm", "softmax", "pool", "data", "quant")
_FIT_INT8 = ("conv", "dwconv", "convtranspose", "gemm", "elementwise", "softmax", "pool")
_FIT_MEM = ("conv", "dwconv", "convtranspose", "gemm", "elementwise", "norm", "softmax", "pool", "data", "quant")
# Per-class fixed overheads (kernel setup: weight packing, im2col/col2im buffers, requantisation parameters).
# On single-op chains alone they traded off against the efficiencies and made held-out models worse; with the
# small-size benchmarks and the random networks (planner/calibrate_nets.py) they are identifiable. Chosen by
# 5-fold cross-validation on the calibration set itself (not on the held-out benchmark): median |error| 11.4 %
# without class overheads, 10.3 % with convtranspose only, 10.1 % with these four (2026-11-23, this machine).
_FIT_CLASS_OVH: tuple[str, ...] = ("conv", "dwconv", "gemm", "convtranspose")
# Per output row (x channel block) costs of the NCHWc kernels (see HardwareProfile.row_overhead_ns): without
# them depthwise convs on small maps were under-predicted by 45-65 % (c960 h7: 85 us measured per layer).
_FIT_ROW: tuple[str, ...] = ("conv", "dwconv", "pool")
_FIT_INT8_OUTPUT = True  # HardwareProfile.int8_output_ns
_FIT_TOL = 1e-5  # least_squares ftol/xtol (see fit_profile)
# HardwareProfile.partial_filter_set (kxk, pointwise) and pointwise_output_ns, fitted when the profile has
# NCHWc blocking (x86): on 360 random single-conv shapes (two seeded sweeps, each fitted on one and tested on
# the other) these took the median per-conv error from 11-14 % to 5-7 %; a cache-spill term for large
# activations and a term for tiny maps were tried as well and did not help on the other sweep.
_FILTER_SET_TERMS = ("kxk", "pointwise", "pointwise_output_ns")
# classes no micro-benchmark exercises -> copied from a fitted class (marked "estimate")
_COPY_FROM = {"resize": "pool", "other": "elementwise"}


def _n_shape_terms(base: HardwareProfile) -> int:
    return len(_FILTER_SET_TERMS) if base.conv_filter_set_blocks > 1 else 0


def _profile_with(base: HardwareProfile, theta: np.ndarray) -> HardwareProfile:
    v = np.exp(theta)
    i = 0
    eff = dict(base.efficiency)
    for c in _FIT_EFF:
        eff[c] = float(v[i]); i += 1
    int8 = {}
    for c in _FIT_INT8:
        int8[c] = float(v[i]); i += 1
    mem = dict(base.memory_efficiency)
    for c in _FIT_MEM:
        mem[c] = float(v[i]); i += 1
    class_ovh = {}
    for c in _FIT_CLASS_OVH:
        class_ovh[c] = float(v[i]); i += 1
    row_ovh = {}
    for c in _FIT_ROW:
        row_ovh[c] = float(v[i]); i += 1
    q8_ns = float(v[i]) if _FIT_INT8_OUTPUT else 0.0
    i += int(_FIT_INT8_OUTPUT)
    shape_terms: dict = {}
    if _n_shape_terms(base):
        shape_terms = {"partial_filter_set": {"kxk": float(v[i]), "pointwise": float(v[i + 1])},
                       "pointwise_output_ns": float(v[i + 2])}
        i += len(_FILTER_SET_TERMS)
    node_us, run_us = float(v[i]), float(v[i + 1])
    for dst, src in _COPY_FROM.items():
        eff[dst] = eff[src]
        mem[dst] = mem[src]
    return base.model_copy(update={
        "efficiency": eff, "efficiency_by_dtype": {"int8": int8}, "memory_efficiency": mem,
        "per_node_overhead_us": node_us, "per_inference_overhead_us": run_us, "class_overhead_us": class_ovh,
        "row_overhead_ns": row_ovh, "int8_output_ns": q8_ns, **shape_terms,
    })


def fit_profile(base: HardwareProfile, analyses: list, measured_ms: list[float]) -> tuple[HardwareProfile, np.ndarray]:
    """Least-squares fit of efficiencies and overheads (see the module docstring). Returns (profile, residuals)."""
    from scipy.optimize import least_squares

    from edgeplan.planner.cost import predict_latency_ms

    meas = np.asarray(measured_ms)
    n_eff, n_mem = len(_FIT_EFF) + len(_FIT_INT8), len(_FIT_MEM)
    n_cls = len(_FIT_CLASS_OVH) + len(_FIT_ROW) + int(_FIT_INT8_OUTPUT) + _n_shape_terms(base)
    n_par = n_eff + n_mem + n_cls + 2
    # Two starts: roofline = max(compute, memory) has no gradient for a node's compute efficiency while the
    # node is memory-bound, so a fit started at high efficiencies can stay stuck with a slow kernel
    # (QLinearSoftmax) explained as memory-bound. A start at low efficiencies (everything compute-bound) walks
    # up instead; the better of the two fits is kept.
    starts = [np.log(np.array([e0] * n_eff + [1.5] * n_mem + [1.0] * n_cls + [2.0, 20.0])) for e0 in (0.5, 0.03)]
    # memory_efficiency >= 0.5: no kernel streams memory at less than half the copy bandwidth. Without this
    # floor the fit explained ConvTranspose chains (equal FLOPs, different weight sizes) by a memory
    # efficiency of 0.19, which then priced DCGAN's 8 MB-weight layer at 4.6 ms instead of ~1.6 ms.
    lo = np.log(np.array([1e-3] * n_eff + [0.5] * n_mem + [1e-3] * n_cls + [0.05, 0.5]))
    hi = np.log(np.array([2.0] * n_eff + [50.0] * n_mem + [500.0] * n_cls + [200.0, 5000.0]))
    assert all(len(x0) == n_par for x0 in starts)

    def resid(theta: np.ndarray) -> np.ndarray:
        prof = _profile_with(base, theta)
        pred = np.array([predict_latency_ms(a, prof) for a in analyses])
        return np.log(pred / meas)

    # Tolerances 1e-5 (_FIT_TOL) instead of 1e-8, and ``predict_latency_ms`` instead of ``predict``: the fit
    # took 2 to 8 minutes here (56 parameters, a finite-difference Jacobian per step); now ~30 s, reaching
    # the same cost to 3 digits as 1e-6 does (measured on one calibration set of 168 graphs, 2026-11-23).
    sols = [least_squares(resid, np.clip(x0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), x_scale=1.0, max_nfev=200,
                          ftol=_FIT_TOL, xtol=_FIT_TOL) for x0 in starts]
    sol = min(sols, key=lambda r: float(r.cost))
    return _profile_with(base, sol.x), resid(sol.x)


# ------------------------------------------------------------------------------------------ driver


def _base_profile(name: str, kind: str, threads: int, bw: float, peak32: float, peak8: float, mem_bytes: int,
                  runtime: str, active_w: float | None, idle_w: float | None) -> HardwareProfile:
    """An unvalidated starting point (no provenance yet); the fit replaces the efficiencies and overheads."""
    est = {c: 0.5 for c in OP_CLASSES}
    block = nchwc_block()[0]
    return HardwareProfile.model_construct(
        name=name, kind=kind, description="", device_type="cpu", runtime=runtime, cores=threads,
        clock_ghz=1.0, peak_gops={"fp32": peak32, "fp16": peak32, "int8": peak8}, memory_bandwidth_gbps=bw,
        memory_bytes=mem_bytes, efficiency=est, efficiency_by_dtype={}, memory_efficiency=dict(est),
        per_node_overhead_us=1.0, per_inference_overhead_us=10.0, overhead_mode="additive",
        fusable_op_types=ORT_CPU_FUSABLE, fusion_source="onnxruntime", conv_channel_block=block,
        conv_filter_set_blocks=MLAS_FILTER_SET_BLOCKS if block > 1 else 1,
        active_power_w=active_w or 10.0, idle_power_w=idle_w or 2.0,
        price_usd_per_hour=None, error_band_pct=50.0, notes="", calibration={}, provenance={},
    )


def calibrate(
    name: str,
    output: str | Path,
    *,
    threads: int | None = None,
    quick: bool = False,
    kind: str = "host",
    active_power_w: float | None = None,
    idle_power_w: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Measure micro-benchmarks here, fit a profile named ``name`` and write it to ``output`` (TOML).

    ``threads`` pins ORT's intra-op threads (default: the cores this process may use); predictions made
    with the profile are valid for that thread count. ``quick`` runs a reduced set in a few seconds
    (tests). ``active_power_w``/``idle_power_w``: give the device's measured power if you know it
    (a USB power meter); otherwise the profile carries an estimate marked as such.
    """
    import onnx
    import onnxruntime as ort

    from edgeplan.compressor.ort_timing import default_threads
    from edgeplan.planner.graph import analyse
    from edgeplan.planner.measure import cpu_governor, cpu_model

    if kind not in ("edge", "cloud", "host"):
        raise InputError(f"--kind must be edge, cloud or host, not {kind!r}")
    if kind == "cloud":
        raise InputError("--kind cloud needs a price per hour; calibrate as 'host' and add price_usd_per_hour "
                         "and its provenance to the file")
    t_start = time.perf_counter()
    threads = threads or default_threads()
    min_time_s = 0.02 if quick else 0.1
    say = progress or (lambda _m: None)
    today = _dt.date.today().isoformat()
    rt = f"onnxruntime {ort.__version__} CPUExecutionProvider, intra_op_num_threads={threads}, sequential, ORT_ENABLE_ALL"

    benches = micro_benchmarks(quick)
    analyses, paths, labels = [], [], []
    with tempfile.TemporaryDirectory(prefix="edgeplan-calib-") as tmp:
        for i, b in enumerate(benches):
            say(f"[{i + 1}/{len(benches)}] building {b.name}")
            path = Path(tmp) / f"b{i}.onnx"
            onnx.save(b.model, str(path))
            if b.quantize:
                qpath = Path(tmp) / f"b{i}.int8.onnx"
                _quantize(path, qpath, b.input_shape)
                path = qpath
            analyses.append(analyse(str(path), batch=1))
            paths.append(path)
            labels.append(b)

        def failed(i: int, e: Exception) -> None:
            raise MeasurementError(f"micro-benchmark {benches[i].name} failed in ONNX Runtime: "
                                   f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

        rounds = 1 if quick else 5
        say(f"timing {len(paths)} micro-benchmarks, {rounds} interleaved round(s)")
        measured = time_models_ms(paths, threads, min_time_s, rounds=rounds, on_error=failed)
    say("memory bandwidth")
    bw = copy_bandwidth_gbps(quick)

    # peaks: the highest rate any conv/gemm micro-benchmark reached (fp32 and int8 separately). A single
    # "peak" GEMM measurement is fragile on a shared machine (one slow sample set makes every efficiency > 1).
    rates: dict[bool, float] = {False: 0.0, True: 0.0}
    for a, ms, b in zip(analyses, measured, labels):
        if b.op_class in ("conv", "gemm"):
            rates[b.quantize] = max(rates[b.quantize], a.total_flops / (ms * 1e-3) / 1e9)
    peak32, peak8 = rates[False], rates[True]
    try:
        mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        mem_bytes = 1
    base = _base_profile(name, kind, threads, bw, peak32, peak8, mem_bytes, rt, active_power_w, idle_power_w)
    say("fitting")
    fitted, res = fit_profile(base, analyses, measured)
    rel = np.abs(np.exp(res) - 1.0) * 100.0
    band = float(max(15.0, round(1.5 * float(np.percentile(rel, 90)), 1)))
    mhz = _cpu_mhz()
    cpu = cpu_model()
    gov = cpu_governor()
    n_b = len(benches)
    meas_src = f"edgeplan calibrate on {cpu} ({platform.machine()}), {threads} thread(s)"

    def M(how: str) -> Provenance:
        return Provenance(kind="measured", source=f"{how}; {meas_src}", date=today, runtime=rt)

    def F(what: str) -> Provenance:
        return Provenance(kind="fitted", source=f"{what}: least squares on log(pred/measured) over {n_b} ORT "
                                                f"micro-benchmarks ({meas_src})", date=today, runtime=rt)

    def E(what: str) -> Provenance:
        return Provenance(kind="estimate", source=what, date=today)

    prov: dict[str, Provenance] = {
        "cores": M("intra-op threads used for every measurement (the profile is valid for this count)"),
        "clock_ghz": M("'cpu MHz' in /proc/cpuinfo at calibration time") if mhz else E("clock unknown (no cpu MHz in /proc/cpuinfo)"),
        "peak_gops.fp32": M("highest fp32 FLOP rate reached by any conv/MatMul micro-benchmark (median ORT latency)"),
        "peak_gops.int8": M("highest int8 op rate reached by any conv/MatMul micro-benchmark, static QDQ "
                            "(U8 activations, S8 per-channel weights)"),
        "peak_gops.fp16": E("set to the fp32 rate: ORT's CPU EP runs most fp16 ops through fp32 (not measured)"),
        "memory_bandwidth_gbps": M("numpy copy of a 64 MiB float32 array (16 MiB with --quick), 2 x bytes / best thread CPU time of 7"),
        "memory_bytes": M("physical memory reported by the OS (sysconf)"),
        "conv_channel_block": M(nchwc_block()[1]),
        "per_node_overhead_us": F("per-node dispatch overhead"),
        "per_inference_overhead_us": F("per-run fixed overhead"),
        "error_band_pct": F("1.5 x the 90th percentile of |relative residual| (at least 15 %)"),
    }
    for c in OP_CLASSES:
        if c in _FIT_EFF:
            prov[f"efficiency.{c}"] = F(f"efficiency of {c}")
        else:
            prov[f"efficiency.{c}"] = E(f"not exercised by a micro-benchmark: copied from efficiency.{_COPY_FROM[c]}")
        if c in _FIT_MEM:
            prov[f"memory_efficiency.{c}"] = F(f"memory efficiency of {c} (may exceed 1: batch-1 tensors live in cache)")
        else:
            prov[f"memory_efficiency.{c}"] = E(f"not exercised: copied from memory_efficiency.{_COPY_FROM[c]}")
    for c in _FIT_INT8:
        prov[f"efficiency_by_dtype.int8.{c}"] = F(f"int8 (QDQ) efficiency of {c}")
    prov["efficiency_by_dtype"] = F("int8 (QDQ) efficiencies of " + ", ".join(_FIT_INT8))
    if active_power_w is not None:
        prov["active_power_w"] = Provenance(kind="user", source="given to edgeplan calibrate (--active-power-w)", date=today)
    else:
        prov["active_power_w"] = E("no power meter: rough estimate of ~5 W per busy server core; pass --active-power-w")
    if idle_power_w is not None:
        prov["idle_power_w"] = Provenance(kind="user", source="given to edgeplan calibrate (--idle-power-w)", date=today)
    else:
        prov["idle_power_w"] = E("no power meter: rough estimate; pass --idle-power-w")

    # drop dotted efficiency_by_dtype keys that the schema's dict check does not need (keep the summary one)
    prov = {k: v for k, v in prov.items() if not k.startswith("efficiency_by_dtype.")}
    power = active_power_w if active_power_w is not None else 5.0 * threads
    idle = idle_power_w if idle_power_w is not None else 1.0 * threads
    data = fitted.model_dump()
    data.update(
        description=f"{cpu}, {threads} ORT thread(s), calibrated by edgeplan calibrate on {today}",
        clock_ghz=round(mhz / 1000.0, 3) if mhz else 1.0,
        error_band_pct=band, active_power_w=float(power), idle_power_w=float(idle),
        notes=("Measured/fitted on this machine with ONNX Runtime (see [calibration] and [provenance]). Valid for "
               f"the same thread count ({threads}) and runtime version. The machine may be shared: timings taken "
               "under load shift every fitted number."),
        calibration={
            "cpu_model": cpu, "machine": platform.machine(), "governor": gov or "unreadable",
            "onnxruntime": ort.__version__, "threads": threads, "date": today,
            "micro_benchmarks": n_b, "quick": int(quick),
            "fit_median_abs_error_pct": round(float(np.median(rel)), 2),
            "fit_p90_abs_error_pct": round(float(np.percentile(rel, 90)), 2),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else -1.0,
        },
        provenance=prov,
    )
    for k in ("efficiency", "memory_efficiency"):
        data[k] = {c: round(v, 5) for c, v in data[k].items()}
    data["efficiency_by_dtype"] = {d: {c: round(v, 5) for c, v in t.items()} for d, t in data["efficiency_by_dtype"].items()}
    data["peak_gops"] = {k: round(v, 2) for k, v in data["peak_gops"].items()}
    data["class_overhead_us"] = {c: round(v, 4) for c, v in data["class_overhead_us"].items()}
    if data["class_overhead_us"]:
        prov["class_overhead_us"] = F("extra fixed cost per node of " + ", ".join(_FIT_CLASS_OVH))
    data["row_overhead_ns"] = {c: round(v, 3) for c, v in data["row_overhead_ns"].items()}
    if data["row_overhead_ns"]:
        prov["row_overhead_ns"] = F("fixed cost per output row x channel block of fp32 " + ", ".join(_FIT_ROW)
                                    + " nodes (NCHWc kernel calls)")
    data["int8_output_ns"] = round(data["int8_output_ns"], 4)
    if data["int8_output_ns"]:
        prov["int8_output_ns"] = F("cost per output element of int8 conv/gemm kernels (requantisation)")
    if data["conv_filter_set_blocks"] > 1:
        prov["conv_filter_set_blocks"] = Provenance(
            kind="datasheet", source="ONNX Runtime MLAS NCHWc conv: MaximumFilterSetSize = 4 channel blocks per "
                                     "pass (onnxruntime/core/mlas/lib/snchwc.cpp)", date=today, runtime=rt)
    if data["partial_filter_set"]:
        data["partial_filter_set"] = {k: round(v, 4) for k, v in data["partial_filter_set"].items()}
        prov["partial_filter_set"] = F("extra compute share per missing channel block of a short MLAS filter set "
                                       "(fp32 kxk and 1x1 convs)")
    data["pointwise_output_ns"] = round(data["pointwise_output_ns"], 4)
    if data["pointwise_output_ns"]:
        prov["pointwise_output_ns"] = F("cost per output element of fp32 1x1 convs")
    for k in ("memory_bandwidth_gbps", "per_node_overhead_us", "per_inference_overhead_us"):
        data[k] = round(data[k], 4)
    profile = HardwareProfile.model_validate(data)
    out = Path(output)
    header = (f"# edgeplan hardware profile '{name}', written by `edgeplan calibrate` on {today}.\n"
              "# Units: peak_gops GFLOP/s (int8: GOP/s), memory_bandwidth_gbps GB/s, overheads in microseconds.\n")
    atomic_write_text(out, header + profile_to_toml(profile))
    profile = profile_from_toml(out)  # round-trip check: what we wrote loads
    from edgeplan.planner.cost import predict

    points = tuple(
        CalibrationPoint(b.name, "int8" if b.quantize else "fp32", b.op_class, ms, predict(a, profile).latency_ms)
        for a, ms, b in zip(analyses, measured, labels)
    )
    return CalibrationResult(profile, out, points, float(np.median(rel)), time.perf_counter() - t_start)
