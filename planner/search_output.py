"""Outputs of ``edgeplan optimize``: pareto.json, report.md, pareto.png, pareto.html, one bundle per plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from edgeplan.hardware_profiles.atomic import atomic_path, atomic_write_text
from edgeplan.planner.pareto import DIRECTIONS, METRIC_OF, pareto_indices
from edgeplan.planner.search_config import SearchSettings

SCHEMA_VERSION = 1


class ParetoFile(BaseModel):
    """``pareto.json``: every Pareto plan with its recipe, cut, predicted and measured metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int
    edgeplan_version: str
    settings: SearchSettings
    model_sha256: str
    accuracy_metric: str
    objectives: list[str]
    baseline: dict[str, Any]
    reference_plans: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    trials_complete: int
    trials_failed: int
    failures: list[str]
    pool_size: int
    interrupted: bool
    provenance: str


def _collect(study: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], int, list[str]]:
    """All (recipe, cut) plans of the complete trials, deduplicated; candidates by recipe hash."""
    import optuna

    plans: dict[tuple[str, str], dict[str, Any]] = {}
    cands: dict[str, dict[str, Any]] = {}
    complete = 0
    failures: list[str] = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.FAIL:
            failures.append(f"trial {t.number}: {t.user_attrs.get('error', 'unknown error')}")
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        complete += 1
        recipe = t.user_attrs.get("recipe", {})
        for p in t.user_attrs.get("plans", []):
            key = (p["recipe_hash"], p["key"])
            if key not in plans:
                plans[key] = {**p, "recipe": recipe, "trial": t.number}
            cands.setdefault(p["recipe_hash"], {"recipe": recipe, "summary": t.user_attrs.get("candidate", {}),
                                                "trial": t.number})
    return list(plans.values()), cands, complete, failures


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _recipe_text(recipe: dict[str, Any], summary: dict[str, Any] | None = None) -> str:
    """The recipe as asked for; with the candidate's ``summary``, a pruning step that removed nothing (every
    group skipped, or the ratio rounded to zero channels) says so instead of claiming a ratio."""
    parts = []
    r = recipe.get("prune", {}).get("ratio", 0.0)
    if r > 0:
        text = f"prune {r:.2f}" + (f"/{recipe['prune'].get('round_to')}" if recipe["prune"].get("round_to") else "")
        done = (summary or {}).get("prune") or {}
        if done and done.get("params_after") == done.get("params_before"):
            text += " (nothing pruned)"
        parts.append(text)
    e = recipe.get("distill", {}).get("epochs", 0)
    if e:
        parts.append(f"KD {e} ep")
    m = recipe.get("quantize", {}).get("mode", "none")
    if m != "none":
        parts.append(m)
    return " + ".join(parts) or "none (baseline)"


def _overhead_text(settings: SearchSettings) -> str:
    from edgeplan.planner.split import DEFAULT_REQUEST_OVERHEAD_MS, DEFAULT_SERIALISE_MB_PER_S

    if settings.request_overhead_ms is None:
        text = (f", split plans incl. a runtime request overhead of {DEFAULT_REQUEST_OVERHEAD_MS:g} ms per network "
                "boundary (default, measured on edgeplan's development machine)")
    else:
        text = (f", split plans incl. a runtime request overhead of {settings.request_overhead_ms:g} ms per boundary "
                "(given)")
    if settings.serialise_mb_per_s is None:
        return text + (f" and cut tensors serialised at {DEFAULT_SERIALISE_MB_PER_S:g} MB/s (default, measured on "
                       "edgeplan's development machine)")
    return text + f" and cut tensors serialised at {settings.serialise_mb_per_s:g} MB/s (given)"


