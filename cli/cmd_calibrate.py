"""CLI: edgeplan calibrate — measure this machine and write a fitted hardware profile."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, console, err_console, print_json


def register(app: typer.Typer) -> None:
    @app.command(
        "calibrate",
        help=(
            "Run ONNX Runtime micro-benchmarks on THIS machine and fit a hardware profile to them.\n\n"
            "Run it on the target device (e.g. a Raspberry Pi) with the thread count you deploy with; the "
            "profile records CPU model, governor, runtime version, threads and date. Takes ~2-3 minutes on "
            "a 2-core x86 VM, longer on a Pi (--quick: seconds, for tests).\n\n"
            "Examples:\n\n"
            "  edgeplan calibrate --name my-pi -o my-pi.toml --threads 4\n\n"
            "  edgeplan predict model.onnx --target my-pi.toml"
        ),
    )
    def calibrate(
        name: str = typer.Option(..., "--name", help="Profile name to record in the file."),
        output: Path = typer.Option(..., "--output", "-o", help="Profile TOML to write (atomically)."),
        threads: int = typer.Option(None, "--threads", min=1, help="ORT intra-op threads (default: usable cores)."),
        quick: bool = typer.Option(False, "--quick", help="A reduced set of micro-benchmarks (seconds)."),
        kind: str = typer.Option("host", "--kind", help="edge, cloud or host."),
        active_power_w: float = typer.Option(None, "--active-power-w", min=0.0, help="Measured busy power (W)."),
        idle_power_w: float = typer.Option(None, "--idle-power-w", min=0.0, help="Measured idle power (W)."),
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.planner.calibrate import calibrate as run_calibration

        err = err_console()

        def progress(msg: str) -> None:
            if not as_json:
                err.print(f"[dim]{msg}[/dim]")

        res = run_calibration(name, output, threads=threads, quick=quick, kind=kind,
                              active_power_w=active_power_w, idle_power_w=idle_power_w, progress=progress)
        p = res.profile
        if as_json:
            print_json({
                "profile": p.name, "path": str(res.path), "seconds": res.seconds,
                "fit_median_abs_error_pct": res.median_abs_error_pct, "error_band_pct": p.error_band_pct,
                "calibration": p.calibration,
                "points": [{"name": q.name, "dtype": q.dtype, "op_class": q.op_class, "measured_ms": q.measured_ms,
                            "predicted_ms": q.predicted_ms, "error_pct": q.error_pct} for q in res.points],
            })
            return
        from rich.table import Table

        out = console()
        t = Table(title=f"Calibration of '{p.name}': measured (ORT median) vs fitted model")
        for col in ("micro-benchmark", "measured ms", "fitted ms", "error"):
            t.add_column(col, justify="left" if col == "micro-benchmark" else "right")
        for q in res.points:
            t.add_row(q.name, f"{q.measured_ms:.4f}", f"{q.predicted_ms:.4f}", f"{q.error_pct:+.1f}%")
        out.print(t)
        out.print(f"Wrote {res.path} in {res.seconds:.0f} s. Fit median |error| {res.median_abs_error_pct:.1f}%, "
                  f"error band ±{p.error_band_pct:g}%. CPU {p.calibration.get('cpu_model')}, governor "
                  f"{p.calibration.get('governor')}, onnxruntime {p.calibration.get('onnxruntime')}, "
                  f"{p.calibration.get('threads')} thread(s).")
