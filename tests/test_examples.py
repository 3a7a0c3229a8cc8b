"""Example architectures (compressor/archs.py), example folders (compressor/examples.py), `edgeplan example`.

Fast tests build every architecture once (module-scoped cache), train digits-cnn once (module-scoped
fixture, a few seconds) and check every file it writes in real ONNX Runtime / TorchScript. Training
digits-resnet takes about a minute and is marked slow.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeplan.cli.main import main
from edgeplan.compressor import archs
from edgeplan.compressor.archs import EXAMPLES, example_input
from edgeplan.compressor.data import load_data
from edgeplan.compressor.examples import ExampleManifest, load_digits_split, make_example
from edgeplan.hardware_profiles.errors import InputError

OUTPUT_SHAPES = {
    "digits-cnn": (1, 10),
    "digits-resnet": (1, 10),
    "resnet18": (1, 1000),
    "mobilenetv2": (1, 1000),
    "transformer": (1, 10),
    "dcgan": (1, 3, 64, 64),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The test machine is shared: with 2 torch threads under load, small ops wait on each other."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@lru_cache(maxsize=None)
def _built(name: str) -> torch.nn.Module:
    return EXAMPLES[name].factory()


def _sess(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_names_and_specs():
    assert list(EXAMPLES) == ["digits-cnn", "digits-resnet", "resnet18", "mobilenetv2", "transformer", "dcgan"]
    from edgeplan.cli.cmd_example import EXAMPLE_NAMES_FOR_HELP

    assert tuple(EXAMPLES) == EXAMPLE_NAMES_FOR_HELP
    for spec in EXAMPLES.values():
        mod, fn = spec.factory_spec.split(":")
        assert mod == "edgeplan.compressor.archs" and getattr(archs, fn) is spec.factory
        assert spec.input_shape[0] == 1 and spec.input_dtype in ("float32", "int64")
    assert [s.name for s in EXAMPLES.values() if s.trained] == ["digits-cnn", "digits-resnet"]


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_architecture_forward_at_its_input_shape(name):
    spec = EXAMPLES[name]
    m = _built(name)
    assert not m.training
    assert m.example_input_shape == spec.input_shape and m.example_input_dtype == spec.input_dtype
    x = example_input(spec)
    assert tuple(x.shape) == spec.input_shape and str(x.dtype) == f"torch.{spec.input_dtype}"
    with torch.no_grad():
        y = m(x)
    assert tuple(y.shape) == OUTPUT_SHAPES[name]
    assert torch.isfinite(y).all()
    # Calibrated BatchNorm / sane init: outputs neither vanish nor explode (uncalibrated MobileNetV2: std 1e-9).
    assert 1e-3 < float(y.std()) < 10.0


def test_factories_are_deterministic_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = archs.digits_resnet(), archs.digits_resnet()
    assert torch.equal(torch.get_rng_state(), before)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    c = archs.digits_resnet(seed=1)
    assert not torch.equal(a.fc.weight, c.fc.weight)


@pytest.mark.parametrize(
    "name,expected",
    [("resnet18", 11_689_512), ("mobilenetv2", 3_504_872), ("transformer", 3_450_890), ("dcgan", 3_576_704)],
)
def test_parameter_counts_match_reference_topologies(name, expected):
    # resnet18 / mobilenetv2: exactly torchvision's counts at 1000 classes.
    assert _n_params(_built(name)) == expected


def test_mac_counts_with_torch_pruning():
    tp = pytest.importorskip("torch_pruning")
    macs, _ = tp.utils.count_ops_and_params(_built("resnet18"), example_input(EXAMPLES["resnet18"]))
    assert 1.80e9 < macs < 1.84e9
    macs, _ = tp.utils.count_ops_and_params(_built("mobilenetv2"), example_input(EXAMPLES["mobilenetv2"]))
    assert 0.29e9 < macs < 0.33e9


def test_transformer_exports_plain_matmul_softmax(tmp_path):
    m = _built("transformer")
    x = example_input(EXAMPLES["transformer"])
    path = tmp_path / "t.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation warning
        torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"], output_names=["output"])
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Softmax") == 4  # one per encoder layer
    assert {"MatMul", "Transpose", "Gather"} <= set(ops)
    assert not any("Attention" in op for op in ops)


def test_digits_split_is_stratified_and_scaled():
    x_tr, y_tr, x_ev, y_ev = load_digits_split(size=8, seed=0)
    assert x_tr.shape == (1437, 1, 8, 8) and x_ev.shape == (360, 1, 8, 8)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0
    # stratified: every class is 9.5-10.5% of the eval split
    frac = np.bincount(y_ev, minlength=10) / len(y_ev)
    assert frac.min() > 0.09 and frac.max() < 0.11
    x32 = load_digits_split(size=32, seed=0)[0]
    assert x32.shape == (1437, 1, 32, 32)


@pytest.fixture(scope="module")
def digits_cnn_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_cnn")
    messages: list[str] = []
    result = make_example("digits-cnn", out, seed=0, progress=messages.append)
    return out, result, messages


def test_make_example_digits_cnn_trains_and_writes_everything(digits_cnn_dir):
    out, result, messages = digits_cnn_dir
    assert result.eval_accuracy is not None and result.eval_accuracy >= 0.9
    assert any("epoch" in m for m in messages)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["eval.npz", "example.json", "model.onnx", "model.pt", "train.npz"]
    manifest = ExampleManifest.model_validate(json.loads((out / "example.json").read_text()))
    assert manifest.eval_accuracy == result.eval_accuracy and manifest.trained
    assert manifest.train_threads == 1 and manifest.epochs == 10 and manifest.n_eval == 360
    assert manifest.factory == "edgeplan.compressor.archs:digits_cnn" and manifest.input_shape == [1, 1, 8, 8]
    ev = load_data(out / "eval.npz")
    tr = load_data(out / "train.npz")
    assert ev.inputs.shape == (360, 1, 8, 8) and ev.labels is not None and ev.labels.dtype == np.int64
    assert len(tr) == 1437 and tr.inputs.dtype == np.float32


def test_example_eval_accuracy_is_reproducible_from_the_files(digits_cnn_dir):
    out, result, _ = digits_cnn_dir
    ev = load_data(out / "eval.npz")
    sess = _sess(out / "model.onnx")
    logits = sess.run(["output"], {"input": ev.inputs})[0]
    ort_acc = float((logits.argmax(1) == ev.labels).mean())
    assert abs(ort_acc - result.eval_accuracy) <= 1 / len(ev)  # at most one borderline image flips


def test_example_model_pt_loads_through_intake_without_trust(digits_cnn_dir):
    from edgeplan.compressor.intake import load_model

    out, _, _ = digits_cnn_dir
    loaded = load_model(str(out / "model.pt"))  # no trust_model, no input_shape: the archive carries it
    assert loaded.format == "torchscript"
    assert [(i.name, i.shape, i.dtype) for i in loaded.inputs] == [("input", (1, 1, 8, 8), "float32")]


def test_example_torchscript_and_onnx_match(digits_cnn_dir):
    out, _, _ = digits_cnn_dir
    ev = load_data(out / "eval.npz")
    ts = torch.jit.load(str(out / "model.pt"))
    x = torch.from_numpy(ev.inputs[:16])
    with torch.no_grad():
        ref = ts(x).numpy()
        ref1 = ts(x[:1]).numpy()
    assert ref.shape == (16, 10) and np.allclose(ref1, ref[:1], atol=1e-5)
    model = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    sess = _sess(out / "model.onnx")
    got = sess.run(["output"], {"input": ev.inputs[:16]})[0]
    assert np.abs(got - ref).max() < 1e-4


def test_make_example_untrained_transformer_writes_sample(tmp_path):
    r = make_example("transformer", tmp_path / "t")
    assert r.eval_accuracy is None and r.epochs is None
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["example.json", "model.onnx", "model.pt", "sample.npz"]
    with np.load(tmp_path / "t" / "sample.npz") as z:
        assert list(z.keys()) == ["inputs"]
        ids = z["inputs"]
    assert ids.shape == (8, 128) and ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 1000
    sess = _sess(r.model_onnx)
    got = sess.run(["output"], {"input": ids[:3]})[0]  # dynamic batch other than the exported 1
    with torch.no_grad():
        ref = torch.jit.load(str(r.model_pt))(torch.from_numpy(ids[:3])).numpy()
    assert got.shape == (3, 10) and np.abs(got - ref).max() < 1e-4
    manifest = json.loads((tmp_path / "t" / "example.json").read_text())
    assert manifest["eval_accuracy"] is None and manifest["input_dtype"] == "int64"


@pytest.mark.parametrize("name", [pytest.param("resnet18", marks=pytest.mark.slow), "mobilenetv2"])
def test_make_example_image_models_export_and_match(tmp_path, name):
    r = make_example(name, tmp_path / name)
    assert r.onnx_max_abs_diff < 1e-4
    x = load_data(tmp_path / name / "sample.npz").inputs
    assert x.shape == (8, 3, 224, 224) and x.dtype == np.float32
    got = _sess(r.model_onnx).run(["output"], {"input": x[:2]})[0]
    with torch.no_grad():
        ref = _built(name)(torch.from_numpy(x[:2])).numpy()  # same seed 0 weights as the file
    assert got.shape == (2, 1000) and np.abs(got - ref).max() < 1e-4


def test_make_example_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(InputError, match="digits-cnn.*dcgan"):
        make_example("resnet50", tmp_path)
    with pytest.raises(InputError):
        make_example("resnet18", tmp_path, epochs=3)  # untrained examples take no epochs


def test_cli_example_json(tmp_path, capsys):
    code = main(["example", "digits-cnn", "-o", str(tmp_path / "ex"), "--epochs", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    doc = json.loads(captured.out)
    assert doc["name"] == "digits-cnn" and doc["epochs"] == 1
    assert 0.0 <= doc["eval_accuracy"] <= 1.0 and doc["onnx_max_abs_diff"] < 1e-4
    assert (tmp_path / "ex" / "model.onnx").is_file() and (tmp_path / "ex" / "model.pt").is_file()


def test_cli_example_text_output(tmp_path, capsys):
    code = main(["example", "dcgan", "-o", str(tmp_path / "g")])
    out = capsys.readouterr().out
    assert code == 0
    assert "model.onnx" in out and "random weights" in out
    with np.load(tmp_path / "g" / "sample.npz") as z:
        assert z["inputs"].shape == (8, 100, 1, 1)


def test_cli_example_list_and_errors(tmp_path, capsys):
    assert main(["example", "--list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in doc["examples"]] == list(EXAMPLES)
    assert main(["example", "--list"]) == 0
    assert "digits-resnet" in capsys.readouterr().out
    assert main(["example", "nope", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown example 'nope'" in err and "mobilenetv2" in err
    assert not (tmp_path / "x").exists()
    assert main(["example", "digits-cnn"]) == 2  # no -o
    assert main(["example", "--help"]) == 0
    assert "edgeplan example digits-cnn -o ex" in capsys.readouterr().out


@pytest.mark.slow
def test_make_example_digits_resnet_full_training(tmp_path):
    r = make_example("digits-resnet", tmp_path / "r")
    assert r.eval_accuracy is not None and r.eval_accuracy >= 0.97
    ev = load_data(tmp_path / "r" / "eval.npz")
    assert ev.inputs.shape == (360, 1, 32, 32)