def write_outputs(study: Any, ev: Any, settings: SearchSettings, out: Path, *, interrupted: bool, elapsed_s: float,
                  log: Callable[[str], None]) -> Any:
    from edgeplan.compressor.passes import is_identity
    from edgeplan.planner.bundle import edgeplan_version
    from edgeplan.planner.search import SearchResult

    plans, cands, complete, failures = _collect(study)
    failed = len(failures)
    objectives = list(settings.objectives)
    baseline_plans = [p for p in plans if is_identity(p["recipe"])]
    pool = [p for p in plans if p["feasible"] and p["constraints_ok"]]
    front_idx = pareto_indices([p["metrics"] for p in pool], objectives)
    first = objectives[0]
    sign = 1.0 if DIRECTIONS[first] == "min" else -1.0
    front = sorted((pool[i] for i in front_idx), key=lambda p: sign * p["metrics"][METRIC_OF[first]])
    rejected = [{"recipe": c["recipe"], "reason": c["summary"].get("rejected"), "trial": c["trial"]}
                for c in cands.values() if c["summary"].get("rejected")]
    for i, p in enumerate(front):
        p["rank"] = i
        p["recipe_text"] = _recipe_text(p["recipe"], cands[p["recipe_hash"]]["summary"])
        p["evaluation"] = cands[p["recipe_hash"]]["summary"].get("evaluation")
        p["measured"] = cands[p["recipe_hash"]]["summary"].get("measured")
    provenance = (f"latency/energy/cost predicted from profiles {settings.target}"
                  + (f", {settings.cloud} and link {settings.link}" if settings.cloud else "")
                  + (_overhead_text(settings) if settings.cloud else "")
                  + " (error band per plan: error_band_pct); accuracy measured with ONNX Runtime on "
                  + (f"{settings.data}" if settings.data else "synthetic inputs (fidelity to the original)")
                  + "; measured_latency_ms_host measured on this machine, side by side with the baseline")
    bundles = _write_bundles(front[: settings.max_bundles], ev, settings, out, log)
    doc = ParetoFile(
        schema_version=SCHEMA_VERSION, edgeplan_version=edgeplan_version(), settings=settings,
        model_sha256=ev.model_sha256, accuracy_metric=ev.metric_name, objectives=objectives,
        baseline={"accuracy": ev.baseline_accuracy, "predicted_latency_ms": ev.baseline_latency_ms,
                  "export": ev.export_note},
        reference_plans=[{k: p[k] for k in ("name", "metrics", "cut_tensors", "sends_raw_input", "feasible", "error_band_pct")}
                         for p in baseline_plans],
        plans=[{**p, "bundle": str(bundles.get(p["rank"])) if p["rank"] in bundles else None} for p in front],
        rejected=rejected, trials_complete=complete, trials_failed=failed, failures=failures, pool_size=len(pool),
        interrupted=interrupted, provenance=provenance,
    )
    files = {"pareto.json": out / "pareto.json", "report.md": out / "report.md"}
    atomic_write_text(files["pareto.json"], doc.model_dump_json(indent=2))
    atomic_write_text(files["report.md"], _report_md(doc, ev))
    files.update(_plots(pool, front, objectives, out))
    return SearchResult(out, settings, doc.plans, len(pool), complete, failed, rejected, doc.baseline,
                        list(bundles.values()), interrupted, elapsed_s, files)


def _write_bundles(front: list[dict[str, Any]], ev: Any, settings: SearchSettings, out: Path,
                   log: Callable[[str], None]) -> dict[int, Path]:
    from edgeplan.planner.bundle import write_bundle

    written: dict[int, Path] = {}
    for p in front:
        rec = ev.evaluate(p["recipe"])  # cached; recomputed if a remote worker made it
        cand = Path(rec["onnx"])
        plans, _, schedule = ev.plans_for(cand)
        from edgeplan.planner.search_eval import _plan_key

        plan = next((x for x in plans if _plan_key(x) == p["key"]), None)
        if plan is None:
            log(f"plan {p['key']} could not be rebuilt; no bundle written for it")
            continue
        profiles = {"target": ev.target, **({"cloud": ev.cloud} if ev.cloud else {})}
        measured = rec["summary"].get("measured") if not plan.is_split else None
        path = write_bundle(out / "bundles" / f"plan-{p['rank']:02d}", plan=plan, source_onnx=cand,
                            source_sha256=ev.model_sha256, recipe=p["recipe"], profiles=profiles,
                            link=ev.link, predicted=None,
                            measured=({"latency_ms": measured["candidate_ms"]} if measured else None),
                            measured_provenance=(measured or {}).get("method", ""),
                            schedule=schedule, overwrite=True,
                            notes=[f"accuracy ({ev.metric_name}): {p['metrics']['accuracy']:.2f}"])
        written[p["rank"]] = path
    return written


