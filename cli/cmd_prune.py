"""CLI: edgeplan prune — structured channel pruning (torch-pruning), any model format in."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, WeightsOpt, console, print_json, progress_bar
from edgeplan.hardware_profiles.errors import ConfigError


def _parse_override(text: str) -> dict:
    """``KIND:VALUE=RATIO`` with KIND in op_type, pattern, name (e.g. ``name:features.3=0.2``)."""
    kind, sep, rest = text.partition(":")
    value, eq, ratio = rest.rpartition("=")
    if not sep or not eq or kind not in ("op_type", "pattern", "name") or not value:
        raise ConfigError(f"malformed --override {text!r}: expected KIND:VALUE=RATIO with KIND op_type, pattern or name "
                          "(e.g. name:features.3=0.2)")
    try:
        r = float(ratio)
    except ValueError:
        raise ConfigError(f"malformed --override {text!r}: ratio {ratio!r} is not a number") from None
    return {"kind": kind, "value": value, "ratio": r}


def register(app: typer.Typer) -> None:
    @app.command(
        "prune",
        help=(
            "Structured channel pruning of MODEL: whole channels are removed, so the model is smaller and faster "
            "everywhere (not sparse). Works for every model format: TorchScript, .pt2 and ONNX are pruned through an "
            "exact ONNX -> torch conversion, checked against ONNX Runtime, without unpickling anything.\n\n"
            "Writes OUT/pruned.onnx, OUT/pruned.pt (TorchScript) and OUT/prune_report.json. MACs and parameters are "
            "counted with torch-pruning; latency is measured with ONNX Runtime on this machine, original and pruned "
            "side by side. The classifier and groups that torch-pruning cannot handle are left unpruned and listed. "
            "Fine-tune or distill afterwards: accuracy drops right after pruning.\n\n"
            "Override priority: --ratio < op_type < pattern (regex, re.match) < name; --ignore always wins.\n\n"
            "Examples:\n\n"
            "  edgeplan prune model.pt --ratio 0.5 --round-to 8 -o pruned\n\n"
            "  edgeplan prune model.onnx --ratio 0.3 --importance taylor --data train.npz -o pruned --json\n\n"
            "  edgeplan prune edgeplan.compressor.archs:resnet18_like --ratio 0.5 --override name:fc=0 "
            "--override 'pattern:layer4\\..*=0.3' -o pruned"
        ),
    )
    def prune(
        model: str = typer.Argument(..., help="Model file (.pt/.pth/.pt2/.onnx) or pkg.module:function."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (created)."),
        ratio: float = typer.Option(0.5, "--ratio", help="Fraction of each layer's output channels to remove (0..0.9)."),
        round_to: Optional[int] = typer.Option(None, "--round-to", help="Keep channel counts multiples of 8 or 16."),
        importance: str = typer.Option("magnitude", "--importance", help="magnitude, or taylor (needs --data)."),
        global_pruning: bool = typer.Option(False, "--global", help="Rank channels across layers (uneven widths)."),
        ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Module name never pruned (repeatable)."),
        override: Optional[List[str]] = typer.Option(
            None, "--override", help="Per-layer ratio KIND:VALUE=RATIO, KIND op_type|pattern|name (repeatable)."),
        data: Optional[Path] = typer.Option(None, "--data", help=".npz (inputs[, labels]) or image folder, for taylor."),
        latency: bool = typer.Option(True, "--latency/--no-latency", help="Time original and pruned ONNX side by side."),
        repeats: int = typer.Option(30, "--repeats", min=1, help="Timed runs per model for --latency."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        weights: Path = WeightsOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.compressor.prune import PruneConfig, prune_model

        config = PruneConfig.build(
            ratio=ratio,
            round_to=round_to,
            importance=importance,
            global_pruning=global_pruning,
            ignored_layers=tuple(ignore or ()),
            overrides=tuple(_parse_override(o) for o in (override or ())),
        )
        prog, update = progress_bar("pruning groups", disable=as_json)
        started = []

        def on_progress(done: int, total: int) -> None:  # start the bar lazily: early errors print cleanly
            if not started:
                prog.start()
                started.append(True)
            update(done, total)

        try:
            outcome = prune_model(model, out, config, trust_model=trust_model, weights=weights, input_shape=input_shape,
                                  data=data, measure_latency=latency, latency_repeats=repeats, threads=threads,
                                  progress=on_progress)
        finally:
            if started:
                prog.stop()
        rep = outcome.report
        if as_json:
            doc = rep.model_dump(mode="json")
            doc["files"] = {"onnx": str(outcome.onnx_path), "torchscript": str(outcome.torchscript_path),
                            "report": str(outcome.report_path)}
            if rep.latency is not None:
                doc["latency"]["speedup"] = rep.latency.speedup
            print_json(doc)
            return
        _render(rep, outcome)


def _render(rep, outcome) -> None:
    from rich.table import Table

    out = console()
    t = Table(title=f"Pruned {rep.source} ({rep.source_format}, ratio {rep.config.ratio:g}, {rep.config.importance})")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_column("after/before", justify="right")
    t.add_row("MACs", f"{rep.macs_before / 1e6:,.2f} M", f"{rep.macs_after / 1e6:,.2f} M",
              f"{rep.macs_after / max(rep.macs_before, 1):.2f}")
    t.add_row("params", f"{rep.params_before:,}", f"{rep.params_after:,}", f"{rep.params_after / max(rep.params_before, 1):.2f}")
    lat = rep.latency
    if lat is not None:
        t.add_row("latency (median)", f"{lat.original_median_ms:.3f} ms", f"{lat.pruned_median_ms:.3f} ms",
                  f"{lat.pruned_median_ms / lat.original_median_ms:.2f}")
    out.print(t)
    out.print(f"[dim]MACs and params counted with {rep.counted_with}.[/dim]")
    if lat is not None:
        out.print(f"[dim]Latency measured: {lat.method}.[/dim]")
        if lat.pruned_median_ms >= lat.original_median_ms:
            out.print(f"[bold red]The pruned model is not faster on this machine[/bold red] "
                      f"({lat.pruned_median_ms:.3f} ms vs {lat.original_median_ms:.3f} ms).")
        else:
            out.print(f"Measured speedup on this machine: {lat.speedup:.2f}x.")
    else:
        out.print(f"[dim]{rep.latency_note}.[/dim]")
    if rep.skipped:
        s = Table(title="Left unpruned")
        s.add_column("layers")
        s.add_column("why")
        for g in rep.skipped:
            names = ", ".join(g.layers[:4]) + (f" (+{len(g.layers) - 4})" if len(g.layers) > 4 else "")
            s.add_row(names, g.reason)
        out.print(s)
    for note in rep.notes:
        out.print(f"- {note}")
    out.print(f"Wrote {outcome.onnx_path}, {outcome.torchscript_path} and {outcome.report_path}.")
