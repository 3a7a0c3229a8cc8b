"""Write a ready-to-use example model folder: ``edgeplan example NAME -o DIR``.

``make_example(name, out_dir)`` writes, each file atomically:

- ``model.pt``: a TorchScript archive (``torch.jit.trace`` + ``torch.jit.save`` through
  ``intake.save_torchscript``, which stores the input shape/dtype inside). TorchScript loads without
  unpickling arbitrary Python, so ``edgeplan ... DIR/model.pt`` works without ``--trust-model``.
- ``model.onnx``: one self-contained ONNX file (legacy exporter, ``dynamo=False``, opset 17, input
  ``input``, output ``output``, dynamic batch axis ``batch``). Checked in ONNX Runtime against torch on
  a batch of 8 inputs; a difference above 1e-4 raises ``ExportError``.
- trained examples (digits-cnn, digits-resnet): ``train.npz`` and ``eval.npz`` with ``inputs``
  (float32 N x C x H x W) and ``labels`` (int64), a stratified 80/20 split of sklearn's ``load_digits``
  (1,437 / 360 images, pixels scaled from 0..16 to [0, 1]; digits-resnet upsamples 8x8 -> 32x32
  bilinearly). Eval accuracy is measured on ``eval.npz``.
- untrained examples: ``sample.npz`` with 8 synthetic ``inputs`` (normal(0, 1), or token ids for the
  transformer) and no labels: enough to measure latency and calibrate, not to judge accuracy.
- ``example.json``: an ``ExampleManifest`` (what was built, how, and the measured accuracy). It is
  written last: a folder without it is an interrupted or failed build.

Training recipe (both digits models): AdamW, OneCycle LR, batch 64, label smoothing 0.05, a fixed
seed; no augmentation. Measured on this 2-core machine (AMD EPYC, shared): see the constants below.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeplan.compressor.archs import EXAMPLES, ExampleSpec, example_input
from edgeplan.hardware_profiles.atomic import atomic_path, atomic_write_text
from edgeplan.hardware_profiles.errors import ExportError, InputError

__all__ = ["ExampleManifest", "ExampleResult", "make_example", "example_names", "load_digits_split"]

ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
N_SAMPLE_INPUTS = 8
EVAL_FRACTION = 0.2

# Default epochs, learning rates and torch threads (0 = decide at run time). Measured on this 2-core
# machine: digits-cnn, 10 epochs on 1 thread, eval accuracy 0.997 / 0.994 / 0.997 (seeds 0 / 1 / 2),
# 13-22 s under load average ~13 (6-15 epochs took 1.4-4.5 s with the machine nearly idle);
# digits-resnet, 4 epochs, eval accuracy 0.992 (seed 0), ~45 s idle (10-14 s per epoch with 2 threads),
# 138-365 s under load average 3-15.
#
# Threads: with more torch threads than free cores, OpenMP threads wait on each other and training
# slows down several-fold. Measured on this machine under load (load average 6-16 from other jobs):
# digits-cnn 12 epochs took 284 s with 2 threads vs 23 s with 1; a digits-resnet step (batch 64) took
# 9-10 s wall / 2.8 s CPU with 2 threads vs 2.7-4.6 s wall / 1.0 s CPU with 1, interleaved. Idle, 2
# threads are faster for digits-resnet (0.62 s per step vs ~1.0 s). So digits-cnn (tiny ops) always
# trains on 1 thread, and digits-resnet uses torch's thread count only when the 1-minute load average
# leaves room for it (``_training_threads``); the count used is recorded in example.json.
_RECIPES: dict[str, dict[str, float]] = {
    "digits-cnn": {"epochs": 10, "lr": 3e-3, "threads": 1},
    "digits-resnet": {"epochs": 4, "lr": 2e-3, "threads": 0},  # 0: decided by _training_threads
}


def _training_threads(fixed: int) -> int:
    import os

    import torch

    if fixed:
        return fixed
    n = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        return n
    return n if load + n <= (os.cpu_count() or n) + 0.5 else 1

Progress = Callable[[str], None]


class ExampleManifest(BaseModel):
    """``example.json``: what ``make_example`` built. Accuracy is measured, never assumed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    factory: str  # "pkg.module:function", loadable by compressor.intake
    factory_kwargs: dict[str, int]
    input_shape: list[int]
    input_dtype: str
    trained: bool
    seed: int
    epochs: int | None
    train_seconds: float | None
    train_threads: int | None
    eval_accuracy: float | None
    eval_accuracy_how: str
    n_train: int | None
    n_eval: int | None
    onnx_max_abs_diff: float
    files: dict[str, str]


