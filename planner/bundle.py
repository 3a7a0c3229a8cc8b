"""Deployable bundles: the one format and the one writer, shared by ``edgeplan split`` and ``edgeplan optimize``.

A bundle is a folder:

    manifest.json   BundleManifest (schema_version 1): what, from what, predicted how, sha256 of every file
    edge.onnx       the device part      } when the plan splits the model (server.onnx between them for
    cloud.onnx      the cloud part       }  three tiers); a single model.onnx otherwise
    reference.npz   reference inputs and the *source* model's outputs for them (ORT CPU), keys
                    input_<i> / output_<i> (names in the manifest), loadable with allow_pickle=False
    README.md       how to run it
    schedule/<i>/   (optional) the parts of every network-schedule segment, so a runtime can switch cuts

Design decisions:
- The reference outputs come from running the *unsplit* source model, so ``verify_bundle`` checks that the
  composed parts reproduce the original, not merely themselves.
- Profiles are recorded by name and by a content hash (sha256 of the profile's canonical JSON: pydantic
  ``model_dump(mode="json")``, sorted keys, compact separators), so a later edit of a profile file is
  visible as a hash mismatch, not silently applied.
- Written atomically: everything goes into a hidden temp folder beside ``out_dir``, is verified there, and
  is then renamed into place (an existing bundle is replaced only with ``overwrite=True``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeplan.hardware_profiles.errors import CheckFailed, InputError

SCHEMA_VERSION = 1
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ProfileRef(BaseModel):
    model_config = _FROZEN

    role: str  # "target", "edge-server", "cloud", "link", "link2"
    name: str
    sha256: str


class TensorRef(BaseModel):
    model_config = _FROZEN

    name: str
    shape: list[int]
    dtype: str
    boundary: int | None = None  # for cut tensors: 0 = device -> next tier
    wire_dtype: str | None = None
    bytes: int | None = None


class PartRef(BaseModel):
    model_config = _FROZEN

    file: str
    tier: int
    tier_name: str
    inputs: list[str]
    outputs: list[str]


class MetricSet(BaseModel):
    """One set of metrics with where it comes from. ``kind`` predicted: from profiles (error band given);
    measured: say how in ``provenance``."""

    model_config = _FROZEN

    kind: Literal["predicted", "measured"]
    provenance: str
    error_band_pct: float | None = None
    values: dict[str, float | int | None]


class ReferenceRef(BaseModel):
    model_config = _FROZEN

    file: str = "reference.npz"
    inputs: list[str]  # input_<i> -> name
    outputs: list[str]  # output_<i> -> name
    rtol: float
    atol: float


class BundleManifest(BaseModel):
    model_config = _FROZEN

    schema_version: int = Field(SCHEMA_VERSION)
    edgeplan_version: str
    plan_name: str
    objective: str | None = None
    source_model: str
    source_model_sha256: str
    recipe: dict[str, Any] | None = None
    profiles: list[ProfileRef]
    tiers: list[str]
    wire_dtype: str = "fp32"
    wire_fidelity: str = ""
    parts: list[PartRef]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    cut_tensors: list[TensorRef]
    metrics: list[MetricSet]
    schedule: dict[str, Any] | None = None
    schedule_parts: list[list[PartRef]] | None = None  # parallel to schedule["segments"] when written
    reference: ReferenceRef
    files: dict[str, str]  # relative path -> sha256 (every file except manifest.json)
    notes: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_bundle`` checked (all passed, else it raised ``CheckFailed``)."""

    path: Path
    files_checked: int
    outputs_checked: int
    max_abs_error: float
    wire_dtype: str
    wire_max_abs_error: float  # measured with the cut tensors cast to the wire dtype (informational)
    schedule_parts_checked: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": True, "files_checked": self.files_checked,
                "outputs_checked": self.outputs_checked, "max_abs_error": self.max_abs_error,
                "wire_dtype": self.wire_dtype, "wire_max_abs_error": self.wire_max_abs_error,
                "schedule_parts_checked": self.schedule_parts_checked}


