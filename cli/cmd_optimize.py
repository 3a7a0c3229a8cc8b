"""CLI: edgeplan optimize — the Pareto search over compression x split."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, console, err_console, print_json


def register(app: typer.Typer) -> None:
    @app.command(
        "optimize",
        help=(
            "Search how to compress MODEL and where to split it; write the Pareto-optimal plans as bundles.\n\n"
            "Optuna multi-objective search (NSGA-II by default) over the compression passes' declared spaces "
            "(pruning ratio, round-to, importance, distillation, quantization); every cut of every candidate is "
            "priced by the split planner. Latency/energy/cost are predicted from profiles; accuracy is measured "
            "(on --data, else fidelity to the original on synthetic inputs). Re-running the same command resumes.\n\n"
            "--data FILE.npz is the eval set; a train.npz beside it is used for calibration/distillation.\n\n"
            "Examples:\n\n"
            "  edgeplan optimize ex/model.pt --target pi4 --data ex/eval.npz\n\n"
            "  edgeplan optimize model.onnx --target pi4 --cloud t4 --link 4g --objectives latency,accuracy,energy\n\n"
            "  edgeplan optimize model.pt --target pi4 --constraint 'accuracy_drop<=1' --trials 40 --out runs/a\n\n"
            "  edgeplan optimize model.pt --target pi4 --storage postgresql://u:p@db/edgeplan --study s1 --worker"
        ),
    )
    def optimize(
        model: str = typer.Argument(..., help="Model file (.pt/.pth/.pt2/.onnx) or pkg.module:function."),
        target: str = typer.Option(..., "--target", help="Edge device profile (e.g. pi4, pi5, jetson-orin-nano, host)."),
        cloud: str = typer.Option(None, "--cloud", help="Cloud GPU profile (t4, a10g, a100, h100) to plan splits."),
        link: str = typer.Option("4g", "--link", help="Link profile (3g, 4g, 5g, wifi, ethernet) or 20mbps/40ms."),
        data: Path = typer.Option(None, "--data", help="Eval data .npz (inputs, labels); train.npz beside it is used for training."),
        trials: int = typer.Option(12, "--trials", min=1, help="Trials in the study (a resumed study runs the rest)."),
        timeout: float = typer.Option(None, "--timeout", min=1, help="Stop starting trials after this many seconds."),
        objectives: str = typer.Option("latency,accuracy,size", "--objectives",
                                       help="Comma list of latency, accuracy, energy, cost, size."),
        constraint: list[str] = typer.Option(None, "--constraint", help="METRIC<=LIMIT, e.g. latency_ms<=50, accuracy_drop<=1 (repeatable)."),
        sampler: str = typer.Option("nsga2", "--sampler", help="nsga2 (default), tpe or random."),
        storage: str = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite in --out); postgresql://... for workers."),
        study: str = typer.Option(None, "--study", help="Study name (default: derived from the model and settings)."),
        worker: bool = typer.Option(False, "--worker", help="Only run trials of a shared study (needs --storage); write no outputs."),
        out: Path = typer.Option(Path("edgeplan-out"), "--out", help="Output folder."),
        seed: int = typer.Option(0, "--seed", help="Random seed (sampler, pruning, distillation)."),
        max_bundles: int = typer.Option(6, "--max-bundles", min=0, help="Bundles written for the best Pareto plans."),
        request_overhead_ms: float = typer.Option(
            None, "--request-overhead-ms", min=0.0,
            help="Split runtime cost per request (ms, once per network boundary) when pricing split plans; "
                 "default: measured on edgeplan's development machine (see edgeplan split --help)."),
        serialise_mb_per_s: float = typer.Option(
            None, "--serialise-mb-per-s",
            help="Split runtime cost per cut-tensor byte, as a rate in MB/s, when pricing split plans; "
                 "default: measured on edgeplan's development machine (see edgeplan split --help)."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.planner.search import run_search
        from edgeplan.planner.search_config import SearchSettings, parse_constraint

        settings = SearchSettings.build(
            model=model, target=target, cloud=cloud, link=link, data=str(data) if data else None,
            objectives=tuple(o.strip() for o in objectives.split(",") if o.strip()),
            constraints=tuple(parse_constraint(c) for c in (constraint or [])), trials=trials, timeout_s=timeout,
            sampler=sampler, seed=seed, storage=storage, study_name=study, out_dir=str(out),
            trust_model=trust_model, input_shape=input_shape, max_bundles=max_bundles,
            request_overhead_ms=request_overhead_ms, serialise_mb_per_s=serialise_mb_per_s,
        )
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        err = err_console()
        prog = Progress(TextColumn("[bold]optimize"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[best]}"), console=err, transient=True, disable=as_json)
        task = prog.add_task("trials", total=trials, best="")

        def on_progress(p) -> None:
            best = "  ".join(f"{k} {v:.3g}" for k, v in p.best.items())
            prog.update(task, completed=p.trials_done, total=p.trials_total, best=f"best: {best}" if best else "")

        with prog:
            result = run_search(settings, worker=worker, progress=on_progress,
                                log=(lambda s: prog.console.print(f"[dim]{s}[/dim]")) if not as_json else None)
        if as_json:
            print_json({"out_dir": str(result.out_dir), "trials_complete": result.trials_complete,
                        "trials_failed": result.trials_failed, "interrupted": result.interrupted,
                        "baseline": result.baseline, "plans": result.front, "rejected": result.rejected,
                        "bundles": [str(b) for b in result.bundles],
                        "files": {k: str(v) for k, v in result.files.items()}})
            return
        out_c = console()
        if worker:
            out_c.print(f"worker done: {result.trials_complete} trials complete in the shared study")
            return
        from rich.table import Table

        t = Table(title=f"Pareto plans for {settings.target}" + (f" + {settings.cloud} over {settings.link}" if settings.cloud else ""))
        cloud_cols = settings.cloud is not None  # plan names and $ only mean something with a cloud tier
        cols = ["#", "compression"] + (["plan"] if cloud_cols else []) + ["latency ms*", "accuracy", "eval",
                                                                           "energy mJ*"]
        cols += (["$/1k*"] if cloud_cols else []) + ["size MB", "measured ms"]
        for col in cols:
            t.add_column(col, justify="left" if col in ("compression", "plan", "eval") else "right")
        for p in result.front:
            m = p["metrics"]
            meas = m.get("measured_latency_ms_host")
            row = [str(p["rank"]), p["recipe_text"]] + ([p["name"]] if cloud_cols else [])
            row += [f"{m['latency_ms']:.2f}", f"{m['accuracy']:.2f}", (p.get("evaluation") or "").split(" ")[0],
                    f"{m['energy_mj']:.2f}"]
            row += ([f"{m['cost_usd_per_1k']:.4f}"] if cloud_cols else [])
            row += [f"{m['size_mb']:.2f}", f"{meas:.2f}" if meas is not None else "-"]
            t.add_row(*row)
        out_c.print(t)
        out_c.print(f"[dim]* predicted from profiles (error band in pareto.json); eval: proxy = small sample only, "
                    f"full = whole eval set + measured here; accuracy: "
                    f"{'measured on ' + str(data) if data else 'fidelity to the original on synthetic inputs'}; "
                    f"measured ms: ONNX Runtime on this machine.[/dim]")
        out_c.print(f"baseline: accuracy {result.baseline['accuracy']:.2f}, predicted {result.baseline['predicted_latency_ms']:.2f} ms")
        if result.rejected:
            out_c.print(f"[yellow]{len(result.rejected)} candidate(s) rejected (predicted slower than the baseline on "
                        f"the target); see report.md[/yellow]")
        slower = [p for p in result.front if (p.get("measured") or {}).get("speedup", 1.0) < 1.0]
        if slower:
            out_c.print(f"[yellow]{len(slower)} plan(s) on the front measured SLOWER than the baseline on this machine "
                        f"(pareto {', '.join(str(p['rank']) for p in slower)}); see report.md[/yellow]")
        if result.interrupted:
            out_c.print("[yellow]interrupted: finished trials kept; re-run the same command to resume[/yellow]")
        out_c.print(f"wrote {result.out_dir}/report.md, pareto.json, pareto.png, pareto.html and {len(result.bundles)} bundle(s)")
