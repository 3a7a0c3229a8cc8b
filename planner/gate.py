"""``edgeplan gate``: check a model against budgets (latency, energy, size, memory, accuracy, regression).

Pure core, thin driver. The core (``upper_check``, ``lower_check``, ``regression_stats``,
``regression_check``) turns numbers into ``Check`` values and has no I/O; ``run_gate`` is the driver that
loads the model, predicts, measures and evaluates, then calls the core. Rendering (JUnit XML, Markdown,
JSON) lives in ``planner.gate_report``; budgets and their config files in ``planner.gate_config``.

Every check says where its value comes from (``source``):

- ``predicted``: from the ``--target`` hardware profile through the cost model (``planner.cost``), with
  that profile's error band. A predicted value ``v`` with band ``b`` % stands for the range
  ``[v(1-b), v(1+b)]``. Against an upper limit ``L``: the check passes when the whole range is <= L,
  fails when the whole range is > L, and is **uncertain** when the range straddles L.
- ``measured``: on the machine running the gate (ONNX Runtime CPU, see ``planner.measure``), the model
  file on disk (size), or a dataset (accuracy). Measured latency is only meaningful for the target when
  the gate runs *on* the target (a self-hosted CI runner on the device) or when the target is ``host``.

Status and exit code. ``pass`` and ``fail`` are what they say. ``uncertain`` (a prediction's band
straddles the limit) and ``inconclusive`` (a regression smaller than the measurement noise could tell
apart) **pass with a warning** by default, and **fail with ``strict=True``** (``--strict``). The
default is lenient because an uncalibrated profile has a wide band (pi4: +-50 %), and a gate that fails
on "we cannot tell" trains teams to delete the gate; calibrate the profile (``edgeplan calibrate``) to
narrow the band, or use ``--strict`` where a false pass costs more than a false alarm.

Baseline regression (``max_regression_pct``): the model and the baseline are measured in the same process,
interleaved, in *blocks*. Each block creates a fresh pair of sessions and runs rounds (one run of each
model per round, the order alternating every round so that cache warmth and frequency ramps favour
neither) for at least 0.25 s. Per round: ratio = model / baseline latency; per block: the median ratio.
The regression is the mean of the block medians minus 1, and its 95 % interval is the union of the
distribution-free CI of the median of all rounds and the Student-t interval over blocks
(``regression_stats``). The check

- fails when the whole interval is above the threshold (a regression, beyond the noise);
- passes when the whole interval is at or below the threshold;
- otherwise adds blocks (4 at a time, up to 24 or ``time_budget_s``), and if the interval still straddles
  the threshold it is ``inconclusive`` and says why, e.g. "regression threshold 5% is below the measured
  noise +-8.0%: inconclusive" (noise = half the interval's width).

Why blocks of fresh sessions, measured: with a single pair of sessions and 30 rounds, two *identical*
tiny models on the 2-core development machine (shared with other jobs) came out +37 % apart, CI
+28..+44 %, in 2 of 30 runs, i.e. false fails. One session's intra-op worker thread sat on a busy core
for the whole (5 ms) run, so every round was biased alike and the per-round spread could not see it.
Blocks of fresh sessions turn that session-level bias into spread between blocks, which the t-interval
measures; the 0.25 s minimum per block keeps tiny models from being judged on a few milliseconds.
(``compressor.ort_timing.time_side_by_side`` runs the models in the same order every round and has no
blocks, so it is not used here; its ``make_session`` and ``random_feeds`` are.)

Size is the ONNX file on disk plus any external-data files it references; MB = 10**6 bytes throughout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeplan.hardware_profiles.errors import ConfigError, DataError, InputError
from edgeplan.planner.gate_config import GateBudgets

__all__ = [
    "Check",
    "GateReport",
    "RegressionResult",
    "upper_check",
    "lower_check",
    "regression_stats",
    "regression_decision",
    "regression_check",
    "measure_regression",
    "resolve_model_path",
    "bundle_target",
    "onnx_size_bytes",
    "run_gate",
]

MB = 1e6
Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Check:
    """One budget checked. ``margin`` > 0 is headroom, < 0 is by how much the budget is blown."""

    id: str  # stable machine name, e.g. "latency.predicted", "size", "regression"
    title: str  # human name, e.g. "latency on pi4 (predicted)"
    value: float | None
    limit: float
    unit: str
    comparison: str  # "<=" (a maximum) or ">=" (a minimum)
    status: str  # "pass" | "fail" | "uncertain" | "inconclusive"
    source: str  # "measured" | "predicted"
    method: str
    error_band_pct: float | None = None
    interval: tuple[float, float] | None = None  # predicted band, or a confidence interval
    note: str = ""

    @property
    def margin(self) -> float | None:
        if self.value is None:
            return None
        return self.limit - self.value if self.comparison == "<=" else self.value - self.limit

    @property
    def margin_pct(self) -> float | None:
        m = self.margin
        return None if m is None else 100.0 * m / self.limit

    def passed(self, strict: bool = False) -> bool:
        if self.status == "pass":
            return True
        if self.status in ("uncertain", "inconclusive"):
            return not strict
        return False

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "value": self.value, "limit": self.limit, "unit": self.unit,
            "comparison": self.comparison, "margin": self.margin, "margin_pct": self.margin_pct,
            "status": self.status, "passed": self.passed(strict), "source": self.source, "method": self.method,
            "error_band_pct": self.error_band_pct,
            "interval": list(self.interval) if self.interval is not None else None, "note": self.note,
        }


@dataclass(frozen=True)
class GateReport:
    model: str
    onnx_path: str
    target: str | None
    checks: tuple[Check, ...]
    strict: bool = False
    config: str | None = None
    model_info: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed(self.strict) for c in self.checks)

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed(self.strict))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "gate",
            "model": self.model,
            "onnx_path": self.onnx_path,
            "target": self.target,
            "passed": self.passed,
            "strict": self.strict,
            "config": self.config,
            "model_info": self.model_info,
            "checks": [c.to_dict(self.strict) for c in self.checks],
            "warnings": list(self.warnings),
        }


# ------------------------------------------------------------------------------------- pure core


def upper_check(id: str, title: str, value: float, limit: float, unit: str, *, source: str, method: str,
                band_pct: float | None = None, note: str = "") -> Check:
    """A maximum budget. With ``band_pct`` (predicted values) the band decides pass/fail/uncertain."""
    if band_pct is None:
        return Check(id, title, value, limit, unit, "<=", "pass" if value <= limit else "fail", source, method,
                     note=note)
    b = band_pct / 100.0
    lo, hi = value * max(0.0, 1.0 - b), value * (1.0 + b)
    status = "pass" if hi <= limit else ("fail" if lo > limit else "uncertain")
    if status == "uncertain":
        side = "above" if value > limit else "below"
        note = (f"predicted {value:.4g} {unit} is {side} the limit {limit:.4g} {unit}, but the profile's "
                f"+-{band_pct:g}% band ({lo:.4g}..{hi:.4g}) straddles it" + (f"; {note}" if note else ""))
    return Check(id, title, value, limit, unit, "<=", status, source, method, band_pct, (lo, hi), note)


def lower_check(id: str, title: str, value: float, limit: float, unit: str, *, source: str, method: str,
                interval: tuple[float, float] | None = None, note: str = "") -> Check:
    """A minimum budget on a measured value (the interval, if any, is information only)."""
    return Check(id, title, value, limit, unit, ">=", "pass" if value >= limit else "fail", source, method,
                 interval=interval, note=note)


# Two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..30 (beyond: 1.96 is within 4 %).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _median_ci(r: np.ndarray) -> tuple[float, float]:
    """Distribution-free 95 % CI of the median: order statistics n/2 -+ 1.96 sqrt(n)/2 (binomial ranks)."""
    s = np.sort(r)
    n = s.size
    half = 1.96 * np.sqrt(n) / 2.0
    return float(s[max(0, int(np.floor(n / 2.0 - half)))]), float(s[min(n - 1, int(np.ceil(n / 2.0 + half)) - 1)])


def regression_stats(model_ms: Sequence[float] | Sequence[Sequence[float]],
                     baseline_ms: Sequence[float] | Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """(regression %, 95 % interval low %, high %) from paired per-round latencies, in blocks.

    Input: per-round latencies, either flat (one block) or a list of blocks (each block measured with
    its own pair of fresh sessions). Per round, ratio = model / baseline. Per block, the median ratio.

    - estimate: the mean of the block medians (one block: its median);
    - interval: the union of (a) the distribution-free 95 % CI of the median of all pooled ratios and
      (b) the Student-t 95 % interval of the mean of the block medians (two or more blocks).

    Why blocks: rounds within one pair of sessions are not independent. Measured on the 2-core development
    machine under load, two *identical* models compared with one session pair gave +37 % (CI +28..+44 %)
    in 2 of 30 runs: one session's worker thread sat on a busy core for the whole (short) run, so every
    round was biased the same way and the per-round CI could not see it. Fresh sessions per block make
    that bias vary between blocks, where (b) sees it.
    """
    def blocks_of(x: Any) -> list[np.ndarray]:
        if len(x) and np.ndim(x[0]) == 0:
            return [np.asarray(x, dtype=float)]
        return [np.asarray(v, dtype=float) for v in x]

    am, bm = blocks_of(model_ms), blocks_of(baseline_ms)
    if len(am) != len(bm) or any(x.shape != y.shape for x, y in zip(am, bm)) or sum(x.size for x in am) < 3:
        raise ValueError("need >= 3 paired rounds, with model and baseline blocks of equal length")
    ratios = [x / np.maximum(y, 1e-12) for x, y in zip(am, bm) if x.size]
    pooled = np.concatenate(ratios)
    lo, hi = _median_ci(pooled)
    meds = np.array([np.median(r) for r in ratios])
    est = float(meds.mean())
    k = meds.size
    if k >= 2:
        t = _T975[k - 2] if k - 1 <= len(_T975) else 1.96
        half = t * float(meds.std(ddof=1)) / np.sqrt(k)
        lo, hi = min(lo, est - half), max(hi, est + half)
    lo, hi = min(lo, est), max(hi, est)
    return (est - 1.0) * 100.0, (float(lo) - 1.0) * 100.0, (float(hi) - 1.0) * 100.0


def regression_decision(lo_pct: float, hi_pct: float, threshold_pct: float) -> str:
    """"fail" (whole CI above the threshold), "pass" (whole CI at or below it) or "inconclusive"."""
    if lo_pct > threshold_pct:
        return "fail"
    if hi_pct <= threshold_pct:
        return "pass"
    return "inconclusive"


@dataclass(frozen=True)
class RegressionResult:
    regression_pct: float
    ci_low_pct: float
    ci_high_pct: float
    rounds: int
    model_median_ms: float
    baseline_median_ms: float
    seconds: float
    stop_reason: str  # "decided" | "max_blocks" | "time_budget"
    blocks: int = 1

    @property
    def noise_pct(self) -> float:
        """Half-width of the 95 % confidence interval of the regression."""
        return (self.ci_high_pct - self.ci_low_pct) / 2.0


def regression_check(r: RegressionResult, threshold_pct: float, baseline: str) -> Check:
    status = regression_decision(r.ci_low_pct, r.ci_high_pct, threshold_pct)
    method = (f"measured on this machine: model and baseline interleaved in one process, {r.blocks} blocks of "
              f"fresh sessions, {r.rounds} rounds in all (order alternating), per-round latency ratios; 95% "
              f"interval {r.ci_low_pct:+.1f}..{r.ci_high_pct:+.1f}% (median CI and spread between blocks); "
              f"medians {r.model_median_ms:.3f} ms vs {r.baseline_median_ms:.3f} ms; {r.seconds:.1f} s")
    if status == "inconclusive":
        if r.noise_pct >= threshold_pct:
            note = (f"regression threshold {threshold_pct:g}% is below the measured noise +-{r.noise_pct:.1f}% "
                    f"after {r.rounds} rounds ({r.seconds:.0f} s): inconclusive")
        else:
            note = (f"measured {r.regression_pct:+.1f}% (95% interval {r.ci_low_pct:+.1f}..{r.ci_high_pct:+.1f}%) "
                    f"straddles the {threshold_pct:g}% threshold after {r.rounds} rounds ({r.seconds:.0f} s): "
                    "inconclusive")
        if r.stop_reason == "time_budget":
            note += "; stopped at the time budget (raise --regression-budget-s for more rounds)"
    elif status == "fail":
        note = f"model is {r.regression_pct:.1f}% slower than {baseline} (beyond the noise +-{r.noise_pct:.1f}%)"
    else:
        faster = "faster" if r.regression_pct < 0 else "slower"
        note = f"model is {abs(r.regression_pct):.1f}% {faster} than {baseline} (noise +-{r.noise_pct:.1f}%)"
    return Check("regression", f"latency regression vs {Path(baseline).name}", r.regression_pct, threshold_pct,
                 "%", "<=", status, "measured", method, interval=(r.ci_low_pct, r.ci_high_pct), note=note)


# ------------------------------------------------------------------------------------------ driver


def measure_regression(model_path: str | Path, baseline_path: str | Path, threshold_pct: float, *,
                       threads: int | None = None, warmup: int = 3, blocks: int = 4, block_s: float = 0.25,
                       min_block_rounds: int = 10, max_blocks: int = 24, time_budget_s: float = 90.0,
                       progress: Progress | None = None) -> RegressionResult:
    """Blocks of paired, order-alternating rounds of model vs baseline until the interval decides.

    Each block creates a fresh pair of sessions, warms both up, then runs rounds (one run of each model,
    order alternating per round and per block) for at least ``block_s`` seconds and ``min_block_rounds``
    rounds. After ``blocks`` blocks the interval (``regression_stats``) is checked against the threshold;
    while it straddles it, ``blocks`` more blocks are added (up to ``max_blocks`` or ``time_budget_s``).
    """
    from edgeplan.compressor.ort_timing import make_session, random_feeds

    am: list[list[float]] = []
    bm: list[list[float]] = []
    t_start = time.perf_counter()
    target = max(1, blocks)
    while True:
        while len(am) < target:
            if len(am) >= 2 and time.perf_counter() - t_start >= time_budget_s:
                break  # out of time: decide on the blocks we have
            k = len(am)
            # spinning=False: two sessions take turns on the same cores, and an idle session's spinning
            # worker threads steal a core from the other's run. Measured here (2 cores, 2 threads, two
            # identical 0.06 ms models, 20 comparisons each): spinning 3.1 % median |difference|, 95 % CI
            # 13.5 points wide, 6 inconclusive and false fails in the slow test; without: 0.2 %, 0.9, 20 pass.
            sm, sb = (make_session(model_path, threads, spinning=False),
                      make_session(baseline_path, threads, spinning=False))
            fm, fb = random_feeds(sm, 1), random_feeds(sb, 1)
            for _ in range(warmup):
                sm.run(None, fm)
                sb.run(None, fb)
            a: list[float] = []
            b: list[float] = []
            t_block = time.perf_counter()
            while len(a) < min_block_rounds or time.perf_counter() - t_block < block_s:
                pairs = ((sm, fm, a), (sb, fb, b)) if (len(a) + k) % 2 == 0 else ((sb, fb, b), (sm, fm, a))
                for sess, feeds, out in pairs:
                    t0 = time.perf_counter()
                    sess.run(None, feeds)
                    out.append((time.perf_counter() - t0) * 1e3)
            am.append(a)
            bm.append(b)
            del sm, sb
        pct, lo, hi = regression_stats(am, bm)
        elapsed = time.perf_counter() - t_start
        rounds = sum(len(x) for x in am)
        if progress:
            progress(f"regression: {len(am)} blocks, {rounds} rounds, {pct:+.1f}% (95% {lo:+.1f}..{hi:+.1f}%)")
        if regression_decision(lo, hi, threshold_pct) != "inconclusive":
            reason = "decided"
        elif len(am) >= max_blocks:
            reason = "max_blocks"
        elif elapsed >= time_budget_s:
            reason = "time_budget"
        else:
            target = min(max_blocks, len(am) + max(1, blocks))
            continue
        flat_a = [x for blk in am for x in blk]
        flat_b = [x for blk in bm for x in blk]
        return RegressionResult(pct, lo, hi, rounds, float(np.median(flat_a)), float(np.median(flat_b)), elapsed,
                                reason, len(am))


def resolve_model_path(spec: str | Path) -> tuple[str, str]:
    """A model spec or a bundle folder -> (spec to load, note). Bundles: model.onnx, else edge.onnx.

    A split bundle (edge.onnx + cloud.onnx) is gated on its edge part: the device-side budgets
    (latency, energy, memory, size on the device) are about what runs on the device.
    """
    p = Path(spec)
    if not p.is_dir():
        return str(spec), ""
    if not (p / "manifest.json").is_file():
        raise InputError(f"{p} is a folder but not a bundle (no manifest.json); pass a model file or a bundle folder")
    if (p / "model.onnx").is_file():
        return str(p / "model.onnx"), f"bundle {p.name}: gating model.onnx"
    if (p / "edge.onnx").is_file():
        return str(p / "edge.onnx"), f"split bundle {p.name}: gating the device part edge.onnx"
    raise InputError(f"bundle {p} has neither model.onnx nor edge.onnx")


def bundle_target(spec: str | Path) -> str | None:
    """The target profile a bundle was planned for (manifest ``profiles`` entry with role "target"), or None.

    Read leniently from manifest.json (any error -> None): the gate only needs the name, and a manifest
    problem is ``edgeplan bundle verify``'s to report, not the gate's.
    """
    import json

    p = Path(spec)
    if not p.is_dir():
        return None
    try:
        doc = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
        return next((str(x["name"]) for x in doc.get("profiles", []) if x.get("role") == "target"), None)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def onnx_size_bytes(path: str | Path) -> tuple[int, list[str]]:
    """Bytes on disk of an ONNX file plus the external-data files it references (and their names)."""
    import onnx

    p = Path(path)
    total = p.stat().st_size
    extra: list[str] = []
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the loaders, size is still the file
        return total, extra
    seen: set[str] = set()
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in seen:
                seen.add(loc)
                f = p.parent / loc
                if f.is_file():
                    total += f.stat().st_size
                    extra.append(loc)
    return total, extra


def _needs_target(b: GateBudgets) -> list[str]:
    return [k for k in ("max_latency_ms", "max_energy_mj", "max_peak_memory_mb") if getattr(b, k) is not None]


def run_gate(
    model_spec: str | Path,
    budgets: GateBudgets,
    *,
    trust_model: bool = False,
    weights: str | Path | None = None,
    input_shape: str | None = None,
    threads: int | None = None,
    repeats: int = 50,
    warmup: int = 5,
    max_blocks: int = 24,
    regression_time_budget_s: float = 90.0,
    config_path: str | Path | None = None,
    progress: Progress | None = None,
) -> GateReport:
    """Check ``model_spec`` (a model file, a ``pkg.module:function`` spec or a bundle folder) against ``budgets``.

    Raises ConfigError (bad/missing budgets), DataError (an accuracy budget without usable labelled data),
    InputError/ModelLoadError (model), ProfileError (unknown target). Failed budgets are *not* raised:
    they are in the returned report (``report.passed``), which the caller renders before exiting 1.
    """
    from edgeplan.planner.onnx_intake import onnx_for_model

    say = progress or (lambda _msg: None)
    b = budgets
    spec, note = resolve_model_path(model_spec)
    warnings: list[str] = [note] if note else []
    if not b.target and bundle_target(model_spec):
        b = b.model_copy(update={"target": bundle_target(model_spec)})
        warnings.append(f"target {b.target} taken from the bundle's manifest")
    if not b.has_budget():
        raise ConfigError("no budgets to check: give at least one of --max-latency-ms, --max-energy-mj, "
                          "--max-size-mb, --max-peak-memory-mb, --min-accuracy, --max-regression "
                          "(or a [tool.edgeplan.gate] table in pyproject.toml)")
    if b.min_accuracy is not None and not b.data:
        raise DataError("min_accuracy needs labelled data: pass --data FILE.npz (inputs + labels) or set "
                        "data = \"...\" in the gate config")
    if b.max_regression_pct is not None and not b.baseline:
        raise ConfigError("max_regression_pct needs a baseline model: pass --baseline OTHER_MODEL")
    if b.baseline and b.max_regression_pct is None:
        raise ConfigError("--baseline given without a regression budget: add --max-regression 5% (for example)")
    if _needs_target(b) and not b.target:
        raise ConfigError(f"{', '.join(_needs_target(b))} needs a target: --target pi4 (a hardware profile, "
                          "predicted) or --target host (measured on this machine)")

    # ---- profile (before any heavy work, so that a typo fails fast)
    profile = None
    measure_here = b.measure
    if b.target:
        from edgeplan.hardware_profiles import load_profile
        from edgeplan.hardware_profiles.errors import ProfileError

        if b.target == "host":
            measure_here = True
            try:
                profile = load_profile("host")
            except ProfileError:
                profile = None
        else:
            profile = load_profile(b.target)
            if profile.kind == "host":
                measure_here = True
    if b.max_energy_mj is not None and profile is None:
        raise ConfigError("max_energy_mj needs a --target profile with a power figure (pi4, jetson-nano, ...); "
                          "the host has no power model here")

    say(f"loading {spec}")
    mo = onnx_for_model(spec, trust_model=trust_model, weights=weights, input_shape=input_shape)
    onnx_path = Path(mo.onnx_path)
    info: dict[str, Any] = {"format": mo.loaded.format, "sha256": mo.loaded.sha256,
                            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype}
                                       for i in mo.loaded.inputs]}
    if mo.export is not None:
        info["export"] = mo.export.describe()
        if not mo.export.matched:
            warnings.append(f"the ONNX export does not match torch: {mo.export.describe()}")
    checks: list[Check] = []

    # ---- predicted (target profile)
    if profile is not None and (b.max_latency_ms or b.max_energy_mj or b.max_peak_memory_mb):
        from edgeplan.planner.cost import predict
        from edgeplan.planner.graph import analyse

        say(f"predicting on {profile.name}")
        pred = predict(analyse(onnx_path), profile, batch=1)
        band = pred.error_band_pct
        how = f"cost model (planner.cost) with profile {profile.name}, batch 1, +-{band:g}% error band"
        info["profile"] = {"name": profile.name, "kind": profile.kind, "error_band_pct": band,
                           "provenance": pred.provenance}
        warnings.extend(pred.warnings)
        if b.max_latency_ms is not None:
            checks.append(upper_check("latency.predicted", f"latency ({profile.name}, predicted)", pred.latency_ms,
                                      b.max_latency_ms, "ms", source="predicted", method=how, band_pct=band))
        if b.max_energy_mj is not None:
            checks.append(upper_check("energy.predicted", f"energy/inference ({profile.name}, predicted)",
                                      pred.energy_mj, b.max_energy_mj, "mJ", source="predicted",
                                      method=f"active power {profile.active_power_w:g} W x predicted latency; {how}",
                                      band_pct=band))
        if b.max_peak_memory_mb is not None:
            checks.append(upper_check("peak_memory.predicted", f"peak memory ({profile.name}, predicted)",
                                      pred.peak_memory_bytes / MB, b.max_peak_memory_mb, "MB", source="predicted",
                                      method=f"weights + peak live activations over the execution order; {how}",
                                      band_pct=band,
                                      note="a lower bound: runtime arena and workspace are not counted"))

    # ---- measured here
    if measure_here and (b.max_latency_ms or b.max_peak_memory_mb):
        from edgeplan.planner.measure import measure_onnx

        say("measuring on this machine")
        m = measure_onnx(onnx_path, threads=threads, repeats=repeats, warmup=warmup)
        where = f"this machine ({m.runtime.get('cpu', 'cpu')}, {m.runtime.get('threads')} threads)"
        if b.max_latency_ms is not None:
            checks.append(upper_check("latency.measured", "latency p50 (this machine, measured)", m.latency_p50_ms,
                                      b.max_latency_ms, "ms", source="measured",
                                      method=f"{m.runtime['method']}; {where}; p90 {m.latency_p90_ms:.3f} ms"))
        if b.max_peak_memory_mb is not None:
            checks.append(upper_check("peak_memory.measured", "peak memory (this machine, measured)",
                                      m.peak_memory_bytes / MB, b.max_peak_memory_mb, "MB", source="measured",
                                      method=f"peak RSS increase while creating and running the ORT session; {where}",
                                      note="includes ONNX Runtime's own allocations (about 14 MB for a 4 KB model "
                                           "on the development machine), so small budgets need headroom"))

    # ---- size on disk
    if b.max_size_mb is not None:
        size, extra = onnx_size_bytes(onnx_path)
        what = onnx_path.name + (f" + external data {', '.join(extra)}" if extra else "")
        exported = " (exported from the input model)" if mo.export is not None else ""
        checks.append(upper_check("size", "model size on disk", size / MB, b.max_size_mb, "MB", source="measured",
                                  method=f"file size of {what}{exported}, MB = 10^6 bytes"))

    # ---- accuracy
    if b.min_accuracy is not None:
        from edgeplan.compressor.data import load_data
        from edgeplan.compressor.evaluate import evaluate_onnx

        say(f"evaluating on {b.data}")
        ds = load_data(b.data)  # type: ignore[arg-type]
        if ds.labels is None:
            raise DataError(f"{b.data}: no labels (expected an array named labels or y): accuracy cannot be measured")
        ev = evaluate_onnx(onnx_path, ds, threads=threads)
        if ev.accuracy is None:
            raise DataError(f"{b.data}: the model's output is not a class-score matrix (N x C): top-1 accuracy does "
                            "not apply to this model")
        n = ev.n_samples
        half = 1.96 * float(np.sqrt(max(ev.accuracy * (1 - ev.accuracy), 1e-12) / n))
        checks.append(lower_check("accuracy", "top-1 accuracy (measured)", ev.accuracy, b.min_accuracy, "",
                                  source="measured",
                                  method=f"ONNX Runtime on {n} labelled samples from {ev.data_source}; "
                                         f"binomial 95% interval +-{100 * half:.1f} points",
                                  interval=(max(0.0, ev.accuracy - half), min(1.0, ev.accuracy + half))))

    # ---- baseline regression
    if b.max_regression_pct is not None and b.baseline:
        bspec, bnote = resolve_model_path(b.baseline)
        if bnote:
            warnings.append(f"baseline: {bnote}")
        say(f"loading baseline {bspec}")
        # --weights belongs to MODEL (a factory spec); the baseline is a file (ONNX, TorchScript, .pt2, ...)
        bo = onnx_for_model(bspec, trust_model=trust_model, input_shape=input_shape)
        info["baseline"] = {"spec": str(b.baseline), "onnx_path": str(bo.onnx_path), "format": bo.loaded.format,
                            "sha256": bo.loaded.sha256}
        r = measure_regression(onnx_path, bo.onnx_path, b.max_regression_pct, threads=threads, warmup=warmup,
                               max_blocks=max_blocks, time_budget_s=regression_time_budget_s, progress=say)
        checks.append(regression_check(r, b.max_regression_pct, b.baseline))
        if b.target and b.target != "host":
            warnings.append(f"the regression is measured on this machine, not on {b.target}: a ratio that "
                            "transfers between CPUs of the same kind, not a latency of the target")

    for c in checks:
        if c.status in ("uncertain", "inconclusive"):
            verdict = "fails (--strict)" if b.strict else "passes with a warning (use --strict to fail it)"
            warnings.append(f"{c.title}: {c.status}, {verdict}: {c.note}")
    return GateReport(model=str(model_spec), onnx_path=str(onnx_path), target=b.target, checks=tuple(checks),
                      strict=b.strict, config=str(config_path) if config_path else None, model_info=info,
                      warnings=tuple(warnings))
