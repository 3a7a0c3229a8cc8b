"""Quantization that is measured and honest: int8 (static QDQ or dynamic) and fp16 with ONNX Runtime,
int8 PT2E with Intel Neural Compressor (``backend="inc"``, see ``compressor.quantize_inc``).

Public API:

- ``QuantizeConfig``: the pass's typed settings; ``QuantizeConfig.search_space()`` declares what a
  search may vary (mode in {none, int8, int8-dynamic}, per_channel, calibration samples, ...).
- ``quantize_onnx(onnx_path, out_path, config, *, data=None, ...) -> QuantizeResult``.
- ``quantize_model(spec, out_dir, config, ...) -> QuantizeResult``: any model format in, writes
  ``quantized.onnx`` (or the INC artefacts) and ``quantize_report.json`` atomically.
- ``judge_speed(fp32_ms, quantized_ms)``: the one place that decides "faster / same / SLOWER".

What ``quantize_onnx`` does for ``mode="int8"`` (static):

1. ``quant_pre_process`` (without it int8 models were SLOWER than fp32 here; shared/TOOLCHAIN.md).
2. Calibrate (MinMax) on the user's data or, without data, on random standard-normal inputs; the
   result says which (``calibration_source`` = the path, or ``synthetic:...``; ``synthetic_data``).
   Random inputs give ranges that do not match real activations: on the trained digits CNN int8
   calibrated on normal(0, 1) noise lost 8.6 accuracy points on held-out images, calibrated on real
   images none. ``synthetic="bn-stats"`` (``quantize_model``, eager models) fits the calibration inputs
   to the model's BatchNorm statistics instead (``quantize_synth``): -0.8 points there. ``eval_data``
   measures quality on other data than calibration (a held-out split).
3. Quantize to QDQ: QUInt8 activations, QInt8 per-channel weights (the fast combination on this CPU).
4. Accuracy-aware fallback: quality is top-1 accuracy when the data has labels, else top-1 agreement
   with the fp32 model (classifiers), else mean cosine similarity, all in percent. When the drop
   exceeds ``max_accuracy_drop_pts``, nodes are ranked by the error each adds
   (``quantize_ort.node_sensitivity``: one run of each model with intermediate outputs exposed) and
   the top 1, 2, 4, 8 ... are kept in fp32 until the drop fits, then up to 3 bisection steps between the
   last failing and the first fitting count give layers back to int8. Calibration ranges are cached, so
   each step costs one re-quantization plus one evaluation. Excluded nodes are reported with the reason.
5. Speed-aware variants: on this CPU int8 depthwise convs, squeeze-excitation gates and Concat can be
   slower than fp32 (an EfficientNet-style model ran at half its fp32 speed quantized naively). For
   every such group present, a variant keeps the group in fp32; all variants and the fp32 model are
   timed side by side in one process, interleaved (``ort_timing.time_side_by_side``), and the fastest
   variant within the budget is kept. If it is still slower than fp32, ``slower_than_fp32`` is True
   and the message says SLOWER; it is never presented as an improvement.

``int8-dynamic`` skips calibration (activations are quantized at run time) and is for MatMul/Gemm-heavy
(transformer) models; on conv nets it was 5-15x slower than fp32 here, so when Conv nodes are present
a variant keeps them in fp32. ``fp16`` converts weights and tensors to float16 (keeping float32
inputs/outputs); on this CPU it ran about as fast as fp32 (resnet18_like, 1 thread: 146.0 vs 147.7 ms;
ONNX Runtime inserts Casts where a kernel lacks fp16): it is meant for GPU targets and the result says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from edgeplan.hardware_profiles.atomic import atomic_path, atomic_write_text
from edgeplan.compressor.search_space import SearchParam
from edgeplan.hardware_profiles.errors import ConfigError

__all__ = [
    "QuantizeConfig",
    "SearchParam",
    "ExcludedNode",
    "VariantTiming",
    "QuantizeResult",
    "quantize_onnx",
    "quantize_model",
    "judge_speed",
    "REPORT_NAME",
    "QUANTIZED_NAME",
]

REPORT_NAME = "quantize_report.json"
QUANTIZED_NAME = "quantized.onnx"
# A quantized model is called "faster" only when its median beats fp32 by more than this fraction;
# between 1.0x and this, it is "about as fast (within timer noise)". Medians here vary 20-30 % between
# runs but much less between interleaved models of one run; 5 % is the noise we saw side by side.
NOISE_FRACTION = 0.05
_SENSITIVITY_FEEDS = 8
_BISECT_STEPS = 3
# Random evaluation inputs when the user gives no data. Top-1 agreement moves in steps of 100/n points,
# so n must be large enough that one changed prediction does not by itself exceed a 1-point budget.
SYNTHETIC_EVAL_SAMPLES = 128

Progress = Callable[[str], None]


class QuantizeConfig(BaseModel):
    """Settings of the quantization pass (also the on-disk recipe form: frozen, no unknown keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["int8", "int8-dynamic", "fp16"] = "int8"
    backend: Literal["ort", "inc"] = "ort"
    calibration_samples: int = Field(64, ge=1, le=100_000, description="samples used to calibrate int8 ranges")
    eval_samples: int = Field(256, ge=1, le=100_000, description="samples used to measure accuracy/fidelity")
    max_accuracy_drop_pts: float = Field(1.0, ge=0.0, le=100.0, description="allowed quality loss, percentage points")
    per_channel: bool = True
    exclude_op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    synthetic: Literal["random", "bn-stats"] = Field(
        "random", description="without data: random normal inputs, or inputs fitted to BatchNorm statistics (eager models)"
    )
    synthetic_steps: int = Field(200, ge=1, le=100_000, description="optimisation steps for bn-stats synthetic data")
    accuracy_fallback: bool = True
    speed_search: bool = True
    timing_repeats: int = Field(30, ge=3, le=10_000)
    timing_warmup: int = Field(3, ge=0, le=1000)
    threads: int | None = Field(None, ge=1, le=512)
    seed: int = 0

    @classmethod
    def search_space(cls) -> tuple[SearchParam, ...]:
        """What a search may vary for this pass. ``mode="none"`` means "do not quantize".

        The accuracy budget is not searched: in a search the accuracy fallback is off (the search's own
        accuracy objective and ``accuracy_drop`` constraint take its place, and the fallback's repeated
        re-quantization made the default ResNet-18 search overrun its 5-minute target).
        """
        return (
            SearchParam("mode", "categorical", ("none", "int8", "int8-dynamic")),
            SearchParam("per_channel", "categorical", (True, False)),
            SearchParam("calibration_samples", "categorical", (32, 64, 128)),
        )

    @classmethod
    def from_params(cls, params: dict[str, Any], **fixed: Any) -> "QuantizeConfig | None":
        """Build a config from values drawn from ``search_space()`` (None when mode is "none")."""
        values = {**fixed, **params}
        if values.get("mode") == "none":
            return None
        try:
            return cls(**values)
        except Exception as e:  # noqa: BLE001 - pydantic ValidationError
            raise ConfigError(f"bad quantization settings: {str(e).splitlines()[0]}") from None


@dataclass(frozen=True)
class ExcludedNode:
    """A node kept in fp32 and why: "user" (asked for), "accuracy" (sensitivity fallback), "speed"."""

    name: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class VariantTiming:
    """One model timed in the side-by-side run (fp32 included), with its quality on the eval data."""

    name: str
    runtime: str
    median_ms: float
    p90_ms: float
    quality_pct: float | None
    quality_drop_pts: float | None
    within_budget: bool
    chosen: bool = False
    fp32_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuantizeResult:
    """What a quantization run produced and measured. Every latency is measured in this run."""

    out_path: str
    mode: str
    backend: str
    calibration_source: str | None  # a data path, "synthetic:...", or None (dynamic / fp16 need none)
    calibration_samples: int
    synthetic_data: bool
    eval_source: str
    eval_samples: int
    metric: str  # "accuracy" | "top1_agreement" | "cosine_similarity" (percent)
    quality_fp32_pct: float
    quality_quantized_pct: float
    quality_drop_pts: float
    max_accuracy_drop_pts: float
    within_budget: bool
    excluded_nodes: tuple[ExcludedNode, ...]
    variants: tuple[VariantTiming, ...]
    latency_fp32_ms: float
    latency_fp32_p90_ms: float
    latency_quantized_ms: float
    latency_quantized_p90_ms: float
    speedup: float
    slower_than_fp32: bool
    timing_method: str
    runtime_version: str
    threads: int
    size_fp32_bytes: int
    size_quantized_bytes: int
    message: str
    notes: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return TypeAdapter(QuantizeResult).dump_json(self, indent=2).decode()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())


