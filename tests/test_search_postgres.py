"""Distributed search: two `edgeplan optimize --worker` processes share one study on a real PostgreSQL.

.ci/run starts a throw-away server on loopback (.ci/start-postgres.sh) and sets EDGEPLAN_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

URL = os.environ.get("EDGEPLAN_TEST_POSTGRES_URL")
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not URL, reason="no PostgreSQL server (set EDGEPLAN_TEST_POSTGRES_URL; .ci/run does)")


def _cmd(out: Path, study: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeplan.cli.main", "optimize", "tests.conftest:tiny_net", "--target", "pi4",
            "--trials", "4", "--storage", URL, "--study", study, "--out", str(out), "--max-bundles", "1", *extra]


def test_two_workers_share_one_study(tmp_path):
    import optuna

    study = "t-" + uuid.uuid4().hex[:8]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen(_cmd(tmp_path / f"w{i}", study, "--worker", "--seed", str(i)), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    for w, (o, e) in zip(workers, outs):
        assert w.returncode == 0, e[-2000:]
    s = optuna.load_study(study_name=study, storage=URL)
    complete = [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 4
    # the trials of both workers are in the one study (each worker names its host/pid in the trial)
    assert len({t.user_attrs.get("worker") for t in complete}) == 2
    # a final non-worker run writes the outputs from the shared study without running more trials
    proc = subprocess.run(_cmd(tmp_path / "final", study, "--json"), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["trials_complete"] == len(complete) and doc["plans"]
