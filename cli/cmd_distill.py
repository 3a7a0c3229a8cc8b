"""CLI: ``edgeplan distill STUDENT --teacher TEACHER --data D -o OUT``: knowledge distillation.

Thin wrapper over ``edgeplan.compressor.distill.distill_model``; the table compares teacher and
student (before and after) on an evaluation split that training never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, console, err_console, print_json

_HELP = (
    "Distil TEACHER (the original) into STUDENT (e.g. the pruned model): soft targets at a temperature, "
    "plus hard labels when the data has them; Adam, early stopping on a held-out split, seeded.\n\n"
    "Writes OUT/student.onnx, OUT/student.pt (TorchScript) and OUT/distill_report.json. Without labels "
    "the student imitates the teacher only; without --data the run is DATA-FREE (random inputs), which "
    "recovers far less and is labelled as such. The final table is measured on an evaluation split: "
    "--eval-data, or 20% of --data held out before training.\n\n"
    "Examples:\n\n"
    "  edgeplan distill pruned/pruned.pt --teacher ex/model.pt --data ex/train.npz --eval-data ex/eval.npz -o kd\n\n"
    "  edgeplan distill pruned/pruned.onnx --teacher ex/model.onnx --data ex/train.npz --epochs 10 --temperature 4 -o kd --json"
)


def _fmt_pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _fmt(v, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def register(app: typer.Typer) -> None:
    @app.command("distill", help=_HELP)
    def distill_cmd(
        student: str = typer.Argument(..., help="Student model file (.pt/.pt2/.onnx) or pkg.module:function."),
        teacher: str = typer.Option(..., "--teacher", help="Teacher model (the original), any supported format."),
        data: Optional[Path] = typer.Option(None, "--data", help="Training data: .npz (inputs, optional labels) or an image folder. Omit for data-free mode."),
        eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Evaluation data (default: 20% of --data held out)."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (created if needed)."),
        epochs: int = typer.Option(5, "--epochs", min=0, help="Maximum epochs (early stopping may end sooner)."),
        temperature: float = typer.Option(4.0, "--temperature", min=1.0, help="Softmax temperature of the soft targets."),
        alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Weight of the teacher term (1 - alpha: labels)."),
        lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Adam learning rate."),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Mini-batch size."),
        patience: int = typer.Option(3, "--patience", min=0, help="Epochs without improvement before stopping (0: never)."),
        seed: int = typer.Option(0, "--seed", help="Seed for splits, shuffling and initialisation."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from edgeplan.compressor.distill import DistillConfig, distill_model

        cfg = DistillConfig.build(epochs=epochs, temperature=temperature, alpha=alpha, lr=lr,
                                  batch_size=batch_size, patience=patience, seed=seed)

        prog = Progress(TextColumn("[bold]distilling[/bold] epoch {task.fields[epoch]}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                        TextColumn("{task.fields[val]}"), TimeElapsedColumn(),
                        console=err_console(), transient=True, disable=as_json)
        task = prog.add_task("distill", total=None, epoch="-", loss="-", val="")

        def on_progress(p) -> None:
            val = f"val {p.val_metric_name} {p.val_metric:.4f}" if p.val_metric is not None else ""
            fields = dict(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.4f}")
            if val:
                fields["val"] = val
            prog.update(task, completed=p.step, total=p.steps, **fields)

        with prog:
            report = distill_model(student, teacher, data, out, cfg, eval_data_path=eval_data,
                                   trust_model=trust_model, input_shape=input_shape, progress=on_progress)

        if as_json:
            print_json(report.model_dump(mode="json"))
            return

        from rich.table import Table

        con = console()
        if report.data_free:
            con.print("[bold red]DATA-FREE distillation[/bold red]: trained on random normal inputs (no --data); "
                      "numbers below are fidelity to the teacher, not accuracy.")
        stop = f", stopped early after epoch {report.epochs_run}" if report.stopped_early else ""
        alpha_txt = f", alpha={cfg.alpha:g}" if report.data_mode == "labels" else ""
        temp_txt = f", T={cfg.temperature:g}" if report.loss_kind != "mse" else ""
        con.print(f"mode [bold]{report.data_mode}[/bold] ({report.loss_kind} loss{temp_txt}{alpha_txt}), "
                  f"{report.epochs_run} epochs{stop}; best epoch {report.best_epoch} "
                  f"(val {report.val_metric_name} {report.best_val_metric:.4f} on {report.n_val} held-out "
                  f"{'synthetic' if report.data_free else 'training'} samples)")
        rows = (("teacher", report.teacher_eval), ("student before", report.student_before),
                ("student after", report.student_after))
        images = any(ev.psnr_db is not None for _, ev in rows)
        labelled = any(ev.accuracy is not None for _, ev in rows)
        t = Table(title=f"Teacher vs student on the eval split: {report.eval_split}")
        cols = ["model", *(["accuracy"] if labelled else []), "top-1 agree" if not images else "PSNR dB",
                "cosine", *(["SSIM"] if images else []), "run in"]
        for col in cols:
            t.add_column(col, justify="left" if col in ("model", "run in") else "right")
        for name, ev in rows:
            ref = name == "teacher"
            cells = [name]
            if labelled:
                cells.append(_fmt_pct(ev.accuracy))
            cells.append("ref" if ref else (_fmt(ev.psnr_db, ".1f") if images else _fmt_pct(ev.agreement)))
            cells.append("ref" if ref else _fmt(ev.cosine, ".4f"))
            if images:
                cells.append("ref" if ref else _fmt(ev.ssim, ".4f"))
            cells.append("ONNX Runtime" if "ONNX" in ev.measured_with else "torch")
            t.add_row(*cells)
        con.print(t)
        for note in report.notes:
            con.print(f"[yellow]note:[/yellow] {note}")
        con.print(f"wrote {report.student_onnx}, {report.student_pt}, {Path(report.student_onnx).parent / 'distill_report.json'}")
