"""From any model spec to an analysable ONNX file (the planner's entry point for models)."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeplan.compressor.export import ExportReport, to_onnx
from edgeplan.compressor.intake import InputSpec, LoadedModel, load_model


@dataclass(frozen=True)
class ModelOnnx:
    loaded: LoadedModel
    onnx_path: Path
    export: ExportReport | None  # None when the model was ONNX already


def default_workdir() -> Path:
    """A per-user cache folder for exported ONNX files (keyed by the model's sha256)."""
    d = Path(tempfile.gettempdir()) / "edgeplan-cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def onnx_for_model(
    spec: str | Path,
    *,
    trust_model: bool = False,
    weights: str | Path | None = None,
    input_shape: str | tuple[InputSpec, ...] | None = None,
    workdir: str | Path | None = None,
) -> ModelOnnx:
    """Load ``spec`` (any intake format) and return an ONNX file for it.

    ONNX models are used in place. Others are exported once into ``workdir`` (default: a cache
    folder) under a name derived from the model's sha256 and input shapes; the export is checked
    against torch in ORT (``ModelOnnx.export.matched``).
    """
    loaded = load_model(spec, trust_model=trust_model, weights=weights, input_shape=input_shape)
    if loaded.format == "onnx":
        assert loaded.onnx_path is not None
        return ModelOnnx(loaded, loaded.onnx_path, None)
    key = hashlib.sha256((loaded.sha256 + repr(loaded.inputs)).encode()).hexdigest()[:16]
    out = Path(workdir or default_workdir()) / f"{Path(str(spec)).stem.replace(':', '_')}-{key}.onnx"
    report = to_onnx(loaded, out)
    return ModelOnnx(loaded, out, report)
