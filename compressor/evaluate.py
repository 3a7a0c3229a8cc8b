"""Accuracy and fidelity of a (compressed) model: pure numpy metrics plus ONNX Runtime / torch runners.

What is measured, and why:

- ``accuracy``: top-1 accuracy against the dataset's labels, when the dataset has labels and the
  output is a class-score matrix (N x C, C >= 2). This is the only number that says "how good".
- ``agreement``: the fraction of samples whose top-1 class equals the reference model's top-1 class.
  With no labels (or synthetic data) this is the honest substitute: it says "how faithful to the
  original", not "how good". A compressed model can agree 99% and still lose more than 1 point of
  accuracy where the original was right by a small margin, so prefer ``accuracy`` when it exists.
- ``cosine``: mean over samples of the cosine similarity of the flattened outputs (model vs
  reference). Works for any output shape (logits, embeddings, images). A pair of all-zero vectors
  counts as 1.0 (identical), one zero and one non-zero vector as 0.0.
- ``psnr_db`` and ``ssim``: for image outputs (4-D, N x C x H x W, e.g. a GAN generator).

PSNR: ``10 * log10(data_range**2 / MSE)`` with the MSE taken over *all* elements of all samples (one
number for the set, so that one pixel-identical sample does not turn a mean into ``inf``); ``inf``
when the outputs are identical. ``data_range`` defaults to ``max - min`` of the *reference* outputs
(2.0 for a tanh generator that uses its full range), because the candidate may overshoot and must not
move the yardstick.

SSIM: Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to
structural similarity", with the parameters of their paper and of scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``:
an isotropic Gaussian window (sigma 1.5, truncated at 3.5 sigma -> 11 x 11), K1 = 0.01, K2 = 0.03,
C1 = (K1 L)^2, C2 = (K2 L)^2 with L = ``data_range``. The SSIM map is computed per sample and per
channel (channels are independent 2-D images, as scikit-image's ``channel_axis`` does) and averaged.
Like scikit-image, the border of width 5 (half the window) is left out of the mean where the
image is larger than the window; smaller images (e.g. 8 x 8) are averaged whole, with the filter's
``reflect`` boundary. Identical images give exactly 1.0.

Models with several outputs are compared on their first output (for classifiers that is the logits;
the convention of ``compressor.export``).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeplan.hardware_profiles.errors import DataError, InputError

__all__ = [
    "EvalResult",
    "top1_accuracy",
    "top1_agreement",
    "cosine_similarity",
    "psnr",
    "ssim",
    "evaluate_outputs",
    "run_onnx",
    "run_module",
    "evaluate_onnx",
    "evaluate_module",
]

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # -> radius int(3.5 * 1.5 + 0.5) = 5, an 11 x 11 window
SSIM_K1 = 0.01
SSIM_K2 = 0.03


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and/or fidelity of one model on one dataset. ``None`` means "not applicable here".

    ``data_source`` is the dataset's source (a path, or ``synthetic:...``); ``synthetic`` says the
    inputs were generated, in which case only fidelity numbers mean anything. ``output_kind`` is
    ``"classes"`` (N x C scores), ``"image"`` (N x C x H x W) or ``"other"``.
    """

    n_samples: int
    data_source: str
    synthetic: bool
    output_kind: str
    accuracy: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    psnr_db: float | None = None
    ssim: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # JSON has no inf: an identical image gives PSNR = inf, written as the string "inf".
        if d["psnr_db"] is not None and not np.isfinite(d["psnr_db"]):
            d["psnr_db"] = "inf"
        return d

    def summary(self) -> str:
        """One human line, e.g. ``accuracy 98.9%, agreement 99.4%, cosine 0.9991 (n=360, eval.npz)``."""
        parts = []
        if self.accuracy is not None:
            parts.append(f"accuracy {100 * self.accuracy:.1f}%")
        if self.agreement is not None:
            parts.append(f"top-1 agreement {100 * self.agreement:.1f}%")
        if self.cosine is not None:
            parts.append(f"cosine {self.cosine:.4f}")
        if self.psnr_db is not None:
            parts.append(f"PSNR {self.psnr_db:.1f} dB")
        if self.ssim is not None:
            parts.append(f"SSIM {self.ssim:.4f}")
        what = ", ".join(parts) or "no metric applies"
        syn = ", synthetic inputs: fidelity only" if self.synthetic else ""
        return f"{what} (n={self.n_samples}, {self.data_source}{syn})"


# ------------------------------------------------------------------------------------- pure metrics


