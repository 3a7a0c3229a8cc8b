"""The ``edgeplan`` console script: a Typer app whose commands live in small ``cli/*.py`` modules.

Conventions for command modules (keep commands thin: parse, call one library function, render):
- each module defines ``register(app: typer.Typer) -> None`` and is listed in ``COMMAND_MODULES``;
- heavy libraries (torch, onnx, onnxruntime, optuna) are imported inside the command function,
  never at module top level, so that ``edgeplan --help`` and ``edgeplan profiles list`` stay instant;
- library errors are raised, never printed: ``main()`` maps them through ``cli.errors.ERROR_TABLE``;
- ``--json`` prints one JSON document on stdout and nothing else there (progress goes to stderr).
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from edgeplan.cli.errors import classify

COMMAND_MODULES = [
    "edgeplan.cli.cmd_example",
    "edgeplan.cli.cmd_inspect",
    "edgeplan.cli.cmd_measure",
    "edgeplan.cli.cmd_profiles",
    "edgeplan.cli.cmd_predict",
    "edgeplan.cli.cmd_calibrate",
    "edgeplan.cli.cmd_prune",
    "edgeplan.cli.cmd_quantize",
    "edgeplan.cli.cmd_distill",
    "edgeplan.cli.cmd_split",
    "edgeplan.cli.cmd_gate",
    "edgeplan.cli.cmd_optimize",
    "edgeplan.cli.cmd_runtime",
]

app = typer.Typer(
    name="edgeplan",
    help=(
        "Compress PyTorch models and plan where to run them: edge device, edge server or cloud.\n\n"
        "Examples:\n\n"
        "  edgeplan example digits-cnn -o ex\n\n"
        "  edgeplan inspect ex/model.pt --trust-model\n\n"
        "  edgeplan measure ex/model.onnx --json"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["EDGEPLAN_DEBUG"] = "1"


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point. Returns (and exits with) the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("EDGEPLAN_DEBUG") == "1"
    try:
        rv = app(args=args, prog_name="edgeplan", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0  # typer.Exit(n) comes back as a return value here
    except typer.Exit as e:  # raised by commands for a clean non-zero exit
        code = e.exit_code
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except Exception as e:  # noqa: BLE001 - this is the one place errors become exit codes
        # Typer >= 0.2x raises its own (vendored) click exceptions, subclasses of typer.TyperException, e.g.
        # BadParameter for an option's min=, and does not install click; older Typer raises click's own.
        try:
            import click

            click_abort, click_error = (click.exceptions.Abort,), (click.ClickException,)
        except ImportError:
            click_abort, click_error = (), ()
        if isinstance(e, (*click_abort, typer.Abort)):
            print("edgeplan: aborted", file=sys.stderr)
            code = 130
        elif isinstance(e, click_error) or (isinstance(e, typer.TyperException) and hasattr(e, "show")):
            e.show()
            code = 2
        else:
            if debug:
                import traceback

                traceback.print_exc()
            code, message = classify(e)
            print(f"edgeplan: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        print("edgeplan: interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
