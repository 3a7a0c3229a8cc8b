"""Export to one self-contained ONNX file, checked against torch in ONNX Runtime.

Exporter choice (torch 2.13, measured in shared/TOOLCHAIN.md): the legacy TorchScript-based exporter
(``dynamo=False``) is fast (well under a second for ResNet-18), folds BatchNorm into Conv and works on
TorchScript modules; the dynamo exporter needs 1-6 s and writes external data unless told not to. We
try the legacy exporter first and fall back to dynamo (``external_data=False``) when it fails, e.g.
for ``torch.export`` GraphModules. Both match torch within ~3e-6 in ORT.

Every export is checked: the same random inputs through torch and through ORT; the report carries the
largest absolute difference and whether it is within tolerance (``rtol``/``atol`` of numpy's allclose).
A mismatch is reported (``matched=False``), not hidden; ``to_onnx(..., strict=True)`` raises.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeplan.compressor.intake import LoadedModel
from edgeplan.hardware_profiles.atomic import atomic_path
from edgeplan.hardware_profiles.errors import ExportError


@dataclass(frozen=True)
class ExportReport:
    path: Path
    exporter: str  # "legacy" | "dynamo" | "copy" (the model was ONNX already)
    max_abs_diff: float | None
    matched: bool
    atol: float
    rtol: float

    def describe(self) -> str:
        if self.max_abs_diff is None:
            return f"{self.path.name}: ONNX input, no export needed"
        verdict = "matches" if self.matched else "DOES NOT MATCH"
        return (f"{self.path.name}: ONNX ({self.exporter} exporter) {verdict} torch in ONNX Runtime "
                f"(max abs diff {self.max_abs_diff:.2e}, atol {self.atol:g}, rtol {self.rtol:g})")


def _to_numpy(x: Any) -> list[np.ndarray]:
    import torch

    if isinstance(x, torch.Tensor):
        return [x.detach().cpu().numpy()]
    if isinstance(x, (list, tuple)):
        return [a for item in x for a in _to_numpy(item)]
    if isinstance(x, dict):
        return [a for v in x.values() for a in _to_numpy(v)]
    if hasattr(x, "to_tuple"):  # transformers ModelOutput
        return _to_numpy(x.to_tuple())
    raise ExportError(f"model output of type {type(x).__name__} cannot be compared with ONNX")


def export_onnx(
    module: Any,
    example_inputs: Sequence[Any],
    path: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    opset: int = 17,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ExportReport:
    """Export ``module`` to ``path`` (one file, atomically) and check it against torch in ORT."""
    import torch

    path = Path(path)
    example_inputs = tuple(example_inputs)
    input_names = list(input_names or (["input"] if len(example_inputs) == 1 else [f"input{i}" for i in range(len(example_inputs))]))
    with contextlib.suppress(NotImplementedError):  # torch.export GraphModules refuse eval()
        module.eval()
    with torch.no_grad():
        ref = _to_numpy(module(*example_inputs))
    output_names = list(output_names or (["output"] if len(ref) == 1 else [f"output{i}" for i in range(len(ref))]))
    axes = {n: {0: "batch"} for n in [*input_names, *output_names]} if dynamic_batch else None
    errors = []
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    with atomic_path(path, suffix=".onnx") as tmp:
        exporter = None
        for name, kwargs in (
            ("legacy", dict(dynamo=False, opset_version=opset, dynamic_axes=axes, do_constant_folding=True)),
            ("dynamo", dict(dynamo=True, external_data=False, opset_version=max(opset, 18),
                            dynamic_shapes=None, optimize=True)),
        ):
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(module, example_inputs, str(tmp), input_names=input_names,
                                      output_names=output_names, **kwargs)
                exporter = name
                break
            except Exception as e:  # noqa: BLE001 - try the next exporter, report all failures
                errors.append(f"{name}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
        if exporter is None:
            raise ExportError("torch.onnx.export failed (" + "; ".join(errors) + ")")
        data_file = Path(str(tmp) + ".data")
        if data_file.exists():  # should not happen with external_data=False; inline it if it does
            import onnx

            m = onnx.load(str(tmp))
            onnx.save_model(m, str(tmp), save_as_external_data=False)
            data_file.unlink()
        diff = _compare(tmp, example_inputs, input_names, ref) if check else None
    if diff is None:
        return ExportReport(path, exporter, None, True, atol, rtol)
    return ExportReport(path, exporter, diff[0], _within(diff, atol, rtol), atol, rtol)


def _within(diff: tuple[float, list[tuple[np.ndarray, np.ndarray]]], atol: float, rtol: float) -> bool:
    return all(a.shape == b.shape and np.allclose(a, b, atol=atol, rtol=rtol) for a, b in diff[1])


def _compare(onnx_path: Path, inputs: Sequence[Any], names: Sequence[str], ref: list[np.ndarray]):
    from edgeplan.compressor.ort_timing import make_session

    sess = make_session(onnx_path)
    feeds = {}
    sess_inputs = [i.name for i in sess.get_inputs()]
    arrays = [x.detach().cpu().numpy() for x in inputs]
    for name, arr in zip(sess_inputs, arrays):
        feeds[name] = arr
    got = sess.run(None, feeds)
    pairs = list(zip(ref, got))
    if len(got) != len(ref):
        return float("inf"), [(np.zeros(1), np.ones(2))]  # shapes differ: never "within"
    worst = max((float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else (0.0 if a.shape == b.shape else float("inf")))
                for a, b in pairs) if pairs else 0.0
    return worst, pairs


def to_onnx(loaded: LoadedModel, path: str | Path, *, strict: bool = False, **kwargs: Any) -> ExportReport:
    """An ONNX file for any loaded model: copied when it is ONNX already, else exported and checked."""
    path = Path(path)
    if loaded.format == "onnx":
        assert loaded.onnx_path is not None
        if loaded.onnx_path.resolve() != path.resolve():
            with atomic_path(path, suffix=".onnx") as tmp:
                shutil.copyfile(loaded.onnx_path, tmp)
        return ExportReport(path, "copy", None, True, 0.0, 0.0)
    names = [i.name for i in loaded.inputs]
    report = export_onnx(loaded.module, loaded.example_inputs(), path, input_names=names, **kwargs)
    if strict and not report.matched:
        raise ExportError(report.describe())
    return report

