"""planner.graph.analyse and `edgeplan inspect`: hand-checked MACs per op family, QDQ/QOperator
int8 detection, unknown ops, shared weights, symbolic dims, and agreement with torch-pruning's
counter on the example architectures.

MAC conventions under test are documented in planner/graph_ops.py.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeplan.hardware_profiles.errors import InputShapeError, ModelLoadError
from edgeplan.planner.graph import analyse, analysis_to_dict

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17, value_info=()):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits],
        value_info=list(value_info),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _w(*shape, dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _export(module, args, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, **kw)
    return path


def _node(a, op_type):
    hits = [n for n in a.nodes if n.op_type == op_type]
    assert hits, f"no {op_type} node in {[n.op_type for n in a.nodes]}"
    return hits[0]


# --------------------------------------------------------------------------- conv family


def test_conv2d_with_bias_hand_checked():
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
               [("x", F, [1, 3, 16, 16])], [("y", F, None)], [("w", _w(8, 3, 3, 3)), ("b", _w(8))])
    n = _node(analyse(m), "Conv")
    assert n.op_class == "conv"
    assert n.macs == 8 * 16 * 16 * 3 * 9  # Cout * H * W * Cin * k*k
    assert n.flops == 2 * n.macs + 8 * 16 * 16  # + bias adds
    assert n.params == 8 * 3 * 9 + 8 and n.param_bytes == 4 * n.params
    assert n.inputs == ("x",) and n.input_bytes == 3 * 16 * 16 * 4 and n.output_bytes == 8 * 256 * 4


def test_conv1d_exported_from_torch(tmp_path):
    p = _export(nn.Conv1d(4, 6, 5, stride=2, bias=False), (torch.randn(2, 4, 32),), tmp_path / "c1.onnx")
    a = analyse(p)
    n = _node(a, "Conv")
    out_len = (32 - 5) // 2 + 1  # 14
    assert a.tensors[n.outputs[0]].shape == (2, 6, out_len)
    assert n.macs == 2 * 6 * out_len * 4 * 5 and n.flops == 2 * n.macs


def test_depthwise_and_grouped_conv():
    m = _model(
        [helper.make_node("Conv", ["x", "dw"], ["y"], pads=[1, 1, 1, 1], group=8),
         helper.make_node("Conv", ["y", "gw"], ["z"], pads=[1, 1, 1, 1], group=2)],
        [("x", F, [1, 8, 10, 10])], [("z", F, None)], [("dw", _w(8, 1, 3, 3)), ("gw", _w(16, 4, 3, 3))],
    )
    dw, gc = analyse(m).nodes
    assert dw.op_class == "dwconv" and dw.macs == 8 * 100 * 1 * 9
    assert gc.op_class == "dwconv" and gc.macs == 16 * 100 * 4 * 9  # Cin/group = 4


def test_conv_transpose_counts_input_positions(tmp_path):
    p = _export(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False), (torch.randn(1, 8, 5, 5),),
                tmp_path / "ct.onnx")
    n = _node(analyse(p), "ConvTranspose")
    assert n.op_class == "convtranspose"
    assert n.macs == 8 * 25 * 4 * 16  # Cin * Hin*Win * Cout/g * k*k (each input times the whole kernel)


# --------------------------------------------------------------------------- gemm family


def test_gemm_linear_and_batched_attention_matmul(tmp_path):
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32, 10)

        def forward(self, q, k, v, x):
            att = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # [1,4,16,8] x [1,4,8,16]
            return att @ v, self.fc(x)

    args = (torch.randn(1, 4, 16, 8), torch.randn(1, 4, 16, 8), torch.randn(1, 4, 16, 8), torch.randn(3, 32))
    a = analyse(_export(Attn(), args, tmp_path / "attn.onnx"))
    mm = [n for n in a.nodes if n.op_type == "MatMul"]
    assert len(mm) == 2 and all(n.op_class == "gemm" and n.params == 0 for n in mm)
    assert [n.macs for n in mm] == [4 * 16 * 16 * 8, 4 * 16 * 8 * 16]  # B*H*S*S*D, B*H*S*D*S
    gemm = _node(a, "Gemm")
    assert gemm.macs == 3 * 10 * 32 and gemm.flops == 2 * 960 + 30 and gemm.params == 32 * 10 + 10
    sm = _node(a, "Softmax")
    assert sm.op_class == "softmax" and sm.macs == 0 and sm.flops == 5 * 4 * 16 * 16


def test_gemm_trans_a_and_einsum():
    m = _model(
        [helper.make_node("Gemm", ["a", "b"], ["y"], transA=1),
         helper.make_node("Einsum", ["p", "q"], ["z"], equation="bij,bjk->bik")],
        [("a", F, [32, 5]), ("p", F, [2, 3, 7]), ("q", F, [2, 7, 4])], [("y", F, None), ("z", F, None)],
        [("b", _w(32, 6))], opset=17,
    )
    a = analyse(m)
    assert _node(a, "Gemm").macs == 5 * 6 * 32
    assert _node(a, "Einsum").macs == 2 * 3 * 4 * 7


# --------------------------------------------------------------------------- other families


def test_resize_concat_pool_norm_elementwise():
    scales = np.array([1, 1, 2, 2], np.float32)
    m = _model(
        [
            helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
            helper.make_node("Resize", ["x", "", "scales"], ["lin"], mode="linear"),
            helper.make_node("Concat", ["up", "lin"], ["cat"], axis=1),
            helper.make_node("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
            helper.make_node("BatchNormalization", ["mp", "g", "b", "mu", "var"], ["bn"]),
            helper.make_node("LayerNormalization", ["bn", "lg", "lb"], ["ln"], axis=-1),
            helper.make_node("Add", ["ln", "row"], ["add"]),  # [1,6,4,4] + [4] broadcast
        ],
        [("x", F, [1, 3, 4, 4])], [("add", F, None), ("gap", F, None)],
        [("scales", scales), ("g", _w(6)), ("b", _w(6)), ("mu", _w(6)), ("var", np.ones(6, np.float32)),
         ("lg", _w(4)), ("lb", _w(4)), ("row", _w(4))],
    )
    a = analyse(m)
    by = {n.outputs[0]: n for n in a.nodes}
    assert by["up"].op_class == "resize" and by["up"].flops == 3 * 8 * 8 and by["up"].macs == 0
    assert by["lin"].flops == 3 * 8 * 8 * 2 * 2  # 2 FLOPs per interpolated axis, 2 axes
    assert by["cat"].op_class == "data" and by["cat"].flops == 0
    assert a.tensors["cat"].shape == (1, 6, 8, 8) and by["cat"].output_bytes == 6 * 64 * 4
    assert by["cat"].input_bytes == 2 * 3 * 64 * 4
    assert by["mp"].op_class == "pool" and by["mp"].flops == 6 * 16 * 4  # out elements * kernel
    assert by["gap"].op_class == "pool" and by["gap"].flops == 6 * 64  # every input element once
    assert by["bn"].op_class == "norm" and by["bn"].flops == 2 * 96 and by["bn"].params == 24
    assert by["ln"].op_class == "norm" and by["ln"].flops == 8 * 96 and by["ln"].params == 8
    assert by["add"].op_class == "elementwise" and by["add"].flops == 96 and by["add"].params == 4
    assert a.total_macs == 0 and not a.unknown_ops


def test_elementwise_broadcasting_counts_output_elements():
    m = _model([helper.make_node("Mul", ["a", "b"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
               [("a", F, [2, 1, 4]), ("b", F, [3, 1])], [("z", F, None)])
    mul, relu = analyse(m).nodes
    assert mul.flops == 2 * 3 * 4 and relu.flops == 24 and mul.inputs == ("a", "b")


# --------------------------------------------------------------------------- constants, params


def test_shared_weights_identity_chain_and_constants_counted_once():
    m = _model(
        [
            helper.make_node("Identity", ["W"], ["W_id"]),
            helper.make_node("Identity", ["W_id"], ["W_id2"]),  # a chain, as the legacy exporter emits
            helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([2, 16], np.int64))),
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("MatMul", ["h", "W_id2"], ["y"]),  # the same weight again
            helper.make_node("Reshape", ["y", "shape"], ["r"]),
        ],
        [("x", F, [4, 8])], [("r", F, None)], [("W", _w(8, 8))],
    )
    a = analyse(m)
    assert [n.op_type for n in a.nodes] == ["MatMul", "MatMul", "Reshape"]  # Identity/Constant folded
    first, second, reshape = a.nodes
    assert first.params == 64 and second.params == 0 and a.total_params == 64  # counted once
    assert second.inputs == ("h",)  # the weight is not an activation
    assert reshape.params == 0 and reshape.inputs == ("y",)  # int64 shape constant is not a param
    assert not {"W", "W_id", "W_id2", "shape"} & set(a.tensors)
    assert a.tensors["r"].shape == (2, 16)


def test_unknown_op_is_listed_never_silently_zero():
    m = _model(
        [helper.make_node("Relu", ["x"], ["a"]),
         helper.make_node("Mystery", ["a"], ["b"], domain="com.example"),
         helper.make_node("Relu", ["b"], ["c"])],
        [("x", F, [1, 8])], [("c", F, None)],
    )
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    a = analyse(m)
    assert a.unknown_ops == ("com.example:Mystery",)
    mystery = _node(a, "Mystery")
    assert mystery.known is False and mystery.op_class == "other"
    assert "Mystery_1" in a.unknown_nodes or mystery.name in a.unknown_nodes
    # its output has no shape: the consumer cannot be counted either, and says so
    last = a.nodes[-1]
    assert last.known is False and last.name in a.unknown_nodes
    assert any("Mystery" in w for w in a.warnings)
    d = analysis_to_dict(a)
    assert d["unknown_ops"] == ["com.example:Mystery"]


# --------------------------------------------------------------------------- dims, dtypes, errors


def test_symbolic_batch_resolves_and_other_symbols_need_shapes(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    p = _export(net, (torch.randn(1, 3, 8, 8),), tmp_path / "dyn.onnx", input_names=["x"],
                dynamic_axes={"x": {0: "batch"}})
    a1, a4 = analyse(p), analyse(p, batch=4)
    assert a1.batch == 1 and a4.batch == 4 and a4.total_macs == 4 * a1.total_macs
    assert a4.tensors["x"].shape == (4, 3, 8, 8) and all(t.exact for t in a4.tensors.values())

    p2 = _export(net[:1], (torch.randn(1, 3, 8, 8),), tmp_path / "dyn2.onnx", input_names=["x"],
                 dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(InputShapeError, match="'x'.*symbolic dimension 'h'"):
        analyse(p2)
    a = analyse(p2, input_shapes={"x": (2, 3, 10, 10)})
    assert _node(a, "Conv").macs == 2 * 4 * 8 * 8 * 3 * 9

    static = _export(net, (torch.randn(1, 3, 8, 8),), tmp_path / "static.onnx")
    with pytest.raises(InputShapeError, match="fixed batch"):
        analyse(static, batch=2)
    with pytest.raises(ModelLoadError):
        analyse(tmp_path / "missing.onnx")


def test_fp16_compute_dtype():
    H = TensorProto.FLOAT16
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", H, [2, 8])], [("y", H, None)],
               [("w", _w(8, 4, dtype=np.float16))])
    n = analyse(m).nodes[0]
    assert n.compute_dtype == "fp16" and n.param_bytes == 8 * 4 * 2 and n.output_bytes == 2 * 4 * 2


class _SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def small_cnn_onnx(tmp_path_factory):
    from onnxruntime.quantization import quant_pre_process

    d = tmp_path_factory.mktemp("q")
    torch.manual_seed(0)
    _export(_SmallCNN(), (torch.randn(1, 3, 8, 8),), d / "fp32.onnx", input_names=["input"])
    quant_pre_process(str(d / "fp32.onnx"), str(d / "pre.onnx"))
    return d


def _quantize(d, fmt):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    out = d / f"q_{fmt}.onnx"
    quantize_static(str(d / "pre.onnx"), str(out), Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def test_qdq_model_convs_are_int8(small_cnn_onnx):
    fp32 = analyse(small_cnn_onnx / "fp32.onnx")
    q = analyse(_quantize(small_cnn_onnx, "qdq"))
    convs = [n for n in q.nodes if n.op_type == "Conv"]
    assert len(convs) == 2 and all(n.compute_dtype == "int8" for n in convs)
    assert [n.macs for n in convs] == [n.macs for n in fp32.nodes if n.op_type == "Conv"]
    assert any(n.op_class == "quant" for n in q.nodes)  # activation Q/DQ stay visible
    # weight DequantizeLinear is constant-folded: its int8 weight is the conv's param (1 byte each)
    c1 = convs[0]
    assert c1.params >= 8 * 3 * 9 and c1.param_bytes < 2 * c1.params
    assert all(n.compute_dtype == "fp32" for n in fp32.nodes)
    assert q.total_macs == fp32.total_macs


def test_qoperator_qlinearconv_is_int8(small_cnn_onnx):
    fp32 = analyse(small_cnn_onnx / "fp32.onnx")
    q = analyse(_quantize(small_cnn_onnx, "qop"))
    qconv = [n for n in q.nodes if n.op_type == "QLinearConv"]
    assert len(qconv) == 2 and all(n.compute_dtype == "int8" and n.op_class == "conv" for n in qconv)
    assert sum(n.macs for n in qconv) == sum(n.macs for n in fp32.nodes if n.op_type == "Conv")
    # the Linear becomes ORT's contrib QGemm, whose shape ONNX inference does not know (graph_ops rule)
    qgemm = _node(q, "QGemm")
    assert qgemm.compute_dtype == "int8" and qgemm.macs == _node(fp32, "Gemm").macs == 128 * 10
    assert not q.unknown_ops and not q.unknown_nodes and all(t.exact for t in q.tensors.values())
    assert q.total_macs == fp32.total_macs


# --------------------------------------------------------------------------- vs torch-pruning


ARCHS = ["digits_cnn", "resnet18_like", "mobilenetv2_like", "transformer_encoder", "dcgan_generator"]


def _arch_case(arch: str, full: bool):
    """(model, example input) for an example architecture.

    The fast variant (default test run) builds the same classes without the factories' BatchNorm
    calibration pass and feeds the two ImageNet CNNs 64x64 instead of 224x224: weights do not change
    MAC counts and the topology is identical, but it saves ~15 s of the file's budget on 2 shared
    cores. The ``slow`` variant uses the factories at their real input shapes.
    """
    from edgeplan.compressor import archs

    spec = next(s for s in archs.EXAMPLES.values() if s.factory.__name__ == arch)
    if full or arch not in ("resnet18_like", "mobilenetv2_like"):
        return spec.factory(), archs.example_input(spec)
    torch.manual_seed(0)
    model = archs.ResNet((64, 128, 256, 512), (2, 2, 2, 2), 1000) if arch == "resnet18_like" else archs.MobileNetV2(1000)
    return model.eval(), torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize("arch", ARCHS)
def test_macs_agree_with_torch_pruning(arch, tmp_path):
    _check_against_torch_pruning(arch, tmp_path, full=False)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18_like", "mobilenetv2_like"])
def test_macs_agree_with_torch_pruning_full_resolution(arch, tmp_path):
    _check_against_torch_pruning(arch, tmp_path, full=True)


def _check_against_torch_pruning(arch: str, tmp_path, full: bool) -> None:
    """Our MACs vs torch-pruning's per-layer counts of the same Conv/Linear layers, within 2%.

    torch-pruning's headline number is not a pure MAC count: it adds 2 ops/element for BatchNorm, 1
    for ReLU/GELU and pooling (ptflops' convention), which puts it 0.4% (resnet18), 2.5% (digits_cnn)
    and 6.5% (mobilenetv2) above the Conv/Linear MACs at 224x224. So we compare against its
    Conv/Linear layers. Two documented differences: it does not count attention matmuls written as
    ``torch.matmul`` (we check those by hand), and it counts ConvTranspose from *output* positions,
    over-counting by out_positions/in_positions (16x for DCGAN's 1x1->4x4 first layer, 4x for the
    stride-2 ones); we check that relation layer by layer.
    """
    import torch_pruning as tp

    model, x = _arch_case(arch, full)
    a = analyse(_export(model, (x,), tmp_path / f"{arch}.onnx", input_names=["input"]))
    assert not a.unknown_ops and not a.unknown_nodes

    _total, params, layer_ops, _ = tp.utils.count_ops_and_params(model, x, layer_wise=True)
    dense = (nn.Conv1d, nn.Conv2d, nn.Linear)
    tp_dense = sum(v for m, v in layer_ops.items() if isinstance(m, dense) and v)
    attention = [n for n in a.nodes if n.op_type == "MatMul" and len(n.inputs) == 2]
    ours_dense = sum(n.macs for n in a.nodes if n.op_class in ("conv", "dwconv", "gemm")) - sum(n.macs for n in attention)

    if arch == "dcgan_generator":
        cts = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
        nodes = [n for n in a.nodes if n.op_type == "ConvTranspose"]
        assert len(cts) == len(nodes) == 5
        for m, n in zip(cts, nodes):
            inp = a.tensors[n.inputs[0]].shape
            out = a.tensors[n.outputs[0]].shape
            assert n.macs == inp[1] * inp[2] * inp[3] * m.out_channels * 16  # Cin*Hin*Win*Cout*k*k
            assert layer_ops[m] == n.macs * (out[2] * out[3]) // (inp[2] * inp[3])  # tp's output-side count
    else:
        assert tp_dense > 0
        assert abs(ours_dense - tp_dense) / tp_dense < 0.02, (ours_dense, tp_dense)
    if arch == "transformer_encoder":
        # 4 layers x (QK^T + AV) x heads 4 x S 128 x S 128 x head dim 64
        assert len(attention) == 8 and sum(n.macs for n in attention) == 4 * 2 * 4 * 128 * 128 * 64
    else:
        assert not attention
        assert abs(a.total_macs - tp_dense) / max(tp_dense, 1) < 0.02 or arch == "dcgan_generator"
    # Params: ONNX folds BatchNorm into conv biases (1 per channel instead of 2) and the legacy exporter
    # de-duplicates identical initializers (the transformer's LayerNorm ones/zeros), so slightly fewer.
    assert 0.99 * params <= a.total_params <= params * 1.001


# --------------------------------------------------------------------------- CLI


def test_cli_inspect_json_and_table(tmp_path, capsys):
    from edgeplan.cli.main import main

    p = _export(_SmallCNN(), (torch.randn(1, 3, 8, 8),), tmp_path / "m.onnx", input_names=["input"],
                dynamic_axes={"input": {0: "batch"}})
    assert main(["inspect", str(p), "--json", "--batch", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = analyse(p, batch=2)
    assert doc["total"]["macs"] == expected.total_macs > 0
    assert doc["total"]["params"] == expected.total_params
    assert doc["total"]["flops"] == expected.total_flops and doc["total"]["param_bytes"] == 4 * expected.total_params
    assert doc["total"]["activation_bytes"] == sum(n.output_bytes for n in expected.nodes) > 0
    assert doc["outputs"][0]["shape"] == [2, 10] and doc["unknown_ops"] == []
    assert doc["inputs"][0]["shape"] == [2, 3, 8, 8]
    assert doc["source"]["format"] == "onnx" and doc["source"]["export"] is None
    assert [n["op_type"] for n in doc["nodes"]][:2] == ["Conv", "Relu"]

    assert main(["inspect", str(p), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "Total" in out and "MACs" in out and out.count("Conv") >= 2

    assert main(["inspect", str(tmp_path / "nope.onnx")]) == 2


def test_cli_inspect_factory_is_exported_and_checked(capsys):
    from edgeplan.cli.main import main

    assert main(["inspect", "edgeplan.compressor.archs:digits_cnn", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"]["format"] == "factory" and doc["source"]["export"]["matched"] is True
    assert doc["total"]["macs"] == 616064  # 1*16*64*9 + 16*32*64*9 + 32*64*16*9 + 256*64 + 64*10


# --------------------------------------------------------------------------- shapes: fallbacks, big files


def test_shapes_static_inference_cannot_resolve_come_from_one_ort_run():
    """BERT's ``position_ids[:, :seq_len]`` pattern: a Slice of a buffer up to a computed length."""
    m = _model(
        [
            helper.make_node("Shape", ["ids"], ["shp"]),
            helper.make_node("Gather", ["shp", "one"], ["seq"], axis=0),
            helper.make_node("Unsqueeze", ["seq", "zero_axis"], ["end"]),
            helper.make_node("Slice", ["buf", "zero_axis", "end", "one_axis"], ["pos"]),
            helper.make_node("Gather", ["table", "pos"], ["emb"], axis=0),
            helper.make_node("MatMul", ["emb", "w"], ["y"]),
        ],
        [("ids", TensorProto.INT64, ["b", "s"])], [("y", F, None)],
        [("one", np.array(1, np.int64)), ("zero_axis", np.array([0], np.int64)),
         ("one_axis", np.array([1], np.int64)), ("buf", np.arange(64, dtype=np.int64)[None, :]),
         ("table", _w(64, 8)), ("w", _w(8, 4))],
    )
    a = analyse(m, input_shapes={"ids": (1, 16)})
    assert a.tensors["pos"].shape == (1, 16) and a.tensors["pos"].exact
    assert _node(a, "MatMul").macs == 16 * 8 * 4
    assert any("ONNX Runtime run" in w for w in a.warnings)


def test_external_data_and_path_api_for_protos_over_2gb(tmp_path, monkeypatch):
    import edgeplan.planner.graph as graph_mod

    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", F, ["n", 64])], [("y", F, None)],
               [("w", _w(64, 512))])
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    assert (tmp_path / "ext.onnx").stat().st_size < 1000  # the weights really are outside
    a = analyse(tmp_path / "ext.onnx", batch=3)
    assert a.total_macs == 3 * 64 * 512 and a.total_params == 64 * 512 and a.total_param_bytes == 4 * 64 * 512
    monkeypatch.setattr(graph_mod, "_TWO_GB", 10)  # force the infer_shapes_path branch
    b = analyse(m, batch=3)
    assert (b.total_macs, b.total_params) == (a.total_macs, a.total_params)
    assert b.tensors["y"].shape == (3, 512)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "n"  # the caller's proto is untouched


