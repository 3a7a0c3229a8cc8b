"""CLI: edgeplan measure — real latency and memory on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, WeightsOpt, console, print_json, progress_bar


def register(app: typer.Typer) -> None:
    @app.command(
        "measure",
        help=(
            "Measure real latency and peak memory of MODEL on this machine.\n\n"
            "CPU: ONNX Runtime (the model is exported to ONNX and checked first). CUDA: torch with CUDA events.\n\n"
            "Examples:\n\n"
            "  edgeplan measure model.onnx --threads 2 --repeats 100\n\n"
            "  edgeplan measure model.pt --input-shape 1x3x224x224 --json\n\n"
            "  edgeplan measure model.pt --device cuda --cuda-graphs"
        ),
    )
    def measure(
        model: str = typer.Argument(..., help="Model file (.pt/.pth/.pt2/.onnx) or pkg.module:function."),
        threads: int = typer.Option(None, "--threads", min=1, help="Intra-op threads (default: all usable cores)."),
        batch: int = typer.Option(1, "--batch", min=1, help="Batch size."),
        repeats: int = typer.Option(50, "--repeats", min=1, help="Timed runs."),
        warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed warm-up runs."),
        device: str = typer.Option("cpu", "--device", help="cpu (ONNX Runtime) or cuda (torch)."),
        cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="With --device cuda: replay a CUDA graph."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        weights: Path = WeightsOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.planner.measure import measure_model

        prog, update = progress_bar("measuring", disable=as_json)
        with prog:
            m, facts = measure_model(model, device=device, threads=threads, batch=batch, repeats=repeats,
                                     warmup=warmup, cuda_graphs=cuda_graphs, trust_model=trust_model,
                                     weights=weights, input_shape=input_shape, progress=update)
        if as_json:
            print_json({"model": model, **facts, **m.to_dict()})
            return
        from rich.table import Table

        out = console()
        if facts.get("export"):
            out.print(facts["export"]["message"])
        t = Table(title=f"Measured: {model} ({facts['format']}), batch {m.batch}")
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_row("latency p50", f"{m.latency_p50_ms:.3f} ms")
        t.add_row("latency p90", f"{m.latency_p90_ms:.3f} ms")
        t.add_row("latency p99", f"{m.latency_p99_ms:.3f} ms")
        t.add_row("throughput", f"{m.throughput_per_s:.1f} /s")
        t.add_row("peak memory", f"{m.peak_memory_bytes / 2**20:.1f} MiB")
        out.print(t)
        rt = m.runtime
        out.print(f"[dim]{rt['method']}. Runtime {rt['name']} {rt['version']} ({rt['provider']}), "
                  f"threads {rt.get('threads', '-')}, CPU {rt['cpu']}, governor {rt.get('governor') or 'unreadable'}.[/dim]")
