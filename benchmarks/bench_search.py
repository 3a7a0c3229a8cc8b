"""Benchmarks for `edgeplan optimize` (issue 6). Writes a markdown section to stdout (and --out FILE).

  python benchmarks/bench_search.py wall      # default optimize of the ResNet-18-like for pi4 (target <= 5 min)
  python benchmarks/bench_search.py hv        # NSGA-II 40 trials vs exhaustive grid vs random 40 (digits-cnn)
  python benchmarks/bench_search.py kill      # kill -9 mid-trial, resume: completed trials lost (target 0)

Hypervolume is computed over the pool of (compression, cut) plans on (latency, accuracy) with a fixed
reference point (baseline latency x 1.5, accuracy 0); cost = distinct compressions evaluated.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> str:
    from edgeplan.planner.measure import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _example(name: str, d: Path) -> Path:
    from edgeplan.compressor.examples import make_example

    if not (d / "example.json").exists():
        make_example(name, d)
    return d


def bench_wall(args) -> str:
    work = Path(tempfile.mkdtemp(prefix="bench-wall-"))
    ex = _example("resnet18", work / "ex")
    cmd = [sys.executable, "-m", "edgeplan.cli.main", "optimize", str(ex / "model.pt"), "--target", "pi4",
           "--out", str(work / "run")]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    ok = proc.returncode == 0
    return (f"### Default optimize of the ResNet-18-like for pi4\n\n`{' '.join(cmd[2:])}` -> exit {proc.returncode}, "
            f"wall time **{wall:.0f} s** (target <= 300 s). {'' if ok else 'stderr: ' + proc.stderr[-300:]}\n")


def _pool_hv(out: Path, objectives=("latency", "accuracy")) -> tuple[float, int]:
    import json

    from edgeplan.planner.pareto import hypervolume

    pool = []
    cands = list((out / "candidates").glob("*/result.json"))
    for f in cands:
        rec = json.loads(f.read_text())
        pool += [p["metrics"] for p in rec["plans"] if p["feasible"]]
    base = json.loads((out / "pareto.json").read_text())["baseline"]
    ref = {"latency_ms": base["predicted_latency_ms"] * 1.5, "accuracy": 0.0}
    return hypervolume(pool, list(objectives), ref), len(cands)


def bench_hv(args) -> str:
    from edgeplan.planner.search import run_search
    from edgeplan.planner.search_config import SearchSettings
    from edgeplan.planner.search_eval import Evaluator

    work = Path(tempfile.mkdtemp(prefix="bench-hv-"))
    ex = _example("digits-cnn", work / "ex")
    common = dict(model=str(ex / "model.pt"), target="pi4", data=str(ex / "eval.npz"), objectives=("latency", "accuracy"),
                  max_bundles=0, measure_repeats=5)
    rows = []
    for sampler in ("nsga2", "random"):
        out = work / sampler
        t0 = time.time()
        run_search(SearchSettings.build(**common, trials=args.trials, sampler=sampler, out_dir=str(out)))
        hv, n = _pool_hv(out)
        rows.append((f"{sampler} ({args.trials} trials)", hv, n, time.time() - t0))
    # exhaustive grid over a discretisation of the same space (distillation fixed at its space's choices)
    out = work / "grid"
    s = SearchSettings.build(**common, trials=1, out_dir=str(out))
    t0 = time.time()
    run_search(s)  # writes baseline and pareto.json
    ev = Evaluator(s, out)
    for ratio, rt, mode, ep in itertools.product((0.0, 0.2, 0.4, 0.6, 0.8), (1, 8, 16), ("none", "int8", "int8-dynamic"),
                                                 (0, 2, 5, 10)):
        if ratio == 0 and (rt != 1 or ep):
            continue
        recipe = {"prune": {"ratio": ratio, **({"round_to": rt, "importance": "magnitude"} if ratio else {})},
                  "distill": ({"epochs": ep, **({"temperature": 4.0} if ep else {})} if ratio else {}),
                  "quantize": {"mode": mode}}
        try:
            ev.evaluate(recipe)
        except Exception as e:  # noqa: BLE001 - a failing grid point is reported, not fatal
            print(f"grid point {recipe} failed: {e}", file=sys.stderr)
    hv, n = _pool_hv(out)
    rows.append(("exhaustive grid", hv, n, time.time() - t0))
    grid_hv, grid_n = rows[-1][1], rows[-1][2]
    lines = ["### Hypervolume: NSGA-II vs exhaustive grid vs random (digits-cnn, pi4, latency x accuracy)", "",
             "| search | hypervolume | % of grid | compressions evaluated | % of grid cost | wall s |", "|---|---|---|---|---|---|"]
    for name, hv, n, wall in rows:
        lines.append(f"| {name} | {hv:.4g} | {100 * hv / grid_hv:.1f}% | {n} | {100 * n / grid_n:.0f}% | {wall:.0f} |")
    lines.append("\nTarget: NSGA-II >= 95% of the grid's hypervolume at <= 25% of its cost.\n")
    return "\n".join(lines)


def bench_kill(args) -> str:
    import optuna

    work = Path(tempfile.mkdtemp(prefix="bench-kill-"))
    ex = _example("digits-cnn", work / "ex")
    out = work / "run"
    cmd = [sys.executable, "-m", "edgeplan.cli.main", "optimize", str(ex / "model.pt"), "--target", "pi4", "--data",
           str(ex / "eval.npz"), "--trials", "8", "--out", str(out), "--max-bundles", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    db = f"sqlite:///{out / 'study.db'}"
    before: set[int] = set()
    killed: set[int] = set()
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        try:
            names = [s.study_name for s in optuna.get_all_study_summaries(db)]
            st = optuna.load_study(study_name=names[0], storage=db)
            done = {t.number for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE}
            running = [t for t in st.trials if t.state == optuna.trial.TrialState.RUNNING]
            if len(done) >= 3 and running:
                before = done
                killed = {t.number for t in running}
                os.kill(proc.pid, signal.SIGKILL)
                break
        except Exception:  # noqa: BLE001 - the db may not exist yet
            continue
    proc.wait()
    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    st = optuna.load_study(study_name=optuna.get_all_study_summaries(db)[0].study_name, storage=db)
    after = {t.number for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE}
    lost = len(before - after)
    states = {t.number: t.state.name for t in st.trials if t.number in killed}
    retried = [t.number for t in st.trials if t.user_attrs.get("retry_of") in killed or t.system_attrs.get("failed_trial") in killed]
    shutil.rmtree(work, ignore_errors=True)
    return (f"### kill -9 mid-trial, then resume\n\nKilled `edgeplan optimize` (SIGKILL) with {len(before)} trials complete "
            f"and trial(s) {sorted(killed)} running; re-ran the same command (exit {rerun.returncode}): {len(after)} complete afterwards, "
            f"**{lost} completed trials lost** (target 0). The killed trial's state after the resume: {states}; "
            f"re-queued as trial(s) {retried or 'none'} (`search._fail_orphaned_trials` at start-up).\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["wall", "hv", "kill", "all"])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    parts = [f"## edgeplan optimize ({date.today()}, {_machine()})\n\nCommand: `python benchmarks/bench_search.py "
             f"{' '.join(sys.argv[1:])}`\n"]
    for which in (["wall", "hv", "kill"] if args.which == "all" else [args.which]):
        parts.append({"wall": bench_wall, "hv": bench_hv, "kill": bench_kill}[which](args))
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