# ------------------------------------------------------------------------------------------ helpers


def sha256_file(path: str | Path) -> str:
    from edgeplan.compressor.intake import file_sha256

    return file_sha256(path)


def content_hash(obj: Any) -> str:
    """sha256 of an object's canonical JSON (pydantic models: ``model_dump(mode="json")``)."""
    if hasattr(obj, "model_dump"):
        data = obj.model_dump(mode="json")
    elif hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        data = asdict(obj)
    else:
        data = obj
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def edgeplan_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeplan")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def _graph_io(onnx_path: Path) -> tuple[list[TensorRef], list[TensorRef]]:
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}

    def ref(vi) -> TensorRef:
        tt = vi.type.tensor_type
        shape = [int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        return TensorRef(name=vi.name, shape=shape, dtype=str(helper.tensor_dtype_to_np_dtype(tt.elem_type)))

    return ([ref(v) for v in model.graph.input if v.name not in inits], [ref(v) for v in model.graph.output])


def default_reference_inputs(onnx_path: str | Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for the model's graph inputs: normal(0,1) floats, zeros for integers
    (token ids 0 are valid for any vocabulary). Symbolic dimensions are taken as 1."""
    inputs, _ = _graph_io(Path(onnx_path))
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in inputs:
        shape = [d if d > 0 else 1 for d in t.shape]
        dt = np.dtype(t.dtype)
        feeds[t.name] = rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.zeros(shape, dtype=dt)
    return feeds


def _metric_values(plan: Any) -> dict[str, float | int | None]:
    return {
        "latency_ms": plan.latency_ms, "energy_mj": plan.energy_mj, "cost_usd_per_1k": plan.cost_usd_per_1k,
        "transfer_bytes": plan.transfer_bytes, "downlink_bytes": plan.downlink_bytes,
        "network_ms": plan.network_ms, "request_overhead_ms": getattr(plan, "request_overhead_ms", 0.0),
        "device_compute_share": plan.device_compute_share,
        "device_peak_memory_bytes": plan.device_peak_memory_bytes,
    }


_README = """# edgeplan bundle: {plan_name}

Made by edgeplan {version} from `{source}` (sha256 {sha_short}...). Tiers: {tiers}.
Predicted (not measured) on these profiles: {pred}

Files: {files}. `manifest.json` lists every file's sha256, the cut tensors and the network schedule.

Check it:

    edgeplan bundle verify {dirname}

Run it with ONNX Runtime (each part reads tensors by name from a shared dict, in tier order):

```python
import json, numpy as np, onnxruntime as ort
m = json.load(open("manifest.json"))
pool = {{"{first_input}": x}}            # your input(s), see m["inputs"]
for part in m["parts"]:                  # on the device, then (after sending the cut tensors) in the cloud
    s = ort.InferenceSession(part["file"], providers=["CPUExecutionProvider"])
    out = s.run(part["outputs"], {{i.name: pool[i.name] for i in s.get_inputs()}})
    pool.update(zip(part["outputs"], out))
y = {{o["name"]: pool[o["name"]] for o in m["outputs"]}}
```

Cut tensors sent from the device ({wire}): {cuts}.
{serve}"""


def _replace_dir(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not overwrite:
            raise InputError(f"{out_dir} exists; pass overwrite (or --force) to replace it")
        trash = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, trash)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(trash, out_dir)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# ------------------------------------------------------------------------------------------ writing


def write_bundle(
    out_dir: str | Path,
    *,
    plan: Any,
    source_onnx: str | Path,
    source_sha256: str | None = None,
    recipe: dict[str, Any] | None = None,
    profiles: dict[str, Any] | None = None,
    link: Any | None = None,
    links: dict[str, Any] | None = None,
    objective: str | None = None,
    predicted: dict[str, Any] | None = None,
    predicted_provenance: str = "",
    measured: dict[str, Any] | None = None,
    measured_provenance: str = "",
    schedule: Any | None = None,
    schedule_parts: bool = False,
    reference_inputs: dict[str, np.ndarray] | None = None,
    reference_outputs: dict[str, np.ndarray] | None = None,
    tensor_shapes: dict[str, tuple[tuple[int, ...], str]] | None = None,
    notes: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a verified bundle for ``plan`` (a ``split.SplitPlan``) of ``source_onnx`` into ``out_dir``.

    ``profiles``: role -> HardwareProfile (``{"target": pi4, "cloud": t4}``); ``link`` (or ``links``,
    role -> LinkProfile) the network. ``predicted`` overrides the metrics taken from ``plan``;
    ``measured`` adds a measured set (say how in ``measured_provenance``). ``schedule`` is a
    ``split_schedule.NetworkSchedule``; with ``schedule_parts`` every segment's parts are written too.
    ``reference_inputs`` default to ``default_reference_inputs``; ``reference_outputs`` default to running
    ``source_onnx`` on them with ORT CPU (pass them only if they come from that same model).
    ``source_sha256`` is the sha256 of the model the user gave (e.g. the .pt before export); default: of
    ``source_onnx``. ``tensor_shapes`` (name -> (shape, dtype)) supplies value_infos the ONNX file lacks.
    Returns the bundle path. Raises ``CheckFailed`` if the written parts do not reproduce the source.
    """
    from edgeplan.planner.split_extract import extract_parts, run_model

    source_onnx = Path(source_onnx)
    out_dir = Path(out_dir)
    if not source_onnx.is_file():
        raise InputError(f"source model not found: {source_onnx}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a bundle is meant to be shared
    try:
        paths = extract_parts(source_onnx, plan, tmp, shapes=tensor_shapes)
        parts = [PartRef(file=p.name, tier=io.tier, tier_name=io.tier_name, inputs=list(io.inputs),
                         outputs=list(io.outputs)) for p, io in zip(paths, plan.parts)]
        sched_parts = None
        if schedule is not None and schedule_parts:
            sched_parts = _write_schedule_parts(source_onnx, plan, schedule, tmp, tensor_shapes)
        inputs, outputs = _graph_io(source_onnx)
        feeds = reference_inputs if reference_inputs is not None else default_reference_inputs(source_onnx)
        ref_out = dict(reference_outputs) if reference_outputs is not None else run_model(source_onnx, feeds)
        in_names = [t.name for t in inputs]
        out_names = [t.name for t in outputs]
        missing = [n for n in in_names if n not in feeds] + [n for n in out_names if n not in ref_out]
        if missing:
            raise InputError(f"reference data lacks tensor {missing[0]!r} of {source_onnx.name}")
        arrays = {f"input_{i}": np.asarray(feeds[n]) for i, n in enumerate(in_names)}
        arrays.update({f"output_{i}": ref_out[n] for i, n in enumerate(out_names)})
        with open(tmp / "reference.npz", "wb") as f:
            np.savez(f, **arrays)
        scale = max([1.0] + [float(np.abs(v).max()) for v in ref_out.values() if v.size and v.dtype.kind == "f"])
        reference = ReferenceRef(inputs=in_names, outputs=out_names, rtol=1e-4, atol=1e-4 * scale)
        prof_refs = [ProfileRef(role=r, name=getattr(p, "name", str(p)), sha256=content_hash(p))
                     for r, p in (profiles or {}).items()]
        all_links = dict(links or {})
        if link is not None:
            all_links.setdefault("link", link)
        prof_refs += [ProfileRef(role=r, name=getattr(lk, "name", str(lk)), sha256=content_hash(lk))
                      for r, lk in all_links.items()]
        metrics = [MetricSet(kind="predicted", provenance=predicted_provenance or "predicted by edgeplan split",
                             error_band_pct=getattr(plan, "error_band_pct", None),
                             values=predicted if predicted is not None else _metric_values(plan))]
        if measured:
            metrics.append(MetricSet(kind="measured", provenance=measured_provenance or "measured", values=measured))
        cuts = [TensorRef(name=c.name, shape=list(c.shape), dtype=c.dtype, boundary=c.boundary,
                          wire_dtype=c.wire_dtype, bytes=c.bytes) for c in plan.cut_tensors]
        from edgeplan.planner.split import WIRE_FIDELITY

        sha = source_sha256 or sha256_file(source_onnx)
        readme = _README.format(
            plan_name=plan.name, version=edgeplan_version(), source=source_onnx.name, sha_short=sha[:12],
            tiers=" -> ".join(plan.tier_names),
            pred=", ".join(f"{r.role}={r.name}" for r in prof_refs) or "(none recorded)",
            files=", ".join(p.name for p in paths) + ", reference.npz", dirname=out_dir.name,
            first_input=in_names[0] if in_names else "input", wire=plan.wire_dtype,
            cuts=", ".join(f"`{c.name}` {list(c.shape)} {c.dtype}" for c in plan.cut_tensors) or "none (one part)",
            serve="\nServe the cloud part with `edgeplan serve` and run with `edgeplan run` (docs/runtime.md).\n"
            if len(parts) > 1 else "",
        )
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                files[p.relative_to(tmp).as_posix()] = sha256_file(p)
        manifest = BundleManifest(
            edgeplan_version=edgeplan_version(), plan_name=plan.name, objective=objective,
            source_model=source_onnx.name, source_model_sha256=sha, recipe=recipe, profiles=prof_refs,
            tiers=list(plan.tier_names), wire_dtype=plan.wire_dtype,
            wire_fidelity=WIRE_FIDELITY.get(plan.wire_dtype, ""), parts=parts, inputs=inputs, outputs=outputs,
            cut_tensors=cuts, metrics=metrics, schedule=schedule.to_dict() if schedule is not None else None,
            schedule_parts=sched_parts, reference=reference, files=files,
            notes=list(notes or []) + list(getattr(plan, "notes", ())),
        )
        (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        verify_bundle(tmp)
        _replace_dir(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_schedule_parts(source_onnx: Path, plan: Any, schedule: Any, tmp: Path,
                          shapes: dict | None) -> list[list[PartRef]]:
    """Parts for every schedule segment (in ``schedule/<i>/``), so a runtime can switch cuts."""
    from edgeplan.planner.split import PartIO
    from edgeplan.planner.split_extract import extract_parts

    out: list[list[PartRef]] = []
    for i, seg in enumerate(schedule.segments):
        seg_parts = getattr(seg, "parts", None)
        if not seg_parts:
            raise InputError("schedule segments carry no parts; rebuild the schedule with this edgeplan version")
        from dataclasses import replace

        seg_plan = replace(plan, parts=tuple(PartIO(**p) if isinstance(p, dict) else p for p in seg_parts))
        d = tmp / "schedule" / str(i)
        paths = extract_parts(source_onnx, seg_plan, d, shapes=shapes)
        out.append([PartRef(file=p.relative_to(tmp).as_posix(), tier=io.tier, tier_name=io.tier_name,
                            inputs=list(io.inputs), outputs=list(io.outputs)) for p, io in zip(paths, seg_plan.parts)])
    return out


# ------------------------------------------------------------------------------------------ verifying


def load_manifest(bundle_dir: str | Path) -> BundleManifest:
    path = Path(bundle_dir) / "manifest.json"
    if not path.is_file():
        raise CheckFailed(f"{bundle_dir}: no manifest.json (not an edgeplan bundle?)")
    try:
        return BundleManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise CheckFailed(f"{path}: manifest does not match schema v{SCHEMA_VERSION} at {loc}: {first['msg']}") from e


def verify_bundle(bundle_dir: str | Path) -> VerifyReport:
    """Check a bundle: schema, sha256 of every file, and that the composed parts reproduce the
    recorded reference outputs (ORT CPU). Raises ``CheckFailed`` naming the first mismatch."""
    from edgeplan.planner.split import PartIO
    from edgeplan.planner.split_extract import run_composed

    d = Path(bundle_dir)
    m = load_manifest(d)
    if m.schema_version != SCHEMA_VERSION:
        raise CheckFailed(f"{d}: schema_version {m.schema_version}, this edgeplan reads {SCHEMA_VERSION}")
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} - {"manifest.json"}
    missing = sorted(set(m.files) - on_disk)
    if missing:
        raise CheckFailed(f"{d}: file listed in the manifest is missing: {missing[0]}")
    extra = sorted(on_disk - set(m.files))
    if extra:
        raise CheckFailed(f"{d}: file not listed in the manifest: {extra[0]}")
    for rel, want in m.files.items():
        got = sha256_file(d / rel)
        if got != want:
            raise CheckFailed(f"{d}: sha256 mismatch for {rel} (manifest {want[:12]}..., file {got[:12]}...)")
    part_files = [p.file for p in m.parts] + [p.file for seg in (m.schedule_parts or []) for p in seg]
    for f in part_files + [m.reference.file]:
        if f not in m.files:
            raise CheckFailed(f"{d}: {f} is used but not checksummed in the manifest")
    try:
        with np.load(d / m.reference.file, allow_pickle=False) as z:
            feeds = {n: z[f"input_{i}"] for i, n in enumerate(m.reference.inputs)}
            want_out = {n: z[f"output_{i}"] for i, n in enumerate(m.reference.outputs)}
    except (KeyError, ValueError, OSError) as e:
        raise CheckFailed(f"{d}: cannot read {m.reference.file}: {e}") from e

    def check(parts: list[PartRef], label: str, wire: str = "fp32") -> float:
        ios = [PartIO(p.tier, p.tier_name, tuple(p.inputs), tuple(p.outputs), 0) for p in parts]
        try:
            got = run_composed([d / p.file for p in parts], ios, feeds, wire_dtype=wire,
                               output_names=m.reference.outputs)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - any runtime failure of the parts is a failed check
            raise CheckFailed(f"{d}: running {label} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        worst = 0.0
        for name, ref in want_out.items():
            g = got[name]
            if g.shape != ref.shape:
                raise CheckFailed(f"{d}: {label}: output {name} has shape {g.shape}, reference {ref.shape}")
            if ref.dtype.kind == "f":
                err = float(np.abs(g.astype(np.float64) - ref).max()) if ref.size else 0.0
                if wire == "fp32" and not np.allclose(g, ref, rtol=m.reference.rtol, atol=m.reference.atol):
                    raise CheckFailed(f"{d}: {label}: output {name} differs from the reference by {err:.3g} "
                                      f"(tolerance {m.reference.atol:.3g})")
                worst = max(worst, err)
            elif wire == "fp32" and not np.array_equal(g, ref):
                raise CheckFailed(f"{d}: {label}: output {name} differs from the reference")
        return worst

    max_err = check(m.parts, "the parts")
    wire_err = check(m.parts, f"the parts with {m.wire_dtype} on the wire", m.wire_dtype) if (
        m.wire_dtype != "fp32" and len(m.parts) > 1) else max_err
    n_sched = 0
    for i, seg in enumerate(m.schedule_parts or []):
        check(seg, f"schedule segment {i}")
        n_sched += 1
    return VerifyReport(path=d, files_checked=len(m.files), outputs_checked=len(want_out), max_abs_error=max_err,
                        wire_dtype=m.wire_dtype, wire_max_abs_error=wire_err, schedule_parts_checked=n_sched)


__all__ = ["BundleManifest", "VerifyReport", "content_hash", "default_reference_inputs", "load_manifest",
           "sha256_file", "verify_bundle", "write_bundle"]
