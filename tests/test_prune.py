"""Structured pruning: ratios, round_to, overrides, hard cases, every intake format, files, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeplan.compressor.export import export_onnx
from edgeplan.compressor.intake import InputSpec, load_model, save_torchscript
from edgeplan.compressor.onnx_to_torch import onnx_to_module
from edgeplan.compressor.prune import (
    Override,
    PruneConfig,
    PruneReport,
    prune_model,
    prune_module,
    resolve_ratio,
)
from edgeplan.hardware_profiles.errors import CompressionError, ConfigError

SHAPE = (1, 3, 8, 8)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny convolutions on a shared 2-core box: measured 1.9 ms with 1 torch thread vs 10-30 ms with 2
    (threads spin against other processes). One thread keeps this file fast; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SmallCNN(nn.Module):
    example_input_shape = SHAPE

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.ReLU(),
        )
        self.head_conv = nn.Conv2d(64, 32, 1)
        self.hidden = nn.Linear(32, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.head_conv(self.features(x))).mean((2, 3))
        return self.fc(torch.relu(self.hidden(y)))


def small_cnn() -> nn.Module:
    """Factory used by the CLI tests (``tests.test_prune:small_cnn``)."""
    torch.manual_seed(0)
    return SmallCNN().eval()


class DenseBlock(nn.Module):
    """DenseNet-style: concat of earlier features, then BatchNorm over the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 16, 3, padding=1)
        self.c1 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        a = torch.relu(self.c0(x))
        b = torch.relu(self.c1(a))
        c = torch.relu(self.bn(torch.cat([a, b], 1)))
        return self.fc(self.c2(c).mean((2, 3)))


class SelfAttention(nn.Module):
    """Hand-written multi-head self-attention whose reshape hard-codes the head width (8)."""

    def __init__(self, heads_attr: str = "num_heads") -> None:
        super().__init__()
        setattr(self, heads_attr, 4)
        self._heads = 4
        self.q, self.k, self.v, self.out = (nn.Linear(32, 32) for _ in range(4))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (f(x).reshape(b, n, self._heads, 8).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1)
        return self.out((a @ v).transpose(1, 2).reshape(b, n, 32))


class Attention(nn.Module):
    """A transformer block: embedding, self-attention, LayerNorm, MLP, classifier."""

    def __init__(self, heads_attr: str = "num_heads") -> None:
        super().__init__()
        self.emb = nn.Linear(8, 32)
        self.attn = SelfAttention(heads_attr)
        self.ln = nn.LayerNorm(32)
        self.mlp = nn.Linear(32, 64)
        self.mlp2 = nn.Linear(64, 32)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.emb(x)
        x = self.ln(x + self.attn(x))
        x = x + self.mlp2(torch.relu(self.mlp(x)))
        return self.fc(x.mean(1))


