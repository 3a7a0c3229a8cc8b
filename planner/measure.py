"""Real measurement on this machine: ONNX Runtime on the CPU, or torch on a CUDA GPU.

How latency is measured: one ORT session (CPU provider, pinned intra-op threads, sequential
execution, all graph optimisations), ``warmup`` untimed runs, then ``repeats`` timed runs with
``time.perf_counter``; we report the median (p50), p90 and p99 of those samples.

How peak memory is measured: the process's resident set size (psutil) is sampled every millisecond
by a background thread while the session is created and run; ``peak_memory_bytes`` is the peak minus
the RSS just before the session was created (weights + ORT arena + activations as the OS sees them).

On a CUDA GPU (``measure_torch_cuda``): torch eager (or a captured CUDA graph), CUDA events around
each run after warm-up, same statistics; memory is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeplan.compressor.ort_timing import default_threads, make_session, random_feeds
from edgeplan.hardware_profiles.errors import MeasurementError


@dataclass(frozen=True)
class Measurement:
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    samples: int
    peak_memory_bytes: int
    batch: int
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput_per_s(self) -> float:
        return 1000.0 * self.batch / self.latency_p50_ms if self.latency_p50_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": {"p50": self.latency_p50_ms, "p90": self.latency_p90_ms, "p99": self.latency_p99_ms,
                           "mean": self.latency_mean_ms},
            "samples": self.samples,
            "batch": self.batch,
            "throughput_per_s": self.throughput_per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "runtime": self.runtime,
            "method": self.runtime.get("method", ""),
        }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


class _PeakRss:
    """Samples the process RSS every ``interval_s`` in a background thread."""

    def __init__(self, interval_s: float = 0.001) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> "_PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _stats(samples: list[float]) -> tuple[float, float, float, float]:
    a = np.asarray(samples)
    return (float(np.median(a)), float(np.percentile(a, 90)), float(np.percentile(a, 99)), float(a.mean()))


def measure_onnx(
    path: str | Path,
    *,
    threads: int | None = None,
    batch: int = 1,
    repeats: int = 50,
    warmup: int = 5,
    feeds: dict[str, np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Measurement:
    """Measure an ONNX model with ONNX Runtime on this machine (see the module docstring)."""
    import onnxruntime as ort

    if repeats < 1 or warmup < 0 or batch < 1:
        raise MeasurementError("repeats and batch must be >= 1 and warmup >= 0")
    threads = threads or default_threads()
    try:
        with _PeakRss() as mem:
            sess = make_session(path, threads)
            feeds = feeds or random_feeds(sess, batch)
            for _ in range(warmup):
                sess.run(None, feeds)
            samples = []
            for i in range(repeats):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                samples.append((time.perf_counter() - t0) * 1e3)
                if progress:
                    progress(i + 1, repeats)
    except Exception as e:  # noqa: BLE001 - ORT raises its own types (Fail, InvalidArgument, ...)
        raise MeasurementError(f"ONNX Runtime could not run {Path(path).name}: {str(e).splitlines()[0][:200]}") from None
    p50, p90, p99, mean = _stats(samples)
    runtime = {
        "name": "onnxruntime",
        "version": ort.__version__,
        "provider": "CPUExecutionProvider",
        "threads": threads,
        "cpu": cpu_model(),
        "governor": cpu_governor(),
        "device": "cpu",
        "method": f"measured: ORT on this machine, {warmup} warm-up + {repeats} timed runs, perf_counter; "
                  "peak memory = peak RSS increase sampled every 1 ms",
    }
    return Measurement(p50, p90, p99, mean, repeats, max(0, mem.peak - mem.baseline), batch, runtime)


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def measure_torch_cuda(
    module: Any,
    example_inputs: tuple,
    *,
    repeats: int = 100,
    warmup: int = 10,
    cuda_graphs: bool = False,
    dtype: str = "fp32",
) -> Measurement:
    """Measure a torch module on the CUDA GPU with CUDA events (optionally replaying a CUDA graph).

    Batch-1 inference on a big GPU is dominated by kernel-launch overhead in eager mode; CUDA graphs
    remove most of it (shared/TOOLCHAIN.md). ``dtype`` "fp16"/"bf16" casts the model and inputs.
    """
    import torch

    if not torch.cuda.is_available():
        raise MeasurementError("--device cuda: no CUDA GPU is visible to torch on this machine")
    dev = torch.device("cuda")
    cast = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    model = module.to(dev).eval()
    if cast is not torch.float32:
        model = model.to(cast)
    xs = tuple(x.to(dev).to(cast) if x.is_floating_point() else x.to(dev) for x in example_inputs)
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for _ in range(warmup):
            model(*xs)
        torch.cuda.synchronize()
        run: Callable[[], Any] = lambda: model(*xs)  # noqa: E731
        if cuda_graphs:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    model(*xs)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(*xs)
            run = graph.replay
        samples = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
    p50, p90, p99, mean = _stats(samples)
    runtime = {
        "name": "torch",
        "version": torch.__version__,
        "provider": "cuda" + (" + CUDA graphs" if cuda_graphs else " eager"),
        "device": torch.cuda.get_device_name(0),
        "dtype": dtype,
        "cpu": cpu_model(),
        "method": f"measured: torch on CUDA, {warmup} warm-up + {repeats} timed runs, CUDA events",
    }
    batch = int(xs[0].shape[0]) if xs and xs[0].dim() else 1
    return Measurement(p50, p90, p99, mean, repeats, int(torch.cuda.max_memory_allocated()), batch, runtime)


def measure_model(
    spec: str | Path,
    *,
    device: str = "cpu",
    threads: int | None = None,
    batch: int = 1,
    repeats: int = 50,
    warmup: int = 5,
    cuda_graphs: bool = False,
    dtype: str = "fp32",
    trust_model: bool = False,
    weights: str | Path | None = None,
    input_shape: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Measurement, dict[str, Any]]:
    """Measure any model spec. Returns the measurement and facts about the model (format, export check).

    ``device="cpu"``: the model is turned into ONNX (exported and checked when needed) and measured with
    ONNX Runtime. ``device="cuda"``: an eager/TorchScript module is measured with torch on the GPU (an
    ONNX model is converted to a module first).
    """
    from edgeplan.planner.onnx_intake import onnx_for_model

    if device not in ("cpu", "cuda"):
        from edgeplan.hardware_profiles.errors import InputError

        raise InputError(f"unknown --device {device!r}: choose cpu or cuda")
    if device == "cuda":
        from edgeplan.compressor.intake import load_model

        if not cuda_available():
            raise MeasurementError("--device cuda: no CUDA GPU is visible to torch on this machine")
        loaded = load_model(spec, trust_model=trust_model, weights=weights, input_shape=input_shape)
        module = loaded.module
        if module is None:
            from edgeplan.compressor.onnx_to_torch import onnx_to_module

            module = onnx_to_module(loaded.onnx_path)
        m = measure_torch_cuda(module, loaded.example_inputs(batch=batch), repeats=repeats, warmup=warmup,
                               cuda_graphs=cuda_graphs, dtype=dtype)
        return m, {"format": loaded.format, "sha256": loaded.sha256, "export": None}
    mo = onnx_for_model(spec, trust_model=trust_model, weights=weights, input_shape=input_shape)
    m = measure_onnx(mo.onnx_path, threads=threads, batch=batch, repeats=repeats, warmup=warmup, progress=progress)
    export = None
    if mo.export is not None:
        export = {"exporter": mo.export.exporter, "max_abs_diff": mo.export.max_abs_diff,
                  "matched": mo.export.matched, "message": mo.export.describe()}
    return m, {"format": mo.loaded.format, "sha256": mo.loaded.sha256, "export": export,
               "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in mo.loaded.inputs]}
