"""Knowledge distillation: train a student (typically the pruned model) to imitate its teacher (the original).

Loss (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network"):

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

The ``T^2`` keeps the soft-target gradients at the same scale as the hard-label gradients whatever the
temperature, so ``alpha`` means the same thing at T = 1 and T = 8. Without labels the loss is the
soft term alone ("teacher-only"); ``alpha`` is then irrelevant. For outputs that are not class scores
(N x C with C >= 2), e.g. a generator's images or an embedding, there is no softmax to soften: the
loss is the mean squared error to the teacher's outputs and the temperature is unused (said in the
result's ``loss_kind``).

Data modes (``DistillResult.data_mode``):

- ``"labels"``: the data has labels; soft + hard loss; validation metric = accuracy on the held-out split.
- ``"teacher-only"``: real inputs, no labels; soft loss; validation metric = top-1 agreement with the
  teacher (cosine similarity of outputs for non-class outputs).
- ``"data-free"``: no data at all (or a ``synthetic:`` dataset): the student learns the teacher's
  function on random standard-normal inputs at the model's input shape. This transfers much less than
  real data (the inputs are far from the data distribution) and its validation metric is agreement on
  *synthetic* inputs, which says little about accuracy on real ones. It is labelled as such everywhere.
  ``data_free_samples`` inputs are generated, capped at 256 MiB (e.g. 445 samples of 3 x 224 x 224 float32).

Design decisions a later engineer needs:

- The teacher's outputs are computed once, before training (there is no augmentation, so they would be
  the same every epoch); each epoch then costs only the student's forward/backward.
- A held-out validation split (``val_fraction``, at least 1 sample, seeded) drives early stopping:
  an epoch "improves" when its metric beats the best so far, or ties it while the validation loss
  drops by more than 0.1% (discrete metrics such as accuracy tie often on small splits). After
  ``patience`` epochs without improvement training stops (``stopped_early``), and the weights of the
  best epoch are restored. Epoch 0 is the student *before* training: if no epoch beats it, the student
  comes back unchanged, so distillation never makes the held-out metric worse.
- Reproducible: the RNGs are seeded from ``config.seed`` (torch inside ``torch.random.fork_rng`` so
  the caller's global RNG state is not disturbed; numpy through a ``Generator``). Same seed, same
  data, same thread count -> the same weights.
- The student passed in is not modified: it is deep-copied and the copy is trained and returned.
  If none of its parameters requires grad (a module frozen for inference, e.g. ``prune_module``'s
  result), all of them are trained; a partly frozen student keeps its frozen parameters frozen.
- A BatchNorm in training mode cannot take a batch of one, so a last mini-batch of size 1 is merged
  into the previous one.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeplan.compressor.data import Dataset, load_data, synthetic_data
from edgeplan.compressor.search_space import SearchParam
from edgeplan.compressor.evaluate import EvalResult, evaluate_onnx, evaluate_outputs, run_module
from edgeplan.hardware_profiles.atomic import atomic_write_text
from edgeplan.hardware_profiles.errors import CompressionError, DataError, InputError, config_error

__all__ = [
    "DistillConfig",
    "SearchParam",
    "EpochStats",
    "DistillProgress",
    "DistillResult",
    "DistillReport",
    "distill",
    "distill_model",
]

DataMode = Literal["labels", "teacher-only", "data-free"]
_DATA_FREE_BYTES = 256 * 2**20  # cap on generated inputs: 2048 samples of 3x224x224 would be 1.2 GB
_LOSS_REL_IMPROVEMENT = 1e-3  # a tie on the metric counts as improvement if val loss drops by > 0.1%


class DistillConfig(BaseModel):
    """Settings of a distillation run (written into ``distill_report.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(5, ge=0, le=10_000, description="maximum epochs; 0 = evaluate only")
    lr: float = Field(1e-3, gt=0, le=10, description="Adam learning rate")
    temperature: float = Field(4.0, ge=1, le=50, description="softmax temperature T of the soft targets")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft (teacher) term; 1 - alpha for labels")
    batch_size: int = Field(64, ge=1, le=1_000_000)
    patience: int = Field(3, ge=0, description="epochs without improvement before stopping; 0 = never stop early")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of the training data held out for early stopping")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    data_free_samples: int = Field(2048, ge=2, description="synthetic inputs generated in data-free mode")

    @classmethod
    def search_space(cls) -> tuple[SearchParam, ...]:
        """What a search may vary: epochs in {0, 2, 5, 10} (0 = no distillation), temperature in [1, 8].

        Same shape as ``PruneConfig.search_space()`` and ``QuantizeConfig.search_space()``: a tuple of
        ``SearchParam`` whose ``suggest(trial)`` names the Optuna parameter ``distill.<name>``.
        """
        return (
            SearchParam("epochs", "categorical", choices=(0, 2, 5, 10)),
            SearchParam("temperature", "float", low=1.0, high=8.0),
        )

    @classmethod
    def from_trial(cls, trial: Any, base: "DistillConfig | None" = None) -> "DistillConfig":
        """A config with the searchable settings drawn from an Optuna trial, the rest from ``base``."""
        values = (base or cls()).model_dump()
        for p in cls.search_space():
            values[p.name] = p.suggest(trial, prefix="distill.")
        return cls.build(**values)

    @classmethod
    def build(cls, **kwargs: Any) -> "DistillConfig":
        """Validate like the constructor but raise ``ConfigError`` with a one-line message."""
        try:
            return cls(**kwargs)
        except ValidationError as e:
            raise config_error(e, "distillation setting", "config") from None


@dataclass(frozen=True)
class EpochStats:
    """One epoch. Epoch 0 is the student before training (``train_loss`` None)."""

    epoch: int
    train_loss: float | None
    val_loss: float
    val_metric: float
    seconds: float


@dataclass(frozen=True)
class DistillProgress:
    """Reported to the ``progress`` callback after every mini-batch and every epoch.

    ``step``/``steps`` count mini-batches over the whole run (``epochs * batches per epoch``);
    ``loss`` is the running mean of this epoch's training loss; ``val_metric`` is set only on the
    event that ends an epoch (``epoch_done``).
    """

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    val_metric: float | None
    val_metric_name: str
    epoch_done: bool


@dataclass(frozen=True)
class DistillResult:
    student: Any  # the trained nn.Module (a copy; the input student is not modified), in eval mode
    history: tuple[EpochStats, ...]
    best_epoch: int
    best_val_metric: float
    val_metric_name: str  # "accuracy" | "agreement" | "cosine"
    data_mode: str  # "labels" | "teacher-only" | "data-free"
    loss_kind: str  # "kd+ce" | "kd" | "mse"
    stopped_early: bool
    epochs_run: int
    n_train: int
    n_val: int
    data_source: str
    seconds: float

    @property
    def data_free(self) -> bool:
        return self.data_mode == "data-free"


# --------------------------------------------------------------------------------------------- core


def _batches(n: int, size: int) -> list[tuple[int, int]]:
    """Mini-batch bounds; a trailing batch of one sample is merged into the previous one (BatchNorm)."""
    bounds = [(i, min(i + size, n)) for i in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def _first(out: Any) -> Any:
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out


def _input_shape_of(student: Any, teacher: Any, input_shape: tuple[int, ...] | None) -> tuple[tuple[int, ...], str]:
    if input_shape is not None:
        return tuple(int(d) for d in input_shape), "float32"
    for m in (student, teacher):
        shape = getattr(m, "example_input_shape", None)
        if shape:
            return tuple(int(d) for d in shape)[1:], str(getattr(m, "example_input_dtype", "float32"))
    raise InputError("data-free distillation needs the input shape: pass input_shape (one sample, batch excluded)")


def distill(
    student: Any,
    teacher: Any,
    data: Dataset | None,
    config: DistillConfig | None = None,
    *,
    progress: Callable[[DistillProgress], None] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> DistillResult:
    """Distil ``teacher`` into a copy of ``student`` on ``data`` (see the module docstring).

    ``data`` is a ``compressor.data.Dataset``; ``None`` (or a synthetic dataset) selects the data-free
    mode, which needs ``input_shape`` (one sample, batch excluded) unless a model carries an
    ``example_input_shape`` attribute. ``teacher`` may be any callable torch module (eager,
    TorchScript, fx); ``student`` must be trainable (an eager ``nn.Module`` or an ``fx.GraphModule``,
    not TorchScript).
    """
    import torch
    import torch.nn.functional as F

    cfg = config or DistillConfig()
    t_start = time.perf_counter()
    if isinstance(student, torch.jit.ScriptModule):
        raise InputError("a TorchScript student cannot be trained; convert it to an nn.Module first "
                         "(compressor.onnx_to_torch.onnx_to_module on its ONNX export; distill_model does this)")
    if not any(True for _ in student.parameters()):
        raise InputError("the student has no parameters to train")

    # ---- data and mode
    if data is None or data.synthetic:
        if data is None:
            shape, dtype = _input_shape_of(student, teacher, input_shape)
            per_sample = int(np.prod(shape)) * np.dtype(dtype).itemsize
            n_free = min(cfg.data_free_samples, max(64, _DATA_FREE_BYTES // max(per_sample, 1)))
            data = synthetic_data(shape, n_free, seed=cfg.seed, dtype=dtype)
        mode: DataMode = "data-free"
        labels = None
    else:
        mode = "labels" if data.labels is not None else "teacher-only"
        labels = data.labels
    x_all = np.ascontiguousarray(data.inputs)
    n = x_all.shape[0]
    if n < 2:
        raise DataError(f"distillation needs at least 2 samples, got {n}")

    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(n)
    n_val = max(1, int(round(n * cfg.val_fraction)))
    val_idx, train_idx = np.sort(perm[:n_val]), perm[n_val:]
    if train_idx.size == 0:
        raise DataError(f"too few samples ({n}) to hold out a validation split")

    # ---- teacher outputs, once
    try:
        t_all = run_module(teacher, x_all, batch_size=max(cfg.batch_size, 256))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a teacher that cannot run on the data is a data problem
        raise DataError(f"the teacher cannot run on data of shape {tuple(x_all.shape[1:])}: {str(e).splitlines()[0]}") from None
    classes = t_all.ndim == 2 and t_all.shape[1] >= 2
    if labels is not None and classes and (labels.min() < 0 or labels.max() >= t_all.shape[1]):
        raise DataError(f"labels range {int(labels.min())}..{int(labels.max())} does not fit a model with {t_all.shape[1]} outputs")
    if labels is not None and not classes:
        labels = None  # hard labels need class scores; fall back to imitating the teacher
        mode = "teacher-only"
    loss_kind = ("kd+ce" if labels is not None else "kd") if classes else "mse"
    metric_name = "accuracy" if labels is not None else ("agreement" if classes else "cosine")
    T = float(cfg.temperature)
    alpha = float(cfg.alpha) if labels is not None else 1.0

    def loss_fn(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not classes:
            return F.mse_loss(s, t)
        kd = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean") * (T * T)
        if y is None or alpha >= 1.0:
            return kd
        return alpha * kd + (1.0 - alpha) * F.cross_entropy(s, y)

    x_t = torch.from_numpy(x_all)
    t_t = torch.from_numpy(np.ascontiguousarray(t_all, dtype=np.float32))
    y_t = None if labels is None else torch.from_numpy(labels.astype(np.int64))

    def validate(model: Any) -> tuple[float, float]:
        out = run_module(model, x_all[val_idx], batch_size=max(cfg.batch_size, 256))
        s = torch.from_numpy(out)
        ref = t_t[val_idx]
        with torch.no_grad():
            vloss = float(loss_fn(s, ref, None if y_t is None else y_t[val_idx]))
        ev = evaluate_outputs(out, labels=None if labels is None else labels[val_idx], reference_outputs=t_all[val_idx],
                              data_source="validation")
        value = {"accuracy": ev.accuracy, "agreement": ev.agreement, "cosine": ev.cosine}[metric_name]
        return float(value), vloss

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = copy.deepcopy(student)
        if not any(p.requires_grad for p in model.parameters()):
            # A module handed back for inference (prune_module's result, a loaded model with frozen
            # weights): train all of it. A partly frozen student keeps its frozen parts frozen.
            for p in model.parameters():
                p.requires_grad_(True)
        s0 = run_module(model, x_all[:2])  # raises DataError when the student cannot take the data
        if s0.shape[1:] != t_all.shape[1:]:
            raise InputError(f"student output shape {s0.shape[1:]} differs from the teacher's {t_all.shape[1:]}")
        v0, l0 = validate(model)
        history = [EpochStats(0, None, l0, v0, 0.0)]
        best = (v0, l0, 0, copy.deepcopy(model.state_dict()))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        bounds = _batches(train_idx.size, cfg.batch_size)
        steps = cfg.epochs * len(bounds)
        step = 0
        stale = 0
        stopped_early = False
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            order = train_idx[rng.permutation(train_idx.size)]
            model.train()
            total, count = 0.0, 0
            for a, b in bounds:
                idx = torch.from_numpy(order[a:b])
                s = _first(model(x_t[idx]))
                loss = loss_fn(s, t_t[idx], None if y_t is None else y_t[idx])
                if not torch.isfinite(loss):
                    raise CompressionError(f"distillation diverged (loss {float(loss)} at epoch {epoch}); lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * (b - a)
                count += b - a
                step += 1
                if progress is not None:
                    progress(DistillProgress(epoch, cfg.epochs, step, steps, total / count, None, metric_name, False))
            model.eval()
            v, vl = validate(model)
            history.append(EpochStats(epoch, total / count, vl, v, time.perf_counter() - t0))
            if progress is not None:
                progress(DistillProgress(epoch, cfg.epochs, step, steps, total / count, v, metric_name, True))
            improved = v > best[0] or (v == best[0] and vl < best[1] * (1.0 - _LOSS_REL_IMPROVEMENT))
            if improved:
                best = (v, vl, epoch, copy.deepcopy(model.state_dict()))
                stale = 0
            else:
                stale += 1
                if cfg.patience and stale >= cfg.patience and epoch < cfg.epochs:
                    stopped_early = True
                    break
        model.load_state_dict(best[3])
        model.eval()

    return DistillResult(
        student=model,
        history=tuple(history),
        best_epoch=best[2],
        best_val_metric=float(best[0]),
        val_metric_name=metric_name,
        data_mode=mode,
        loss_kind=loss_kind,
        stopped_early=stopped_early,
        epochs_run=len(history) - 1,
        n_train=int(train_idx.size),
        n_val=int(val_idx.size),
        data_source=data.source,
        seconds=time.perf_counter() - t_start,
    )


# ------------------------------------------------------------------------------------ file driver


class EpochRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    epoch: int
    train_loss: float | None
    val_loss: float
    val_metric: float
    seconds: float


class EvalRecord(BaseModel):
    """An ``EvalResult`` as written to JSON (PSNR ``inf`` is written as the string ``"inf"``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_samples: int
    data_source: str
    synthetic: bool
    output_kind: str
    accuracy: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    psnr_db: float | str | None = None
    ssim: float | None = None
    measured_with: str

    @classmethod
    def of(cls, ev: EvalResult, measured_with: str) -> "EvalRecord":
        return cls(**ev.to_dict(), measured_with=measured_with)


class DistillReport(BaseModel):
    """``distill_report.json``: what was trained on what, and how teacher and student compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    student: str
    teacher: str
    data: str | None
    data_mode: str
    data_free: bool
    loss_kind: str
    config: DistillConfig
    epochs_run: int
    stopped_early: bool
    best_epoch: int
    val_metric_name: str
    best_val_metric: float
    n_train: int
    n_val: int
    history: tuple[EpochRecord, ...]
    eval_split: str
    teacher_eval: EvalRecord
    student_before: EvalRecord
    student_after: EvalRecord
    student_onnx: str
    student_pt: str
    export_max_abs_diff: float | None
    seconds: float
    notes: tuple[str, ...] = ()


def _trainable(loaded: Any, work: Path, label: str) -> Any:
    """An nn.Module we can train for a loaded model (eager as is; anything else rebuilt through ONNX)."""
    from edgeplan.compressor.export import to_onnx
    from edgeplan.compressor.onnx_to_torch import onnx_to_module

    if loaded.is_eager:
        return copy.deepcopy(loaded.module)
    if loaded.onnx_path is not None:
        return onnx_to_module(loaded.onnx_path)
    path = work / f"{label}.onnx"
    report = to_onnx(loaded, path)
    if not report.matched:
        raise CompressionError(f"the {label}'s ONNX export does not match it ({report.describe()}); cannot train it")
    return onnx_to_module(path)


def _split_eval(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    n = len(data)
    n_eval = max(1, int(round(n * fraction)))
    if n - n_eval < 2:
        raise DataError(f"{data.source}: {n} samples are too few to hold out an evaluation split; pass eval data")
    perm = np.random.default_rng(seed + 1_000_003).permutation(n)
    ev, tr = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])

    def sub(idx: np.ndarray) -> Dataset:
        return Dataset(data.inputs[idx], None if data.labels is None else data.labels[idx], data.source)

    return sub(tr), sub(ev)


def distill_model(
    student_spec: str | Path,
    teacher_spec: str | Path,
    data_path: str | Path | None,
    out_dir: str | Path,
    config: DistillConfig | None = None,
    *,
    eval_data_path: str | Path | None = None,
    eval_fraction: float = 0.2,
    trust_model: bool = False,
    input_shape: str | None = None,
    progress: Callable[[DistillProgress], None] | None = None,
) -> DistillReport:
    """Load student and teacher (any format ``compressor.intake`` accepts), distil, save, evaluate.

    Writes ``out_dir/student.onnx`` (checked against torch in ORT), ``out_dir/student.pt``
    (TorchScript: loads again without ``--trust-model``) and ``out_dir/distill_report.json``, each
    atomically. Evaluation data: ``eval_data_path`` when given; else ``eval_fraction`` of the data is
    held out (seeded) *before* training and never seen by it (the report's ``eval_split`` says which).
    Teacher and before-training student are evaluated in torch; the saved ``student.onnx`` in ONNX
    Runtime. Without ``data_path`` the run is data-free and evaluation uses synthetic inputs
    (fidelity only), unless ``eval_data_path`` is given.
    """
    from edgeplan.compressor.intake import load_model, save_torchscript
    from edgeplan.compressor.export import export_onnx

    cfg = config or DistillConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    data = load_data(data_path) if data_path is not None else None
    eval_given = load_data(eval_data_path) if eval_data_path is not None else None
    teacher_l = load_model(teacher_spec, trust_model=trust_model, input_shape=input_shape)
    student_l = load_model(student_spec, trust_model=trust_model, input_shape=input_shape)
    if teacher_l.inputs and student_l.inputs and len(teacher_l.inputs) != len(student_l.inputs):
        raise InputError("teacher and student take a different number of inputs")
    if len(student_l.inputs) != 1:
        raise InputError(f"distillation supports single-input models; the student has {len(student_l.inputs)} inputs")
    sample_shape = tuple(student_l.inputs[0].shape[1:])
    notes: list[str] = []

    with tempfile.TemporaryDirectory(prefix="edgeplan-distill-") as tmp:
        work = Path(tmp)
        student = _trainable(student_l, work, "student")
        teacher = teacher_l.module if teacher_l.module is not None else _trainable(teacher_l, work, "teacher")

        if data is not None and data.inputs.shape[1:] != sample_shape:
            raise DataError(f"{data.source}: samples have shape {tuple(data.inputs.shape[1:])}, the student expects {sample_shape}")
        if eval_given is not None:
            train_ds, eval_ds = data, eval_given
            eval_split = f"{eval_given.source} (given; {len(eval_given)} samples)"
        elif data is not None:
            train_ds, eval_ds = _split_eval(data, eval_fraction, cfg.seed)
            eval_split = (f"{len(eval_ds)} samples ({eval_fraction:.0%}) of {data.source} held out before training "
                          f"(seed {cfg.seed}); trained on the other {len(train_ds)}")
        else:
            train_ds = None
            eval_ds = synthetic_data(sample_shape, 512, seed=cfg.seed + 7, dtype=student_l.inputs[0].dtype)
            eval_split = "512 synthetic normal(0,1) inputs (no data given): fidelity to the teacher only"
        if train_ds is None:
            notes.append("DATA-FREE: trained on random normal inputs, not on real data; expect far less recovery than with data")

        result = distill(student, teacher, train_ds, cfg, progress=progress, input_shape=sample_shape)

        t_eval = run_module(teacher, eval_ds.inputs, batch_size=256)
        teacher_eval = evaluate_outputs(t_eval, labels=eval_ds.labels, data_source=eval_ds.source)
        before = evaluate_outputs(run_module(student, eval_ds.inputs, batch_size=256), labels=eval_ds.labels,
                                  reference_outputs=t_eval, data_source=eval_ds.source)

        onnx_path = out / "student.onnx"
        pt_path = out / "student.pt"
        ex = student_l.example_inputs()
        rep = export_onnx(result.student, ex, onnx_path, input_names=[i.name for i in student_l.inputs])
        if not rep.matched:
            notes.append(f"student.onnx: {rep.describe()}")
        save_torchscript(result.student, pt_path, student_l.inputs)
        after = evaluate_onnx(onnx_path, eval_ds, reference_outputs=t_eval, batch_size=256)

    if before.accuracy is not None and after.accuracy is not None and after.accuracy < before.accuracy:
        notes.append(f"student accuracy on the eval split went DOWN with distillation "
                     f"({100 * before.accuracy:.1f}% -> {100 * after.accuracy:.1f}%)")
    report = DistillReport(
        student=str(student_spec),
        teacher=str(teacher_spec),
        data=None if data is None else data.source,
        data_mode=result.data_mode,
        data_free=result.data_free,
        loss_kind=result.loss_kind,
        config=cfg,
        epochs_run=result.epochs_run,
        stopped_early=result.stopped_early,
        best_epoch=result.best_epoch,
        val_metric_name=result.val_metric_name,
        best_val_metric=result.best_val_metric,
        n_train=result.n_train,
        n_val=result.n_val,
        history=tuple(EpochRecord(**h.__dict__) for h in result.history),
        eval_split=eval_split,
        teacher_eval=EvalRecord.of(teacher_eval, "torch (teacher as loaded)"),
        student_before=EvalRecord.of(before, "torch (student before distillation)"),
        student_after=EvalRecord.of(after, "ONNX Runtime CPU on student.onnx"),
        student_onnx=str(onnx_path),
        student_pt=str(pt_path),
        export_max_abs_diff=rep.max_abs_diff,
        seconds=time.perf_counter() - t0,
        notes=tuple(notes),
    )
    atomic_write_text(out / "distill_report.json", json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    return report
