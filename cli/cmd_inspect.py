"""CLI: ``edgeplan inspect MODEL``: per-layer MACs, params and activation sizes of a model.

Thin wrapper: ``planner.onnx_intake.onnx_for_model`` turns any model spec into an ONNX file (exported
and checked against torch in ONNX Runtime when it is not ONNX already), ``planner.graph.analyse``
counts it. The counts are computed from the graph (not measured, not predicted); conventions are in
``planner/graph_ops.py`` and are printed under the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, WeightsOpt

_HELP = (
    "Count MACs, FLOPs, parameters and activation bytes of a model, layer by layer.\n\n"
    "MODEL is an ONNX file, a TorchScript/.pt2/pickled model or a pkg.module:function factory; "
    "non-ONNX models are exported to ONNX first (and the export is checked against torch). "
    "MACs are multiply-accumulates of Conv/Gemm/MatMul layers; counted from the graph, not measured.\n\n"
    "Examples:\n\n"
    "  edgeplan inspect ex/model.onnx\n\n"
    "  edgeplan inspect ex/model.pt --trust-model --top 20\n\n"
    "  edgeplan inspect edgeplan.compressor.archs:resnet18_like --json"
)


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def register(app: typer.Typer) -> None:
    @app.command("inspect", help=_HELP)
    def inspect(
        model: str = typer.Argument(..., help="Model file or pkg.module:function factory."),
        input_shape: Optional[str] = ShapeOpt,
        trust_model: bool = TrustOpt,
        weights: Optional[Path] = WeightsOpt,
        top: int = typer.Option(15, "--top", min=1, help="How many of the heaviest layers (by MACs) to list."),
        batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Analyse at this batch size (dynamic-batch models)."),
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.cli.common import print_json
        from edgeplan.planner.graph import analyse, analysis_to_dict
        from edgeplan.planner.onnx_intake import onnx_for_model

        mo = onnx_for_model(model, trust_model=trust_model, weights=weights, input_shape=input_shape)
        # The intake knows every input's concrete shape (from the model or --input-shape); exported
        # files keep those input names, so the same shapes resolve any symbolic dims of the graph.
        shapes = {spec.name: tuple(spec.shape) for spec in mo.loaded.inputs}
        if batch is not None:
            shapes = {k: (batch, *v[1:]) for k, v in shapes.items()}
        analysis = analyse(mo.onnx_path, input_shapes=shapes, runtime=False)  # counts only: no ORT session
        source = {
            "model": str(model),
            "format": mo.loaded.format,
            "onnx_path": str(mo.onnx_path),
            "sha256": mo.loaded.sha256,
            "export": None if mo.export is None else {
                "exporter": mo.export.exporter, "max_abs_diff": mo.export.max_abs_diff,
                "matched": mo.export.matched,
            },
        }
        if as_json:
            print_json({"source": source, **analysis_to_dict(analysis)})
            return
        _render(analysis, source, mo, top)


def _render(analysis, source: dict, mo, top: int) -> None:
    from rich.table import Table

    from edgeplan.cli.common import console

    out = console()
    total_macs = analysis.total_macs
    heavy = sorted(analysis.nodes, key=lambda n: (n.macs, n.flops), reverse=True)[:top]
    # "#" is the node's position in execution order
    table = Table(title=f"{Path(source['model']).name}: {len(analysis.nodes)} nodes, heaviest {len(heavy)} by MACs (batch {analysis.batch})")
    for col, just in (("#", "right"), ("name", "left"), ("op", "left"), ("dtype", "left"), ("output shape", "left"),
                      ("MACs", "right"), ("params", "right"), ("% MACs", "right")):
        # names carry the module path (/layers.1/layers.1.0/conv1/Conv): wrap them, never cut them
        table.add_column(col, justify=just, overflow="fold" if col == "name" else "ellipsis",
                         no_wrap=col not in ("name", "output shape"))
    order = {n.name: i for i, n in enumerate(analysis.nodes)}
    for n in heavy:
        shape = " ".join("x".join(map(str, analysis.tensors[o].shape)) for o in n.outputs if o in analysis.tensors)
        pct = 100.0 * n.macs / total_macs if total_macs else 0.0
        table.add_row(str(order[n.name]), n.name, n.op_type, n.compute_dtype, shape, _si(n.macs) if n.known else "?",
                      _si(n.params), f"{pct:.1f}")
    out.print(table)
    out.print(
        f"[bold]Total[/bold]: {_si(total_macs)} MACs, {_si(analysis.total_flops)} FLOPs, "
        f"{_si(analysis.total_params)} params ({_bytes(analysis.total_param_bytes)}), "
        f"activations written {_bytes(analysis.total_activation_bytes)}"
    )
    ins = ", ".join(f"{n} {'x'.join(map(str, analysis.tensors[n].shape))} {analysis.tensors[n].dtype}" for n in analysis.inputs)
    out.print(f"Inputs: {ins}")
    if mo.export is not None:
        out.print(f"Export: {mo.export.describe()}")
    out.print("[dim]Counted from the ONNX graph (not measured). MACs: Conv/ConvTranspose/Gemm/MatMul multiply-accumulates; "
              "FLOPs add bias, element-wise, norm and pooling work (planner/graph_ops.py).[/dim]")
    for w in analysis.warnings:
        out.print(f"[yellow]warning:[/yellow] {w}")
