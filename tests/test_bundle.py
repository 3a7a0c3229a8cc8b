"""Bundles: written atomically, verified against the source model, tampering detected."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_split import _residual_onnx, _synth_options, _tiers_for  # noqa: E402

from edgeplan.hardware_profiles.errors import CheckFailed, InputError  # noqa: E402
from edgeplan.planner.bundle import BundleManifest, content_hash, load_manifest, verify_bundle, write_bundle  # noqa: E402
from edgeplan.planner.split import LinkSpec, SplitOptions, build_problem, evaluate, solve  # noqa: E402
from edgeplan.planner.split_schedule import network_schedule  # noqa: E402


@pytest.fixture()
def split_case(tmp_path):
    from edgeplan.planner.graph import analyse

    src = _residual_onnx(tmp_path / "res.onnx")
    analysis = analyse(str(src))
    problem = build_problem(analysis, _tiers_for(analysis), [LinkSpec("l", 10.0, 10.0, 5.0)], _synth_options())
    names = [nd.name for nd in analysis.nodes]
    plan = evaluate(problem, [0 if n in ("stem", "b0_conv1", "b0_relu1") else 1 for n in names])
    return src, problem, plan


def test_write_and_verify_split_bundle(tmp_path, split_case):
    from edgeplan.hardware_profiles import load_link, load_profile

    src, problem, plan = split_case
    pi4, t4, link = load_profile("pi4"), load_profile("t4"), load_link("4g")
    sched = network_schedule(problem)
    out = write_bundle(tmp_path / "b", plan=plan, source_onnx=src, recipe={"prune": 0.5},
                       profiles={"target": pi4, "cloud": t4}, link=link, objective="latency", schedule=sched,
                       schedule_parts=True)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert {"edge.onnx", "cloud.onnx", "manifest.json", "reference.npz", "README.md"} <= set(files)
    m = load_manifest(out)
    assert m.source_model_sha256 and len(m.source_model_sha256) == 64
    assert sorted(c.name for c in m.cut_tensors) == ["b0_r1", "s0"]
    assert {c.name: c.shape for c in m.cut_tensors}["s0"] == [1, 8, 16, 16]
    roles = {r.role: r for r in m.profiles}
    assert roles["target"].name == "pi4" and roles["target"].sha256 == content_hash(pi4)
    assert roles["link"].name == "4g"
    assert m.metrics[0].kind == "predicted" and m.metrics[0].values["transfer_bytes"] == plan.transfer_bytes
    assert m.schedule is not None and len(m.schedule_parts or []) == len(sched.segments)
    assert set(m.files) == set(files) - {"manifest.json"}
    rep = verify_bundle(out)
    assert rep.outputs_checked == 1 and rep.max_abs_error < 1e-4
    assert rep.schedule_parts_checked == len(sched.segments)
    # no temp folders left beside the bundle
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # an existing bundle is not replaced silently
    with pytest.raises(InputError):
        write_bundle(tmp_path / "b", plan=plan, source_onnx=src)
    write_bundle(tmp_path / "b", plan=plan, source_onnx=src, overwrite=True)
    assert verify_bundle(out).schedule_parts_checked == 0


def test_single_part_bundle_and_wire_fp16(tmp_path):
    from edgeplan.planner.graph import analyse

    src = _residual_onnx(tmp_path / "res.onnx")
    analysis = analyse(str(src))
    problem = build_problem(analysis, _tiers_for(analysis), [LinkSpec("l", 10.0, 10.0, 5.0)], _synth_options())
    dev_only = evaluate(problem, [0] * problem.n_nodes, name="device-only")
    out = write_bundle(tmp_path / "one", plan=dev_only, source_onnx=src)
    assert (out / "model.onnx").is_file() and not (out / "edge.onnx").exists()
    assert verify_bundle(out).max_abs_error == 0.0
    p16 = build_problem(analysis, _tiers_for(analysis), [LinkSpec("l", 10.0, 10.0, 5.0)],
                        _synth_options(wire_dtype="fp16"))
    plan = solve(p16)
    out2 = write_bundle(tmp_path / "w16", plan=plan, source_onnx=src)
    rep = verify_bundle(out2)
    assert rep.wire_dtype == "fp16" and 0.0 < rep.wire_max_abs_error < 0.05


def test_verify_detects_tampering(tmp_path, split_case):
    src, _, plan = split_case
    out = write_bundle(tmp_path / "b", plan=plan, source_onnx=src)
    # 1. a changed weight file -> checksum mismatch
    cloud = out / "cloud.onnx"
    data = bytearray(cloud.read_bytes())
    data[-20] ^= 0xFF
    cloud.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match="sha256 mismatch for cloud.onnx"):
        verify_bundle(out)
    # 2. a consistent checksum but wrong numbers -> composition mismatch
    import onnx
    from onnx import numpy_helper

    out2 = write_bundle(tmp_path / "c", plan=plan, source_onnx=src)
    model = onnx.load(str(out2 / "cloud.onnx"))
    init = model.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
    onnx.save(model, str(out2 / "cloud.onnx"))
    m = json.loads((out2 / "manifest.json").read_text())
    from edgeplan.planner.bundle import sha256_file

    m["files"]["cloud.onnx"] = sha256_file(out2 / "cloud.onnx")
    (out2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckFailed, match="differs from the reference"):
        verify_bundle(out2)
    # 3. a manifest that does not match the schema, and an extra file
    m["schema_versionx"] = 1
    (out2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckFailed, match="schema"):
        verify_bundle(out2)
    out3 = write_bundle(tmp_path / "d", plan=plan, source_onnx=src)
    (out3 / "extra.bin").write_bytes(b"x")
    with pytest.raises(CheckFailed, match="not listed"):
        verify_bundle(out3)


def test_bundle_verify_cli(tmp_path, split_case, capsys):
    from edgeplan.cli.main import main

    src, _, plan = split_case
    out = write_bundle(tmp_path / "b", plan=plan, source_onnx=src)
    assert main(["bundle", "verify", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["outputs_checked"] == 1
    (out / "reference.npz").write_bytes(b"garbage")
    assert main(["bundle", "verify", str(out)]) == 1
    assert "check failed" in capsys.readouterr().err


def test_manifest_schema_is_strict():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BundleManifest.model_validate({"schema_version": 1})
