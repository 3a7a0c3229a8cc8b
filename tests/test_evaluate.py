"""Tests for compressor/evaluate.py: the pure metrics on hand-made arrays, and the ORT/torch runners."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgeplan.compressor.data import Dataset, synthetic_data
from edgeplan.compressor.evaluate import (
    EvalResult,
    cosine_similarity,
    evaluate_module,
    evaluate_onnx,
    evaluate_outputs,
    psnr,
    run_module,
    run_onnx,
    ssim,
    top1_accuracy,
    top1_agreement,
)
from edgeplan.hardware_profiles.errors import DataError, InputError


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models: one torch thread is fastest and does not spin against other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ pure metrics


def test_accuracy_and_agreement_on_hand_made_scores():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    assert top1_accuracy(scores, np.array([0, 1, 2, 1])) == pytest.approx(0.75)
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert top1_agreement(scores, ref) == pytest.approx(0.75)  # row 1 disagrees
    assert top1_agreement(ref, ref) == 1.0


def test_cosine_on_hand_made_vectors():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-3.0, -4.0], [1.0, 1.0]])
    # per sample: 1 (same direction, scaled), 0 (orthogonal), -1 (opposite), 1
    assert cosine_similarity(a, b) == pytest.approx((1 + 0 - 1 + 1) / 4)
    z = np.zeros((2, 3))
    assert cosine_similarity(z, z) == 1.0  # two zero outputs are identical
    assert cosine_similarity(z, np.ones((2, 3))) == 0.0


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(InputError):
        cosine_similarity(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(InputError):
        top1_accuracy(np.zeros((3, 2)), np.zeros(4))


def test_psnr_ssim_identical_images_are_inf_and_one():
    rng = np.random.default_rng(0)
    img = rng.random((2, 3, 16, 16)).astype(np.float32)
    assert math.isinf(psnr(img, img)) and psnr(img, img) > 0
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def test_psnr_ssim_drop_with_noise_and_match_known_values():
    rng = np.random.default_rng(1)
    img = rng.random((2, 3, 32, 32))
    small = np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1)
    large = np.clip(img + 0.2 * rng.standard_normal(img.shape), 0, 1)
    p_small, p_large = psnr(small, img, 1.0), psnr(large, img, 1.0)
    s_small, s_large = ssim(small, img, 1.0), ssim(large, img, 1.0)
    assert p_small > p_large
    assert 1.0 > s_small > s_large > 0.0
    # PSNR of N(0, 0.02) noise on a unit range is about 20*log10(1/0.02) = 34 dB (clipping lowers the MSE a bit)
    assert 33.0 < p_small < 36.0
    # a constant offset of 0.1 on a unit range: MSE 0.01 -> exactly 20 dB
    assert psnr(img + 0.1, img, 1.0) == pytest.approx(20.0)


def test_ssim_of_tiny_images_uses_the_whole_image():
    # 8 x 8 is smaller than the 11 x 11 window: averaged whole (reflect boundary), still 1.0 when equal
    rng = np.random.default_rng(2)
    img = rng.random((4, 1, 8, 8))
    assert ssim(img, img, 1.0) == pytest.approx(1.0)
    assert ssim(1.0 - img, img, 1.0) < 0.0  # an inverted image is anti-correlated


def test_evaluate_outputs_picks_metrics_by_output_kind():
    scores = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = np.array([0, 1, 1])
    r = evaluate_outputs(scores, labels=labels, reference_outputs=scores, data_source="d.npz")
    assert (r.output_kind, r.accuracy, r.agreement, r.cosine) == ("classes", pytest.approx(2 / 3), 1.0, pytest.approx(1.0))
    assert r.psnr_db is None and r.ssim is None
    # labels of synthetic data are never used
    syn = evaluate_outputs(scores, labels=labels, reference_outputs=scores, data_source="synthetic:normal")
    assert syn.synthetic and syn.accuracy is None and syn.agreement == 1.0
    # images: PSNR/SSIM, no agreement
    img = np.random.default_rng(0).random((2, 1, 4, 4))
    ri = evaluate_outputs(img, reference_outputs=img)
    assert ri.output_kind == "image" and ri.agreement is None and ri.ssim == pytest.approx(1.0)
    doc = json.loads(json.dumps(ri.to_dict()))  # inf PSNR survives JSON as a string
    assert doc["psnr_db"] == "inf"
    assert "SSIM 1.0000" in ri.summary()
    with pytest.raises(DataError):
        evaluate_outputs(scores, labels=np.array([0, 1, 5]), data_source="d.npz")  # label 5 with 2 classes
    with pytest.raises(InputError):
        evaluate_outputs(scores, reference_outputs=scores[:2])


# ----------------------------------------------------------------------------------------- runners


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()


def _export(module: nn.Module, path, dynamic: bool = True) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 1, 8, 8),), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None)


def test_evaluate_onnx_matches_torch_and_handles_static_batch(tmp_path):
    model = _tiny_classifier()
    rng = np.random.default_rng(0)
    x = rng.random((10, 1, 8, 8)).astype(np.float32)
    ref = run_module(model, x)
    labels = ref.argmax(axis=1)
    labels[0] = (labels[0] + 1) % 3  # one wrong label -> 90% accuracy
    ds = Dataset(x, labels, "hand-made")
    _export(model, tmp_path / "dyn.onnx")
    _export(model, tmp_path / "static.onnx", dynamic=False)
    for name in ("dyn.onnx", "static.onnx"):  # static batch 1: fed one sample at a time
        r = evaluate_onnx(tmp_path / name, ds, reference_outputs=ref, batch_size=4)
        assert isinstance(r, EvalResult)
        assert r.n_samples == 10 and r.accuracy == pytest.approx(0.9)
        assert r.agreement == 1.0 and r.cosine == pytest.approx(1.0, abs=1e-6)
    out = run_onnx(tmp_path / "static.onnx", x, batch_size=4)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    rm = evaluate_module(model, ds, reference_outputs=ref)
    assert rm.accuracy == pytest.approx(0.9) and rm.agreement == 1.0


def test_evaluate_onnx_rejects_wrong_data_shape(tmp_path):
    _export(_tiny_classifier(), tmp_path / "m.onnx")
    with pytest.raises(DataError, match="expects"):
        evaluate_onnx(tmp_path / "m.onnx", synthetic_data((1, 16, 16), 3))
    with pytest.raises(InputError):
        evaluate_onnx(tmp_path / "missing.onnx", synthetic_data((1, 8, 8), 3))


def test_evaluate_module_on_generator_images_gives_psnr_ssim():
    torch.manual_seed(0)
    gen = nn.Sequential(nn.ConvTranspose2d(8, 3, 4, 1, 0), nn.Tanh()).eval()  # N x 8 x 1 x 1 -> N x 3 x 4 x 4
    ds = synthetic_data((8, 1, 1), 6)
    ref = run_module(gen, ds.inputs)
    same = evaluate_module(gen, ds, reference_outputs=ref)
    assert same.output_kind == "image" and same.synthetic
    assert math.isinf(same.psnr_db) and same.ssim == pytest.approx(1.0)
    with torch.no_grad():
        gen[0].weight.add_(0.3 * torch.randn_like(gen[0].weight))
    worse = evaluate_module(gen, ds, reference_outputs=ref)
    assert np.isfinite(worse.psnr_db) and worse.ssim < 0.99 and worse.cosine < 1.0
