"""ONNX export checked in ORT, real measurement, and the measure CLI."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from edgeplan.cli.main import main
from edgeplan.compressor.export import export_onnx, to_onnx
from edgeplan.compressor.intake import load_model
from edgeplan.compressor.ort_timing import time_side_by_side
from edgeplan.planner.measure import cuda_available, measure_onnx, measure_torch_cuda
from edgeplan.planner.onnx_intake import onnx_for_model
from tests.conftest import tiny_net


@pytest.mark.parametrize("name", ["script.pt", "prog.pt2", "model.onnx"])
def test_to_onnx_is_one_self_contained_file_that_matches(model_files, tmp_path, name):
    loaded = load_model(model_files / name)
    report = to_onnx(loaded, tmp_path / "out.onnx")
    assert report.matched
    assert not (tmp_path / "out.onnx.data").exists()
    m = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(m)
    if name != "model.onnx":
        assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4


def test_export_reports_a_mismatch(tmp_path):
    class Flaky(torch.nn.Module):
        """Output depends on a Python-side counter: the traced graph cannot reproduce eager."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x * self.calls

    report = export_onnx(Flaky(), (torch.ones(1, 4),), tmp_path / "f.onnx")
    assert not report.matched
    assert "DOES NOT MATCH" in report.describe()


def test_measure_onnx_reports_percentiles_and_memory(model_files):
    m = measure_onnx(model_files / "model.onnx", repeats=20, warmup=2, threads=1)
    assert 0 < m.latency_p50_ms <= m.latency_p90_ms <= m.latency_p99_ms
    assert m.samples == 20 and m.runtime["threads"] == 1
    assert m.runtime["name"] == "onnxruntime" and m.runtime["version"]
    assert m.peak_memory_bytes >= 0


def test_side_by_side_timing_interleaves(model_files):
    res = time_side_by_side([model_files / "model.onnx"] * 2, repeats=5, warmup=1, threads=1)
    assert [len(r.samples_ms) for r in res] == [5, 5]
    assert all(r.median_ms > 0 for r in res)


def test_onnx_for_model_exports_non_onnx(model_files, tmp_path):
    mo = onnx_for_model(model_files / "script.pt", workdir=tmp_path)
    assert mo.onnx_path.exists() and mo.export is not None and mo.export.matched
    mo2 = onnx_for_model(model_files / "model.onnx")
    assert mo2.export is None and mo2.onnx_path == model_files / "model.onnx"


@pytest.mark.parametrize("name", ["pickled.pt", "script.pt", "prog.pt2", "model.onnx", "tests.conftest:tiny_net"])
def test_measure_cli_json_every_format(model_files, capsys, name):
    spec = name if ":" in name else str(model_files / name)
    code = main(["measure", spec, "--repeats", "5", "--warmup", "1", "--threads", "1", "--json", "--trust-model"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("p50", "p90", "p99"):
        assert doc["latency_ms"][key] > 0
    assert doc["peak_memory_bytes"] >= 0 and doc["runtime"]["name"] == "onnxruntime"


def test_cuda_measurement_refuses_without_gpu():
    if cuda_available():
        m = measure_torch_cuda(tiny_net(), (torch.randn(1, 3, 16, 16),), repeats=5, warmup=2)
        assert m.latency_p50_ms > 0
    else:
        from edgeplan.hardware_profiles.errors import MeasurementError

        with pytest.raises(MeasurementError, match="no CUDA GPU"):
            measure_torch_cuda(tiny_net(), (torch.randn(1, 3, 16, 16),))
