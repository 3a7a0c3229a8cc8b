"""Model intake: one function that loads every model format edgeplan accepts.

Formats, detected from the file's *content* (the suffix is only a hint):

==============  ==========================================  =========================================
format          how it is recognised                          how it is loaded
==============  ==========================================  =========================================
``onnx``        a protobuf that parses as an ONNX ModelProto  kept as a file (``onnx_path``)
``torchscript`` a zip holding ``code/`` and ``constants.pkl``  ``torch.jit.load`` (no Python pickles)
``export``      a zip holding ``models/model.json``           ``torch.export.load(...).module()``
``pickle``      a zip holding only ``data.pkl`` (or a legacy  ``torch.load(weights_only=False)`` — runs
                pickle stream)                                code, so only with ``trust_model=True``
``factory``     ``pkg.module:function`` (not a file)          import + call; ``--weights`` state_dict
                                                              loaded with ``weights_only=True``
==============  ==========================================  =========================================

Input shapes come from the model where it carries them (ONNX graph inputs; a ``.pt2``'s example
inputs; an ``edgeplan.json`` extra file inside TorchScript archives that edgeplan writes; a module
attribute ``example_input_shape``), else from ``input_shape`` (``--input-shape 1x3x224x224``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeplan.hardware_profiles.errors import (
    InputShapeError,
    ModelLoadError,
    UntrustedModelError,
)

FORMATS = ("onnx", "torchscript", "export", "pickle", "factory")
TORCHSCRIPT_META = "edgeplan.json"  # extra file inside TorchScript archives written by edgeplan
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # numpy dtype name


@dataclass(frozen=True)
class LoadedModel:
    source: str
    format: str  # one of FORMATS
    module: Any  # torch.nn.Module (eager, ScriptModule or GraphModule); None for ONNX
    onnx_path: Path | None
    inputs: tuple[InputSpec, ...]
    sha256: str  # of the file (or of the factory spec + weights file)

    @property
    def is_eager(self) -> bool:
        """True when ``module`` is a trainable eager ``nn.Module`` (pickle or factory)."""
        return self.format in ("pickle", "factory")

    def example_inputs(self, batch: int | None = None, seed: int = 0) -> tuple:
        """Random torch tensors matching ``inputs`` (batch dim replaced when given)."""
        import torch

        g = torch.Generator().manual_seed(seed)
        out = []
        for spec in self.inputs:
            shape = (batch, *spec.shape[1:]) if batch else spec.shape
            if spec.dtype.startswith(("int", "uint")):
                out.append(torch.randint(0, 100, shape, generator=g, dtype=getattr(torch, spec.dtype)))
            else:
                out.append(torch.randn(shape, generator=g, dtype=getattr(torch, spec.dtype)))
        return tuple(out)


def parse_input_shape(text: str | None, dtype: str = "float32") -> tuple[InputSpec, ...] | None:
    """Parse ``1x3x224x224`` (several inputs separated by ``,``; ``name=1x128:int64`` allowed)."""
    if text is None or not text.strip():
        return None
    specs = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        name = f"input{i}" if i else "input"
        if "=" in part:
            name, part = (s.strip() for s in part.split("=", 1))
        dt = dtype
        if ":" in part:
            part, dt = (s.strip() for s in part.split(":", 1))
        dims = part.lower().split("x")
        if not dims or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise InputShapeError(f"malformed --input-shape {text!r}: expected dimensions like 1x3x224x224")
        try:
            import numpy as np

            np.dtype(dt)
        except TypeError:
            raise InputShapeError(f"unknown input dtype {dt!r} in --input-shape {text!r}") from None
        specs.append(InputSpec(name, tuple(int(d) for d in dims), dt))
    return tuple(specs)


def detect_format(spec: str | Path) -> str:
    """Return the format of a model file (or ``factory`` for a ``pkg.mod:fn`` spec)."""
    p = Path(spec)
    if not p.exists():
        if isinstance(spec, str) and _FACTORY_RE.match(spec):
            return "factory"
        raise ModelLoadError(f"model file not found: {spec}")
    if p.is_dir():
        raise ModelLoadError(f"{p} is a folder; give a model file (.pt, .pt2, .onnx) or pkg.module:function")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p} is empty")
    if zipfile.is_zipfile(p):
        try:
            names = zipfile.ZipFile(p).namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelLoadError(f"{p} is a damaged zip archive ({e})") from None
        tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if "models/model.json" in tails or any(t.startswith("models/") and t.endswith(".json") for t in tails):
            return "export"
        if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
            return "torchscript"
        if "data.pkl" in tails:
            return "pickle"
        raise ModelLoadError(f"{p} is a zip archive but not a torch model (no data.pkl, code/ or models/)")
    head = p.read_bytes()[:2]
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if _looks_like_onnx(p):
        return "onnx"
    if p.suffix.lower() == ".onnx":
        raise ModelLoadError(f"{p}: corrupt or truncated ONNX file (it does not parse as an ONNX model)")
    if p.suffix.lower() in (".pt", ".pth", ".pt2"):
        raise ModelLoadError(f"{p}: corrupt or truncated torch file (not a zip archive or pickle stream)")
    raise ModelLoadError(
        f"{p}: unknown model format (not ONNX, TorchScript, torch.export .pt2 or a torch.save'd module)"
    )


def _looks_like_onnx(p: Path) -> bool:
    import onnx

    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure means "not ONNX"
        return False
    return len(m.graph.node) > 0 or len(m.graph.output) > 0


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(
    spec: str | Path,
    *,
    trust_model: bool = False,
    weights: str | Path | None = None,
    input_shape: str | tuple[InputSpec, ...] | None = None,
) -> LoadedModel:
    """Load any supported model. See the module docstring for the formats."""
    fmt = detect_format(spec)
    given = parse_input_shape(input_shape) if isinstance(input_shape, str) or input_shape is None else input_shape
    if weights is not None and fmt != "factory":
        raise ModelLoadError("--weights applies only to a factory spec (pkg.module:function)")
    loader = {
        "onnx": _load_onnx,
        "torchscript": _load_torchscript,
        "export": _load_export,
        "pickle": _load_pickle,
        "factory": _load_factory,
    }[fmt]
    return loader(spec, trust_model=trust_model, weights=weights, given=given)


def _require_shape(module: Any, given: tuple[InputSpec, ...] | None, carried, source: str) -> tuple[InputSpec, ...]:
    if given:
        return given
    if carried:
        return carried
    attr = getattr(module, "example_input_shape", None) if module is not None else None
    if attr:
        dtype = getattr(module, "example_input_dtype", "float32")
        return (InputSpec("input", tuple(int(d) for d in attr), str(dtype)),)
    raise InputShapeError(f"{source}: the model does not carry its input shape; pass --input-shape, e.g. 1x3x224x224")


def _load_onnx(spec, *, trust_model, weights, given) -> LoadedModel:
    import onnx

    p = Path(spec)
    try:
        m = onnx.load(str(p))
        onnx.checker.check_model(m)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{p}: corrupt or invalid ONNX model ({str(e).splitlines()[0][:160]})") from None
    inits = {i.name for i in m.graph.initializer}
    carried = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if given is None and any(d is None for d in dims[1:]):
            raise InputShapeError(
                f"{p}: input {vi.name!r} has symbolic dimensions {dims}; pass --input-shape"
            )
        shape = tuple(d if d else 1 for d in dims)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        carried.append(InputSpec(vi.name, shape, dtype))
    inputs = given or tuple(carried)
    if given and len(given) == len(carried):  # keep the graph's input names and dtypes
        inputs = tuple(InputSpec(c.name, g.shape, c.dtype) for g, c in zip(given, carried))
    if len(inputs) != len(carried):
        raise InputShapeError(f"{p}: the model has {len(carried)} inputs but --input-shape gives {len(inputs)}")
    return LoadedModel(str(p), "onnx", None, p, inputs, file_sha256(p))


def _load_torchscript(spec, *, trust_model, weights, given) -> LoadedModel:
    import torch

    p = Path(spec)
    extra = {TORCHSCRIPT_META: ""}
    try:
        with warnings.catch_warnings():  # torch 2.13 marks torch.jit as deprecated; it still loads fine
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{p}: could not load TorchScript ({str(e).splitlines()[0][:160]})") from None
    module.eval()
    carried = None
    if extra[TORCHSCRIPT_META]:
        meta = json.loads(extra[TORCHSCRIPT_META])
        carried = tuple(InputSpec(i["name"], tuple(i["shape"]), i.get("dtype", "float32")) for i in meta.get("inputs", []))
    inputs = _require_shape(None, given, carried, str(p))
    return LoadedModel(str(p), "torchscript", module, None, inputs, file_sha256(p))


def _load_export(spec, *, trust_model, weights, given) -> LoadedModel:
    import torch

    p = Path(spec)
    try:
        ep = torch.export.load(str(p))
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{p}: could not load torch.export program ({str(e).splitlines()[0][:160]})") from None
    user = set(ep.graph_signature.user_inputs)
    carried = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape"):
                shape = tuple(int(d) if str(d).isdigit() else 1 for d in val.shape)
                carried.append(InputSpec(node.name, shape, str(val.dtype).replace("torch.", "")))
    module = ep.module()  # a GraphModule; .eval() is not supported on it (and not needed)
    inputs = _require_shape(None, given, tuple(carried) or None, str(p))
    return LoadedModel(str(p), "export", module, None, inputs, file_sha256(p))


def _load_pickle(spec, *, trust_model, weights, given) -> LoadedModel:
    import torch

    p = Path(spec)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = None  # not a plain tensor container: a pickled module (needs code execution)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"{p}: truncated or corrupt torch file ({str(e).splitlines()[0][:160]})") from None
    if obj is not None:
        if isinstance(obj, torch.nn.Module):
            module = obj
        else:
            raise ModelLoadError(
                f"{p} holds a {type(obj).__name__} (e.g. a state_dict), not a model: pass the architecture as "
                "pkg.module:function with --weights FILE"
            )
    else:
        if not trust_model:
            raise UntrustedModelError(
                f"{p} is a pickled nn.Module; loading it executes code from the file. "
                "Re-run with --trust-model if you trust its source (or export it to TorchScript/ONNX)"
            )
        try:
            module = torch.load(str(p), map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{p}: could not unpickle the model ({str(e).splitlines()[0][:160]})") from None
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"{p} holds a {type(module).__name__}, not an nn.Module")
    module.eval()
    inputs = _require_shape(module, given, None, str(p))
    return LoadedModel(str(p), "pickle", module, None, inputs, file_sha256(p))


def _load_factory(spec, *, trust_model, weights, given) -> LoadedModel:
    import torch

    mod_name, fn_name = str(spec).split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelLoadError(f"cannot import {mod_name!r} for factory {spec!r}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ModelLoadError(f"{mod_name} has no callable {fn_name!r}")
    module = fn()
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"factory {spec} returned a {type(module).__name__}, not an nn.Module")
    h = hashlib.sha256(str(spec).encode())
    if weights is not None:
        wp = Path(weights)
        if not wp.exists():
            raise ModelLoadError(f"weights file not found: {wp}")
        try:
            state = torch.load(str(wp), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{wp}: not a loadable state_dict ({str(e).splitlines()[0][:160]})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            module.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            raise ModelLoadError(f"{wp} does not fit {spec}: {str(e).splitlines()[0][:200]}") from None
        h.update(file_sha256(wp).encode())
    module.eval()
    inputs = _require_shape(module, given, None, str(spec))
    return LoadedModel(str(spec), "factory", module, None, inputs, h.hexdigest())


def save_torchscript(module: Any, path: str | Path, inputs: tuple[InputSpec, ...]) -> Path:
    """Save ``module`` as TorchScript (traced unless already scripted) with edgeplan's input metadata.

    TorchScript archives load without executing pickled Python, so they are the format edgeplan writes
    for models a user can pass back in without ``--trust-model``.
    """
    import torch

    from edgeplan.hardware_profiles.atomic import atomic_path

    if not isinstance(module, torch.jit.ScriptModule):
        ex = LoadedModel("", "factory", module, None, inputs, "").example_inputs()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.trace(module.eval(), ex if len(ex) > 1 else ex[0], check_trace=False)
    meta = json.dumps({"inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs]})
    with atomic_path(path, suffix=".pt") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(tmp), _extra_files={TORCHSCRIPT_META: meta})
    return Path(path)
