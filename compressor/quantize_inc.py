"""Intel Neural Compressor backend (``--backend inc``): PT2E static int8 for models deployed with PyTorch.

Why this path and no other (shared/TOOLCHAIN.md, INC 3.10): INC no longer has an ONNX Runtime backend
(removed in 3.8), and the separate onnx-neural-compressor package pins numpy<2. What works is PT2E:

    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import StaticQuantConfig, prepare, convert
    em = export(model, (x,)); pm = prepare(em, StaticQuantConfig(), example_inputs=(x,))
    for batch in calibration: pm(batch)
    qm = convert(pm)

The converted model is a ``torch.fx.GraphModule`` with quantize/dequantize ops. In eager mode it is
SLOWER than fp32; it is fast only under ``torch.compile`` with ``torch._inductor.config.freezing = True``
(resnet18 3.7-3.9 ms vs 10.6-11 ms compiled fp32, measured). So both sides are measured compiled:
fp32 ``torch.compile`` vs INC int8 ``torch.compile`` (freezing), interleaved in one loop together with
the fp32 and int8 ONNX Runtime sessions, so the two backends are compared in the same run.
Compilation is slow (about 20 s for a tiny CNN with a cold cache on this CPU, 5 s for its fp32 twin);
the inductor cache goes to ``<out_dir>/.inductor_cache`` (TORCHINDUCTOR_CACHE_DIR) unless the caller set
one, so nothing is written to a shared /tmp folder.

What a user deploys: ``quantized_inc.pt2`` (``torch.export.save`` of the converted program):

    import torch, torch._inductor.config as cfg
    cfg.freezing = True
    model = torch.compile(torch.export.load("quantized_inc.pt2").module())
    with torch.no_grad():
        y = model(x)

INC needs the eager ``nn.Module`` (pickle or ``pkg.module:function`` factory): TorchScript, ``.pt2`` and
ONNX models are refused with that explanation (PT2E re-traces Python code; a TorchScript or ONNX graph
has none to trace). Use the ONNX Runtime backend for those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeplan.hardware_profiles.errors import CompressionError, InputError

__all__ = ["INC_NAME", "inc_quantize_module", "quantize_inc", "time_callables"]

INC_NAME = "quantized_inc.pt2"


@contextlib.contextmanager
def _quiet_inc():
    """INC logs every step at INFO on stderr; keep WARNING and above while we run, then restore."""
    try:  # INC configures its logger (level INFO) lazily on first use: make that happen before we lower it
        from neural_compressor.common.utils.logger import Logger

        Logger()
    except Exception:  # noqa: BLE001 - INC missing: the caller reports it
        pass
    lg = logging.getLogger("neural_compressor")
    old = lg.level
    lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lg.setLevel(old)


def inc_quantize_module(module: Any, example_inputs: tuple, calibration: Sequence[tuple]) -> Any:
    """PT2E static int8 of an eager module with INC; returns the converted GraphModule (eval, eager)."""
    import torch

    with _quiet_inc():
        try:
            from neural_compressor.torch.export import export
            from neural_compressor.torch.quantization import StaticQuantConfig, convert, prepare
        except Exception as e:  # noqa: BLE001 - import problems of an optional backend
            raise CompressionError(f"Intel Neural Compressor (PyTorch) is not usable here: {str(e).splitlines()[0]}") from None
        try:
            with torch.no_grad():
                em = export(module.eval(), example_inputs)
                if em is None:
                    raise CompressionError("INC could not export the model with torch.export (PT2E needs an exportable forward)")
                pm = prepare(em, StaticQuantConfig(), example_inputs=example_inputs)
                for batch in calibration:
                    pm(*batch)
                return convert(pm)
        except CompressionError:
            raise
        except Exception as e:  # noqa: BLE001 - torch.export / INC raise many types
            raise CompressionError(f"INC PT2E quantization failed: {str(e).splitlines()[0][:200]}") from None


def time_callables(fns: Sequence[Callable[[], Any]], *, repeats: int = 30, warmup: int = 3) -> list[list[float]]:
    """Latency samples (ms) of several zero-argument callables, run interleaved (A B C A B C ...)."""
    for _ in range(warmup):
        for f in fns:
            f()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            samples[k].append((time.perf_counter() - t0) * 1e3)
    return samples


def quantize_inc(loaded: Any, out_dir: str | Path, config: Any, *, data: Any = None, progress: Callable[[str], None] | None = None):
    """INC PT2E int8 of ``loaded.module``, measured against fp32 torch.compile and ONNX Runtime int8.

    Writes ``out_dir/quantized_inc.pt2`` (what to deploy), ``out_dir/quantized.onnx`` (the ORT int8 model
    it is compared with) and returns a ``QuantizeResult`` with ``backend="inc"``; its ``variants`` list
    the four models timed in one interleaved loop.
    """
    import torch

    from edgeplan.compressor import quantize as qz
    from edgeplan.compressor import quantize_ort as qo
    from edgeplan.compressor.export import to_onnx
    from edgeplan.compressor.data import synthetic_data
    from edgeplan.compressor.ort_timing import default_threads

    if config.mode != "int8":
        raise InputError(f"--backend inc supports --mode int8 only (got {config.mode}); use --backend ort for {config.mode}")
    if not getattr(loaded, "is_eager", False) or loaded.module is None:
        raise InputError(
            f"--backend inc needs an eager PyTorch nn.Module (a pickled model with --trust-model, or a "
            f"pkg.module:function factory); this model is {loaded.format}, which PT2E cannot re-trace. "
            f"Use --backend ort"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = config.threads or default_threads()
    specs = [qo.OrtInput(s.name, tuple(s.shape), s.dtype) for s in loaded.inputs]

    def emit(text: str) -> None:
        if progress is not None:
            progress(text)

    # 1. The ONNX Runtime int8 model of the same network, for the side-by-side comparison.
    emit("exporting to ONNX and quantizing with ONNX Runtime for comparison")
    onnx_fp32 = out_dir / "model_fp32.onnx"
    to_onnx(loaded, onnx_fp32)
    ort_cfg = config.model_copy(update={"backend": "ort", "timing_repeats": 3, "timing_warmup": 1})
    ort_res = qz.quantize_onnx(onnx_fp32, out_dir / qz.QUANTIZED_NAME, ort_cfg, data=data,
                               input_shape=[s.shape for s in specs], progress=progress)

    # 2. Calibration / evaluation data: the same feeds quantize_onnx used.
    if data is not None:
        n_eval = min(len(data), config.eval_samples)
        eval_feeds = qo.make_feeds(specs, data.inputs, n_eval)
        calib = eval_feeds[: config.calibration_samples]
        labels = None if data.labels is None else data.labels[:n_eval]
        source, synthetic = data.source, data.synthetic
    else:
        calib = qo.make_feeds(specs, None, config.calibration_samples, seed=config.seed)
        eval_feeds = qo.make_feeds(specs, None, min(config.eval_samples, qz.SYNTHETIC_EVAL_SAMPLES), seed=config.seed + 10_000)
        labels = None
        source, synthetic = synthetic_data((1,), 1, seed=config.seed).source, True

    def as_torch(feed: dict) -> tuple:
        return tuple(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in specs)

    module = loaded.module.eval()
    # Our cache dir is set for this call only (inductor reads the variable on every use) and the
    # caller's value, if any, wins.
    old_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if old_cache is None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(out_dir / ".inductor_cache")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _quantize_measure(module, loaded, out_dir, config, calib, eval_feeds, labels, source, synthetic,
                                 specs, threads, onnx_fp32, ort_res, as_torch, emit)
    finally:
        torch.set_num_threads(old_threads)
        if old_cache is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def _quantize_measure(module, loaded, out_dir, config, calib, eval_feeds, labels, source, synthetic, specs, threads,
                      onnx_fp32, ort_res, as_torch, emit):
    import torch

    from edgeplan.compressor import quantize as qz
    from edgeplan.compressor.ort_timing import make_session
    from edgeplan.hardware_profiles.atomic import atomic_path

    emit(f"INC PT2E: calibrating on {len(calib)} samples ({source}) and converting")
    qm = inc_quantize_module(module, as_torch(calib[0]), [as_torch(f) for f in calib])

    emit("saving the converted program (torch.export.save)")
    inc_path = out_dir / INC_NAME
    try:
        with torch.no_grad():
            ep = torch.export.export(qm, as_torch(calib[0]))
        with atomic_path(inc_path, suffix=".pt2") as tmp:
            torch.export.save(ep, str(tmp))
    except Exception as e:  # noqa: BLE001
        raise CompressionError(f"cannot save the INC model with torch.export.save: {str(e).splitlines()[0][:200]}") from None

    emit("compiling fp32 and int8 with torch.compile (inductor, freezing); this takes a while the first time")
    import torch._inductor.config as inductor_config

    old_freezing = inductor_config.freezing
    inductor_config.freezing = True
    try:
        with torch.no_grad():
            cf = torch.compile(module)
            cq = torch.compile(qm)
            x0 = as_torch(eval_feeds[0])
            cf(*x0)
            cq(*x0)
            emit("evaluating the compiled int8 model")
            ref = np.concatenate([_first(cf(*as_torch(f))) for f in eval_feeds])
            got = np.concatenate([_first(cq(*as_torch(f))) for f in eval_feeds])
            metric, fp32_pct = qz._quality(ref, ref, labels, source)
            _, q_pct = qz._quality(got, ref, labels, source)
            sf, sq = make_session(onnx_fp32, threads), make_session(out_dir / qz.QUANTIZED_NAME, threads)
            feed0 = eval_feeds[0]
            emit(f"timing torch fp32, INC int8, ORT fp32, ORT int8 interleaved ({config.timing_repeats} runs each)")
            samples = time_callables(
                [lambda: cf(*x0), lambda: cq(*x0), lambda: sf.run(None, feed0), lambda: sq.run(None, feed0)],
                repeats=config.timing_repeats,
                warmup=config.timing_warmup,
            )
    except CompressionError:
        raise
    except Exception as e:  # noqa: BLE001 - inductor errors
        raise CompressionError(f"torch.compile of the INC model failed: {str(e).splitlines()[0][:200]}") from None
    finally:
        inductor_config.freezing = old_freezing

    med = [float(np.median(s)) for s in samples]
    p90 = [float(np.percentile(s, 90)) for s in samples]
    drop = fp32_pct - q_pct
    ok = drop <= config.max_accuracy_drop_pts + 1e-9
    ort_q_drop = ort_res.quality_drop_pts
    variants = (
        qz.VariantTiming("fp32 torch.compile", f"torch {torch.__version__}", med[0], p90[0], fp32_pct, 0.0, True),
        qz.VariantTiming("int8 INC PT2E torch.compile", f"torch {torch.__version__}", med[1], p90[1], q_pct, drop, ok, True),
        qz.VariantTiming("fp32 ONNX Runtime", ort_res.runtime_version, med[2], p90[2], ort_res.quality_fp32_pct, 0.0, True),
        qz.VariantTiming("int8 ONNX Runtime QDQ", ort_res.runtime_version, med[3], p90[3], ort_res.quality_quantized_pct,
                         ort_q_drop, ort_res.within_budget),
    )
    speedup, slower, msg = qz.judge_speed(med[0], med[1], what="INC int8")
    vs_ort = med[3] / med[1] if med[1] > 0 else 0.0
    msg += f"; ONNX Runtime int8 {med[3]:.3f} ms ({'INC faster' if vs_ort > 1 else 'ORT faster'}, {max(vs_ort, 1 / vs_ort if vs_ort else 0):.2f}x)"
    msg += f"; {metric} drop {drop:.2f} pts" + ("" if ok else f" (budget {config.max_accuracy_drop_pts} NOT met)")
    notes = list(ort_res.notes)
    notes.append(
        "INC has no accuracy fallback here: every supported op is quantized (the ORT backend keeps sensitive layers in fp32)"
    )
    notes.append(f"deploy {INC_NAME}: torch.export.load(...).module() under torch.compile with torch._inductor.config.freezing = True")
    return qz.QuantizeResult(
        out_path=str(inc_path),
        mode="int8",
        backend="inc",
        calibration_source=source,
        calibration_samples=len(calib),
        synthetic_data=synthetic,
        eval_source=source,
        eval_samples=len(eval_feeds),
        metric=metric,
        quality_fp32_pct=fp32_pct,
        quality_quantized_pct=q_pct,
        quality_drop_pts=drop,
        max_accuracy_drop_pts=config.max_accuracy_drop_pts,
        within_budget=ok,
        excluded_nodes=(),
        variants=variants,
        latency_fp32_ms=med[0],
        latency_fp32_p90_ms=p90[0],
        latency_quantized_ms=med[1],
        latency_quantized_p90_ms=p90[1],
        speedup=speedup,
        slower_than_fp32=slower,
        timing_method=(
            f"measured here: torch {torch.__version__} torch.compile (inductor, freezing) and ONNX Runtime, "
            f"{threads} thread(s), batch 1, median of {config.timing_repeats} runs, all four models interleaved in one loop"
        ),
        runtime_version=f"torch {torch.__version__}",
        threads=threads,
        size_fp32_bytes=onnx_fp32.stat().st_size,
        size_quantized_bytes=inc_path.stat().st_size,
        message=msg,
        notes=tuple(notes),
        extra_files=(str(out_dir / qz.QUANTIZED_NAME), str(onnx_fp32)),
    )


def _first(y: Any) -> np.ndarray:
    if isinstance(y, (tuple, list)):
        y = y[0]
    return y.detach().float().cpu().numpy()