def _output_kind(y: np.ndarray) -> str:
    if y.ndim == 2 and y.shape[1] >= 2:
        return "classes"
    if y.ndim == 4:
        return "image"
    return "other"


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"outputs to compare have different shapes {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise InputError("no samples to compare")
    return a, b


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label. ``logits`` is N x C, ``labels`` N integers."""
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise InputError(f"accuracy needs N x C scores and N labels, got {logits.shape} and {labels.shape}")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def top1_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the reference's argmax (both N x C)."""
    a, b = _check_pair(outputs, reference)
    if a.ndim != 2:
        raise InputError(f"top-1 agreement needs N x C scores, got shape {a.shape}")
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def cosine_similarity(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-sample cosine similarity of the flattened outputs (computed in float64)."""
    a, b = _check_pair(outputs, reference)
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    denom = np.where(na * nb > 0, na * nb, 1.0)
    cos = np.where(na * nb > 0, dot / denom, 0.0)
    cos = np.where(both_zero, 1.0, cos)
    return float(np.clip(cos, -1.0, 1.0).mean())


def _data_range(reference: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        if data_range <= 0:
            raise InputError(f"data_range must be > 0, got {data_range}")
        return float(data_range)
    r = float(np.max(reference) - np.min(reference))
    return r if r > 0 else 1.0  # a constant reference image: fall back to unit range


def psnr(outputs: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the whole set; ``inf`` for identical outputs."""
    a, b = _check_pair(outputs, reference)
    rng = _data_range(b, data_range)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(rng * rng / mse))


