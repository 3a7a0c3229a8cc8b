"""CLI: edgeplan predict — predicted latency, energy, memory and cost of a model on a hardware profile."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, WeightsOpt, console, print_json


def register(app: typer.Typer) -> None:
    @app.command(
        "predict",
        help=(
            "Predict latency, energy, peak memory and cloud cost of MODEL on a hardware profile.\n\n"
            "Nothing is run on the target: numbers come from the profile's cost model and carry its error band "
            "and provenance. `edgeplan profiles list` shows the targets; `edgeplan calibrate` makes a measured "
            "profile for your own device.\n\n"
            "Examples:\n\n"
            "  edgeplan predict model.onnx --target pi4\n\n"
            "  edgeplan predict edgeplan.compressor.archs:resnet18_like --target h100 --batch 8 --json\n\n"
            "  edgeplan predict model.pt --trust-model --input-shape 1x3x224x224 --target my-pi.toml --top 10"
        ),
    )
    def predict(
        model: str = typer.Argument(..., help="Model file (.pt/.pth/.pt2/.onnx) or pkg.module:function."),
        target: str = typer.Option("host", "--target", "-t", help="Hardware profile name or profile .toml path."),
        batch: int = typer.Option(1, "--batch", min=1, help="Batch size to predict for."),
        top: int = typer.Option(10, "--top", min=0, help="Show the N most expensive layers (0: none)."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        weights: Path = WeightsOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.planner.cost import predict_model, prediction_to_dict

        mp = predict_model(model, target, batch=batch, trust_model=trust_model,
                           weights=None if weights is None else str(weights), input_shape=input_shape)
        pred, analysis = mp.prediction, mp.analysis
        if as_json:
            doc = {"model": model, "onnx_path": mp.onnx_path, "format": mp.model_format,
                   **prediction_to_dict(pred, analysis, top=None)}
            print_json(doc)
            return
        from rich.table import Table

        out = console()
        lo, hi = pred.latency_range_ms
        t = Table(title=f"Predicted: {model} on {pred.profile}, batch {pred.batch} (not measured)")
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_row("latency", f"{pred.latency_ms:.3f} ms  (±{pred.error_band_pct:g}%: {lo:.3f}-{hi:.3f} ms)")
        t.add_row("throughput", f"{pred.throughput_per_s:,.1f} /s")
        t.add_row("energy per run", f"{pred.energy_mj:.2f} mJ")
        t.add_row("peak memory", f"{pred.peak_memory_bytes / 2**20:.1f} MiB (weights + live activations)")
        t.add_row("cost per 1,000", "-" if pred.cost_usd_per_1k is None else f"${pred.cost_usd_per_1k:.6f}")
        t.add_row("FLOPs", f"{round(analysis.total_flops * pred.batch / max(1, analysis.batch)):,}")
        out.print(t)
        if top:
            d = prediction_to_dict(pred, analysis, top=top)
            lt = Table(title=f"{top} most expensive layers (execution order)")
            for col in ("#", "name", "op", "dtype", "ms", "bound"):
                lt.add_column(col, justify="right" if col in ("#", "ms") else "left")
            for layer in d["layers"]:
                lt.add_row(str(layer["index"]), layer["name"], layer["op_type"], layer["dtype"],
                           f"{layer['latency_ms']:.4f}", layer["bound"])
            out.print(lt)
        for w in pred.warnings:
            out.print(f"[yellow]warning:[/yellow] {w}")
        out.print(f"[dim]{pred.provenance}. Energy = active power x latency; cost assumes the full instance is "
                  "billed only for inference time (batch as given, no idle).[/dim]")
