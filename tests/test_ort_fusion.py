"""planner.ort_fusion: ONNX Runtime's optimised graph mapped back onto the original nodes, and its use in predict."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeplan.hardware_profiles import load_profile
from edgeplan.planner.cost import predict
from edgeplan.planner.graph import analyse


def _conv_bn_relu_model(path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    for n in ("scale", "bias", "mean", "var"):
        inits.append(numpy_helper.from_array((np.ones if n in ("scale", "var") else np.zeros)(8, np.float32), n))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="sig")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_runtime_graph_maps_fused_nodes_onto_their_carrier(tmp_path):
    a = analyse(str(_conv_bn_relu_model(tmp_path / "m.onnx")))
    assert a.runtime is not None, a.runtime_note
    names = [n.name for n in a.nodes]
    role = dict(zip(names, a.runtime.role))
    # ORT folds BN into the conv and fuses the ReLU (FusedConv): the conv carries the kernel
    assert role["conv"] == "kernel" and role["bn"] == "fused" and role["relu"] == "fused"
    assert role["sig"] == "kernel"
    assert {a.runtime.analysis.nodes[j].op_type for j in range(len(a.runtime.analysis.nodes))} >= {"FusedConv"}
    host = load_profile("host")
    assert host.fusion_source == "onnxruntime"
    p = predict(a, host)
    by = dict(zip(names, p.node_costs))
    assert by["conv"].latency_ms > 0 and by["bn"].latency_ms == 0 and by["relu"].latency_ms == 0
    assert p.latency_ms == pytest.approx(sum(p.node_latency_ms) + host.per_inference_overhead_us * 1e-3)
    assert "onnxruntime" in p.provenance


def test_qdq_graph_keeps_the_dequantize_nodes_ort_does_not_fuse(tmp_path):
    """A QDQ ConvTranspose: ORT (x86) has no integer kernel for it, so its DequantizeLinear nodes run --
    including the weight's, which the rule-based model treated as constant-folded."""
    from edgeplan.compressor.quantize_ort import preprocess, quantize_static_qdq

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8, 4, 4)).astype(np.float32) * 0.1, "w")
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1], name="convt"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src, pre, q = tmp_path / "f.onnx", tmp_path / "p.onnx", tmp_path / "q.onnx"
    onnx.save(m, str(src))
    preprocess(src, pre)
    quantize_static_qdq(pre, q, [{"x": rng.standard_normal((1, 16, 8, 8)).astype(np.float32)} for _ in range(2)],
                        per_channel=True)
    a = analyse(str(q))
    assert a.runtime is not None, a.runtime_note
    rt_nodes = a.runtime.analysis.nodes
    kernels = [n.op_type for n in rt_nodes]
    host = load_profile("host")
    p = predict(a, host)
    # the original analysis folds the weight DequantizeLinear away and marks the ConvTranspose int8
    assert [n.compute_dtype for n in a.nodes if n.op_type == "ConvTranspose"] == ["int8"]
    if "ConvTranspose" in kernels:  # ORT 1.32 on x86: no integer kernel, the op runs in float
        assert [n.compute_dtype for n in rt_nodes if n.op_type == "ConvTranspose"] == ["fp32"]
        assert kernels.count("DequantizeLinear") >= 2  # activation and weight DQ both run
        convt = next(i for i, n in enumerate(a.nodes) if n.op_type == "ConvTranspose")
        fp32_peak = host.peak_for("fp32") * 1e9 * host.efficiency_for("convtranspose", "fp32")
        assert p.node_costs[convt].compute_ms == pytest.approx(a.nodes[convt].flops / fp32_peak * 1e3, rel=1e-6)
    # every executed kernel's cost lands on some original node: nothing is lost in the mapping
    assert sum(p.node_latency_ms) > 0 and all(c >= 0 for c in a.runtime.carrier)


def test_graph_ort_cannot_load_falls_back_to_the_rules(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("MyCustomOp", ["h"], ["y"], domain="my.domain", name="custom")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    m.ir_version = 8
    a = analyse(m)
    assert a.runtime is None and a.runtime_note and "ONNX Runtime" in a.runtime_note
    p = predict(a, load_profile("host"))
    assert p.latency_ms > 0 and "fusion rules" in p.provenance


def test_runtime_off_keeps_the_rule_based_analysis(tmp_path):
    a = analyse(str(_conv_bn_relu_model(tmp_path / "m.onnx")), runtime=False)
    assert a.runtime is None and a.runtime_note is None
    p = predict(a, load_profile("host"))
    assert [c.bound for c in p.node_costs][1:3] == ["fused", "fused"]