def _report_md(doc: ParetoFile, ev: Any) -> str:
    s = doc.settings
    lines = [f"# edgeplan optimize: {s.model}", "",
             f"Target **{s.target}**" + (f", cloud **{s.cloud}** over **{s.link}**" if s.cloud else "")
             + f"; objectives {', '.join(doc.objectives)}; {doc.trials_complete} trials complete"
             + (f", {doc.trials_failed} failed" if doc.trials_failed else "")
             + (" (interrupted; re-run to resume)" if doc.interrupted else "") + ".", "",
             f"Accuracy column: {doc.accuracy_metric}. Latency, energy and cost are **predicted** "
             f"(profiles; error band in the last column); 'measured here' is ONNX Runtime on this machine, side by "
             f"side with the baseline.", ""]
    if s.constraints:
        lines += ["Constraints: " + ", ".join(str(c) for c in s.constraints), ""]
    head = "| plan | compression | cut | latency ms | accuracy | energy mJ | $/1k | device size MB | sent bytes | measured here ms | band |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    def row(name: str, p: dict[str, Any], comp: str) -> str:
        m = p["metrics"]
        cut = ", ".join(c["name"] for c in p.get("cut_tensors", [])) or ("(none)" if not p.get("sends_raw_input") else "raw input")
        meas = m.get("measured_latency_ms_host")
        return (f"| {name} | {comp} | {cut[:40]} | {_fmt(m['latency_ms'])} | {_fmt(m['accuracy'])} | {_fmt(m['energy_mj'])} "
                f"| {_fmt(m['cost_usd_per_1k'], 4)} | {_fmt(m['size_mb'])} | {m['transfer_bytes']} | {_fmt(meas)} "
                f"| ±{p.get('error_band_pct', 0):.0f}% |")

    for p in doc.reference_plans:
        lines.append(row(f"baseline {p['name']}" + ("" if p["feasible"] else " (raw input leaves the device)"), p, "none"))
    for p in doc.plans:
        lines.append(row(f"**pareto {p['rank']}** {p['name']}", p, p["recipe_text"]))
    if doc.rejected:
        lines += ["", "## Rejected candidates", ""]
        lines += [f"- {_recipe_text(r['recipe'])}: {r['reason']}" for r in doc.rejected]
    if doc.failures:
        lines += ["", "## Failed trials", ""] + [f"- {f}" for f in doc.failures]
    slower = [p for p in doc.plans if p.get("measured") and p["measured"].get("speedup", 1) < 1]
    if slower:
        lines += ["", "## Slower than the baseline when measured here", ""]
        lines += [f"- pareto {p['rank']}: {p['measured']['candidate_ms']:.2f} ms vs baseline "
                  f"{p['measured']['baseline_ms']:.2f} ms" for p in slower]
    lines += ["", f"Baseline export: {doc.baseline['export']}", "", f"Provenance: {doc.provenance}", ""]
    return "\n".join(lines)


def _plots(pool: list[dict[str, Any]], front: list[dict[str, Any]], objectives: list[str], out: Path) -> dict[str, Path]:
    """pareto.png (matplotlib) and pareto.html (plotly, self-contained) of the first two objectives."""
    xo, yo = (objectives + ["accuracy"])[:2] if len(objectives) >= 2 else (objectives[0], "accuracy")
    if yo == xo:
        yo = "latency" if xo != "latency" else "accuracy"
    xk, yk = METRIC_OF[xo], METRIC_OF[yo]
    files: dict[str, Path] = {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p["metrics"][xk] for p in pool], [p["metrics"][yk] for p in pool], s=14, c="#bbbbbb", label="evaluated plans")
    ax.scatter([p["metrics"][xk] for p in front], [p["metrics"][yk] for p in front], s=40, c="#d62728", label="Pareto front")
    ax.set_xlabel(f"{xk} ({'predicted' if xo != 'accuracy' else 'measured'})")
    ax.set_ylabel(f"{yk} ({'predicted' if yo != 'accuracy' else 'measured'})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out / "pareto.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    files["pareto.png"] = out / "pareto.png"
    import plotly.graph_objects as go

    def trace(points, name, color, size):
        return go.Scatter(x=[p["metrics"][xk] for p in points], y=[p["metrics"][yk] for p in points], mode="markers",
                          name=name, marker={"color": color, "size": size},
                          text=[f"{_recipe_text(p['recipe'])}<br>{p['name']}" for p in points])

    fig2 = go.Figure([trace(pool, "evaluated plans", "#bbbbbb", 6), trace(front, "Pareto front", "#d62728", 10)])
    fig2.update_layout(xaxis_title=xk, yaxis_title=yk, title="edgeplan optimize: Pareto front")
    with atomic_path(out / "pareto.html", suffix=".html") as tmp:
        tmp.write_text(fig2.to_html(include_plotlyjs=True, full_html=True))
    files["pareto.html"] = out / "pareto.html"
    return files


__all__ = ["ParetoFile", "write_outputs"]