def _x(shape=SHAPE, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _layers(result):
    return {l.name: l for l in result.layers}


# --------------------------------------------------------------------------------------------- core


def test_ratio_half_quarters_macs_and_keeps_output_shape():
    m = small_cnn()
    x = _x()
    before = m(x).detach().clone()
    r = prune_module(m, x, PruneConfig(ratio=0.5))
    # channel ratio 0.5 removes half the outputs *and* half the inputs of the next layer: ~1/4 of the MACs
    assert 0.15 < r.macs_after / r.macs_before < 0.45
    assert r.params_after < 0.5 * r.params_before
    assert r.module(x).shape == before.shape
    assert torch.equal(m(x), before)  # the input module is untouched
    assert all(p.requires_grad for p in r.module.parameters())  # ready for fine-tuning
    lay = _layers(r)
    assert lay["features.0"].out_after == 16 and lay["features.3"].out_after == 32
    assert r.attempts == 1 and not [s for s in r.skipped if s.kind == "failed"]


def test_round_to_8_gives_multiples_of_8():
    r = prune_module(small_cnn(), _x(), PruneConfig(ratio=0.3, round_to=8))
    pruned = [l for l in r.layers if l.out_after != l.out_before]
    assert pruned, "something must be pruned at ratio 0.3"
    assert _layers(r)["fc"].ratio_source == "skipped:output"
    for l in r.layers:
        if l.name != "fc":
            assert l.out_after % 8 == 0, l
    # 64 * 0.7 = 44.8 -> rounded down to a multiple of 8
    assert _layers(r)["features.3"].out_after in (40, 32)


def test_round_to_never_prunes_a_layer_to_nothing():
    """torch-pruning rounds the kept channels *down* to round_to: at ratio 0.8 with round_to 16 a 32- or
    64-channel layer would keep 0 and be skipped silently (digits-cnn pruned nothing). They keep 16."""
    r = prune_module(small_cnn(), _x(), PruneConfig(ratio=0.8, round_to=16))
    lay = _layers(r)
    assert r.params_after < 0.5 * r.params_before
    for name in ("features.0", "features.3", "features.6", "head_conv"):
        assert lay[name].out_after == 16, lay[name]
    torch.manual_seed(0)
    narrow = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    r = prune_module(narrow, _x(), PruneConfig(ratio=0.5, round_to=8))
    assert _layers(r)["0"].out_after == 8  # 8 channels: nothing to prune at round_to 8, and it says so
    assert any(s.kind == "round_to" and "0" in s.layers for s in r.skipped)
    assert _layers(r)["2"].out_after == 16


def test_classifier_is_never_pruned():
    r = prune_module(small_cnn(), _x(), PruneConfig(ratio=0.8, global_pruning=True))
    fc = _layers(r)["fc"]
    assert fc.out_before == fc.out_after == 10
    assert any(s.kind == "output" and "fc" in s.layers for s in r.skipped)
    assert r.module.fc.out_features == 10


def test_residual_into_output_layers_are_all_kept():
    class Seg(nn.Module):  # output = last conv + skip from the first conv: both fix the output width
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 16, 3, padding=1)
            self.c = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            y = self.a(x)
            return self.c(torch.relu(self.b(y))) + y

    r = prune_module(Seg().eval(), _x(), PruneConfig(ratio=0.5))
    out = next(s for s in r.skipped if s.kind == "output")
    assert set(out.layers) == {"a", "c"}
    assert _layers(r)["b"].out_after == 8
    assert r.module(_x()).shape == (1, 16, 8, 8)


def test_override_priority_resolution():
    cfg = PruneConfig(
        ratio=0.5,
        ignored_layers=("hidden",),
        overrides=(
            Override(kind="name", value="features.3", ratio=0.75),
            Override(kind="pattern", value=r"features\.", ratio=0.25),
            Override(kind="pattern", value=r"feat", ratio=0.9),  # a later pattern of the same kind loses
            Override(kind="op_type", value="Conv2d", ratio=0.125),
        ),
    )
    assert resolve_ratio("features.3", "Conv2d", cfg) == (0.75, "name:features.3")  # name beats pattern
    assert resolve_ratio("features.0", "Conv2d", cfg) == (0.25, r"pattern:features\.")  # pattern beats op type
    assert resolve_ratio("head_conv", "Conv2d", cfg) == (0.125, "op_type:Conv2d")  # op type beats global
    assert resolve_ratio("fc", "Linear", cfg) == (0.5, "global")
    assert resolve_ratio("hidden", "Linear", cfg) == (0.0, "ignored")  # ignore beats everything


def test_override_priority_is_applied_by_pruning():
    cfg = PruneConfig(
        ratio=0.5,
        overrides=(
            Override(kind="op_type", value="Conv2d", ratio=0.25),
            Override(kind="pattern", value=r"features\.", ratio=0.75),
            Override(kind="name", value="features.3", ratio=0.0),
        ),
    )
    lay = _layers(prune_module(small_cnn(), _x(), cfg))
    assert lay["features.0"].out_after == 8  # pattern 0.75 of 32
    assert lay["features.3"].out_after == 64  # exact name, ratio 0: not pruned
    assert lay["features.6"].out_after == 16  # pattern 0.75 of 64
    assert lay["head_conv"].out_after == 24  # op type 0.25 of 32
    assert lay["hidden"].out_after == 16  # global 0.5 of 32
    assert lay["features.3"].ratio_source == "name:features.3"


