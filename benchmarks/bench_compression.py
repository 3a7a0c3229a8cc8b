"""Compression benchmark on trained digits models: fp32, pruned, pruned+KD, int8, pruned+KD+int8 (+ INC).

For each model (``edgeplan.compressor.examples.make_example``: ``digits-cnn`` at 8x8 and the larger
``digits-resnet`` at 32x32, both trained here on sklearn's digits; model.onnx, model.pt, train.npz,
eval.npz) the variants are built with the library's own passes:

- ``fp32``: the example's ``model.onnx``.
- ``pruned``: ``compressor.prune.prune_model(model.pt, ratio, round_to)`` (torch-pruning; TorchScript
  input, so pruned through ONNX -> torch; magnitude importance). No fine-tuning: shows the damage.
- ``pruned+KD``: ``compressor.distill.distill_model(pruned.pt, teacher=model.pt, data=train.npz)``
  (soft targets + labels, early stopping on a split of train.npz; eval.npz never seen).
- ``int8``: ``compressor.quantize.quantize_onnx(model.onnx, int8, data=train.npz)`` (ORT static QDQ,
  U8 activations / S8 per-channel weights, calibrated on train.npz, accuracy fallback and speed
  variants judged on train.npz).
- ``pruned+KD+int8``: the same quantization applied to the distilled student.
- ``INC`` (only when ``compressor.quantize`` offers ``backend="inc"``): Intel Neural Compressor PT2E
  static int8, deployed with torch.compile. It runs in PyTorch, not ONNX Runtime, so it cannot join
  the ORT side-by-side run; its row carries the latency ratio that ``quantize_model`` measured
  against compiled fp32 torch in its own side-by-side run (said in the row).

Measured, all in one process on this machine:

- latency: ``compressor.ort_timing.time_side_by_side`` over all ONNX variants of one model, runs
  interleaved (fp32, pruned, ..., fp32, pruned, ...), batch 1, median and p90 of ``--repeats`` runs;
  speed-ups are ratios of medians from that same run;
- accuracy: top-1 on eval.npz (the example's held-out split) in ONNX Runtime, plus top-1 agreement with
  fp32 (``compressor.evaluate.evaluate_onnx``);
- size: bytes of the ONNX file on disk.

Usage::

    .venv/bin/python benchmarks/bench_compression.py --out /tmp/section.md
    .venv/bin/python benchmarks/bench_compression.py --models digits-cnn --kd-epochs 2 --repeats 30 --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TARGET_SPEEDUP = 4.0
TARGET_MAX_DROP_PTS = 1.0


@dataclass
class Variant:
    name: str
    onnx: Path | None
    how: str
    median_ms: float | None = None
    p90_ms: float | None = None
    accuracy: float | None = None
    agreement: float | None = None
    size_bytes: int | None = None
    note: str = ""
    speedup_override: float | None = None  # INC: ratio from its own side-by-side run (not ORT)
    extra: dict = field(default_factory=dict)


def _say(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    from edgeplan.compressor.ort_timing import default_threads
    from edgeplan.planner.measure import cpu_model

    cpu = cpu_model()
    cores = default_threads()
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = (float("nan"),) * 3
    import onnxruntime
    import torch

    return {"cpu": cpu, "cores": cores, "load": load, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def _inc_available() -> bool:
    if importlib.util.find_spec("edgeplan.compressor.quantize_inc") is None:
        return False
    from edgeplan.compressor.quantize import QuantizeConfig

    try:
        QuantizeConfig(backend="inc")
    except Exception:  # noqa: BLE001 - backend not offered
        return False
    return True


def _inc_variants(manifest: dict, ex_dir: Path, out: Path, train: Path, ev, args: argparse.Namespace) -> list[Variant]:
    import importlib

    import torch

    from edgeplan.compressor.data import load_data
    from edgeplan.compressor.evaluate import evaluate_outputs, run_module
    from edgeplan.compressor.intake import InputSpec, LoadedModel
    from edgeplan.compressor.quantize import QuantizeConfig
    from edgeplan.compressor.quantize_inc import quantize_inc

    mod, fn = manifest["factory"].split(":")
    module = getattr(importlib.import_module(mod), fn)(**manifest.get("factory_kwargs", {}))
    module.load_state_dict(torch.jit.load(str(ex_dir / "model.pt"), map_location="cpu").state_dict())
    module.eval()
    loaded = LoadedModel(manifest["factory"], "factory", module, None,
                         (InputSpec("input", tuple(manifest["input_shape"]), manifest["input_dtype"]),), "")
    cfg = QuantizeConfig(backend="inc", timing_repeats=args.repeats, seed=args.seed, threads=args.threads)
    qi = quantize_inc(loaded, out, cfg, data=load_data(train))
    by = {v.name: v for v in qi.variants}
    torch_fp32 = by.get("fp32 torch.compile")
    ort_fp32 = by.get("fp32 ONNX Runtime")
    # accuracy on eval.npz: the saved INC program run eagerly (same int8 arithmetic, not compiled)
    prog = torch.export.load(str(qi.out_path)).module()
    out_eval = run_module(prog, ev.inputs, batch_size=1)  # the exported program is specialised to batch 1
    acc = evaluate_outputs(out_eval, labels=ev.labels, data_source=ev.source).accuracy
    rows = []
    if torch_fp32 is not None:
        rows.append(Variant("fp32 torch.compile (INC's baseline)", None, "PyTorch inductor, freezing",
                            median_ms=torch_fp32.median_ms, p90_ms=torch_fp32.p90_ms,
                            speedup_override=(ort_fp32.median_ms / torch_fp32.median_ms) if ort_fp32 else None,
                            note="timed in quantize_inc's own interleaved loop; speed-up is vs ORT fp32 in that loop"))
    rows.append(Variant("INC int8 (torch.compile)", None, "Intel Neural Compressor PT2E static int8, calibrated on train.npz",
                        median_ms=qi.latency_quantized_ms, p90_ms=qi.latency_quantized_p90_ms,
                        size_bytes=qi.size_quantized_bytes, accuracy=acc,
                        speedup_override=(ort_fp32.median_ms / qi.latency_quantized_ms) if ort_fp32 else None,
                        note=f"timed in quantize_inc's own interleaved loop (torch fp32 compiled, INC, ORT fp32, ORT int8); "
                             f"speed-up is vs ORT fp32 in that loop; {qi.message}; size = .pt2"))
    return rows


def run_model(name: str, work: Path, args: argparse.Namespace) -> tuple[list[Variant], dict]:
    from edgeplan.compressor.data import load_data
    from edgeplan.compressor.distill import DistillConfig, distill_model
    from edgeplan.compressor.evaluate import evaluate_onnx, run_onnx
    from edgeplan.compressor.examples import make_example
    from edgeplan.compressor.ort_timing import default_threads, time_side_by_side
    from edgeplan.compressor.prune import PruneConfig, prune_model
    from edgeplan.compressor.quantize import QuantizeConfig, quantize_onnx

    info: dict = {}
    ex_dir = work / name / "example"
    if not (ex_dir / "model.onnx").exists() or not (ex_dir / "eval.npz").exists() or args.retrain:
        _say(f"{name}: training the example (make_example)")
        t0 = time.perf_counter()
        res = make_example(name, ex_dir, seed=args.seed)
        info["example"] = f"trained here: {res.epochs} epochs, {res.train_seconds:.0f} s, eval accuracy {res.eval_accuracy:.4f}"
        _say(f"{name}: trained in {time.perf_counter() - t0:.0f} s")
    else:
        info["example"] = f"reused {ex_dir} (trained earlier by make_example with seed {args.seed})"
    manifest = json.loads((ex_dir / "example.json").read_text())
    # Passed explicitly in case the example's model.pt does not carry edgeplan's input metadata.
    shape = "x".join(str(d) for d in manifest["input_shape"])
    fp32 = ex_dir / "model.onnx"
    train = ex_dir / "train.npz"
    ev = load_data(ex_dir / "eval.npz")
    variants = [Variant("fp32", fp32, "example model.onnx")]

    qcfg = QuantizeConfig(mode="int8", timing_repeats=max(10, args.repeats // 3), seed=args.seed, threads=args.threads)

    def quantize(label: str, src: Path, what: str) -> None:
        _say(f"{name}: quantizing {label}")
        out = work / name / label.replace("+", "_").replace("@", "_") / "quantized.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        q = quantize_onnx(src, out, qcfg, data=train)
        excl = f"; {len(q.excluded_nodes)} node(s) kept in fp32" if q.excluded_nodes else ""
        variants.append(Variant(label, out, f"ORT static QDQ U8/S8 per-channel, calibrated on train.npz{excl}",
                                note=f"quantize's own check against {what}: {q.message}"))

    quantize("int8", fp32, "fp32")
    for ratio in args.ratios:
        tag = f"@{ratio:g}" if len(args.ratios) > 1 else ""
        # pruned
        _say(f"{name}: pruning (ratio {ratio}, round_to {args.round_to})")
        pcfg = PruneConfig.build(ratio=ratio, round_to=args.round_to)
        pr = prune_model(ex_dir / "model.pt", work / name / f"pruned{tag}", pcfg, input_shape=shape)
        macs = (f"MACs {pr.report.macs_before:,} -> {pr.report.macs_after:,}, "
                f"params {pr.report.params_before:,} -> {pr.report.params_after:,}")
        variants.append(Variant(f"pruned{tag}", pr.onnx_path,
                                f"prune ratio {ratio}, round_to {args.round_to}, magnitude; no fine-tune", note=macs))
        if pr.report.skipped:
            info[f"pruning_skipped{tag}"] = [f"{','.join(s.layers)}: {s.kind}" for s in pr.report.skipped]

        # pruned + KD
        _say(f"{name}: distilling the pruned{tag} model ({args.kd_epochs} epochs max)")
        dcfg = DistillConfig(epochs=args.kd_epochs, temperature=args.temperature, patience=args.patience,
                             seed=args.seed, lr=args.kd_lr)
        kd = distill_model(pr.torchscript_path, ex_dir / "model.pt", train, work / name / f"kd{tag}", dcfg,
                           input_shape=shape)
        kd_onnx = Path(kd.student_onnx)
        stop = ", stopped early" if kd.stopped_early else ""
        variants.append(Variant(f"pruned{tag}+KD", kd_onnx,
                                f"distill {kd.epochs_run} epochs{stop} (best {kd.best_epoch}), T={args.temperature:g}, "
                                f"{kd.data_mode} on train.npz, {kd.seconds:.0f} s"))
        quantize(f"pruned{tag}+KD+int8", kd_onnx, f"pruned{tag}+KD fp32")

    # INC (PyTorch backend) -- not ORT; it needs the eager module, rebuilt from the example's factory
    # with the trained weights of model.pt (the TorchScript state_dict has the eager module's keys).
    if args.inc and _inc_available():
        _say(f"{name}: INC backend (PT2E int8, torch.compile; slow to compile)")
        try:
            variants.extend(_inc_variants(manifest, ex_dir, work / name / "inc", train, ev, args))
        except Exception as e:  # noqa: BLE001 - report, do not lose the ORT results
            traceback.print_exc()
            variants.append(Variant("INC int8 (torch.compile)", None, "Intel Neural Compressor PT2E",
                                    note=f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))
    elif args.inc:
        variants.append(Variant("INC int8", None, "Intel Neural Compressor", note="not run: compressor.quantize offers no backend inc"))

    # accuracy on eval.npz, in ORT
    _say(f"{name}: evaluating on eval.npz ({len(ev)} samples)")
    ref = run_onnx(fp32, ev.inputs, batch_size=256)
    for v in variants:
        if v.onnx is None:
            continue
        r = evaluate_onnx(v.onnx, ev, reference_outputs=ref, batch_size=256)
        v.accuracy, v.agreement = r.accuracy, r.agreement
        v.size_bytes = v.onnx.stat().st_size

    # latency: all ORT variants side by side in one run
    timed = [v for v in variants if v.onnx is not None]
    threads = args.threads or default_threads()
    _say(f"{name}: timing {len(timed)} variants side by side ({args.repeats} runs each, {threads} threads)")
    import onnxruntime as ort

    x1 = np.ascontiguousarray(ev.inputs[:1].astype(np.float32))  # one real eval image, batch 1
    per_model = [{ort.InferenceSession(str(v.onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name: x1}
                 for v in timed]
    results = time_side_by_side([v.onnx for v in timed], per_model, repeats=args.repeats, warmup=5, threads=threads)
    for v, t in zip(timed, results):
        v.median_ms, v.p90_ms = t.median_ms, t.p90_ms
    info["threads"] = threads
    info["eval"] = f"{len(ev)} held-out images of eval.npz (never used for training, calibration or early stopping)"
    return variants, info


def _fmt(x, spec: str, dash: str = "-") -> str:
    return dash if x is None else format(x, spec)


def render(all_results: dict, args: argparse.Namespace, mach: dict, started: str, seconds: float) -> str:
    lines = ["# Compression benchmark: pruning, distillation, int8 (measured)", ""]
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/bench_compression.py", *sys.argv[1:]])
    lines += [
        f"- Command: `{cmd}`",
        f"- Date: {started} UTC, {seconds / 60:.1f} min in all",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores usable; load average at start "
        f"{mach['load'][0]:.1f} / {mach['load'][1]:.1f} / {mach['load'][2]:.1f} (1/5/15 min). "
        "The machine is SHARED with other jobs while this runs, so absolute latencies are noisy; "
        "only ratios from the same side-by-side run are meaningful.",
        f"- Software: Python {mach['python']}, torch {mach['torch']}, onnxruntime {mach['onnxruntime']}",
        f"- Latency: ONNX Runtime CPU, batch 1, `ort_timing.time_side_by_side` (all variants of one model in one "
        f"process, runs interleaved), {args.repeats} runs each after 5 warm-ups; median and p90. "
        "Speed-up = fp32 median / variant median, same run.",
        "- Threads: with 2 intra-op threads on this shared 2-core machine ORT's spinning thread pool was "
        "preempted by other jobs and long runs stretched far more than short ones (measured side by side at "
        "load ~2-8: digits-resnet fp32 median 20 ms with 2 threads vs 3.5 ms with 1; int8 16.3 ms vs 1.7 ms), "
        "which inflates speed-ups; 1 thread gives stable ratios here, so use `--threads 1` on a busy machine.",
        "- Accuracy: top-1 on the example's eval.npz in ONNX Runtime; agreement = top-1 agreement with fp32.",
        "- Size: the ONNX file on disk.",
        "",
    ]
    verdicts = []
    for name, (variants, info) in all_results.items():
        if isinstance(variants, str):
            lines += [f"## {name}", "", f"FAILED: {variants}", ""]
            continue
        base = next(v for v in variants if v.name == "fp32")
        lines += [f"## {name}", "", f"- Example: {info.get('example')}", f"- Evaluation: {info.get('eval')}",
                  f"- ORT intra-op threads: {info.get('threads')}"]
        for k, v in info.items():
            if k.startswith("pruning_skipped"):
                lines.append(f"- Layers not pruned ({k[len('pruning_skipped'):] or 'prune'}, as reported by prune): {'; '.join(v)}")
        lines += ["", "| variant | latency median ms | p90 ms | speed-up vs fp32 | size KiB | accuracy | Δ acc vs fp32 (pts) | agreement w/ fp32 | how |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        best = None
        for v in variants:
            if v.speedup_override is not None:
                sp = v.speedup_override
            elif v.median_ms and base.median_ms:
                sp = base.median_ms / v.median_ms
            else:
                sp = None
            delta = None if v.accuracy is None or base.accuracy is None else 100 * (v.accuracy - base.accuracy)
            sp_txt = "-" if sp is None else (f"{sp:.2f}x" + (" (SLOWER)" if sp < 1.0 else "") + (" †" if v.speedup_override is not None else ""))
            how = v.how + (f"; {v.note}" if v.note else "")
            lines.append(
                f"| {v.name} | {_fmt(v.median_ms, '.3f')} | {_fmt(v.p90_ms, '.3f')} | {sp_txt} | "
                f"{_fmt(None if v.size_bytes is None else v.size_bytes / 1024, '.1f')} | "
                f"{_fmt(None if v.accuracy is None else 100 * v.accuracy, '.2f')}{'%' if v.accuracy is not None else ''} | "
                f"{_fmt(delta, '+.2f')} | {_fmt(None if v.agreement is None else 100 * v.agreement, '.2f')}{'%' if v.agreement is not None else ''} | {how} |"
            )
            if v.name != "fp32" and sp is not None and delta is not None and -delta <= TARGET_MAX_DROP_PTS:
                if best is None or sp > best[1]:
                    best = (v.name, sp, delta)
        if any(v.speedup_override is not None for v in variants):
            lines.append("")
            lines.append("† not in the ONNX Runtime run above: timed in `quantize_inc`'s own interleaved loop (torch.compile "
                         "fp32, INC int8, ORT fp32, ORT int8); the speed-up is against ORT fp32 *in that loop*. "
                         "INC accuracy: the saved .pt2 run eagerly on eval.npz.")
        lines.append("")
        if best is None:
            verdict = f"{name}: no variant within {TARGET_MAX_DROP_PTS:g} point of fp32 accuracy"
        else:
            met = best[1] >= TARGET_SPEEDUP
            speed = f"{best[1]:.2f}x faster than fp32" if best[1] >= 1.0 else f"{best[1]:.2f}x the fp32 speed (SLOWER)"
            verdict = (f"{name}: best within {TARGET_MAX_DROP_PTS:g} pt accuracy loss is {best[0]}, "
                       f"{speed} (accuracy {best[2]:+.2f} pts vs fp32) -> target "
                       f">= {TARGET_SPEEDUP:g}x {'MET' if met else 'MISSED'}")
        verdicts.append(verdict)
        lines += [f"Verdict: **{verdict}**", ""]
    lines += ["## Summary", ""] + [f"- {v}" for v in verdicts] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "digits-resnet"], choices=["digits-cnn", "digits-resnet"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeplan-bench-compression"), help="working folder (examples are reused)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here (also printed)")
    ap.add_argument("--json", type=Path, default=None, help="also write raw numbers as JSON here")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5], help="pruning ratio(s)")
    ap.add_argument("--round-to", type=int, default=8, choices=[1, 8, 16])
    ap.add_argument("--kd-epochs", type=int, default=10)
    ap.add_argument("--kd-lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-inc", dest="inc", action="store_false", help="skip the Intel Neural Compressor backend")
    ap.add_argument("--retrain", action="store_true", help="retrain the examples even if present")
    args = ap.parse_args(argv)

    started = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
    mach = machine()
    t0 = time.perf_counter()
    results: dict = {}
    from edgeplan.hardware_profiles.atomic import atomic_write_text

    for name in args.models:
        try:
            results[name] = run_model(name, args.work, args)
        except Exception as e:  # noqa: BLE001 - one model failing must not lose the others
            traceback.print_exc()
            results[name] = (f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", {})
        md = render(results, args, mach, started, time.perf_counter() - t0)
        if args.out:  # written after every model, so a late failure keeps the finished tables
            atomic_write_text(args.out, md + "\n")
    print(md)
    if args.json:
        raw = {name: ([{k: (str(v) if isinstance(v, Path) else v) for k, v in var.__dict__.items()} for var in r[0]]
                      if not isinstance(r[0], str) else r[0], r[1]) for name, r in results.items()}
        atomic_write_text(args.json, json.dumps({"machine": mach, "started": started, "results": raw}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