def ssim(outputs: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity of N x C x H x W images (Gaussian window per channel; module doc)."""
    from scipy.ndimage import gaussian_filter

    a, b = _check_pair(outputs, reference)
    if a.ndim != 4:
        raise InputError(f"SSIM needs N x C x H x W images, got shape {a.shape}")
    rng = _data_range(b, data_range)
    c1 = (SSIM_K1 * rng) ** 2
    c2 = (SSIM_K2 * rng) ** 2
    n, c, h, w = a.shape
    x = a.astype(np.float64).reshape(n * c, h, w)
    y = b.astype(np.float64).reshape(n * c, h, w)
    # Filter only over H and W (sigma 0 on the stacked sample/channel axis): channels stay independent.
    sig = (0.0, SSIM_SIGMA, SSIM_SIGMA)

    def filt(z: np.ndarray) -> np.ndarray:
        return gaussian_filter(z, sigma=sig, truncate=SSIM_TRUNCATE, mode="reflect")

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    smap = num / den
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if h > 2 * pad and w > 2 * pad:
        smap = smap[:, pad : h - pad, pad : w - pad]
    return float(smap.mean())


def evaluate_outputs(
    outputs: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    reference_outputs: np.ndarray | None = None,
    data_source: str = "unknown",
    data_range: float | None = None,
) -> EvalResult:
    """All metrics that apply to ``outputs`` (the pure core behind ``evaluate_onnx``/``evaluate_module``).

    Accuracy needs labels and class scores; agreement needs a reference and class scores; cosine
    needs a reference; PSNR/SSIM need a reference and image outputs. Labels of synthetic data are
    never used (``data_source`` starting with ``synthetic:``).
    """
    outputs = np.asarray(outputs)
    kind = _output_kind(outputs)
    synthetic = data_source.startswith("synthetic:")
    accuracy = agreement = cosine = p = s = None
    if labels is not None and kind == "classes" and not synthetic:
        if labels.shape[0] != outputs.shape[0]:
            raise DataError(f"{outputs.shape[0]} outputs but {labels.shape[0]} labels")
        if labels.max(initial=0) >= outputs.shape[1] or labels.min(initial=0) < 0:
            raise DataError(
                f"labels range {int(labels.min())}..{int(labels.max())} does not fit a model with {outputs.shape[1]} outputs"
            )
        accuracy = top1_accuracy(outputs, labels)
    if reference_outputs is not None:
        ref = np.asarray(reference_outputs)
        if ref.shape != outputs.shape:
            raise InputError(f"model output shape {outputs.shape} differs from the reference's {ref.shape}")
        cosine = cosine_similarity(outputs, ref)
        if kind == "classes":
            agreement = top1_agreement(outputs, ref)
        elif kind == "image":
            p = psnr(outputs, ref, data_range)
            s = ssim(outputs, ref, data_range)
    return EvalResult(
        n_samples=int(outputs.shape[0]),
        data_source=data_source,
        synthetic=synthetic,
        output_kind=kind,
        accuracy=accuracy,
        agreement=agreement,
        cosine=cosine,
        psnr_db=p,
        ssim=s,
    )


# ------------------------------------------------------------------------------------------- runners

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def run_onnx(onnx_path: str | Path, inputs: np.ndarray, *, batch_size: int = 64, threads: int | None = None) -> np.ndarray:
    """Run the first output of a single-input ONNX model over ``inputs`` (N x ...), batched.

    A model exported with a fixed batch dimension (an int, not a symbol) is fed batches of exactly
    that size (the last one padded and trimmed), so static-batch exports evaluate correctly too.
    Inputs are cast to the dtype the model declares.
    """
    from edgeplan.compressor.ort_timing import make_session

    p = Path(onnx_path)
    if not p.exists():
        raise InputError(f"model not found: {p}")
    try:
        sess = make_session(p, threads)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise InputError(f"{p}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
    ins = sess.get_inputs()
    if len(ins) != 1:
        raise InputError(f"{p}: evaluation supports single-input models; this one has {len(ins)} inputs")
    meta = ins[0]
    dtype = _ORT_DTYPES.get(meta.type, np.float32)
    x = np.asarray(inputs).astype(dtype, copy=False)
    shape = list(meta.shape)
    if len(shape) != x.ndim:
        raise DataError(f"data samples have shape {x.shape[1:]} but {p.name} expects {tuple(shape[1:])} (rank differs)")
    for i, (want, got) in enumerate(zip(shape[1:], x.shape[1:]), start=1):
        if isinstance(want, int) and want > 0 and want != got:
            raise DataError(f"data samples have shape {tuple(x.shape[1:])} but {p.name} expects {tuple(shape[1:])}")
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    size = fixed or max(1, int(batch_size))
    out_name = sess.get_outputs()[0].name
    chunks = []
    for sl in _batches(x.shape[0], size):
        xb = x[sl]
        n = xb.shape[0]
        if fixed and n < fixed:
            xb = np.concatenate([xb, np.repeat(xb[-1:], fixed - n, axis=0)], axis=0)
        chunks.append(np.asarray(sess.run([out_name], {meta.name: xb})[0])[:n])
    return np.concatenate(chunks, axis=0)


def run_module(module: Any, inputs: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Run a torch module (eval mode, no grad) over ``inputs``; returns the first output as float32 numpy.

    The module's train/eval mode is restored afterwards.
    """
    import torch

    was_training = bool(getattr(module, "training", False))
    if hasattr(module, "eval"):
        with contextlib.suppress(NotImplementedError):  # torch.export GraphModules refuse eval()
            module.eval()
    x = np.asarray(inputs)
    chunks = []
    try:
        with torch.no_grad():
            for sl in _batches(x.shape[0], max(1, int(batch_size))):
                out = module(torch.from_numpy(np.ascontiguousarray(x[sl])))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                elif isinstance(out, dict):
                    out = next(iter(out.values()))
                chunks.append(out.detach().float().cpu().numpy())
    except RuntimeError as e:
        raise DataError(f"the model cannot run on data of shape {tuple(x.shape[1:])}: {str(e).splitlines()[0]}") from None
    finally:
        if was_training and hasattr(module, "train"):
            with contextlib.suppress(NotImplementedError):
                module.train()
    return np.concatenate(chunks, axis=0)


def _dataset_parts(dataset: Any) -> tuple[np.ndarray, np.ndarray | None, str]:
    inputs = getattr(dataset, "inputs", None)
    if inputs is None:
        raise InputError("evaluation needs a Dataset (from compressor.data.load_data or synthetic_data)")
    if len(inputs) == 0:
        raise DataError("the dataset is empty")
    return np.asarray(inputs), getattr(dataset, "labels", None), str(getattr(dataset, "source", "unknown"))


def evaluate_onnx(
    onnx_path: str | Path,
    dataset: Any,
    *,
    reference_outputs: np.ndarray | None = None,
    batch_size: int = 64,
    data_range: float | None = None,
    threads: int | None = None,
) -> EvalResult:
    """Run an ONNX model in ONNX Runtime (CPU) on ``dataset`` and compute every metric that applies.

    ``reference_outputs`` are the original model's outputs on the same inputs (e.g. from
    ``run_onnx(original, dataset.inputs)``); without them only accuracy can be computed.
    """
    x, labels, source = _dataset_parts(dataset)
    out = run_onnx(onnx_path, x, batch_size=batch_size, threads=threads)
    return evaluate_outputs(out, labels=labels, reference_outputs=reference_outputs, data_source=source, data_range=data_range)


def evaluate_module(
    module: Any,
    dataset: Any,
    *,
    reference_outputs: np.ndarray | None = None,
    batch_size: int = 64,
    data_range: float | None = None,
) -> EvalResult:
    """Like ``evaluate_onnx`` for a torch module (eager, TorchScript or fx), run in eval mode."""
    x, labels, source = _dataset_parts(dataset)
    out = run_module(module, x, batch_size=batch_size)
    return evaluate_outputs(out, labels=labels, reference_outputs=reference_outputs, data_source=source, data_range=data_range)