def test_unknown_ignored_layer_is_a_config_error():
    with pytest.raises(ConfigError, match="nope"):
        prune_module(small_cnn(), _x(), PruneConfig(ignored_layers=("nope",)))


@pytest.mark.parametrize("bad", [dict(ratio=0.95), dict(ratio=-0.1), dict(round_to=3),
                                 dict(overrides=[{"kind": "pattern", "value": "(", "ratio": 0.2}]),
                                 dict(importance="l1")])
def test_bad_settings_are_config_errors(bad):
    with pytest.raises(ConfigError):
        PruneConfig.build(**bad)


# --------------------------------------------------------------------------------------- hard cases


def test_densenet_concat_batchnorm_eager_prunes_correctly():
    m = DenseBlock().eval()
    x = _x()
    r = prune_module(m, x, PruneConfig(ratio=0.5))
    assert r.module(x).shape == (1, 10)
    lay = _layers(r)
    # either pruned consistently (the BatchNorm over the concat follows both branches) or skipped with a reason
    if lay["c0"].out_after < 16:
        assert r.module.bn.num_features == lay["c0"].out_after + lay["c1"].out_after
    else:
        assert any(s.kind == "failed" and "c0" in s.layers and s.reason for s in r.skipped)


def test_densenet_concat_batchnorm_through_onnx(tmp_path):
    x = _x()
    export_onnx(DenseBlock().eval(), (x,), tmp_path / "dense.onnx")
    converted = onnx_to_module(tmp_path / "dense.onnx")
    r = prune_module(converted, x, PruneConfig(ratio=0.5))
    assert r.module(x).shape == (1, 10)
    assert r.macs_after < r.macs_before
    # the legacy exporter's Identity nodes are folded so BatchNorm becomes nn.BatchNorm2d (prunable)
    assert any(isinstance(mod, nn.BatchNorm2d) for mod in converted.modules())


def test_attention_block_with_num_heads_is_skipped_with_reason():
    x = torch.randn(2, 6, 8)
    r = prune_module(Attention("num_heads").eval(), x, PruneConfig(ratio=0.5))
    attn = [s for s in r.skipped if s.kind == "attention"]
    assert attn and set(attn[0].layers) == {"attn.q", "attn.k", "attn.v", "attn.out"} and "heads" in attn[0].reason
    assert r.module(x).shape == (2, 5)
    assert _layers(r)["mlp"].out_after == 32  # the MLP is still pruned


def test_undetected_attention_is_retried_without_the_failing_group():
    x = torch.randn(2, 6, 8)
    r = prune_module(Attention("h").eval(), x, PruneConfig(ratio=0.5))  # no num_heads attribute: not detected
    failed = [s for s in r.skipped if s.kind == "failed"]
    assert failed and all("breaks the model" in s.reason for s in failed)
    assert r.attempts in (len(failed) + 1, len(failed) + 2)  # +1 when the first, end-checked run must locate it
    assert r.module(x).shape == (2, 5)
    assert torch.isfinite(r.module(x)).all()


def test_taylor_needs_data():
    with pytest.raises(ConfigError, match="data"):
        prune_module(small_cnn(), _x(), PruneConfig(importance="taylor"))


def test_taylor_with_labels_and_with_pseudo_labels():
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    cfg = PruneConfig(importance="taylor", ratio=0.5, taylor_samples=8)
    r = prune_module(small_cnn(), _x(), cfg, data=(x, y))
    assert r.taylor_target == "labels"
    assert 0.15 < r.macs_ratio < 0.45
    r2 = prune_module(small_cnn(), _x(), cfg, data=(x, None))
    assert r2.taylor_target.startswith("pseudo-labels")
    # different importance -> (almost surely) a different choice of channels than magnitude
    mag = prune_module(small_cnn(), _x(), PruneConfig(ratio=0.5))
    assert not torch.equal(mag.module.features[0].weight, r.module.features[0].weight)


