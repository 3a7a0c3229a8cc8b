"""Shared CLI pieces: common options, JSON output, progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

TRUST_HELP = "Allow loading a pickled nn.Module (this executes code from the file)."
SHAPE_HELP = "Input shape when the model does not carry it, e.g. 1x3x224x224 (several: 1x3x8x8,1x10; dtype: 1x128:int64)."

TrustOpt = typer.Option(False, "--trust-model", help=TRUST_HELP)
ShapeOpt = typer.Option(None, "--input-shape", help=SHAPE_HELP)
WeightsOpt = typer.Option(None, "--weights", help="state_dict for a pkg.module:function factory (loaded with weights_only=True).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=_default) + "\n")


def _default(o: Any) -> Any:
    from pathlib import Path

    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def console():
    from rich.console import Console

    return Console()


def err_console():
    from rich.console import Console

    return Console(stderr=True)


def progress_bar(description: str, *, disable: bool = False):
    """A rich progress bar on stderr; returns (progress, callback(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err_console(), transient=True, disable=disable)
    task = prog.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        prog.update(task, completed=done, total=total)

    return prog, update
