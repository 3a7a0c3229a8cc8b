"""CLI: edgeplan gate — fail CI when a model blows its latency, energy, size, memory or accuracy budget.

Exit codes: 0 every budget passed, 1 a budget failed (after the report is printed and written), 2 a usage
or input error (malformed budget, missing data, unknown target). Budget logic lives in
``planner.gate``; config files in ``planner.gate_config``; JUnit/Markdown in ``planner.gate_report``.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, WeightsOpt, console, err_console, print_json

_HELP = (
    "Check MODEL_OR_BUNDLE against budgets; exit 0 if all pass, 1 if one fails, 2 on bad input.\n\n"
    "Budgets come from --config FILE, else ./edgeplan.toml (\\[gate]) or ./pyproject.toml "
    "(\\[tool.edgeplan.gate]); flags override them. Latency, energy and peak memory are predicted from the "
    "--target profile (with its error band); --target host or --measure measures them here with ONNX Runtime. "
    "A prediction whose error band straddles the limit is 'uncertain' and a regression within the noise "
    "'inconclusive': both pass with a warning unless --strict.\n\n"
    "Examples:\n\n"
    "  edgeplan gate model.onnx --target pi4 --max-latency-ms 40 --max-size-mb 8\n\n"
    "  edgeplan gate model.onnx --min-accuracy 0.97 --data val.npz --junit gate.xml\n\n"
    "  edgeplan gate new.onnx --baseline old.onnx --max-regression 5% --markdown gate.md\n\n"
    "  edgeplan gate bundle/ --target jetson-nano --json"
)


def register(app: typer.Typer) -> None:
    @app.command("gate", help=_HELP)
    def gate(
        model: str = typer.Argument(..., help="Model file (.onnx/.pt/.pt2), pkg.module:function, or a bundle folder."),
        target: str = typer.Option(None, "--target", help="Hardware profile (pi4, jetson-nano, h100, a .toml) or host."),
        max_latency_ms: str = typer.Option(None, "--max-latency-ms", help="Latency budget in ms, e.g. 40."),
        max_energy_mj: str = typer.Option(None, "--max-energy-mj", help="Energy per inference budget in mJ (predicted)."),
        max_size_mb: str = typer.Option(None, "--max-size-mb", help="Size on disk of the ONNX model in MB (10^6 bytes)."),
        max_peak_memory_mb: str = typer.Option(None, "--max-peak-memory-mb", help="Peak memory budget in MB (10^6 bytes)."),
        min_accuracy: str = typer.Option(None, "--min-accuracy", help="Minimum top-1 accuracy, 0.97 or 97% (needs --data)."),
        data: str = typer.Option(None, "--data", help="Labelled data (.npz with inputs + labels, or an image folder)."),
        baseline: str = typer.Option(None, "--baseline", help="Baseline model to compare latency against, in the same run."),
        max_regression: str = typer.Option(None, "--max-regression", help="Allowed latency regression vs --baseline, e.g. 5%."),
        measure: bool = typer.Option(False, "--measure", help="Also measure latency/memory on this machine (use on a device runner)."),
        strict: bool = typer.Option(False, "--strict", help="Fail 'uncertain' predictions and 'inconclusive' regressions."),
        config: Path = typer.Option(None, "--config", help="Budget file: an edgeplan.toml (\\[gate]) or a pyproject.toml."),
        junit: Path = typer.Option(None, "--junit", help="Write JUnit XML here (one testcase per check)."),
        markdown: Path = typer.Option(None, "--markdown", help="Write a Markdown summary here (also appended to $GITHUB_STEP_SUMMARY)."),
        threads: int = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads for measurements."),
        repeats: int = typer.Option(50, "--repeats", min=3, help="Timed runs for measured latency."),
        regression_budget_s: float = typer.Option(90.0, "--regression-budget-s", min=1.0,
                                                  help="Time limit for the baseline comparison (seconds)."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        weights: Path = WeightsOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.planner.gate import run_gate
        from edgeplan.planner.gate_config import load_budgets, merge_budgets
        from edgeplan.planner.gate_report import append_step_summary, write_junit, write_markdown

        base, cfg_path = load_budgets(config)
        budgets = merge_budgets(base, {
            "target": target, "max_latency_ms": max_latency_ms, "max_energy_mj": max_energy_mj,
            "max_size_mb": max_size_mb, "max_peak_memory_mb": max_peak_memory_mb, "min_accuracy": min_accuracy,
            "data": data, "baseline": baseline, "max_regression_pct": max_regression, "measure": measure,
            "strict": strict,
        })
        err = err_console()
        with err.status("gating", spinner="dots") if not as_json else nullcontext() as status:
            def progress(msg: str) -> None:
                if status is not None:
                    status.update(msg)

            report = run_gate(model, budgets, trust_model=trust_model, weights=weights, input_shape=input_shape,
                              threads=threads, repeats=repeats, regression_time_budget_s=regression_budget_s,
                              config_path=cfg_path, progress=progress)
        if junit:
            write_junit(report, junit)
        if markdown:
            write_markdown(report, markdown)
        try:
            append_step_summary(report)
        except OSError as e:  # a broken $GITHUB_STEP_SUMMARY must not turn a gate result into a crash
            err.print(f"edgeplan: warning: could not append to $GITHUB_STEP_SUMMARY: {e}", markup=False)
        if as_json:
            print_json(report.to_dict())
        else:
            _render(report)
        if not report.passed:
            # CheckFailed maps to exit 1 in cli/errors.py (typer.Exit(1) is swallowed by click's
            # standalone_mode=False in cli/main.py, which then reports 0).
            from edgeplan.hardware_profiles.errors import CheckFailed

            failed = report.failed_checks
            raise CheckFailed(f"{len(failed)} of {len(report.checks)} gate budget(s) failed: "
                              + ", ".join(c.id for c in failed))


def _render(report) -> None:  # noqa: ANN001 - GateReport, imported lazily
    from rich.table import Table

    from edgeplan.planner.gate_report import format_margin, format_value

    out = console()
    verdict = "[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"
    t = Table(title=f"edgeplan gate {report.model}" + (f" on {report.target}" if report.target else ""))
    for col, just in (("check", "left"), ("value", "right"), ("limit", "right"), ("margin", "right"),
                      ("source", "left"), ("status", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    colours = {"pass": "green", "fail": "red", "uncertain": "yellow", "inconclusive": "yellow"}
    for c in report.checks:
        shown = f"{c.limit:g}%" if c.unit == "%" else format_value(c.limit, c.unit)
        status = f"[{colours.get(c.status, 'white')}]{c.status}[/]"
        if c.status in ("uncertain", "inconclusive"):
            status += " (fails: --strict)" if report.strict else " (passes)"
        band = f" ±{c.error_band_pct:g}%" if c.error_band_pct else ""
        t.add_row(c.title, format_value(c.value, c.unit) + band, f"{c.comparison} {shown}", format_margin(c),
                  c.source, status)
    out.print(t)
    out.print(f"Gate {verdict}" + (f" (config {report.config})" if report.config else ""))
    for w in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    prof = report.model_info.get("profile")
    if prof:
        out.print(f"[dim]profile {prof['name']}: {prof['provenance']}[/dim]", highlight=False)
    for c in report.checks:
        out.print(f"[dim]{c.title}: {c.method}[/dim]", highlight=False)
