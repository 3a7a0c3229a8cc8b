"""Materialise a split plan as ONNX files (one per tier) and run them composed with ONNX Runtime.

``onnx.utils.Extractor`` cuts a sub-graph between named tensors; composing the parts reproduces the full
model within ~2e-6 (shared/TOOLCHAIN.md, and tests/test_split.py on residual blocks). Constant and Identity
nodes fed only by initializers are pulled into each part that needs them (they are not activations in
``GraphAnalysis``, so they never appear as cut tensors). The extractor needs a ``value_info`` for every
cut tensor; models exported without shape information get one from the analysis' tensor shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgeplan.hardware_profiles.errors import ExportError, ModelLoadError
from edgeplan.planner.split import PartIO, SplitPlan

_NP_TO_ONNX = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7, "bool": 9,
    "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "bfloat16": 16,
}


def part_file_names(parts: Sequence[PartIO], n_tiers: int) -> list[str]:
    """``model.onnx`` for a one-part plan; else ``edge.onnx`` / ``server.onnx`` / ``cloud.onnx``."""
    if len(parts) == 1:
        return ["model.onnx"]
    names = []
    for p in parts:
        if p.tier == 0:
            names.append("edge.onnx")
        elif p.tier == n_tiers - 1:
            names.append("cloud.onnx")
        else:
            names.append("server.onnx" if n_tiers == 3 else f"tier{p.tier}.onnx")
    return names


def extract_parts(
    source_onnx: str | Path,
    plan: SplitPlan,
    out_dir: str | Path,
    *,
    shapes: dict[str, tuple[tuple[int, ...], str]] | None = None,
) -> list[Path]:
    """Write one ONNX file per part of ``plan`` into ``out_dir`` and return their paths (tier order).

    ``shapes`` (tensor name -> (shape, numpy dtype)) supplies value_infos the model lacks.
    """
    import onnx
    from onnx import helper
    from onnx.utils import Extractor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = part_file_names(plan.parts, len(plan.tier_names))
    if len(plan.parts) == 1:
        target = out_dir / names[0]
        target.write_bytes(Path(source_onnx).read_bytes())
        return [target]
    try:
        model = onnx.load(str(source_onnx))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad model file
        raise ModelLoadError(f"cannot read {source_onnx}: {e}") from e
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is best effort; value_infos are added below
        pass
    known = {vi.name for vi in model.graph.value_info} | {vi.name for vi in model.graph.input} | {
        vi.name for vi in model.graph.output}
    needed = {t for p in plan.parts for t in (*p.inputs, *p.outputs)}
    for name in sorted(needed - known):
        if shapes and name in shapes:
            shape, dtype = shapes[name]
            model.graph.value_info.append(helper.make_tensor_value_info(name, _NP_TO_ONNX.get(dtype, 1), list(shape)))
    try:
        extractor = Extractor(model)
        paths = []
        for part, fname in zip(plan.parts, names):
            sub = extractor.extract_model(list(part.inputs), list(part.outputs))
            target = out_dir / fname
            onnx.save(sub, str(target))
            paths.append(target)
    except Exception as e:  # noqa: BLE001 - report extraction failures as one line
        raise ExportError(f"could not extract the plan's parts from {Path(source_onnx).name}: {e}") from e
    return paths


def wire_cast(x: np.ndarray, wire_dtype: str) -> np.ndarray:
    """Simulate sending ``x`` as ``wire_dtype`` (fp16 rounding, or per-tensor affine uint8)."""
    if wire_dtype == "fp32" or x.dtype.kind != "f":
        return x
    if wire_dtype == "fp16":
        return x.astype(np.float16).astype(x.dtype)
    if wire_dtype == "int8":
        lo, hi = float(x.min()), float(x.max())
        scale = (hi - lo) / 255.0 if hi > lo else 1.0
        q = np.clip(np.round((x - lo) / scale), 0, 255)
        return (q * scale + lo).astype(x.dtype)
    raise ValueError(f"unknown wire dtype {wire_dtype}")


def run_composed(
    part_paths: Sequence[str | Path],
    parts: Sequence[PartIO],
    feeds: dict[str, np.ndarray],
    *,
    wire_dtype: str = "fp32",
    output_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run the parts in order with ONNX Runtime (CPU), passing tensors by name; return the outputs.

    Tensors that cross a tier boundary go through ``wire_cast`` (the raw input is never cast).
    """
    from edgeplan.compressor.ort_timing import make_session

    pool: dict[str, np.ndarray] = dict(feeds)
    raw = set(feeds)
    for path, part in zip(part_paths, parts):
        sess = make_session(path)
        wanted = [i.name for i in sess.get_inputs()]
        feed = {}
        for name in wanted:
            if name not in pool:
                raise ExportError(f"part {Path(path).name} needs {name!r}, which no earlier part produced")
            v = pool[name]
            feed[name] = v if (name in raw or part.tier == 0) else wire_cast(v, wire_dtype)
        outs = [o.name for o in sess.get_outputs()]
        for name, value in zip(outs, sess.run(outs, feed)):
            pool[name] = np.asarray(value)
    if output_names is None:
        output_names = [n for p in parts for n in p.outputs]
    return {n: pool[n] for n in output_names}


def run_model(path: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one whole ONNX model with ORT CPU and return every graph output by name."""
    from edgeplan.compressor.ort_timing import make_session

    sess = make_session(path)
    outs = [o.name for o in sess.get_outputs()]
    return {n: np.asarray(v) for n, v in zip(outs, sess.run(outs, feeds))}