@dataclass(frozen=True)
class ExampleResult:
    """Paths written and the measured numbers. ``eval_accuracy`` is None for untrained examples."""

    name: str
    out_dir: Path
    model_pt: Path
    model_onnx: Path
    example_json: Path
    data_files: tuple[Path, ...]
    trained: bool
    eval_accuracy: float | None
    train_seconds: float | None
    epochs: int | None
    onnx_max_abs_diff: float
    manifest: ExampleManifest


def example_names() -> list[str]:
    return list(EXAMPLES)


def _spec(name: str) -> ExampleSpec:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise InputError(f"unknown example {name!r}; choose one of: {', '.join(EXAMPLES)}") from None


def load_digits_split(size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's digits as (x_train, y_train, x_eval, y_eval): float32 N x 1 x size x size in [0, 1].

    Stratified 80/20 split with ``random_state=seed``. ``size`` other than 8 resizes bilinearly
    (``torch.nn.functional.interpolate``, align_corners=False).
    """
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    if size != 8:
        x = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False).numpy()
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
    x_tr, x_ev, y_tr, y_ev = train_test_split(x, y, test_size=EVAL_FRACTION, stratify=y, random_state=seed)
    return np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_ev), y_ev


def _train(model, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int, progress: Progress | None) -> None:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    batch = 64
    steps = (len(xt) + batch - 1) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps))
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            xb, yb = xt[idx], yt[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            total += len(idx)
        if progress:
            progress(f"epoch {ep + 1}/{epochs}: loss {loss_sum / total:.4f}, train accuracy {correct / total:.4f}")
    model.eval()


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)])
    return float((pred.numpy() == y).mean())


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def _save_torchscript(model, spec: ExampleSpec, x, path: Path) -> None:
    """Trace + save through ``intake.save_torchscript`` so the archive carries its input shape/dtype
    (an ``edgeplan.json`` extra file): ``edgeplan inspect DIR/model.pt`` then needs no --input-shape.
    The reloaded archive is checked against the model on ``x`` (batch 8, traced at batch 1)."""
    import torch

    from edgeplan.compressor.intake import InputSpec, save_torchscript

    save_torchscript(model, path, (InputSpec("input", tuple(spec.input_shape), spec.input_dtype),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        diff = float((loaded(x) - model(x)).abs().max())
    if not diff <= ONNX_TOLERANCE:
        raise ExportError(f"TorchScript archive {path} differs from the model by {diff:.2e}")


def _save_onnx(model, x, path: Path) -> float:
    """Export one self-contained ONNX file and return its max |ORT - torch| on ``x``."""
    import torch

    from edgeplan.compressor.ort_timing import make_session

    with atomic_path(path, suffix=".onnx") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x[:1],),
                str(tmp),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        sess = make_session(tmp, 1)  # a correctness check, not a timing: one thread is robust under load
        got = sess.run(["output"], {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        diff = float(np.abs(got - ref).max())
        if not diff <= ONNX_TOLERANCE:
            raise ExportError(f"ONNX export of the example differs from torch by {diff:.2e} (> {ONNX_TOLERANCE:g})")
    return diff


def make_example(
    name: str,
    out_dir: Path,
    *,
    seed: int = 0,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> ExampleResult:
    """Build example ``name`` into ``out_dir`` (created if needed) and return what was written.

    Trained examples are trained here on sklearn's digits (``epochs`` overrides the recipe); the
    others get random weights from the factory with ``seed``. Raises ``InputError`` for an unknown
    name or a bad ``epochs``, ``ExportError`` if an export does not match torch.
    """
    import torch

    spec = _spec(name)
    if epochs is not None and (not spec.trained or epochs < 1):
        raise InputError(f"--epochs applies only to trained examples and must be >= 1 (got {epochs} for {name})")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.factory(seed=seed)  # type: ignore[call-arg]
        data_files: list[Path] = []
        acc = train_s = None
        n_train = n_eval = None
        used_epochs = train_threads = None
        if spec.trained:
            size = spec.input_shape[-1]
            x_tr, y_tr, x_ev, y_ev = load_digits_split(size=size, seed=seed)
            n_train, n_eval = len(x_tr), len(x_ev)
            recipe = _RECIPES[name]
            used_epochs = int(epochs if epochs is not None else recipe["epochs"])
            saved_threads = torch.get_num_threads()
            train_threads = _training_threads(int(recipe["threads"]))
            say(f"training {name} on {n_train} load_digits images ({size}x{size}) for {used_epochs} epochs, "
                f"{train_threads} torch thread(s)")
            torch.set_num_threads(train_threads)
            try:
                t0 = time.perf_counter()
                _train(model, x_tr, y_tr, epochs=used_epochs, lr=recipe["lr"], seed=seed, progress=progress)
                train_s = time.perf_counter() - t0
            finally:
                torch.set_num_threads(saved_threads)
            acc = _accuracy(model, x_ev, y_ev)
            say(f"eval accuracy {acc:.4f} on {n_eval} held-out images ({train_s:.1f} s training)")
            data_files += [_save_npz(out_dir / "train.npz", inputs=x_tr, labels=y_tr),
                           _save_npz(out_dir / "eval.npz", inputs=x_ev, labels=y_ev)]
            check_x = torch.from_numpy(x_ev[:N_SAMPLE_INPUTS])
            how = (f"top-1 in PyTorch (eval mode) on eval.npz: {n_eval} held-out load_digits images, "
                   f"stratified {EVAL_FRACTION:.0%} split, seed {seed}")
        else:
            check_x = example_input(spec, batch=N_SAMPLE_INPUTS, seed=seed)
            data_files.append(_save_npz(out_dir / "sample.npz", inputs=check_x.numpy()))
            how = "not measured: random weights (sample.npz holds synthetic inputs without labels)"
        model.eval()
        say("writing model.pt (TorchScript)")
        pt = out_dir / "model.pt"
        _save_torchscript(model, spec, check_x, pt)
        say("writing model.onnx and checking it in ONNX Runtime")
        onnx_path = out_dir / "model.onnx"
        diff = _save_onnx(model, check_x, onnx_path)

    files = {"model_pt": pt.name, "model_onnx": onnx_path.name, **{p.stem + "_npz": p.name for p in data_files}}
    manifest = ExampleManifest(
        name=name,
        description=spec.description,
        factory=spec.factory_spec,
        factory_kwargs={"seed": seed},
        input_shape=list(spec.input_shape),
        input_dtype=spec.input_dtype,
        trained=spec.trained,
        seed=seed,
        epochs=used_epochs,
        train_seconds=None if train_s is None else round(train_s, 2),
        train_threads=train_threads,
        eval_accuracy=acc,
        eval_accuracy_how=how,
        n_train=n_train,
        n_eval=n_eval,
        onnx_max_abs_diff=diff,
        files=files,
    )
    ej = atomic_write_text(out_dir / "example.json", json.dumps(manifest.model_dump(), indent=2) + "\n")
    return ExampleResult(
        name=name,
        out_dir=out_dir,
        model_pt=pt,
        model_onnx=onnx_path,
        example_json=Path(ej),
        data_files=tuple(data_files),
        trained=spec.trained,
        eval_accuracy=acc,
        train_seconds=train_s,
        epochs=used_epochs,
        onnx_max_abs_diff=diff,
        manifest=manifest,
    )
