"""edgeplan optimize: real Optuna, real compression, real files, resumable, constraints, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeplan.cli.main import main
from edgeplan.hardware_profiles.errors import ConfigError
from edgeplan.planner.pareto import hypervolume, pareto_indices
from edgeplan.planner.search import run_search, suggest_recipe
from edgeplan.planner.search_config import SearchSettings, parse_constraint
from tests.conftest import tiny_net

FACTORY = "tests.conftest:tiny_net"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    x = torch.randn(96, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = tiny_net()(x).argmax(1)
    np.savez(d / "eval.npz", inputs=x.numpy(), labels=y.numpy())
    return d / "eval.npz"


def test_pareto_and_hypervolume_on_plain_values():
    pts = [{"latency_ms": 1, "accuracy": 90}, {"latency_ms": 2, "accuracy": 95}, {"latency_ms": 3, "accuracy": 94},
           {"latency_ms": 1, "accuracy": 90}]
    assert pareto_indices(pts, ["latency", "accuracy"]) == [0, 1]
    hv = hypervolume(pts, ["latency", "accuracy"], {"latency_ms": 4, "accuracy": 0})
    assert hv == pytest.approx(3 * 90 + 2 * 5)


@pytest.mark.parametrize("text", ["latency<=fast", "latency_ms=<5", "bogus_metric<=3", ""])
def test_malformed_constraints(text):
    with pytest.raises(ConfigError):
        parse_constraint(text)


def test_constraint_violation_sign():
    c = parse_constraint("accuracy_drop<=1")
    assert c.violation(0.5) < 0 < c.violation(2.0)
    assert parse_constraint("accuracy>=90").violation(95) < 0


def test_search_space_comes_from_the_passes():
    import optuna

    study = optuna.create_study(directions=["minimize"])
    trial = study.ask({"prune.ratio": optuna.distributions.FloatDistribution(0, 0.8)})
    recipe = suggest_recipe(trial, has_data=False)
    assert set(recipe) == {"prune", "distill", "quantize"}
    assert "importance" not in recipe["prune"]  # Taylor needs data: not asked without it
    assert recipe["distill"] == {}  # no data: no distillation
    from edgeplan.compressor.passes import PASSES

    assert {p.name for p in PASSES["prune"].search_space()} >= {"ratio", "round_to"}


def test_optimize_runs_resumes_and_writes_outputs(tmp_path, data_file):
    out = tmp_path / "run"
    s = SearchSettings.build(model=FACTORY, target="pi4", data=str(data_file), trials=3, out_dir=str(out),
                             measure_repeats=3, max_bundles=2, seed=0)
    r1 = run_search(s)
    assert r1.trials_complete == 3
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["plans"] and doc["baseline"]["accuracy"] == pytest.approx(100.0)
    for p in doc["plans"]:
        assert {"latency_ms", "accuracy", "size_mb", "energy_mj"} <= set(p["metrics"]) and p["recipe"]
    for name in ("report.md", "pareto.png", "pareto.html"):
        assert (out / name).stat().st_size > 0
    assert "predicted" in (out / "report.md").read_text()
    assert r1.bundles and all((b / "manifest.json").exists() for b in r1.bundles)
    from edgeplan.planner.bundle import verify_bundle

    verify_bundle(r1.bundles[0])
    n_cands = len(list((out / "candidates").iterdir()))
    # resume: same command with more trials continues the study, candidates are reused from the cache
    r2 = run_search(s.model_copy(update={"trials": 5}))
    assert r2.trials_complete == 5
    assert len(list((out / "candidates").iterdir())) >= n_cands
    # a cached result belongs to the settings that priced it: another target in the same folder re-prices
    from edgeplan.planner.search import settings_key
    from edgeplan.planner.search_eval import Evaluator

    s5 = s.model_copy(update={"target": "pi5", "trials": 1})
    assert settings_key(s5, "x") != settings_key(s, "x")
    ev = Evaluator(s5, out)
    recipe = json.loads((out / "pareto.json").read_text())["plans"][0]["recipe"]
    res5 = ev.evaluate(recipe)
    files = sorted(f.name for f in (out / "candidates" / res5["recipe_hash"]).glob("result-*.json"))
    assert f"result-{settings_key(s5, ev.model_sha256)}.json" in files and len(files) == 2
    assert all(p["metrics"]["latency_ms"] > 0 for p in res5["plans"])


def test_optimize_cli_with_cloud_and_constraint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["optimize", FACTORY, "--target", "pi4", "--cloud", "t4", "--link", "4g", "--trials", "2",
                 "--objectives", "latency,accuracy,energy", "--constraint", "accuracy_drop<=50", "--out", str(out),
                 "--json", "--max-bundles", "1", "--request-overhead-ms", "2.5", "--serialise-mb-per-s", "300"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trials_complete"] == 2 and doc["plans"]
    pj = json.loads((out / "pareto.json").read_text())
    names = {p["name"] for p in pj["reference_plans"]}
    assert {"device-only", "cloud-only"} <= names
    assert pj["settings"]["request_overhead_ms"] == 2.5 and "request overhead of 2.5 ms" in pj["provenance"]
    assert pj["settings"]["serialise_mb_per_s"] == 300 and "serialised at 300 MB/s (given)" in pj["provenance"]
    assert "fidelity" in pj["accuracy_metric"]  # no --data: said plainly


def test_optimize_bad_input(tmp_path, capsys):
    assert main(["optimize", FACTORY, "--target", "nope", "--out", str(tmp_path)]) == 2
    assert main(["optimize", FACTORY, "--target", "pi4", "--constraint", "latency<=fast", "--out", str(tmp_path)]) == 2
    assert main(["optimize", FACTORY, "--target", "pi4", "--objectives", "speed", "--out", str(tmp_path)]) == 2
    assert main(["optimize", FACTORY, "--target", "pi4", "--worker", "--out", str(tmp_path)]) == 2
    assert main(["optimize", FACTORY, "--target", "pi4", "--request-overhead-ms", "-1", "--out", str(tmp_path)]) == 2
    assert main(["optimize", FACTORY, "--target", "pi4", "--serialise-mb-per-s", "0", "--out", str(tmp_path)]) == 2


def test_recipe_text_says_when_pruning_removed_nothing():
    from edgeplan.planner.search_output import _recipe_text

    recipe = {"prune": {"ratio": 0.78, "round_to": 16}, "distill": {"epochs": 2}, "quantize": {"mode": "int8"}}
    assert _recipe_text(recipe) == "prune 0.78/16 + KD 2 ep + int8"
    same = {"prune": {"params_before": 40394, "params_after": 40394, "skipped_groups": 1}}
    assert _recipe_text(recipe, same) == "prune 0.78/16 (nothing pruned) + KD 2 ep + int8"
    fewer = {"prune": {"params_before": 40394, "params_after": 10346, "skipped_groups": 0}}
    assert _recipe_text(recipe, fewer) == "prune 0.78/16 + KD 2 ep + int8"