def test_unsorted_graph_is_analysed_in_execution_order():
    m = _model(
        [helper.make_node("Relu", ["h"], ["y"], name="last"),
         helper.make_node("MatMul", ["x", "w"], ["h"], name="first")],  # file order is wrong
        [("x", F, [2, 8])], [("y", F, None)], [("w", _w(8, 4))],
    )
    a = analyse(m)
    assert [n.name for n in a.nodes] == ["first", "last"]
    assert a.nodes[0].macs == 2 * 4 * 8 and a.nodes[1].flops == 8 and a.tensors["y"].shape == (2, 4)


def test_lstm_and_gru_gate_matmuls(tmp_path):
    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 16)
            self.gru = nn.GRU(16, 4, bidirectional=True)

        def forward(self, x):
            return self.gru(self.lstm(x)[0])[0]

    a = analyse(_export(Rec(), (torch.randn(5, 2, 8),), tmp_path / "rec.onnx"))
    assert _node(a, "LSTM").macs == 5 * 2 * 4 * 16 * (8 + 16)  # seq*batch*gates*hidden*(input+hidden)
    assert _node(a, "GRU").macs == 5 * 2 * 2 * 3 * 4 * (16 + 4)  # bidirectional: x2
    assert not a.unknown_ops


def test_if_node_is_unknown_and_lists_its_outer_scope_inputs():
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F, [2, 3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, [2, 3])])
    m = _model(
        [helper.make_node("Relu", ["x0"], ["x"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
         helper.make_node("Sigmoid", ["y"], ["z"])],
        [("x0", F, [2, 3]), ("c", TensorProto.BOOL, [])], [("z", F, None)],
    )
    a = analyse(m)
    if_node = _node(a, "If")
    assert not if_node.known and a.unknown_ops == ("If",)
    assert if_node.inputs == ("c", "x")  # the branch bodies read x from the outer graph
    assert _node(a, "Sigmoid").known and _node(a, "Sigmoid").flops == 6
