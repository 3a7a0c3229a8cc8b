"""User data for calibration, distillation and evaluation: ``.npz`` files or image folders.

``load_data(path)`` returns a ``Dataset``: ``inputs`` (float32, N x model input shape without
batch) and optional integer ``labels``. An ``.npz`` must hold an array named ``inputs`` (or ``x``)
and may hold ``labels`` (or ``y``). A folder of images (``.png``/``.jpg``, sub-folders as class
names) is read with Pillow, scaled to [0, 1], CHW.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeplan.hardware_profiles.errors import DataError

_INPUT_KEYS = ("inputs", "x", "X", "images")
_LABEL_KEYS = ("labels", "y", "Y", "targets")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass(frozen=True)
class Dataset:
    inputs: np.ndarray
    labels: np.ndarray | None
    source: str  # a path, or "synthetic:<how>" for generated data

    @property
    def synthetic(self) -> bool:
        return self.source.startswith("synthetic:")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, n: int) -> "Dataset":
        labels = None if self.labels is None else self.labels[:n]
        return Dataset(self.inputs[:n], labels, self.source)


def load_data(path: str | Path) -> Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data not found: {p}")
    if p.is_dir():
        return _load_image_folder(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            xk = next((k for k in _INPUT_KEYS if k in z), None)
            if xk is None:
                raise DataError(f"{p}: no inputs array (expected one of {', '.join(_INPUT_KEYS)}; found {', '.join(keys) or 'none'})")
            x = np.asarray(z[xk])
            yk = next((k for k in _LABEL_KEYS if k in z), None)
            y = None if yk is None else np.asarray(z[yk])
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable .npz file ({e})") from None
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{p}: inputs must be N x ... with N >= 1, got shape {x.shape}")
    if y is not None:
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{p}: {x.shape[0]} inputs but {y.shape[0]} labels")
        y = y.astype(np.int64).reshape(-1)
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
    return Dataset(x, y, str(p))


def synthetic_data(input_shape: tuple[int, ...], n: int, seed: int = 0, dtype: str = "float32") -> Dataset:
    """Random standard-normal inputs (``input_shape`` without the batch dim); labelled synthetic."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        x = rng.integers(0, 100, size=(n, *input_shape)).astype(dtype)
    else:
        x = rng.standard_normal((n, *input_shape)).astype(dtype)
    return Dataset(x, None, f"synthetic:normal(0,1),seed={seed}")


def _load_image_folder(p: Path) -> Dataset:
    from PIL import Image

    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{p}: no images (.png/.jpg/.bmp) found")
    classes = sorted({f.parent.name for f in files if f.parent != p})
    arrays, labels = [], []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
        arrays.append(img.transpose(2, 0, 1))
        if classes:
            labels.append(classes.index(f.parent.name) if f.parent != p else -1)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{p}: images have different sizes {sorted(shapes)[:3]}; resize them first")
    y = np.asarray(labels, dtype=np.int64) if classes and all(v >= 0 for v in labels) else None
    return Dataset(np.stack(arrays), y, str(p))
