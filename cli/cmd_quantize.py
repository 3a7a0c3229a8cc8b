"""CLI: edgeplan quantize — int8 / fp16 quantization, measured against fp32 in the same run."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, console, err_console, print_json


def register(app: typer.Typer) -> None:
    @app.command(
        "quantize",
        help=(
            "Quantize MODEL (int8 static QDQ, dynamic int8, or fp16) and measure it against fp32 here.\n\n"
            "Calibrates on --data (.npz or an image folder) or, without it, on random inputs (labelled "
            "SYNTHETIC). Layers that lose too much accuracy are kept in fp32 (--max-accuracy-drop, points); "
            "int8 variants that keep slow-in-int8 groups (depthwise, squeeze-excitation, concat) in fp32 are "
            "timed side by side and the fastest is kept. A result slower than fp32 is reported as SLOWER.\n\n"
            "Examples:\n\n"
            "  edgeplan example digits-cnn -o ex && edgeplan quantize ex/model.onnx --data ex/eval.npz -o out/q\n\n"
            "  edgeplan quantize model.onnx --mode int8-dynamic --max-accuracy-drop 0.5 -o out/q --json\n\n"
            "  edgeplan quantize edgeplan.compressor.archs:digits_cnn --backend inc -o out/inc"
        ),
    )
    def quantize(
        model: str = typer.Argument(..., help="Model file (.onnx/.pt/.pth/.pt2) or pkg.module:function."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (quantized.onnx + quantize_report.json)."),
        mode: str = typer.Option("int8", "--mode", help="int8 (static QDQ), int8-dynamic, or fp16."),
        data: Path = typer.Option(None, "--data", help="Calibration/evaluation data: .npz (inputs[, labels]) or image folder."),
        eval_data: Path = typer.Option(None, "--eval-data", help="Measure accuracy/fidelity on this data instead of --data (e.g. a held-out split)."),
        backend: str = typer.Option("ort", "--backend", help="ort (ONNX Runtime) or inc (Intel Neural Compressor, PT2E; eager PyTorch models)."),
        max_drop: float = typer.Option(1.0, "--max-accuracy-drop", help="Allowed accuracy (or fidelity) loss in percentage points."),
        calibration_samples: int = typer.Option(64, "--calibration-samples", help="Samples used to calibrate int8 ranges."),
        synthetic: str = typer.Option("random", "--synthetic", help="Without --data: random (normal inputs) or bn-stats (inputs fitted to BatchNorm statistics; eager models, int8)."),
        exclude_op_type: list[str] = typer.Option([], "--exclude-op-type", help="Keep every node of this op type in fp32 (repeatable)."),
        exclude_node: list[str] = typer.Option([], "--exclude-node", help="Keep this node in fp32 (repeatable)."),
        no_per_channel: bool = typer.Option(False, "--no-per-channel", help="Per-tensor weight scales instead of per-channel."),
        no_speed_search: bool = typer.Option(False, "--no-speed-search", help="Do not try keeping slow-in-int8 groups in fp32."),
        threads: int = typer.Option(None, "--threads", help="Intra-op threads for timing (default: all usable cores; use 1 on a busy machine, torch threads degrade badly there)."),
        repeats: int = typer.Option(30, "--repeats", help="Timed runs per model (interleaved)."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.compressor.quantize import QuantizeConfig, quantize_model
        from edgeplan.hardware_profiles.errors import ConfigError

        try:
            config = QuantizeConfig(
                mode=mode,
                backend=backend,
                max_accuracy_drop_pts=max_drop,
                calibration_samples=calibration_samples,
                synthetic=synthetic,
                exclude_op_types=tuple(exclude_op_type),
                exclude_nodes=tuple(exclude_node),
                per_channel=not no_per_channel,
                speed_search=not no_speed_search,
                threads=threads,
                timing_repeats=repeats,
            )
        except Exception as e:  # noqa: BLE001 - pydantic ValidationError -> one line, exit 2
            raise ConfigError(_first_error(e)) from None
        err = err_console()
        progress = None if as_json else (lambda text: err.print(f"[dim]{text}[/dim]"))
        result = quantize_model(model, out, config, data=data, eval_data=eval_data, input_shape=input_shape,
                                trust_model=trust_model, progress=progress)
        if as_json:
            print_json({"model": model, "out_dir": str(out), **result.to_dict()})
            return
        _render(result)


def _first_error(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        return f"bad value for {loc}: {first.get('msg')} (got {first.get('input')!r})"
    return str(e).splitlines()[0]


def _render(r) -> None:
    from rich.table import Table

    out = console()
    cal = r.calibration_source or "none needed"
    if r.calibration_source and r.calibration_source.startswith("synthetic:"):
        cal = f"SYNTHETIC {r.calibration_source}"
    if r.synthetic_data and r.eval_source.startswith("synthetic:"):
        out.print(f"[bold yellow]Data: SYNTHETIC[/bold yellow] ({r.eval_source}); numbers below are fidelity to fp32 on random inputs")
    out.print(f"Calibration: {cal}" + (f" ({r.calibration_samples} samples)" if r.calibration_source else ""))
    out.print(f"Evaluation: {r.metric} on {r.eval_samples} samples of {r.eval_source}")
    t = Table(title=f"{r.mode} ({r.backend}) vs fp32, measured side by side in this run")
    t.add_column("model")
    t.add_column("runtime")
    t.add_column("median ms", justify="right")
    t.add_column("p90 ms", justify="right")
    t.add_column(f"{r.metric} %", justify="right")
    t.add_column("drop pts", justify="right")
    t.add_column("kept")
    for v in r.variants:
        t.add_row(
            v.name,
            v.runtime,
            f"{v.median_ms:.3f}",
            f"{v.p90_ms:.3f}",
            "-" if v.quality_pct is None else f"{v.quality_pct:.2f}",
            "-" if v.quality_drop_pts is None else f"{v.quality_drop_pts:.2f}" + ("" if v.within_budget else " (over)"),
            "yes" if v.chosen else "",
        )
    out.print(t)
    out.print(f"[dim]{r.timing_method}.[/dim]")
    if r.excluded_nodes:
        by_reason: dict[str, list[str]] = {}
        for e in r.excluded_nodes:
            by_reason.setdefault(e.reason, []).append(f"{e.name} ({e.op_type})")
        for reason, names in by_reason.items():
            shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
            out.print(f"Kept in fp32 ({reason}): {shown}", markup=False)
    else:
        out.print("Kept in fp32: none")
    for note in r.notes:
        out.print(f"[yellow]Note:[/yellow] {note}")
    # judge_speed's message starts with "SLOWER than fp32" when it is; shown in bold red then.
    out.print(f"[bold red]{r.message}[/bold red]" if r.slower_than_fp32 else r.message)
    out.print(f"Size: {r.size_fp32_bytes / 1e6:.2f} MB -> {r.size_quantized_bytes / 1e6:.2f} MB. Wrote {r.out_path}")