def judge_speed(fp32_ms: float, quantized_ms: float, *, what: str = "quantized") -> tuple[float, bool, str]:
    """(speedup, slower_than_fp32, message). Slower means the quantized median exceeds fp32's."""
    if fp32_ms <= 0 or quantized_ms <= 0:
        return 0.0, False, "latency could not be measured"
    speedup = fp32_ms / quantized_ms
    if quantized_ms > fp32_ms:
        noise = ", a difference within timer noise" if speedup > 1.0 / (1.0 + NOISE_FRACTION) else ""
        return speedup, True, (
            f"SLOWER than fp32: {what} {quantized_ms:.3f} ms vs fp32 {fp32_ms:.3f} ms "
            f"({speedup:.2f}x{noise}); not an improvement in speed on this machine"
        )
    if speedup < 1.0 + NOISE_FRACTION:
        return speedup, False, (
            f"about as fast as fp32: {what} {quantized_ms:.3f} ms vs fp32 {fp32_ms:.3f} ms "
            f"({speedup:.2f}x, within timer noise)"
        )
    return speedup, False, f"{speedup:.2f}x faster than fp32: {what} {quantized_ms:.3f} ms vs fp32 {fp32_ms:.3f} ms"


# ------------------------------------------------------------------------------------------ helpers


