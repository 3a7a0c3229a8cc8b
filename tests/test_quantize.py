"""Quantization: real ONNX Runtime quantization of tiny models, real files; timings injected where the
test is about the decision logic rather than about this machine's speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeplan.compressor.export import export_onnx
from edgeplan.compressor.ort_timing import TimingResult
from edgeplan.compressor.quantize import (
    QUANTIZED_NAME,
    REPORT_NAME,
    QuantizeConfig,
    judge_speed,
    quantize_model,
    quantize_onnx,
)
from edgeplan.compressor.quantize_ort import convert_fp16, count_op_types, speed_groups
from edgeplan.hardware_profiles.errors import ConfigError, InputError

FAST = dict(timing_repeats=3, timing_warmup=1)


class TinyCNN(nn.Module):
    """Conv, depthwise conv, squeeze-excitation gate and a Concat: every speed group is present."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.se1 = nn.Conv2d(32, 8, 1)
        self.se2 = nn.Conv2d(8, 32, 1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.c2(x))
        x = x * torch.sigmoid(self.se2(torch.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        x = torch.cat([x[:, :16], x[:, 16:]], 1)
        return self.fc(nn.functional.max_pool2d(x, 2).flatten(1))


class TinyAttention(nn.Module):
    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, d))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        a = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 5.66, -1) @ self.v(x)
        x = x + self.o(a)
        x = x + self.ff(x)
        return self.head(x.mean(1))


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    export_onnx(TinyCNN().eval(), (torch.randn(1, 1, 8, 8),), p)
    return p


@pytest.fixture(scope="module")
def att_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("att") / "att.onnx"
    export_onnx(TinyAttention().eval(), (torch.randn(1, 8, 32),), p)
    return p


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _fake_timer(ms_by_index):
    """A stand-in for ort_timing.time_side_by_side returning fixed medians (index 0 is fp32)."""

    def timer(paths, feeds, *, repeats=30, warmup=3, threads=None):
        return [TimingResult(Path(p), (ms_by_index(i, len(paths)),) * 3) for i, p in enumerate(paths)]

    return timer


# ------------------------------------------------------------------------------------- static int8