def test_search_space_and_from_trial():
    import optuna

    space = {p.name: p for p in PruneConfig.search_space()}
    assert (space["ratio"].low, space["ratio"].high) == (0.0, 0.8)
    assert set(space["round_to"].choices) == {1, 8, 16}
    assert set(space["importance"].choices) == {"magnitude", "taylor"}
    trial = optuna.trial.FixedTrial({"prune.ratio": 0.3, "prune.round_to": 16, "prune.importance": "taylor"})
    cfg = PruneConfig.from_trial(trial, PruneConfig(ignored_layers=("fc",)))
    assert (cfg.ratio, cfg.round_to, cfg.importance, cfg.ignored_layers) == (0.3, 16, "taylor", ("fc",))
    trial = optuna.trial.FixedTrial({"prune.ratio": 0.3, "prune.round_to": 1})
    assert PruneConfig.from_trial(trial, has_data=False).importance == "magnitude"


# ------------------------------------------------------------------------------ formats and files


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _check_saved(outcome, x):
    ts = torch.jit.load(str(outcome.torchscript_path))
    with torch.no_grad():
        a = ts(x).numpy()
    b = _ort(outcome.onnx_path, x)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3)
    rep = PruneReport.model_validate_json(outcome.report_path.read_text())
    assert rep == outcome.report
    assert rep.macs_after < rep.macs_before
    # the TorchScript file carries its input shape: it loads back through intake without --input-shape
    back = load_model(outcome.torchscript_path)
    assert back.format == "torchscript" and back.inputs[0].shape == x.shape
    return rep


def test_prune_torchscript_file_through_onnx(tmp_path):
    m = small_cnn()
    save_torchscript(m, tmp_path / "model.pt", (InputSpec("input", SHAPE),))
    out = prune_model(tmp_path / "model.pt", tmp_path / "out", PruneConfig(ratio=0.5, round_to=8))
    rep = _check_saved(out, _x(seed=3))
    assert rep.route == "onnx2torch" and rep.source_format == "torchscript"
    assert rep.conversion_max_abs_diff is not None and rep.conversion_max_abs_diff < 1e-4
    assert 0.15 < rep.macs_after / rep.macs_before < 0.45
    assert all(l.out_after % 8 == 0 for l in rep.layers if l.ratio_source == "global")


def test_prune_onnx_file_keeps_input_names(tmp_path):
    m = small_cnn()
    export_onnx(m, (_x(),), tmp_path / "model.onnx", input_names=["pixels"])
    out = prune_model(tmp_path / "model.onnx", tmp_path / "out", PruneConfig(ratio=0.5), measure_latency=True,
                      latency_repeats=3)
    rep = _check_saved(out, _x(seed=4))
    assert rep.route == "onnx2torch"
    assert [i.name for i in onnx.load(str(out.onnx_path)).graph.input] == ["pixels"]
    assert rep.latency is not None and rep.latency.pruned_median_ms > 0 and rep.latency.repeats == 3


def test_prune_eager_factory(tmp_path):
    out = prune_model("tests.test_prune:small_cnn", tmp_path / "out", PruneConfig(ratio=0.25))
    rep = _check_saved(out, _x(seed=5))
    assert rep.route == "eager" and rep.conversion_max_abs_diff is None
    assert rep.latency is None and "not measured" in rep.latency_note


def test_onnx_to_module_refuses_a_mismatching_conversion(tmp_path, monkeypatch):
    export_onnx(small_cnn(), (_x(),), tmp_path / "model.onnx")
    converted = onnx_to_module(tmp_path / "model.onnx")
    assert converted.edgeplan_conversion_max_abs_diff < 1e-4

    from edgeplan.compressor._vendor import onnx2torch

    real = onnx2torch.convert

    def broken(model):  # a converter bug: one weight off by 0.1
        gm = real(model)
        next(p for p in gm.parameters()).data[0] += 0.1
        return gm

    monkeypatch.setattr(onnx2torch, "convert", broken)
    with pytest.raises(CompressionError, match="differs from ONNX Runtime by up to"):
        onnx_to_module(tmp_path / "model.onnx")