def _quality(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None, source: str) -> tuple[str, float]:
    from edgeplan.compressor.evaluate import evaluate_outputs

    r = evaluate_outputs(outputs, labels=labels, reference_outputs=reference, data_source=source)
    if r.accuracy is not None:
        return "accuracy", 100.0 * r.accuracy
    if r.agreement is not None:
        return "top1_agreement", 100.0 * r.agreement
    return "cosine_similarity", 100.0 * float(r.cosine if r.cosine is not None else 0.0)


@dataclass(frozen=True)
class _Eval:
    feeds: list
    labels: np.ndarray | None
    source: str
    reference: np.ndarray
    metric: str
    fp32_pct: float
    budget: float

    cache: dict = field(default_factory=dict, compare=False)

    def score(self, path: Path) -> tuple[float, float, bool]:
        """(quality %, drop in points, within budget) of the model at ``path``; cached per path."""
        from edgeplan.compressor.quantize_ort import run_first_output

        key = str(path)
        if key not in self.cache:
            out = run_first_output(path, self.feeds)
            _, q = _quality(out, self.reference, self.labels, self.source)
            drop = self.fp32_pct - q
            self.cache[key] = (q, drop, drop <= self.budget + 1e-9)
        return self.cache[key]


def _emit(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _op_types(path: Path) -> dict[str, str]:
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


# ------------------------------------------------------------------------------------------- public


def quantize_onnx(
    onnx_path: str | Path,
    out_path: str | Path,
    config: QuantizeConfig | None = None,
    *,
    data: Any = None,
    eval_data: Any = None,
    input_shape: Sequence[tuple[int, ...]] | None = None,
    progress: Progress | None = None,
    timer: Callable[..., list] | None = None,
) -> QuantizeResult:
    """Quantize an ONNX model with ONNX Runtime and measure it against fp32 in the same run.

    ``data`` (calibration, and evaluation unless ``eval_data`` is given) is a ``compressor.data.Dataset``,
    a path for ``load_data``, or None (synthetic, labelled as such). ``eval_data`` (same forms) measures
    accuracy/fidelity on other data than calibration, e.g. calibrate on train.npz, evaluate on eval.npz.
    ``input_shape`` gives full input shapes (batch included) when the model has symbolic dimensions.
    ``timer`` replaces ``ort_timing.time_side_by_side`` (same signature); tests inject timings with it.
    Writes ``out_path`` atomically; returns a ``QuantizeResult``.
    """
    import onnxruntime as ort

    from edgeplan.compressor import quantize_ort as qo
    from edgeplan.compressor.data import Dataset, load_data, synthetic_data
    from edgeplan.compressor.ort_timing import default_threads, time_side_by_side

    config = config or QuantizeConfig()
    if config.backend != "ort":
        raise ConfigError("quantize_onnx runs the ONNX Runtime backend; use quantize_model for --backend inc")
    src = Path(onnx_path)
    if not src.exists():
        raise _missing(src)
    out = Path(out_path)
    timer = timer or time_side_by_side
    threads = config.threads or default_threads()
    specs = qo.ort_inputs(src, input_shape)

    if data is not None and not isinstance(data, Dataset):
        data = load_data(data)
    if eval_data is not None and not isinstance(eval_data, Dataset):
        eval_data = load_data(eval_data)
    synthetic_source = synthetic_data((1,), 1, seed=config.seed).source
    # Calibration: the user's data, else random. Evaluation: eval_data, else the calibration data (its
    # first eval_samples, which include the calibration samples), else *different* random samples, so
    # fidelity is not measured on the very inputs the ranges were fitted to.
    if data is not None:
        calib_feeds = qo.make_feeds(specs, data.inputs, config.calibration_samples)
        cal_source, cal_synthetic = data.source, data.synthetic
    else:
        calib_feeds = qo.make_feeds(specs, None, config.calibration_samples, seed=config.seed)
        cal_source, cal_synthetic = synthetic_source, True
    ev_ds = eval_data if eval_data is not None else data
    if ev_ds is not None:
        n_eval = min(len(ev_ds), config.eval_samples)
        eval_feeds = qo.make_feeds(specs, ev_ds.inputs, n_eval)
        labels = None if ev_ds.labels is None else ev_ds.labels[:n_eval]
        source, ev_synthetic = ev_ds.source, ev_ds.synthetic
    else:
        n_eval = min(config.eval_samples, SYNTHETIC_EVAL_SAMPLES)
        eval_feeds = qo.make_feeds(specs, None, n_eval, seed=config.seed + 10_000)
        labels = None
        source, ev_synthetic = synthetic_source, True
    synthetic = cal_synthetic or ev_synthetic

    notes: list[str] = []
    step_pts = 100.0 / max(1, len(eval_feeds))
    if 0 < config.max_accuracy_drop_pts < step_pts:
        notes.append(
            f"with {len(eval_feeds)} evaluation samples one changed prediction moves the metric by {step_pts:.2f} pts, "
            f"more than the {config.max_accuracy_drop_pts} pt budget: give more data or a larger budget"
        )
    if cal_synthetic and ev_synthetic:
        notes.append(
            f"calibration and evaluation used SYNTHETIC inputs ({cal_source}): fidelity to fp32 on generated "
            "inputs, not accuracy; int8 ranges fitted to generated data may not suit real inputs"
        )
    elif cal_synthetic:
        notes.append(f"calibration used SYNTHETIC inputs ({cal_source}); quality measured on {source}")
    elif ev_synthetic:
        notes.append(f"quality measured on SYNTHETIC inputs ({source}): fidelity, not accuracy")
    _emit(progress, "running the fp32 model on the evaluation inputs")
    reference = qo.run_first_output(src, eval_feeds)
    metric, fp32_pct = _quality(reference, reference, labels, source)
    ev = _Eval(eval_feeds, labels, source, reference, metric, fp32_pct, config.max_accuracy_drop_pts)

    with tempfile.TemporaryDirectory(prefix="edgeplan-quant-") as tmpd:
        tmp = Path(tmpd)
        candidates: list[tuple[str, Path, tuple[str, ...], frozenset[str]]] = []  # name, path, groups, excluded
        excluded: dict[str, ExcludedNode] = {}
        calibration_source: str | None = None
        op_of: dict[str, str] = {}
        if config.mode == "fp16":
            _emit(progress, "converting to fp16")
            fp16 = tmp / "fp16.onnx"
            qo.convert_fp16(src, fp16)
            candidates.append(("fp16", fp16, (), frozenset()))
            notes.append(
                "fp16 is meant for GPU targets: on this CPU ONNX Runtime gives it no speedup (resnet18 measured "
                "about equal to fp32; where a kernel lacks fp16 it inserts Casts); it halves the weights' size"
            )
        else:
            pre = tmp / "pre.onnx"
            _emit(progress, "pre-processing (quant_pre_process: shape inference + graph optimisation)")
            note = qo.preprocess(src, pre)
            if note:
                notes.append(note)
            op_of = _op_types(pre)
            user = set(config.exclude_nodes) | {n for n, t in op_of.items() if t in set(config.exclude_op_types)}
            unknown = sorted(set(config.exclude_nodes) - set(op_of))
            if unknown:
                notes.append(f"exclude_nodes not found after pre-processing (ignored): {', '.join(unknown[:5])}")
            for n in sorted(user & set(op_of)):
                excluded[n] = ExcludedNode(n, op_of[n], "user")
            cache = tmp / "calibration.json"

            def build(path: Path, excl: set[str]) -> None:
                if config.mode == "int8":
                    qo.quantize_static_qdq(pre, path, calib_feeds, per_channel=config.per_channel, nodes_to_exclude=excl, cache_path=cache)
                else:
                    qo.quantize_dynamic_int8(pre, path, per_channel=config.per_channel, nodes_to_exclude=excl)

            if config.mode == "int8":
                calibration_source = cal_source
                _emit(progress, f"calibrating on {len(calib_feeds)} samples ({cal_source}) and quantizing (static QDQ)")
            else:
                _emit(progress, "quantizing (dynamic int8)")
            base = tmp / "int8_0.onnx"
            build(base, set(user))
            naive = base
            q, drop, ok = ev.score(base)
            acc_excl: set[str] = set()
            if not ok and config.accuracy_fallback:
                _emit(progress, f"{metric} drop {drop:.2f} pts > budget {config.max_accuracy_drop_pts} pts: ranking layer sensitivity")
                cands = qo.static_candidates(base, pre) if config.mode == "int8" else qo.dynamic_candidates(pre)
                cands = [c for c in cands if c not in user]
                ranked = [n for n, _ in qo.node_sensitivity(pre, base, eval_feeds[:_SENSITIVITY_FEEDS], cands)]
                k, step = 1, 1
                while ranked:
                    k = min(k, len(ranked))
                    trial = set(ranked[:k])
                    path = tmp / f"int8_acc{step}.onnx"
                    build(path, user | trial)
                    q2, drop2, ok2 = ev.score(path)
                    _emit(progress, f"  {k} layer(s) in fp32: {metric} drop {drop2:.2f} pts")
                    acc_excl, base, q, drop, ok = trial, path, q2, drop2, ok2
                    if ok or k == len(ranked):
                        break
                    k, step = k * 2, step + 1
                # Doubling overshoots by up to 2x: bisect between the last failing and the first fitting
                # count (at most _BISECT_STEPS more quantizations) to give back layers to int8.
                lo, hi = (k // 2 if k > 1 else 0), k
                for _ in range(_BISECT_STEPS if ok else 0):
                    mid = (lo + hi) // 2
                    if mid <= lo:
                        break
                    step += 1
                    path = tmp / f"int8_acc{step}.onnx"
                    build(path, user | set(ranked[:mid]))
                    q2, drop2, ok2 = ev.score(path)
                    _emit(progress, f"  {mid} layer(s) in fp32: {metric} drop {drop2:.2f} pts")
                    if ok2:
                        hi, acc_excl, base, q, drop = mid, set(ranked[:mid]), path, q2, drop2
                    else:
                        lo = mid
                for n in ranked:
                    if n in acc_excl:
                        excluded[n] = ExcludedNode(n, op_of.get(n, "?"), "accuracy")
                if not ok:
                    notes.append(
                        f"accuracy fallback could not meet the budget: {len(acc_excl)} layer(s) in fp32 still lose "
                        f"{drop:.2f} pts (budget {config.max_accuracy_drop_pts})"
                    )
            if acc_excl:
                # Also time the all-int8 model: the user sees what the fallback cost in speed.
                candidates.append((f"{config.mode}, no fallback", naive, (), frozenset(user)))
            candidates.append((config.mode + (", fallback" if acc_excl else ""), base, (), frozenset(user | acc_excl)))
            if config.speed_search:
                groups = qo.speed_groups(pre) if config.mode == "int8" else {
                    "conv": [n for n, t in op_of.items() if t == "Conv"]
                }
                present = {g: set(v) - user - acc_excl for g, v in groups.items()}
                present = {g: v for g, v in present.items() if v}
                combos: list[tuple[str, ...]] = [(g,) for g in present]
                if len(present) > 1:
                    combos.append(tuple(present))
                for i, combo in enumerate(combos):
                    extra = set().union(*(present[g] for g in combo))
                    path = tmp / f"int8_speed{i}.onnx"
                    _emit(progress, f"speed variant: {', '.join(combo)} in fp32 ({len(extra)} nodes)")
                    build(path, user | acc_excl | extra)
                    candidates.append((f"{config.mode}, fp32 {'+'.join(combo)}", path, combo, frozenset(user | acc_excl | extra)))

        # Time fp32 and every candidate side by side, interleaved, in one process.
        _emit(progress, f"timing fp32 and {len(candidates)} variant(s) side by side ({config.timing_repeats} runs each)")
        timing_feed = eval_feeds[0]
        timings = timer(
            [src, *[c[1] for c in candidates]],
            timing_feed,
            repeats=config.timing_repeats,
            warmup=config.timing_warmup,
            threads=threads,
        )
        t_fp32 = timings[0]
        scored = []
        for (name, path, groups_, excl), t in zip(candidates, timings[1:]):
            q, drop, ok = ev.score(path)
            scored.append((name, path, groups_, excl, t, q, drop, ok))
        fits = [s for s in scored if s[7]]
        chosen = min(fits, key=lambda s: s[4].median_ms) if fits else max(scored, key=lambda s: s[5])
        name, path, groups_, excl, t_q, q, drop, ok = chosen
        for n in excl:
            if n not in excluded:
                excluded[n] = ExcludedNode(n, op_of.get(n, "?"), "speed: kept " + "+".join(groups_) + " in fp32")
        excluded = {n: e for n, e in excluded.items() if n in excl}
        variants = [VariantTiming("fp32", "onnxruntime", t_fp32.median_ms, t_fp32.p90_ms, fp32_pct, 0.0, True)]
        for s in scored:
            variants.append(
                VariantTiming(s[0], "onnxruntime", s[4].median_ms, s[4].p90_ms, s[5], s[6], s[7], s is chosen, tuple(s[2]))
            )
        speedup, slower, speed_msg = judge_speed(t_fp32.median_ms, t_q.median_ms, what=config.mode)
        if not ok:
            msg = f"{speed_msg}; quality budget NOT met ({metric} drop {drop:.2f} pts > {config.max_accuracy_drop_pts})"
        else:
            msg = f"{speed_msg}; {metric} drop {drop:.2f} pts (budget {config.max_accuracy_drop_pts})"
        with atomic_path(out, suffix=".onnx") as tmp_out:
            shutil.copyfile(path, tmp_out)

    return QuantizeResult(
        out_path=str(out),
        mode=config.mode,
        backend="ort",
        calibration_source=calibration_source,
        calibration_samples=len(calib_feeds) if calibration_source else 0,
        synthetic_data=synthetic,
        eval_source=source,
        eval_samples=len(eval_feeds),
        metric=metric,
        quality_fp32_pct=fp32_pct,
        quality_quantized_pct=q,
        quality_drop_pts=drop,
        max_accuracy_drop_pts=config.max_accuracy_drop_pts,
        within_budget=ok,
        excluded_nodes=tuple(sorted(excluded.values(), key=lambda e: (e.reason, e.name))),
        variants=tuple(variants),
        latency_fp32_ms=t_fp32.median_ms,
        latency_fp32_p90_ms=t_fp32.p90_ms,
        latency_quantized_ms=t_q.median_ms,
        latency_quantized_p90_ms=t_q.p90_ms,
        speedup=speedup,
        slower_than_fp32=slower,
        timing_method=(
            f"measured here: ONNX Runtime {ort.__version__} CPU, {threads} thread(s), batch 1, median of "
            f"{config.timing_repeats} runs interleaved with fp32 in one process"
        ),
        runtime_version=f"onnxruntime {ort.__version__}",
        threads=threads,
        size_fp32_bytes=src.stat().st_size,
        size_quantized_bytes=out.stat().st_size,
        message=msg,
        notes=tuple(notes),
    )


def _missing(p: Path) -> Exception:
    from edgeplan.hardware_profiles.errors import ModelLoadError

    return ModelLoadError(f"model not found: {p}")


def _bn_stats_data(loaded: Any, config: QuantizeConfig, progress: Progress | None):
    """Calibration inputs fitted to the model's BatchNorm statistics (``quantize_synth``)."""
    from edgeplan.compressor.quantize_synth import bn_statistics_data

    if not loaded.is_eager or loaded.module is None:
        raise ConfigError(
            f"--synthetic bn-stats needs an eager nn.Module (pickle or pkg.module:function factory); this model is "
            f"{loaded.format}: give --data, or use --synthetic random"
        )
    if len(loaded.inputs) != 1 or not loaded.inputs[0].dtype.startswith("float"):
        raise ConfigError("--synthetic bn-stats supports single-input float models; give --data instead")
    _emit(progress, f"generating {config.calibration_samples} inputs from BatchNorm statistics ({config.synthetic_steps} steps)")
    return bn_statistics_data(
        loaded.module, tuple(loaded.inputs[0].shape[1:]), config.calibration_samples,
        steps=config.synthetic_steps, seed=config.seed, progress=progress,
    )


def quantize_model(
    spec: str | Path,
    out_dir: str | Path,
    config: QuantizeConfig | None = None,
    *,
    data: Any = None,
    eval_data: Any = None,
    input_shape: str | None = None,
    trust_model: bool = False,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Quantize a model of any supported format; write ``out_dir/quantized.onnx`` (ORT) or the INC
    artefacts, plus ``out_dir/quantize_report.json`` (atomically).

    Non-ONNX models are exported first (``compressor.export.to_onnx`` -> ``out_dir/model_fp32.onnx``),
    which is also the fp32 baseline that the quantized model is timed against.
    """
    from edgeplan.compressor.intake import load_model

    config = config or QuantizeConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(spec, trust_model=trust_model, input_shape=input_shape)
    if data is not None and not hasattr(data, "inputs"):
        from edgeplan.compressor.data import load_data

        data = load_data(data)
    if data is None and config.synthetic == "bn-stats" and config.mode == "int8":
        data = _bn_stats_data(loaded, config, progress)
    if config.backend == "inc":
        from edgeplan.compressor.quantize_inc import quantize_inc

        if eval_data is not None:
            raise ConfigError("--eval-data is not supported with --backend inc yet; --data is used for both")

        result = quantize_inc(loaded, out_dir, config, data=data, progress=progress)
    else:
        if loaded.format == "onnx" and loaded.onnx_path is not None:
            onnx_path = Path(loaded.onnx_path)
        else:
            from edgeplan.compressor.export import to_onnx

            _emit(progress, "exporting to ONNX")
            onnx_path = to_onnx(loaded, out_dir / "model_fp32.onnx").path
        shapes = [tuple(s.shape) for s in loaded.inputs] if loaded.inputs else None
        result = quantize_onnx(onnx_path, out_dir / QUANTIZED_NAME, config, data=data, eval_data=eval_data,
                               input_shape=shapes, progress=progress)
    atomic_write_text(out_dir / REPORT_NAME, result.to_json())
    return result