def test_static_int8_is_qdq_runs_and_synthetic_calibration_is_labelled(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    r = quantize_onnx(cnn_onnx, out, QuantizeConfig(max_accuracy_drop_pts=100.0, speed_search=False, **FAST))
    ops = count_op_types(out)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    assert _run(out, x).shape == (1, 10)
    assert r.calibration_source is not None and r.calibration_source.startswith("synthetic:")
    assert r.synthetic_data is True
    assert any("SYNTHETIC" in n for n in r.notes)
    assert r.metric == "top1_agreement" and r.quality_fp32_pct == 100.0
    assert r.excluded_nodes == ()
    assert [v.name for v in r.variants] == ["fp32", "int8"]
    assert r.latency_fp32_ms > 0 and r.latency_quantized_ms > 0
    assert r.speedup == pytest.approx(r.latency_fp32_ms / r.latency_quantized_ms)
    assert r.slower_than_fp32 == (r.latency_quantized_ms > r.latency_fp32_ms)
    assert "interleaved" in r.timing_method and ort.__version__ in r.timing_method


def test_user_data_with_labels_measures_accuracy(cnn_onnx, tmp_path):
    x = np.random.default_rng(2).standard_normal((40, 1, 8, 8)).astype(np.float32)
    labels = np.argmax(_run(cnn_onnx, x), axis=1)  # the fp32 model is 100% "accurate" on these
    labels[:4] = (labels[:4] + 1) % 10  # ... except four, so accuracy is a real number, not agreement
    data = tmp_path / "d.npz"
    np.savez(data, inputs=x, labels=labels)
    r = quantize_onnx(cnn_onnx, tmp_path / "q.onnx", QuantizeConfig(calibration_samples=16, max_accuracy_drop_pts=100.0,
                                                                  speed_search=False, **FAST), data=data)
    assert r.metric == "accuracy"
    assert r.quality_fp32_pct == pytest.approx(90.0)
    assert r.calibration_source == str(data) and r.calibration_samples == 16 and not r.synthetic_data
    assert r.eval_samples == 40


def test_synthetic_calibration_evaluated_on_real_labels(cnn_onnx, tmp_path):
    x = np.random.default_rng(5).standard_normal((24, 1, 8, 8)).astype(np.float32)
    ev = tmp_path / "eval.npz"
    np.savez(ev, inputs=x, labels=np.argmax(_run(cnn_onnx, x), axis=1))
    r = quantize_onnx(cnn_onnx, tmp_path / "q.onnx", QuantizeConfig(max_accuracy_drop_pts=100.0, speed_search=False, **FAST),
                      eval_data=ev)
    assert r.calibration_source.startswith("synthetic:") and r.eval_source == str(ev)
    assert r.metric == "accuracy" and r.quality_fp32_pct == 100.0 and r.eval_samples == 24
    assert any(n.startswith("calibration used SYNTHETIC") for n in r.notes)


def test_accuracy_fallback_with_zero_budget_keeps_layers_in_fp32(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    r = quantize_onnx(cnn_onnx, out, QuantizeConfig(max_accuracy_drop_pts=0.0, speed_search=False, **FAST))
    acc = [e for e in r.excluded_nodes if e.reason == "accuracy"]
    assert acc, "a zero budget on this model must exclude layers (naive int8 loses ~20 pts agreement)"
    assert r.within_budget and r.quality_drop_pts <= 0.0
    # Excluded layers with weights really are fp32 in the file: their weight is a float initializer, not
    # a DequantizeLinear output. (An excluded node may still read a DQ output: the Q/DQ pair on its input
    # belongs to the quantized node that produced that tensor.)
    m = onnx.load(str(out))
    float_inits = {t.name for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    by_name = {n.name: n for n in m.graph.node}
    assert all(e.name in by_name for e in acc)
    weighted = [e for e in acc if e.op_type in ("Conv", "Gemm", "MatMul")]
    assert weighted
    for e in weighted:
        assert by_name[e.name].input[1] in float_inits, e.name


def test_user_excluded_op_type_is_reported(cnn_onnx, tmp_path):
    r = quantize_onnx(cnn_onnx, tmp_path / "q.onnx", QuantizeConfig(exclude_op_types=("Gemm",), max_accuracy_drop_pts=100.0,
                                                                  speed_search=False, **FAST))
    assert [(e.op_type, e.reason) for e in r.excluded_nodes] == [("Gemm", "user")]


# ------------------------------------------------------------------------------- speed decisions


def test_judge_speed_says_slower_plainly():
    speedup, slower, msg = judge_speed(1.0, 2.0)
    assert slower and speedup == pytest.approx(0.5) and msg.startswith("SLOWER than fp32") and "noise" not in msg
    speedup, slower, msg = judge_speed(1.0, 1.01)  # slower by a hair: still flagged, noise said
    assert slower and msg.startswith("SLOWER than fp32") and "within timer noise" in msg
    speedup, slower, msg = judge_speed(1.0, 0.99)
    assert not slower and "within timer noise" in msg
    speedup, slower, msg = judge_speed(2.0, 1.0)
    assert not slower and msg.startswith("2.00x faster")


def test_slower_result_is_flagged_with_injected_timings(cnn_onnx, tmp_path):
    timer = _fake_timer(lambda i, n: 1.0 if i == 0 else 2.0)
    r = quantize_onnx(cnn_onnx, tmp_path / "q.onnx", QuantizeConfig(max_accuracy_drop_pts=100.0, speed_search=False),
                      timer=timer)
    assert r.slower_than_fp32 is True
    assert r.speedup == pytest.approx(0.5)
    assert "SLOWER than fp32" in r.message and "faster" not in r.message


def test_speed_groups_found_and_fastest_variant_kept(cnn_onnx, tmp_path):
    from edgeplan.compressor.quantize_ort import preprocess

    pre = tmp_path / "pre.onnx"
    preprocess(cnn_onnx, pre)
    groups = speed_groups(pre)
    assert len(groups["depthwise"]) == 1 and len(groups["concat"]) == 1
    assert any(n for n in groups["squeeze_excitation"] if "Mul" in n)
    # fp32 1 ms, naive int8 3 ms, every speed variant 2 ms except the last (all groups in fp32): 0.5 ms.
    timer = _fake_timer(lambda i, n: 1.0 if i == 0 else 3.0 if i == 1 else 0.5 if i == n - 1 else 2.0)
    r = quantize_onnx(cnn_onnx, tmp_path / "q.onnx", QuantizeConfig(max_accuracy_drop_pts=100.0), timer=timer)
    chosen = [v for v in r.variants if v.chosen]
    assert len(chosen) == 1 and set(chosen[0].fp32_groups) == {"depthwise", "squeeze_excitation", "concat"}
    assert not r.slower_than_fp32 and r.speedup == pytest.approx(2.0)
    assert {e.reason for e in r.excluded_nodes} == {"speed: kept depthwise+squeeze_excitation+concat in fp32"}
    assert any(e.name == groups["depthwise"][0] for e in r.excluded_nodes)


# ---------------------------------------------------------------------------------- dynamic, fp16


def test_dynamic_int8_on_attention_mlp(att_onnx, tmp_path):
    out = tmp_path / "dyn.onnx"
    r = quantize_onnx(att_onnx, out, QuantizeConfig(mode="int8-dynamic", max_accuracy_drop_pts=100.0, **FAST))
    ops = count_op_types(out)
    assert ops.get("MatMulInteger", 0) >= 4 and ops.get("DynamicQuantizeLinear", 0) >= 1
    assert r.calibration_source is None and r.mode == "int8-dynamic"
    x = np.random.default_rng(3).standard_normal((1, 8, 32)).astype(np.float32)
    ref, got = _run(att_onnx, x).ravel(), _run(out, x).ravel()
    # Dynamic int8 of this random-weight model has cosine ~0.95 with fp32 (small logits, per-tensor
    # activation ranges); the bound says "still the same function", not "lossless".
    assert float(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.8


def test_fp16_has_half_initializers_and_close_outputs(cnn_onnx, tmp_path):
    out = tmp_path / "h.onnx"
    r = quantize_onnx(cnn_onnx, out, QuantizeConfig(mode="fp16", **FAST))
    m = onnx.load(str(out))
    floats = [t for t in m.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert floats and all(t.data_type == onnx.TensorProto.FLOAT16 for t in floats)
    x = np.random.default_rng(4).standard_normal((2, 1, 8, 8)).astype(np.float32)
    ref, got = _run(cnn_onnx, x), _run(out, x)  # float32 in and out (keep_io_types)
    assert got.dtype == np.float32
    assert np.allclose(got, ref, atol=1e-2 * np.abs(ref).max() + 1e-3)
    assert any("GPU" in n for n in r.notes) and r.calibration_source is None


def test_fp16_keeps_resize_scales_float32(tmp_path):
    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return nn.functional.interpolate(torch.relu(self.c(x)), scale_factor=2, mode="bilinear")

    torch.manual_seed(0)
    m, x = Up().eval(), torch.randn(1, 3, 8, 8)
    src, out = tmp_path / "up.onnx", tmp_path / "up16.onnx"
    export_onnx(m, (x,), src)
    assert "Resize" in count_op_types(src)
    convert_fp16(src, out)
    y = _run(out, x.numpy())  # Resize's scales must stay float32 or ORT refuses the model
    assert y.dtype == np.float32 and np.abs(y - m(x).detach().numpy()).max() < 1e-2


def test_fp16_without_keep_io_types_has_half_io(cnn_onnx, tmp_path):
    out = tmp_path / "h.onnx"
    convert_fp16(cnn_onnx, out, keep_io_types=False)
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert s.get_inputs()[0].type == "tensor(float16)"
    y = s.run(None, {s.get_inputs()[0].name: np.zeros((1, 1, 8, 8), np.float16)})[0]
    assert y.dtype == np.float16 and y.shape == (1, 10)


# ------------------------------------------------------------------------------ config, model, CLI


def test_config_search_space_and_validation():
    space = {p.name: p for p in QuantizeConfig.search_space()}
    assert set(space["mode"].choices) == {"none", "int8", "int8-dynamic"}
    assert QuantizeConfig.from_params({"mode": "none"}) is None
    assert QuantizeConfig.from_params({"mode": "int8", "per_channel": False}).per_channel is False
    with pytest.raises(ConfigError):
        QuantizeConfig.from_params({"mode": "int8", "bogus": 1})
    with pytest.raises(Exception):
        QuantizeConfig(mode="int4")


def test_quantize_model_writes_onnx_and_report(cnn_onnx, tmp_path):
    r = quantize_model(cnn_onnx, tmp_path / "out", QuantizeConfig(max_accuracy_drop_pts=100.0, speed_search=False, **FAST))
    assert (tmp_path / "out" / QUANTIZED_NAME).exists()
    doc = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert doc["out_path"] == r.out_path and doc["mode"] == "int8" and doc["synthetic_data"] is True
    assert doc["latency_fp32_ms"] > 0 and isinstance(doc["variants"], list)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temp files


def test_cli_json_and_text(cnn_onnx, tmp_path, capsys):
    from edgeplan.cli.main import main

    code = main(["quantize", str(cnn_onnx), "-o", str(tmp_path / "o"), "--repeats", "3", "--no-speed-search",
                 "--max-accuracy-drop", "100", "--json"])
    cap = capsys.readouterr()
    assert code == 0
    doc = json.loads(cap.out)
    assert doc["calibration_source"].startswith("synthetic:") and doc["mode"] == "int8"
    code = main(["quantize", str(cnn_onnx), "-o", str(tmp_path / "o2"), "--repeats", "3", "--no-speed-search",
                 "--max-accuracy-drop", "100"])
    text = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC" in text and "Calibration: SYNTHETIC synthetic:" in text and "fp32" in text
    assert "measured here: ONNX Runtime" in text


def test_two_input_model_calibrates_on_synthetic_data(tmp_path):
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(16, 8), nn.Linear(4, 8)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    torch.manual_seed(0)
    src = tmp_path / "two.onnx"
    export_onnx(Two().eval(), (torch.randn(1, 16), torch.randn(1, 4)), src)
    r = quantize_onnx(src, tmp_path / "q.onnx", QuantizeConfig(max_accuracy_drop_pts=100.0, speed_search=False, **FAST))
    assert r.synthetic_data and count_op_types(tmp_path / "q.onnx").get("QuantizeLinear", 0) > 0
    assert r.metric == "top1_agreement"


def test_cli_data_of_wrong_shape_exits_2(cnn_onnx, tmp_path, capsys):
    from edgeplan.cli.main import main

    data = tmp_path / "bad.npz"
    np.savez(data, inputs=np.zeros((4, 3, 8, 8), np.float32))
    assert main(["quantize", str(cnn_onnx), "-o", str(tmp_path / "o"), "--data", str(data)]) == 2
    assert "expects (1, 8, 8)" in capsys.readouterr().err


def test_cli_bad_mode_exits_2(cnn_onnx, tmp_path, capsys):
    from edgeplan.cli.main import main

    assert main(["quantize", str(cnn_onnx), "-o", str(tmp_path / "o"), "--mode", "int4"]) == 2
    assert "mode" in capsys.readouterr().err


def test_bn_statistics_synthetic_data_matches_batchnorm_stats():
    from edgeplan.compressor.quantize_synth import bn_statistics_data

    torch.manual_seed(0)
    # BatchNorm first, so its statistics are reachable exactly: the inputs must end with channel means
    # (2, -1) and standard deviations (0.5, 3), far from the normal(0, 1) start.
    m = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3)).eval()
    m[0].running_mean.copy_(torch.tensor([2.0, -1.0]))
    m[0].running_var.copy_(torch.tensor([0.25, 9.0]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra OpenMP threads only add contention on a busy machine
    try:
        ds = bn_statistics_data(m, (2, 4, 4), 16, steps=200, lr=0.1)
    finally:
        torch.set_num_threads(threads)
    assert ds.synthetic and ds.source.startswith("synthetic:bn-statistics") and ds.inputs.shape == (16, 2, 4, 4)
    mean, std = ds.inputs.mean(axis=(0, 2, 3)), ds.inputs.std(axis=(0, 2, 3))
    assert np.allclose(mean, [2.0, -1.0], atol=0.3) and np.allclose(std, [0.5, 3.0], atol=0.5), (mean, std)
    assert all(p.requires_grad for p in m.parameters())  # weights handed back trainable, as they came


def test_quantize_model_with_bn_stats_calibration(tmp_path):
    cfg = QuantizeConfig(synthetic="bn-stats", synthetic_steps=5, calibration_samples=8, eval_samples=8,
                         max_accuracy_drop_pts=100.0, speed_search=False, threads=1, **FAST)
    r = quantize_model("edgeplan.compressor.archs:digits_cnn", tmp_path / "o", cfg)
    assert r.calibration_source.startswith("synthetic:bn-statistics") and r.synthetic_data
    assert count_op_types(tmp_path / "o" / QUANTIZED_NAME).get("QuantizeLinear", 0) > 0


def test_bn_stats_refuses_onnx_models(cnn_onnx, tmp_path):
    with pytest.raises(ConfigError):
        quantize_model(cnn_onnx, tmp_path / "o", QuantizeConfig(synthetic="bn-stats"))


# ------------------------------------------------------------------------------------------ INC


def test_inc_refuses_non_eager_models(cnn_onnx, tmp_path, capsys):
    from edgeplan.cli.main import main

    assert main(["quantize", str(cnn_onnx), "-o", str(tmp_path / "o"), "--backend", "inc"]) == 2
    assert "eager" in capsys.readouterr().err


@pytest.mark.slow  # importing INC + torchao and tracing take ~16 s here unloaded, 50 s on a busy machine
def test_inc_pt2e_converts_a_tiny_module():
    from edgeplan.compressor.quantize_inc import inc_quantize_module

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    x = torch.randn(1, 1, 8, 8)
    qm = inc_quantize_module(m, (x,), [(torch.randn(1, 1, 8, 8),) for _ in range(8)])
    text = str(qm.graph)
    assert "quantize_per" in text  # Q/DQ ops are in the converted graph
    with torch.no_grad():
        ref, got = m(x), qm(x)
    assert got.shape == ref.shape
    assert torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0).item() > 0.9


@pytest.mark.slow
def test_inc_backend_end_to_end(tmp_path):
    r = quantize_model("edgeplan.compressor.archs:digits_cnn", tmp_path / "inc",
                       QuantizeConfig(backend="inc", max_accuracy_drop_pts=100.0, speed_search=False, timing_repeats=5,
                                      threads=1))
    assert r.backend == "inc" and Path(r.out_path).exists() and Path(r.out_path).suffix == ".pt2"
    names = [v.name for v in r.variants]
    assert names == ["fp32 torch.compile", "int8 INC PT2E torch.compile", "fp32 ONNX Runtime", "int8 ONNX Runtime QDQ"]
    assert all(v.median_ms > 0 for v in r.variants)
    loaded = torch.export.load(r.out_path).module()
    assert loaded(torch.randn(1, 1, 8, 8)).shape == (1, 10)
    assert (tmp_path / "inc" / REPORT_NAME).exists()


def test_quantize_onnx_rejects_inc_backend(cnn_onnx, tmp_path):
    with pytest.raises(InputError):
        quantize_onnx(cnn_onnx, tmp_path / "q.onnx", QuantizeConfig(backend="inc"))
