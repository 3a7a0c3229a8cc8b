"""CLI: ``edgeplan example NAME -o DIR``: write a ready-to-use example model folder.

Thin wrapper over ``edgeplan.compressor.examples.make_example``. The list of names comes from
``edgeplan.compressor.archs.EXAMPLES`` (importing archs imports torch, so ``--list`` and the command
body import it lazily; ``--help`` shows a static copy of the names kept in step by a test).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

# Static copy for --help (importing archs would import torch); tests/test_examples.py checks it.
EXAMPLE_NAMES_FOR_HELP = ("digits-cnn", "digits-resnet", "resnet18", "mobilenetv2", "transformer", "dcgan")

_HELP = (
    "Write an example model folder: model.pt (TorchScript), model.onnx, data (.npz) and example.json.\n\n"
    f"NAME is one of: {', '.join(EXAMPLE_NAMES_FOR_HELP)}. digits-cnn and digits-resnet are trained "
    "here on sklearn's digits (eval accuracy measured on the held-out eval.npz); the others have "
    "random weights and a sample.npz of synthetic inputs.\n\n"
    "Examples:\n\n"
    "  edgeplan example digits-cnn -o ex\n\n"
    "  edgeplan example resnet18 -o r18 --json\n\n"
    "  edgeplan example --list"
)


def register(app: typer.Typer) -> None:
    @app.command("example", help=_HELP)
    def example(
        name: Optional[str] = typer.Argument(None, help="Example name (see --list).", show_default=False),
        out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (created if needed)."),
        seed: int = typer.Option(0, "--seed", help="Seed for weights, data split and training."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (trained examples only)."),
        list_: bool = typer.Option(False, "--list", help="List the examples and exit."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    ) -> None:
        from rich.console import Console

        from edgeplan.hardware_profiles.errors import InputError

        out_console = Console()
        err_console = Console(stderr=True)
        if list_:
            from edgeplan.compressor.archs import EXAMPLES

            rows = [
                {"name": s.name, "trained": s.trained, "input_shape": list(s.input_shape),
                 "input_dtype": s.input_dtype, "description": s.description}
                for s in EXAMPLES.values()
            ]
            if as_json:
                print(json.dumps({"examples": rows}, indent=2))
            else:
                from rich.table import Table

                table = Table("name", "trained", "input", "description")
                for r in rows:
                    shape = "x".join(map(str, r["input_shape"]))
                    table.add_row(r["name"], "yes" if r["trained"] else "random weights", f"{shape} {r['input_dtype']}", r["description"])
                out_console.print(table)
            return
        if name is None:
            raise InputError("give an example NAME (see `edgeplan example --list`)")
        if out is None:
            raise InputError("give an output folder with -o DIR")

        from edgeplan.compressor.examples import N_SAMPLE_INPUTS, make_example

        def progress(msg: str) -> None:  # stderr in both modes: --json keeps stdout to one document
            err_console.print(f"[dim]{msg}[/dim]")

        result = make_example(name, out, seed=seed, epochs=epochs, progress=progress)
        doc = {
            "name": result.name,
            "out_dir": str(result.out_dir),
            "files": {
                "model_pt": str(result.model_pt),
                "model_onnx": str(result.model_onnx),
                "example_json": str(result.example_json),
                "data": [str(p) for p in result.data_files],
            },
            "trained": result.trained,
            "eval_accuracy": result.eval_accuracy,
            "eval_accuracy_how": result.manifest.eval_accuracy_how,
            "epochs": result.epochs,
            "train_seconds": result.train_seconds,
            "onnx_max_abs_diff": result.onnx_max_abs_diff,
        }
        if as_json:
            print(json.dumps(doc, indent=2))
            return
        out_console.print(f"wrote example [bold]{result.name}[/bold] to {result.out_dir}/")
        for p in (result.model_pt, result.model_onnx, *result.data_files, result.example_json):
            out_console.print(f"  {p}")
        out_console.print(
            f"ONNX Runtime output matches PyTorch (max abs diff {result.onnx_max_abs_diff:.1e}, measured on "
            f"{N_SAMPLE_INPUTS} inputs)"
        )
        if result.eval_accuracy is not None:
            n_eval = result.manifest.n_eval
            out_console.print(
                f"eval accuracy {result.eval_accuracy:.4f}: measured top-1 on the {n_eval} held-out images in "
                f"eval.npz ({result.epochs} epochs, {result.train_seconds:.1f} s training, seed {result.manifest.seed})"
            )
        else:
            out_console.print("eval accuracy: none (random weights; sample.npz has synthetic inputs, no labels)")
