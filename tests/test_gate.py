"""edgeplan gate: budgets, config files, exit codes, baseline regression and report formats.

Real ONNX Runtime on tiny ONNX conv nets built with onnx.helper (no torch import needed), real files in
tmp_path, the CLI called in-process.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgeplan.cli.main import main
from edgeplan.hardware_profiles.errors import ConfigError
from edgeplan.planner.gate import (
    RegressionResult,
    lower_check,
    regression_check,
    regression_decision,
    regression_stats,
    upper_check,
)
from edgeplan.planner.gate_config import GateBudgets, load_budgets, merge_budgets


def convnet(path: Path, ch: int = 8, size: int = 32, classes: int = 10, seed: int = 0) -> Path:
    """Conv(3->ch) ReLU Conv(ch->ch) ReLU GAP Flatten Gemm, dynamic batch. ch=32 has 16x the FLOPs of ch=8."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    inits = [
        nh.from_array((rng.standard_normal((ch, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
        nh.from_array((rng.standard_normal((ch, ch, 3, 3)) * 0.3).astype(np.float32), "w2"),
        nh.from_array((rng.standard_normal((classes, ch)) * 0.3).astype(np.float32), "wf"),
        nh.from_array(np.zeros(classes, np.float32), "bf"),
    ]
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c2"], ["r2"]),
        h.make_node("GlobalAveragePool", ["r2"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
        h.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, size, size])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", classes])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate_models")
    return {
        "light": convnet(d / "light.onnx", ch=8),
        "light2": convnet(d / "light2.onnx", ch=8),  # identical weights, a different file
        "heavy": convnet(d / "heavy.onnx", ch=32),  # 4x the channels
    }


def run(args, capsys):
    code = main(["gate", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(args, capsys):
    code, out, err = run([*args, "--json"], capsys)
    return code, (json.loads(out) if out.strip() else None), err


# ------------------------------------------------------------------------------ exit codes and checks


def test_pass_exits_0_with_predicted_and_measured_checks(models, capsys):
    code, doc, _ = run_json([models["light"], "--target", "pi4", "--max-latency-ms", "1000", "--max-size-mb", "1",
                             "--max-energy-mj", "1000", "--measure", "--repeats", "5"], capsys)
    assert code == 0
    assert doc["passed"] is True and doc["target"] == "pi4"
    by_id = {c["id"]: c for c in doc["checks"]}
    assert set(by_id) == {"latency.predicted", "energy.predicted", "latency.measured", "size"}
    assert by_id["latency.predicted"]["source"] == "predicted"
    assert by_id["latency.predicted"]["error_band_pct"] > 0
    assert by_id["latency.measured"]["source"] == "measured"
    size = models["light"].stat().st_size
    assert by_id["size"]["value"] == pytest.approx(size / 1e6)
    assert by_id["size"]["margin"] == pytest.approx(1 - size / 1e6)
    assert all(c["status"] == "pass" for c in doc["checks"])


def test_fail_exits_1_and_still_reports(models, capsys):
    code, doc, err = run_json([models["light"], "--max-size-mb", "0.001"], capsys)
    assert code == 1
    assert doc["passed"] is False
    (c,) = doc["checks"]
    assert c["id"] == "size" and c["status"] == "fail" and c["margin"] < 0
    assert "size" in err


def test_table_output_names_failed_check(models, capsys):
    code, out, err = run([models["light"], "--max-size-mb", "0.001"], capsys)
    assert code == 1
    assert "model size on disk" in out and "fail" in out
    assert "1 of 1 gate budget(s) failed: size" in err


def test_uncertain_prediction_passes_unless_strict(models, capsys):
    _, doc, _ = run_json([models["light"], "--target", "pi4", "--max-latency-ms", "1000"], capsys)
    predicted = doc["checks"][0]["value"]
    band = doc["checks"][0]["error_band_pct"]
    limit = predicted * (1 + band / 200)  # inside the band: cannot tell
    code, doc, _ = run_json([models["light"], "--target", "pi4", "--max-latency-ms", limit], capsys)
    assert code == 0 and doc["checks"][0]["status"] == "uncertain"
    assert any("uncertain" in w for w in doc["warnings"])
    code, doc, _ = run_json([models["light"], "--target", "pi4", "--max-latency-ms", limit, "--strict"], capsys)
    assert code == 1 and doc["checks"][0]["passed"] is False


def test_target_host_measures_here(models, capsys):
    code, doc, _ = run_json([models["light"], "--target", "host", "--max-latency-ms", "1000", "--repeats", "5"],
                            capsys)
    assert code == 0
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["latency.measured"]["source"] == "measured"  # host: always measured here
    assert "ORT" in by_id["latency.measured"]["method"]
    # a calibrated host profile (hardware_profiles/data/host.toml), when present, adds a prediction
    assert set(by_id) <= {"latency.measured", "latency.predicted"}


# ------------------------------------------------------------------------------ baseline regression


def test_heavier_model_is_a_regression(models, capsys):
    code, doc, _ = run_json([models["heavy"], "--baseline", models["light"], "--max-regression", "5%"], capsys)
    assert code == 1
    (c,) = doc["checks"]
    assert c["id"] == "regression" and c["status"] == "fail"
    assert c["value"] > 50 and c["interval"][0] > 5
    assert "slower" in c["note"]


def test_identical_models_never_fail(models, capsys):
    code, doc, _ = run_json([models["light2"], "--baseline", models["light"], "--max-regression", "5%"], capsys)
    assert code == 0
    assert doc["checks"][0]["status"] in ("pass", "inconclusive")


def test_lighter_model_passes(models, capsys):
    code, doc, _ = run_json([models["light"], "--baseline", models["heavy"], "--max-regression", "5"], capsys)
    assert code == 0
    c = doc["checks"][0]
    assert c["status"] == "pass" and c["value"] < -20 and "faster" in c["note"]


def test_regression_stats_and_decision():
    rng = np.random.default_rng(1)
    b = 1.0 + 0.01 * rng.standard_normal(200)
    pct, lo, hi = regression_stats(b * 1.10, b)
    assert pct == pytest.approx(10.0, abs=0.01) and lo <= pct <= hi
    assert regression_decision(lo, hi, 5.0) == "fail"
    assert regression_decision(lo, hi, 20.0) == "pass"
    noisy = b * (1 + 0.3 * rng.standard_normal(200))
    pct, lo, hi = regression_stats(noisy, b)
    assert hi - lo > 2  # wide interval from noisy pairs
    assert regression_decision(lo, hi, (lo + hi) / 2) == "inconclusive"  # threshold inside the CI
    with pytest.raises(ValueError):
        regression_stats([1.0, 2.0], [1.0])


def test_regression_blocks_widen_the_interval():
    """A session-level bias in one block (all its rounds +37 %) must widen the interval, not pass as signal."""
    rng = np.random.default_rng(2)
    base = [1.0 + 0.01 * rng.standard_normal(100) for _ in range(4)]
    model = [b * (1.37 if i == 0 else 1.0) for i, b in enumerate(base)]
    pct, lo, hi = regression_stats(model, base)
    assert pct == pytest.approx(37 / 4, abs=0.5)
    assert lo < 0 < 5 < hi  # cannot claim a regression above 5 %: inconclusive, not fail
    assert regression_decision(lo, hi, 5.0) == "inconclusive"
    one_block = regression_stats(model[0], base[0])
    assert one_block[1] > 30  # a single biased block alone looks like a confident regression


def test_inconclusive_regression_says_noise_is_above_threshold():
    r = RegressionResult(3.0, -5.0, 11.0, 960, 1.03, 1.0, 12.0, "max_blocks", 24)
    c = regression_check(r, 5.0, "old.onnx")
    assert c.status == "inconclusive" and c.passed() and not c.passed(strict=True)
    assert "regression threshold 5% is below the measured noise +-8.0% after 960 rounds (12 s)" in c.note
    assert "inconclusive" in c.note


def test_regression_stops_at_its_time_budget(models):
    from edgeplan.planner.gate import measure_regression

    # a threshold of 0.0001 % is below any real noise: the loop can only stop on its budget (or by luck)
    r = measure_regression(models["light2"], models["light"], 0.0001, block_s=0.05, time_budget_s=0.3)
    assert r.blocks >= 2 and r.seconds < 10
    assert r.stop_reason in ("time_budget", "decided")
    c = regression_check(RegressionResult(1.0, -3.0, 5.0, 40, 1.0, 1.0, 90.0, "time_budget", 2), 2.0, "b.onnx")
    assert c.status == "inconclusive" and "time budget" in c.note


# ------------------------------------------------------------------------------ budgets and config


def test_malformed_budget_in_edgeplan_toml_exits_2(models, tmp_path, monkeypatch, capsys):
    (tmp_path / "edgeplan.toml").write_text('[gate]\nmax_latency_ms = "latency<=fast"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = run([models["light"], "--target", "pi4"], capsys)
    assert code == 2
    assert "max_latency_ms" in err and "latency<=fast" in err and "edgeplan.toml" in err
    assert out == ""


def test_budget_expression_line_is_invalid_toml_exit_2(models, tmp_path, monkeypatch, capsys):
    (tmp_path / "edgeplan.toml").write_text("[gate]\nlatency<=fast\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run([models["light"]], capsys)
    assert code == 2 and "edgeplan.toml" in err and "not valid TOML" in err


def test_malformed_budget_flag_exits_2(models, capsys):
    code, _, err = run([models["light"], "--target", "pi4", "--max-latency-ms", "latency<=fast"], capsys)
    assert code == 2 and "--max-latency-ms" in err
    code, _, err = run([models["light"], "--max-size-mb", "-3"], capsys)
    assert code == 2 and "--max-size-mb" in err and "> 0" in err
    code, _, err = run([models["light"], "--min-accuracy", "97", "--data", "x.npz"], capsys)
    assert code == 2 and "--min-accuracy" in err


def test_unknown_key_in_pyproject_exits_2(models, tmp_path, monkeypatch, capsys):
    (tmp_path / "pyproject.toml").write_text("[tool.edgeplan.gate]\nmax_latncy_ms = 40\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run([models["light"]], capsys)
    assert code == 2 and "max_latncy_ms" in err and "unknown key" in err


def test_min_accuracy_without_data_exits_2(models, capsys):
    code, out, err = run([models["light"], "--min-accuracy", "0.97"], capsys)
    assert code == 2 and "--data" in err and out == ""


def test_no_budget_and_missing_target_exit_2(models, capsys):
    code, _, err = run([models["light"]], capsys)
    assert code == 2 and "no budgets" in err
    code, _, err = run([models["light"], "--max-latency-ms", "40"], capsys)
    assert code == 2 and "needs a target" in err
    code, _, err = run([models["light"], "--target", "nosuchboard", "--max-latency-ms", "40"], capsys)
    assert code == 2 and "nosuchboard" in err


def test_pyproject_budgets_are_used_and_flags_override(models, tmp_path, monkeypatch, capsys):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.edgeplan.gate]\nmax_size_mb = "0.001MB"\ntarget = "pi4"\n')
    monkeypatch.chdir(tmp_path)
    code, doc, _ = run_json([models["light"]], capsys)
    assert code == 1 and doc["checks"][0]["limit"] == 0.001
    assert doc["target"] == "pi4" and doc["config"].endswith("pyproject.toml")
    code, doc, _ = run_json([models["light"], "--max-size-mb", "1"], capsys)
    assert code == 0 and doc["checks"][0]["limit"] == 1.0


def test_config_flag_and_relative_paths(models, tmp_path, monkeypatch, capsys):
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    import shutil

    shutil.copy(models["light"], cfg_dir / "old.onnx")
    (cfg_dir / "budgets.toml").write_text('[gate]\nbaseline = "old.onnx"\nmax_regression = "50%"\n')
    monkeypatch.chdir(tmp_path)  # baseline path resolves against the config file's folder
    code, doc, _ = run_json([models["light2"], "--config", cfg_dir / "budgets.toml"], capsys)
    assert code == 0 and doc["checks"][0]["id"] == "regression" and doc["checks"][0]["limit"] == 50


def test_budget_parsing_units():
    b = merge_budgets(GateBudgets(max_latency_ms=3), {"max_size_mb": "8MB", "min_accuracy": "97%",
                                                      "max_regression_pct": "5%"})
    assert (b.max_latency_ms, b.max_size_mb, b.min_accuracy, b.max_regression_pct) == (3, 8, 0.97, 5)
    for bad in ("40s", "fast", "0", True):
        with pytest.raises(ConfigError, match="max-latency-ms"):
            merge_budgets(GateBudgets(), {"max_latency_ms": bad})
    with pytest.raises(Exception):
        GateBudgets(max_latency_ms=1, colour="red")  # extra="forbid"


def test_no_config_file_means_no_budgets(tmp_path):
    b, path = load_budgets(cwd=tmp_path)
    assert path is None and not b.has_budget()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no gate table: ignored
    b, path = load_budgets(cwd=tmp_path)
    assert path is None


# ------------------------------------------------------------------------------ accuracy


def _labelled(tmp_path, model: Path, shuffle: bool) -> Path:
    from edgeplan.compressor.evaluate import run_onnx

    x = np.random.default_rng(0).standard_normal((40, 3, 32, 32)).astype(np.float32)
    y = run_onnx(model, x).argmax(1)  # the model's own predictions: accuracy 1.0
    if shuffle:
        y = (y + 1) % 10  # every label wrong: accuracy 0.0
    p = tmp_path / ("wrong.npz" if shuffle else "right.npz")
    np.savez(p, inputs=x, labels=y)
    return p


def test_accuracy_budget_pass_and_fail(models, tmp_path, capsys):
    code, doc, _ = run_json([models["light"], "--min-accuracy", "0.97", "--data", _labelled(tmp_path, models["light"], False)],
                            capsys)
    assert code == 0 and doc["checks"][0]["value"] == pytest.approx(1.0)
    code, doc, _ = run_json([models["light"], "--min-accuracy", "97%", "--data", _labelled(tmp_path, models["light"], True)],
                            capsys)
    assert code == 1 and doc["checks"][0]["value"] == pytest.approx(0.0)
    assert doc["checks"][0]["comparison"] == ">="


def test_accuracy_data_without_labels_exits_2(models, tmp_path, capsys):
    p = tmp_path / "nolabels.npz"
    np.savez(p, inputs=np.zeros((4, 3, 32, 32), np.float32))
    code, _, err = run([models["light"], "--min-accuracy", "0.9", "--data", p], capsys)
    assert code == 2 and "labels" in err


# ------------------------------------------------------------------------------ reports


def test_junit_xml_one_testcase_per_check(models, tmp_path, capsys):
    junit = tmp_path / "out" / "gate.xml"
    code, _, _ = run([models["light"], "--target", "pi4", "--max-latency-ms", "1000", "--max-size-mb", "0.001",
                      "--max-peak-memory-mb", "1000", "--junit", junit], capsys)
    assert code == 1
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["latency.predicted", "peak_memory.predicted", "size"]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["size"]
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    assert not list(junit.parent.glob(".gate.xml.*"))  # atomic write left no temp file


def test_markdown_file_and_github_step_summary(models, tmp_path, monkeypatch, capsys):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    md = tmp_path / "gate.md"
    code, _, _ = run([models["light"], "--max-size-mb", "1", "--markdown", md], capsys)
    assert code == 0
    text = md.read_text()
    assert "| check | value | limit | margin | source | status |" in text and "model size on disk" in text
    run([models["light"], "--max-size-mb", "0.001"], capsys)
    s = summary.read_text()
    assert s.startswith("# earlier step\n")  # appended, not overwritten
    assert s.count("edgeplan gate") == 2 and "passed" in s and "FAILED" in s


def test_bundle_folder(models, tmp_path, capsys):
    import shutil

    b = tmp_path / "bundle"
    b.mkdir()
    (b / "manifest.json").write_text("{}")
    shutil.copy(models["light"], b / "edge.onnx")
    code, doc, _ = run_json([b, "--max-size-mb", "1"], capsys)
    assert code == 0 and doc["onnx_path"].endswith("edge.onnx")
    assert any("edge.onnx" in w for w in doc["warnings"])
    (b / "manifest.json").write_text(json.dumps({"profiles": [{"role": "target", "name": "pi4", "sha256": "x"}]}))
    code, doc, _ = run_json([b, "--max-latency-ms", "1000"], capsys)  # target from the manifest
    assert code == 0 and doc["target"] == "pi4" and doc["checks"][0]["id"] == "latency.predicted"
    (tmp_path / "plain").mkdir()
    code, _, err = run([tmp_path / "plain", "--max-size-mb", "1"], capsys)
    assert code == 2 and "manifest.json" in err


def test_pure_checks():
    c = upper_check("x", "x", 0.15, 0.2, "ms", source="predicted", method="m", band_pct=50)
    assert c.status == "uncertain" and c.interval == pytest.approx((0.075, 0.225))
    assert upper_check("x", "x", 0.1, 0.2, "ms", source="predicted", method="m", band_pct=50).status == "pass"
    assert upper_check("x", "x", 0.5, 0.2, "ms", source="predicted", method="m", band_pct=50).status == "fail"
    c = lower_check("a", "a", 0.95, 0.97, "", source="measured", method="m")
    assert c.status == "fail" and c.margin == pytest.approx(-0.02)


@pytest.mark.slow
def test_identical_models_never_fail_repeatedly(models):
    """The false-fail rate that motivated blocks of fresh sessions (2 in 30 with one session pair)."""
    from edgeplan.planner.gate import measure_regression

    for _ in range(10):
        r = measure_regression(models["light2"], models["light"], 5.0)
        assert regression_decision(r.ci_low_pct, r.ci_high_pct, 5.0) != "fail", r
