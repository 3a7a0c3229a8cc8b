"""Split planner benchmark: planner time on >= 1,000-node graphs, and optimality vs brute force.

Run:  .venv/bin/python benchmarks/bench_split.py [--quick] [--out /tmp/section.md]

1. Planner time (wall clock, ``time.perf_counter``, median of 5 after one warm-up, this machine) for
   ``plan_split`` (best + reference plans), one ``solve`` and the full ``network_schedule`` on:
   - a chain of 200 residual blocks built with onnx.helper (1,204 nodes), and
   - a 20-layer transformer encoder (``compressor.archs.transformer_encoder(layers=20)``, ~1,000 nodes),
   each predicted on pi4 -> t4 over several links.
2. Optimality on every example architecture (resnet18_like, mobilenetv2_like, transformer_encoder,
   dcgan_generator, digits_cnn, digits_resnet), for 5 links x 3 objectives:
   - brute force over every prefix cut of the topological order vs ``best_prefix`` (must be equal) and
     vs the min-cut (``solve`` must be <= the best prefix);
   - brute force over *every downward-closed node set* (enumerated exactly, when there are at most
     ``IDEAL_CAP`` of them) vs ``solve`` (must be equal).
   - random DAGs of 12-14 nodes: all 2-tier assignments vs ``solve``; 3 tiers on 8-node DAGs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

IDEAL_CAP = 200_000
LINKS = ["3g", "4g", "5g", "wifi", "ethernet"]
OBJECTIVES = ["latency", "energy", "cost"]


def timed(fn, repeats: int = 5) -> tuple[float, object]:
    out = fn()  # warm-up (imports, caches)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), out


def tiers_for(analysis, names=("pi4", "t4")):
    from edgeplan.hardware_profiles import load_profile
    from edgeplan.planner.cost import predict
    from edgeplan.planner.split import tier_from_prediction

    return [tier_from_prediction(p, predict(analysis, p)) for p in (load_profile(n) for n in names)]


def problem_for(analysis, tiers, link: str, **opts):
    from edgeplan.hardware_profiles import load_link
    from edgeplan.planner.split import SplitOptions, build_problem, link_from_profile

    return build_problem(analysis, tiers, [link_from_profile(load_link(link))], SplitOptions(**opts))


def ideals(problem, cap: int):
    """Every downward-closed device set (2 tiers, privacy bounds respected), or None past ``cap``."""
    n = problem.n_nodes
    preds = [[problem.tensor_producer[j] for j in problem.node_inputs[i] if problem.tensor_producer[j] >= 0]
             for i in range(n)]
    forced = [m == 0 for m in problem.max_tier]
    out = []
    lab = np.ones(n, dtype=np.int64)

    def rec(i: int) -> bool:
        if len(out) > cap:
            return False
        if i == n:
            out.append(lab.copy())
            return True
        can_in = all(lab[p] == 0 for p in preds[i])
        if can_in:
            lab[i] = 0
            if not rec(i + 1):
                return False
            lab[i] = 1
        if forced[i]:
            return True
        return rec(i + 1)

    sys.setrecursionlimit(max(10_000, 4 * n))
    ok = rec(0)
    return out if ok else None


def batch_objective(problem, obj, labels: np.ndarray) -> np.ndarray:
    """Objective of many 2-tier assignments at once (rows of ``labels``), vectorised brute force.

    Same formula as ``split.evaluate`` (cross-checked against it on a sample in ``bench_examples``)."""
    node_cost, transfer_cost, bfix, tfix = problem.weighted(obj)
    lab = labels.astype(np.int64)
    val = (lab == 0) @ node_cost[0] + (lab == 1) @ node_cost[1]
    rows, cons, ptr = problem.csr_tensors, problem.csr_consumers, problem.csr_ptr
    hi = np.maximum.reduceat(lab[:, cons], ptr, axis=1)
    prod = np.asarray(problem.tensor_producer, dtype=np.int64)[rows]
    lo = np.where(prod >= 0, lab[:, np.maximum(prod, 0)], 0)
    val = val + ((lo <= 0) & (hi > 0)) @ transfer_cost[0, rows]
    used0, used1 = (lab == 0).any(axis=1), (lab == 1).any(axis=1)
    return val + used0 * tfix[0] + used1 * (tfix[1] + bfix[0])


def bench_time(lines: list[str], quick: bool) -> None:
    from test_split import _residual_onnx

    from edgeplan.planner.graph import analyse
    from edgeplan.planner.split import Objective, plan_split, solve
    from edgeplan.planner.split_schedule import network_schedule

    tmp = Path(tempfile.mkdtemp(prefix="bench-split-"))
    models = [("residual chain, 200 blocks", _residual_onnx(tmp / "chain.onnx", blocks=200))]
    if not quick:
        import torch

        from edgeplan.compressor.archs import transformer_encoder
        from edgeplan.compressor.export import export_onnx

        m = transformer_encoder(layers=20)
        x = torch.randint(0, 1000, (1, 128))
        export_onnx(m, [x], tmp / "tx20.onnx", check=False)
        models.append(("transformer encoder, 20 layers", tmp / "tx20.onnx"))
    lines += ["## Planner time on >= 1,000-node graphs", "",
              "Wall clock on this 2-core machine (shared with other jobs), median of 5 after a warm-up; pi4 -> t4.", "",
              "| graph | nodes | tensors | link | plan_split ms | solve ms | schedule ms (solves, segments) | best: nodes on device |",
              "|---|---|---|---|---|---|---|---|"]
    for label, path in models:
        analysis = analyse(str(path))
        tiers = tiers_for(analysis)
        for link in (["4g", "ethernet"] if quick else ["3g", "4g", "wifi", "ethernet"]):
            problem = problem_for(analysis, tiers, link)
            obj = Objective.named("latency")
            t_plan, plans = timed(lambda: plan_split(problem, obj), 3 if quick else 5)
            t_solve, _ = timed(lambda: solve(problem, obj), 3 if quick else 5)
            t_sched, sched = timed(lambda: network_schedule(problem, obj), 1 if quick else 3)
            lines.append(f"| {label} | {problem.n_nodes} | {len(problem.tensor_names)} | {link} | {t_plan:.0f} | "
                         f"{t_solve:.0f} | {t_sched:.0f} ({sched.solves}, {len(sched.segments)}) | "
                         f"{plans.best.nodes_on(0)} |")
            print(lines[-1], flush=True)
    lines.append("")


def bench_examples(lines: list[str], quick: bool) -> None:
    from edgeplan.planner.graph import analyse
    from edgeplan.planner.onnx_intake import onnx_for_model
    from edgeplan.planner.split import Objective, best_prefix, evaluate, prefix_assignments, solve

    names = ["dcgan_generator", "digits_cnn", "digits_resnet"] if quick else [
        "resnet18_like", "mobilenetv2_like", "transformer_encoder", "dcgan_generator", "digits_cnn", "digits_resnet"]
    lines += ["## Optimality vs brute force on the example architectures", "",
              f"pi4 -> t4, links {', '.join(LINKS)}, objectives {', '.join(OBJECTIVES)} (15 cases per model). "
              "Prefix: every prefix cut priced with `evaluate`; all-DAG: every downward-closed node set "
              f"(enumerated when there are <= {IDEAL_CAP:,}).", "",
              "| model | nodes | prefix cuts | downward-closed sets | best_prefix = brute prefix | min-cut = brute all-DAG | "
              "min-cut < best prefix (cases) | best cut (latency, per link) |",
              "|---|---|---|---|---|---|---|---|"]
    models = []
    for name in names:
        models.append((name, onnx_for_model(f"edgeplan.compressor.archs:{name}").onnx_path))
    if not quick:
        import torch

        from edgeplan.compressor.archs import transformer_encoder
        from edgeplan.compressor.export import export_onnx

        p1 = Path(tempfile.mkdtemp(prefix="bench-split-")) / "tx1.onnx"
        export_onnx(transformer_encoder(layers=1), [torch.randint(0, 1000, (1, 128))], p1, check=False)
        models.append(("transformer_encoder(layers=1)", p1))
    for name, path in models:
        analysis = analyse(str(path))
        tiers = tiers_for(analysis)
        ok_prefix = ok_all = 0
        strictly_better = 0
        n_all = None
        total = 0
        cuts = []
        for link in LINKS:
            problem = problem_for(analysis, tiers, link)
            ids = ideals(problem, IDEAL_CAP)
            n_all = None if ids is None else len(ids)
            mat = None if ids is None else np.stack(ids)
            for oname in OBJECTIVES:
                obj = Objective.named(oname)
                total += 1
                best = solve(problem, obj)
                bp = best_prefix(problem, obj)
                brute_p = min(evaluate(problem, lab, obj, with_memory=False).objective_value
                              for lab in prefix_assignments(problem))
                ok_prefix += abs(bp.objective_value - brute_p) <= 1e-9 * max(1.0, abs(brute_p))
                strictly_better += best.objective_value < bp.objective_value - 1e-9 * max(1.0, abs(bp.objective_value))
                assert best.objective_value <= bp.objective_value + 1e-9 * max(1.0, abs(bp.objective_value))
                if mat is not None:
                    vals = batch_objective(problem, obj, mat)
                    for k in np.random.default_rng(0).choice(len(mat), size=min(5, len(mat)), replace=False):
                        ev = evaluate(problem, mat[k], obj, with_memory=False).objective_value
                        assert abs(ev - vals[k]) <= 1e-9 * max(1.0, abs(ev)), (name, link, oname)
                    brute_a = float(vals.min())
                    ok_all += abs(best.objective_value - brute_a) <= 1e-9 * max(1.0, abs(brute_a))
                if oname == "latency":
                    cuts.append(f"{link}: {best.nodes_on(0)}/{problem.n_nodes} on device, "
                                f"{best.latency_ms:.1f} ms, {best.transfer_bytes / 1e3:.1f} kB")
        lines.append(f"| {name} | {len(analysis.nodes)} | {len(analysis.nodes) + 1} | "
                     f"{n_all if n_all is not None else f'> {IDEAL_CAP:,} (skipped)'} | {ok_prefix}/{total} | "
                     f"{f'{ok_all}/{total}' if n_all is not None else '-'} | {strictly_better} | {'; '.join(cuts)} |")
        print(lines[-1], flush=True)
    lines.append("")


def bench_random(lines: list[str], quick: bool) -> None:
    from test_split import OBJECTIVES as OBJS
    from test_split import brute_force, rand_problem

    from edgeplan.planner.split import solve

    n_cases = ok = 0
    seeds = range(10 if quick else 40)
    for seed in seeds:
        problem = rand_problem(12 + seed % 3, seed, raw_input_may_leave=seed % 3 == 0)
        for obj in OBJS:
            n_cases += 1
            ok += abs(solve(problem, obj).objective_value - brute_force(problem, obj).objective_value) <= 1e-9 * max(
                1.0, brute_force(problem, obj).objective_value)
    n3 = ok3 = 0
    for seed in range(5 if quick else 20):
        problem = rand_problem(8, seed, three=True)
        for obj in OBJS:
            n3 += 1
            ok3 += abs(solve(problem, obj).objective_value - brute_force(problem, obj).objective_value) <= 1e-9 * max(
                1.0, brute_force(problem, obj).objective_value)
    lines += ["## Random DAGs (exhaustive over every tier assignment)", "",
              f"- 2 tiers, 12-14 nodes: min-cut optimum = brute force in {ok}/{n_cases} cases.",
              f"- 3 tiers, 8 nodes: min-cut optimum = brute force in {ok3}/{n3} cases.", ""]
    print("\n".join(lines[-4:]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small subset (used by the tests)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lines = ["# Split planner benchmark", "",
             f"Generated by `benchmarks/bench_split.py{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d')}. "
             "All latencies/energies inside the plans are predicted from profiles (pi4, t4); the planner times are "
             "measured wall clock.", ""]
    bench_time(lines, args.quick)
    bench_random(lines, args.quick)
    bench_examples(lines, args.quick)
    text = "\n".join(lines) + "\n"
    if args.out:
        from edgeplan.hardware_profiles.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
