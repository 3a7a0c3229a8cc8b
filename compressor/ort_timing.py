"""ONNX Runtime timing shared by every layer: sessions with pinned threads, side-by-side runs.

Latency on this kind of machine varies by 20-30 % between runs (shared/TOOLCHAIN.md), so models
are compared only *side by side*: ``time_side_by_side`` creates one session per model in the same
process and interleaves their runs (A B C A B C ...), so that drift (frequency, other load) hits
every model alike. Never compare against a stored number.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class TimingResult:
    path: Path
    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 99))

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.samples_ms))

    @property
    def iqr_ms(self) -> float:
        q1, q3 = np.percentile(self.samples_ms, [25, 75])
        return float(q3 - q1)


def default_threads() -> int:
    """Intra-op threads used when none are given: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_session(path: str | Path | bytes, threads: int | None = None, *, optimize: bool = True,
                 spinning: bool = True):
    """The one way edgeplan opens an ORT CPU session: pinned intra-op threads (default: every usable
    core), sequential execution, ORT's warnings silenced. ``path`` may be serialized model bytes.
    ``optimize=False`` keeps the graph as written (to read intermediate tensors); ``spinning=False``
    stops idle worker threads from spinning (the split runtime's setting on shared machines)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def random_feeds(session, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every session input (symbolic dims -> ``batch`` for dim 0, else 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else 1) for i, d in enumerate(inp.shape)]
        if batch and shape:
            shape[0] = batch
        t = inp.type  # e.g. "tensor(float)"
        if "int64" in t:
            feeds[inp.name] = rng.integers(0, 100, size=shape).astype(np.int64)
        elif "int32" in t:
            feeds[inp.name] = rng.integers(0, 100, size=shape).astype(np.int32)
        elif "float16" in t:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float16)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def time_side_by_side(
    paths: Sequence[str | Path],
    feeds: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]] | None = None,
    *,
    repeats: int = 30,
    warmup: int = 3,
    threads: int | None = None,
    batch: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[TimingResult]:
    """Median-ready latency samples (ms) for several ONNX models, runs interleaved in one process.

    ``feeds`` is one dict for all models, one per model, or None for random inputs at ``batch``.
    """
    sessions = [make_session(p, threads) for p in paths]
    if feeds is None:
        per_model = [random_feeds(s, batch) for s in sessions]
    elif isinstance(feeds, dict):
        per_model = [feeds] * len(sessions)
    else:
        per_model = list(feeds)
    per_model = [{i.name: f[i.name] for i in s.get_inputs()} for s, f in zip(sessions, per_model)]
    for _ in range(warmup):
        for s, f in zip(sessions, per_model):
            s.run(None, f)
    samples: list[list[float]] = [[] for _ in sessions]
    for r in range(repeats):
        for k, (s, f) in enumerate(zip(sessions, per_model)):
            t0 = time.perf_counter()
            s.run(None, f)
            samples[k].append((time.perf_counter() - t0) * 1e3)
        if progress:
            progress(r + 1, repeats)
    return [TimingResult(Path(p), tuple(x)) for p, x in zip(paths, samples)]
