"""Model intake: every format, content-based detection, trust, shapes, and bad files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from edgeplan.compressor.intake import InputSpec, detect_format, load_model, parse_input_shape
from edgeplan.hardware_profiles.errors import InputShapeError, ModelLoadError, UntrustedModelError
from tests.conftest import tiny_net

FACTORY = "tests.conftest:tiny_net"


def _out(loaded):
    x = loaded.example_inputs()
    with torch.no_grad():
        return loaded.module(*x).numpy()


@pytest.mark.parametrize(
    "name,fmt",
    [("pickled.pt", "pickle"), ("script.pt", "torchscript"), ("prog.pt2", "export"), ("model.onnx", "onnx")],
)
def test_detects_format_from_content(model_files, tmp_path, name, fmt):
    assert detect_format(model_files / name) == fmt
    renamed = tmp_path / "model.bin"  # the suffix is not what decides
    shutil.copy(model_files / name, renamed)
    assert detect_format(renamed) == fmt


def test_factory_spec_is_detected():
    assert detect_format(FACTORY) == "factory"


def test_every_format_loads_with_the_same_outputs(model_files):
    ref = tiny_net()(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))).detach().numpy()
    outs = {
        "pickle": _out(load_model(model_files / "pickled.pt", trust_model=True)),
        "torchscript": _out(load_model(model_files / "script.pt")),
        "export": _out(load_model(model_files / "prog.pt2")),
        "factory": _out(load_model(FACTORY)),
        "factory+weights": _out(load_model(FACTORY, weights=model_files / "weights.pt")),
    }
    for name, out in outs.items():
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=name)


def test_shapes_come_from_the_model_where_it_carries_them(model_files):
    expected = (1, 3, 16, 16)
    assert load_model(model_files / "model.onnx").inputs[0].shape == expected
    assert load_model(model_files / "prog.pt2").inputs[0].shape == expected
    assert load_model(model_files / "script.pt").inputs[0].shape == expected  # edgeplan.json extra file
    assert load_model(FACTORY).inputs[0].shape == expected  # example_input_shape attribute


def test_plain_torchscript_needs_an_input_shape(model_files):
    with pytest.raises(InputShapeError, match="--input-shape"):
        load_model(model_files / "plain_script.pt")
    loaded = load_model(model_files / "plain_script.pt", input_shape="1x3x16x16")
    assert loaded.inputs == (InputSpec("input", (1, 3, 16, 16), "float32"),)


def test_pickled_module_refused_without_trust(model_files):
    with pytest.raises(UntrustedModelError, match="--trust-model"):
        load_model(model_files / "pickled.pt")


def test_state_dict_is_not_a_model(model_files):
    with pytest.raises(ModelLoadError, match="--weights"):
        load_model(model_files / "weights.pt")


def test_bad_files(tmp_path, model_files):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes((model_files / "pickled.pt").read_bytes()[:300])
    with pytest.raises(ModelLoadError):
        load_model(trunc, trust_model=True)
    corrupt = tmp_path / "corrupt.onnx"
    data = bytearray((model_files / "model.onnx").read_bytes())
    corrupt.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelLoadError):
        load_model(corrupt)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        load_model(junk)


def test_weights_that_do_not_fit(tmp_path):
    torch.save({"nope": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model(FACTORY, weights=tmp_path / "w.pt")


@pytest.mark.parametrize("text", ["1x3xfoo", "0x3", "x", "1x3:notadtype"])
def test_malformed_input_shape(text):
    with pytest.raises(InputShapeError):
        parse_input_shape(text)


def test_input_shape_with_names_and_dtypes():
    specs = parse_input_shape("ids=1x128:int64,mask=1x128:int64")
    assert specs == (InputSpec("ids", (1, 128), "int64"), InputSpec("mask", (1, 128), "int64"))


def test_wrong_input_shape_for_onnx(model_files):
    with pytest.raises(InputShapeError):
        load_model(model_files / "model.onnx", input_shape="1x3x16x16,1x4")
