"""Cost model: roofline, overheads, fusion, peak memory, energy/cost; calibration; `edgeplan predict`; benchmark."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from edgeplan.hardware_profiles import load_link, load_profile
from edgeplan.planner.cost import peak_memory_bytes, predict, prediction_to_dict, radio_energy_mj
from edgeplan.planner.graph import GraphAnalysis, NodeStats, TensorInfo

ROOT = Path(__file__).resolve().parent.parent


def _t(name: str, n_floats: int) -> TensorInfo:
    return TensorInfo(name, (n_floats,), "float32", 4 * n_floats)


def _node(name, op_type, op_class, inputs, outputs, *, flops=0, param_bytes=0, in_b=0, out_b=0, dtype="fp32"):
    return NodeStats(name=name, op_type=op_type, op_class=op_class, inputs=tuple(inputs), outputs=tuple(outputs),
                     macs=flops // 2, flops=flops, params=param_bytes // 4, param_bytes=param_bytes,
                     input_bytes=in_b, output_bytes=out_b, compute_dtype=dtype)


def _analysis(nodes, tensors, inputs=("x",), outputs=None, batch=1) -> GraphAnalysis:
    outputs = outputs or (nodes[-1].outputs[0],)
    return GraphAnalysis(nodes=tuple(nodes), tensors={t.name: t for t in tensors}, inputs=tuple(inputs),
                         outputs=tuple(outputs), batch=batch)


def _conv_relu_add():
    """x -> conv -> add(c, x) -> relu -> sigmoid: ORT runs Conv+Add+Relu as one kernel; the Sigmoid is separate."""
    tensors = [_t("x", 1000), _t("c", 1000), _t("a", 1000), _t("r", 1000), _t("y", 1000)]
    nodes = [
        _node("conv", "Conv", "conv", ["x"], ["c"], flops=2_000_000, param_bytes=40_000, in_b=4000, out_b=4000),
        _node("add", "Add", "elementwise", ["c", "x"], ["a"], flops=1000, in_b=8000, out_b=4000),
        _node("relu", "Relu", "elementwise", ["a"], ["r"], flops=1000, in_b=4000, out_b=4000),
        _node("sig", "Sigmoid", "elementwise", ["r"], ["y"], flops=1000, in_b=4000, out_b=4000),
    ]
    return _analysis(nodes, tensors)


def test_roofline_fusion_and_overheads_by_hand():
    a = _conv_relu_add()
    # the residual-Add fusion is x86's NCHWc Conv+Sum: pi4 (Arm) does not list Add, so add it for this test
    pi4 = load_profile("pi4")
    assert "Add" not in pi4.fusable_op_types
    pi4 = pi4.model_copy(update={"fusable_op_types": (*pi4.fusable_op_types, "Add")})
    pred = predict(a, pi4)
    assert len(pred.node_latency_ms) == len(a.nodes)
    bounds = [c.bound for c in pred.node_costs]
    assert bounds[1] == "fused" and bounds[2] == "fused"  # residual Add (NCHWc Conv+Sum), then one activation
    assert bounds[3] in ("compute", "memory")  # a second activation is a kernel of its own
    conv = a.nodes[0]
    compute_ms = conv.flops / (pi4.peak_for("fp32") * 1e9 * pi4.efficiency_for("conv", "fp32")) * 1e3
    memory_ms = (conv.param_bytes + conv.input_bytes + conv.output_bytes) / (
        pi4.memory_bandwidth_gbps * 1e9 * pi4.memory_efficiency_for("conv")) * 1e3
    expected = max(compute_ms, memory_ms) + pi4.per_node_overhead_us * 1e-3
    assert pred.node_latency_ms[0] == pytest.approx(expected)
    assert pred.latency_ms == pytest.approx(sum(pred.node_latency_ms) + pi4.per_inference_overhead_us * 1e-3)
    # energy = active power x latency; no price on an edge device
    assert pred.energy_mj == pytest.approx(pi4.active_power_w * pred.latency_ms)
    assert pred.cost_usd_per_1k is None
    assert pred.throughput_per_s == pytest.approx(1000.0 / pred.latency_ms)
    assert "pi4" in pred.provenance and "datasheet" in pred.provenance and pred.error_band_pct == pi4.error_band_pct


def test_unfusable_profile_prices_every_node():
    a = _conv_relu_add()
    pi4 = load_profile("pi4")
    pi4 = pi4.model_copy(update={"fusable_op_types": (*pi4.fusable_op_types, "Add")})  # x86-style (see above)
    nofuse = pi4.model_copy(update={"fusable_op_types": ()})
    assert predict(a, nofuse).latency_ms > predict(a, pi4).latency_ms
    assert all(c.bound != "fused" for c in predict(a, nofuse).node_costs)


def test_gpu_is_launch_bound_at_batch_1_and_compute_bound_at_large_batch():
    a = _conv_relu_add()
    h100 = load_profile("h100")
    p1 = predict(a, h100, batch=1)
    executed = [c for c in p1.node_costs if c.bound not in ("fused", "folded", "view")]
    assert all(c.bound == "overhead" for c in executed)
    assert p1.node_latency_ms[0] == pytest.approx(h100.per_node_overhead_us * 1e-3)
    big = predict(a, h100, batch=100_000)
    assert big.node_costs[0].bound in ("compute", "memory")
    assert big.throughput_per_s > 100 * p1.throughput_per_s


def test_cloud_cost_formula():
    a = _conv_relu_add()
    t4 = load_profile("t4")
    for batch in (1, 8):
        p = predict(a, t4, batch=batch)
        assert p.cost_usd_per_1k == pytest.approx(t4.price_usd_per_hour / 3600 * p.latency_ms / 1e3 / batch * 1000)


def test_int8_nodes_use_int8_peak_and_qdq_fuses():
    tensors = [_t("x", 1000), _t("q", 1000), _t("dq", 1000), _t("c", 1000), _t("q2", 1000), _t("y", 1000)]
    nodes = [
        _node("q", "QuantizeLinear", "quant", ["x"], ["q"], flops=2000, in_b=4000, out_b=1000),
        _node("dq", "DequantizeLinear", "quant", ["q"], ["dq"], flops=2000, in_b=1000, out_b=4000),
        _node("conv", "Conv", "conv", ["dq"], ["c"], flops=50_000_000, param_bytes=10_000, in_b=4000, out_b=4000,
              dtype="int8"),
        _node("q2", "QuantizeLinear", "quant", ["c"], ["q2"], flops=2000, in_b=4000, out_b=1000),
        _node("dq2", "DequantizeLinear", "quant", ["q2"], ["y"], flops=2000, in_b=1000, out_b=4000),
    ]
    a = _analysis(nodes, tensors)
    pi5 = load_profile("pi5")
    p = predict(a, pi5)
    bounds = [c.bound for c in p.node_costs]
    assert bounds[0] != "fused"  # the first Quantize is a real op (fp32 input)
    assert bounds[1] == "fused" and bounds[3] == "fused"  # DQ -> Conv -> Q become one QLinearConv
    assert bounds[4] != "fused"  # the last DQ feeds the graph output
    fp32_conv = nodes[2].__class__(**{**nodes[2].__dict__, "compute_dtype": "fp32"})
    p32 = predict(_analysis([nodes[0], nodes[1], fp32_conv, nodes[3], nodes[4]], tensors), pi5)
    assert p.node_latency_ms[2] < p32.node_latency_ms[2]  # int8 peak is 4x fp32 on an A76 (SDOT)


def test_peak_memory_walk_frees_tensors_after_last_consumer():
    # x(100) -> a(1000) -> b(10) -> c(1000) -> d(10) floats; a is dead when c is allocated
    tensors = [_t("x", 100), _t("a", 1000), _t("b", 10), _t("c", 1000), _t("d", 10)]
    nodes = [
        _node("n1", "Relu", "elementwise", ["x"], ["a"]),
        _node("n2", "Relu", "elementwise", ["a"], ["b"], param_bytes=400),
        _node("n3", "Relu", "elementwise", ["b"], ["c"]),
        _node("n4", "Relu", "elementwise", ["c"], ["d"]),
    ]
    chain = _analysis(nodes, tensors)
    assert peak_memory_bytes(chain) == 400 + 4 * (100 + 1000)  # weights + (x + a) while n1 runs
    # a skip connection keeps `a` alive until n4 reads it
    skip = [*nodes[:3], _node("n4", "Add", "elementwise", ["c", "a"], ["d"])]
    assert peak_memory_bytes(_analysis(skip, tensors)) == 400 + 4 * (1000 + 10 + 1000)
    assert predict(chain, load_profile("pi4"), batch=4).peak_memory_bytes == 400 + 4 * 4 * 1100


def test_batch_scaling_uses_the_analysed_batch():
    a1 = _conv_relu_add()
    a4 = GraphAnalysis(nodes=a1.nodes, tensors=a1.tensors, inputs=a1.inputs, outputs=a1.outputs, batch=4)
    host = load_profile("host")
    # the same node stats described as batch 4: predicting batch 4 must not scale them again
    assert predict(a4, host, batch=4).latency_ms == pytest.approx(predict(a1, host, batch=1).latency_ms)
    assert predict(a1, host, batch=4).latency_ms > predict(a1, host, batch=1).latency_ms
    with pytest.raises(ValueError):
        predict(a1, host, batch=0)


def test_radio_energy_and_prediction_dict():
    assert radio_energy_mj(1_000_000, load_link("4g")) == pytest.approx(1e6 * 8 * 438e-9 * 1e3)
    assert radio_energy_mj(1000, load_link("5g")) is None  # unknown, not silently zero
    a = _conv_relu_add()
    d = prediction_to_dict(predict(a, load_profile("a100")), a)
    for key in ("latency_ms", "energy_mj", "peak_memory_bytes", "cost_usd_per_1k", "error_band_pct", "provenance"):
        assert key in d
    assert d["cost_usd_per_1k"] > 0 and len(d["layers"]) == len(a.nodes)
    json.dumps(d)
    assert len(prediction_to_dict(predict(a, load_profile("a100")), a, top=2)["layers"]) == 2


def test_predict_is_fast_on_1000_nodes():
    n = 1000
    tensors = [_t(f"t{i}", 10_000) for i in range(n + 1)]
    nodes = []
    for i in range(n):
        if i % 3 == 0:
            nodes.append(_node(f"c{i}", "Conv", "conv", [f"t{i}"], [f"t{i + 1}"], flops=10**7, param_bytes=10**4,
                               in_b=40_000, out_b=40_000))
        else:
            nodes.append(_node(f"e{i}", "Relu" if i % 3 == 1 else "Sigmoid", "elementwise", [f"t{i}"], [f"t{i + 1}"],
                               flops=10_000, in_b=40_000, out_b=40_000))
    a = GraphAnalysis(nodes=tuple(nodes), tensors={t.name: t for t in tensors}, inputs=("t0",), outputs=(f"t{n}",))
    prof = load_profile("pi4")
    predict(a, prof)
    t0 = time.thread_time()  # CPU time: the test machine is shared, wall time measures the other jobs
    for _ in range(5):
        p = predict(a, prof)
    per_call_ms = (time.thread_time() - t0) / 5 * 1e3
    assert len(p.node_latency_ms) == n
    assert per_call_ms < 50, per_call_ms


# ------------------------------------------------------------------------------ real ONNX, CLI, calibration


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    import numpy as np
    import onnx

    from edgeplan.planner.calibrate import _conv_chain

    p = tmp_path_factory.mktemp("cost") / "chain.onnx"
    onnx.save(_conv_chain(16, 16, 3, 3, 1, np.random.default_rng(0)), str(p))
    return p


def test_predict_on_an_analysed_onnx_model(tiny_onnx):
    from edgeplan.planner.graph import analyse

    a = analyse(str(tiny_onnx))
    p = predict(a, load_profile("host"))
    assert len(p.node_latency_ms) == len(a.nodes) == 6
    assert [c.bound for c in p.node_costs][1::2] == ["fused"] * 3  # Conv+Relu fused by ORT
    assert 0 < p.latency_ms < 100 and p.peak_memory_bytes >= a.total_param_bytes


def _single_conv_analysis(cin, cout, h, k):
    import numpy as np

    from edgeplan.planner.calibrate import _single_conv
    from edgeplan.planner.graph import analyse

    return analyse(_single_conv(cin, cout, h, k, 1, np.random.default_rng(0)), runtime=False)


def test_nchwc_conv_terms_short_filter_sets_and_pointwise_outputs():
    host = load_profile("host")
    base = host.model_copy(update={"conv_channel_block": 8, "conv_filter_set_blocks": 4, "partial_filter_set": {},
                                   "pointwise_output_ns": 0.0, "fusion_source": "rules"})
    terms = base.model_copy(update={"partial_filter_set": {"kxk": 0.5, "pointwise": 0.25}, "pointwise_output_ns": 2.0})

    def conv_cost(a, prof):
        return next(c for n, c in zip(a.nodes, predict(a, prof).node_costs) if n.op_type == "Conv")

    # 3x3 convs: 8 channels use 1 of a set of 4 blocks, 40 use 5 of 8 slots (one full set + a short one), 32 fill one set
    for cout, slots_per_block in ((8, 4.0), (40, 8 / 5), (32, 1.0)):
        a = _single_conv_analysis(32, cout, 14, 3)
        ratio = conv_cost(a, terms).compute_ms / conv_cost(a, base).compute_ms
        assert ratio == pytest.approx(1 + 0.5 * (slots_per_block - 1))
    # 1x1 conv: its own penalty, plus 2 ns per output element (16 x 8 x 8 outputs)
    a = _single_conv_analysis(64, 16, 8, 1)
    with_terms, without = conv_cost(a, terms), conv_cost(a, base)
    assert with_terms.compute_ms / without.compute_ms == pytest.approx(1 + 0.25 * (4 / 2 - 1))
    extra_ms = (with_terms.latency_ms - with_terms.compute_ms) - (without.latency_ms - without.compute_ms)
    assert extra_ms == pytest.approx(2.0e-6 * 16 * 8 * 8)
    # channel blocking off (Arm, GPUs): the terms do not apply
    off = terms.model_copy(update={"conv_channel_block": 1})
    a = _single_conv_analysis(32, 8, 14, 3)
    assert conv_cost(a, off).latency_ms == pytest.approx(conv_cost(a, base.model_copy(update={"conv_channel_block": 1})).latency_ms)


def test_int8_pools_in_ort_nhwc_region_are_priced_at_the_float_pool_rate():
    from edgeplan.planner.cost import _nhwc_int8_pools

    tensors = [_t(n, 4096) for n in ("x", "q", "c", "p", "a", "g", "p2")]
    nodes = [
        _node("quant", "QuantizeLinear", "quant", ["x"], ["q"], flops=4096, in_b=16384, out_b=4096),
        _node("slowpool", "MaxPool", "pool", ["q"], ["p2"], flops=36864, in_b=4096, out_b=4096, dtype="int8"),
        _node("conv", "QLinearConv", "conv", ["q"], ["c"], flops=1_000_000, in_b=4096, out_b=4096, dtype="int8"),
        _node("pool", "MaxPool", "pool", ["c"], ["p"], flops=36864, in_b=4096, out_b=4096, dtype="int8"),
        _node("add", "QLinearAdd", "elementwise", ["p", "p"], ["a"], flops=4096, in_b=8192, out_b=4096, dtype="int8"),
        _node("gap", "QLinearGlobalAveragePool", "pool", ["a"], ["g"], flops=4096, in_b=4096, out_b=64, dtype="int8"),
    ]
    a = _analysis(nodes, tensors, outputs=("g", "p2"))
    assert _nhwc_int8_pools(a) == {3, 5}  # after the QLinearConv (through QLinearAdd), not the one on the input
    host = load_profile("host").model_copy(update={"fusion_source": "onnxruntime"})
    costs = predict(a, host).node_costs
    assert costs[1].compute_ms / costs[3].compute_ms == pytest.approx(
        host.peak_for("fp32") * host.efficiency_for("pool", "fp32") / (host.peak_for("int8") * host.efficiency_for("pool", "int8")))


def test_cli_predict_json_and_bad_target(tiny_onnx, capsys):
    from edgeplan.cli.main import main

    assert main(["predict", str(tiny_onnx), "--target", "t4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("latency_ms", "energy_mj", "peak_memory_bytes", "cost_usd_per_1k", "error_band_pct", "provenance"):
        assert key in doc
    assert doc["profile"] == "t4" and doc["cost_usd_per_1k"] > 0 and "t4" in doc["provenance"]
    assert main(["predict", str(tiny_onnx), "--target", "pi4", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "pi4" in out and "±50%" in out and "not measured" in out
    assert main(["predict", str(tiny_onnx), "--target", "pi17"]) == 2
    err = capsys.readouterr().err
    assert "unknown hardware profile 'pi17'" in err and "jetson-nano" in err


def test_calibrate_quick_writes_a_valid_measured_profile(tmp_path, capsys):
    from edgeplan.cli.main import main

    out = tmp_path / "me.toml"
    assert main(["calibrate", "--name", "me", "-o", str(out), "--threads", "1", "--quick", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["profile"] == "me" and len(doc["points"]) >= 10
    prof = load_profile(str(out))  # loads and validates what was written
    assert prof.name == "me" and prof.cores == 1 and prof.calibration["threads"] == 1
    assert prof.calibration["onnxruntime"] and prof.calibration["cpu_model"]
    assert prof.provenance_of("efficiency.gemm").kind == "fitted"
    assert prof.provenance_of("peak_gops.int8").kind == "measured"
    assert prof.provenance_of("efficiency.resize").kind == "estimate"
    assert not list(tmp_path.glob(".me.toml.*"))  # atomic write left no temp file


def test_benchmark_runs_on_a_tiny_case(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_cost_model", ROOT / "benchmarks" / "bench_cost_model.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_cost_model", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)  # in-process: the subprocess start-up (torch import) dominated this test
    md = tmp_path / "r.md"
    js = tmp_path / "r.json"
    assert bench.main(["--tiny", "--out", str(md), "--json", str(js)]) == 0
    doc = json.loads(js.read_text())
    assert doc["summary"]["n"] == 1
    row = doc["rows"][0]
    assert row["measured_ms"] > 0 and row["predicted_ms"] > 0
    assert "| tiny-cnn | fp32 |" in md.read_text()


def test_conv_shape_benchmark_runs_on_a_tiny_case(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_conv_shapes", ROOT / "benchmarks" / "bench_conv_shapes.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_conv_shapes", bench)
    spec.loader.exec_module(bench)
    js = tmp_path / "r.json"
    assert bench.main(["--tiny", "--profile", "host", "--profile", "pi4", "--json", str(js)]) == 0
    doc = json.loads(js.read_text())
    assert set(doc["scores"]) == {"host", "pi4"} and doc["scores"]["host"]["n"] == 3
    assert all(r["measured_ms"] > 0 and r["predicted_ms"]["pi4"] > 0 for r in doc["rows"])
    assert bench.random_shapes(5, 1) == bench.random_shapes(5, 1)  # seeded


def test_cli_predict_a_factory_spec_with_batch(capsys):
    from edgeplan.cli.main import main

    spec = "edgeplan.compressor.archs:digits_cnn"
    assert main(["predict", spec, "--target", "pi4", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["predict", spec, "--target", "pi4", "--batch", "8", "--json"]) == 0
    eight = json.loads(capsys.readouterr().out)
    assert eight["batch"] == 8 and eight["latency_ms"] > one["latency_ms"]
    assert eight["throughput_per_s"] > one["throughput_per_s"]  # per-run overheads are shared by the batch
    assert one["cost_usd_per_1k"] is None and one["layers"]


def test_help_texts_have_examples(capsys):
    from edgeplan.cli.main import main

    for cmd in (["predict", "--help"], ["calibrate", "--help"], ["profiles", "--help"], ["profiles", "show", "--help"]):
        assert main(cmd) == 0
        assert "edgeplan " in capsys.readouterr().out


def test_calibrate_rejects_a_bad_kind_before_measuring(tmp_path, capsys):
    from edgeplan.cli.main import main

    assert main(["calibrate", "--name", "x", "-o", str(tmp_path / "x.toml"), "--kind", "moon"]) == 2
    assert "--kind must be edge, cloud or host" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()