# --------------------------------------------------------------------------------------------- CLI


def test_cli_prune_json(tmp_path, capsys):
    from edgeplan.cli.main import main

    code = main(["prune", "tests.test_prune:small_cnn", "--ratio", "0.5", "--round-to", "8", "--ignore", "hidden",
                 "--override", "name:features.0=0.25", "--repeats", "3", "-o", str(tmp_path / "o"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert doc["macs_after"] < doc["macs_before"]
    assert "torch-pruning" in doc["counted_with"]
    assert doc["latency"]["pruned_median_ms"] > 0 and doc["latency"]["speedup"] > 0
    lay = {l["name"]: l for l in doc["layers"]}
    assert lay["hidden"]["out_after"] == 32 and lay["features.0"]["out_after"] == 24
    assert (tmp_path / "o" / "pruned.onnx").exists() and (tmp_path / "o" / "pruned.pt").exists()


def test_cli_prune_taylor_with_npz_data(tmp_path, capsys):
    from edgeplan.cli.main import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", inputs=rng.standard_normal((8, 3, 8, 8)).astype(np.float32),
             labels=rng.integers(0, 10, 8))
    code = main(["prune", "tests.test_prune:small_cnn", "--importance", "taylor", "--data", str(tmp_path / "d.npz"),
                 "--no-latency", "-o", str(tmp_path / "o"), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["taylor_target"] == "labels" and doc["config"]["importance"] == "taylor"
    assert doc["latency"] is None


def test_cli_prune_table(tmp_path, capsys):
    from edgeplan.cli.main import main

    code = main(["prune", "tests.test_prune:small_cnn", "--ratio", "0.5", "--no-latency", "-o", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0
    assert "MACs" in out and "torch-pruning" in out and "Left unpruned" in out


@pytest.mark.parametrize("args", [["--ratio", "1.5"], ["--ratio", "-0.2"], ["--round-to", "5"],
                                  ["--importance", "taylor"], ["--override", "bogus"]])
def test_cli_bad_settings_exit_2(tmp_path, capsys, args):
    from edgeplan.cli.main import main

    code = main(["prune", "tests.test_prune:small_cnn", *args, "-o", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeplan: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "pruned.onnx").exists()


def test_onnx_to_module_handles_opset_18_graphs():
    """Opset-18 forms the dynamo exporter writes: ReduceMean with axes as an input, Reshape allowzero=1,
    Linear on 3-D input as MatMul + Add (rebuilt as nn.Linear so it can be pruned and counted)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 6)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "B")
    shape = numpy_helper.from_array(np.array([1, 4, 2, 3], dtype=np.int64), "S")
    axes = numpy_helper.from_array(np.array([3], dtype=np.int64), "A")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["a"]),
         helper.make_node("Reshape", ["a", "S"], ["r"], allowzero=1),
         helper.make_node("ReduceMean", ["r", "A"], ["Y"], keepdims=0)],
        "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 2])], [w, b, shape, axes])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    module = onnx_to_module(model)
    assert module.edgeplan_conversion_max_abs_diff < 1e-5
    assert [type(m).__name__ for m in module.modules()].count("Linear") == 1


@pytest.mark.slow
def test_prune_torch_export_pt2(tmp_path):
    """.pt2 goes through the dynamo exporter (opset 18) and onnx2torch; ~20 s on a loaded 2-core box."""
    torch.export.save(torch.export.export(small_cnn(), (_x(),)), tmp_path / "model.pt2")
    out = prune_model(tmp_path / "model.pt2", tmp_path / "out", PruneConfig(ratio=0.5))
    rep = _check_saved(out, _x(seed=6))
    assert rep.source_format == "export" and rep.route == "onnx2torch"
    assert 0.15 < rep.macs_after / rep.macs_before < 0.45
