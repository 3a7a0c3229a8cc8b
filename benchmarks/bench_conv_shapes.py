"""Kernel-level accuracy of the cost model: single convs over random shapes, predicted vs measured here.

The whole-model benchmark (bench_cost_model.py) mixes every kernel class and is at the mercy of this VM's
cache and memory-bandwidth contention (models with MBs of weights in the shared L3 moved 20-50 % within an
hour). Single convs are the cost model's largest term and are mostly compute-bound, so they show the
model's *shape* errors (channel blocking, filter sets, 1x1 convs with few inputs) much more repeatably.

Shapes: ``--n`` random draws (seeded) of input/output channels from 8-512, square maps 2-112, kernel 1/3/3/5,
stride 1 (3 of 4) or 2 (not for 1x1), kept when 0.2-400 MFLOP; each is one Conv + Relu graph
(``planner.calibrate._single_conv``), fp32 or int8 (static QDQ as in calibration). The calibration set
itself contains 24 fixed shapes (``planner.calibrate._CONV_SHAPES``); a random draw can come close to one.

Measured = ``planner.calibrate.time_models_ms`` (interleaved rounds, 1 thread: thread CPU time).
Predicted = ``planner.cost.predict`` with each ``--profile`` given (names or TOML paths), so an old and a
new profile can be compared on the same measurements.

Usage::

    .venv/bin/python benchmarks/bench_conv_shapes.py --seed 1 --n 160 --profile host --profile old.toml
    .venv/bin/python benchmarks/bench_conv_shapes.py --tiny        # 3 shapes, one short round (tests)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHANNELS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
MAPS = (2, 4, 5, 7, 8, 10, 14, 16, 20, 28, 32, 40, 56, 64, 112)


def random_shapes(n: int, seed: int) -> list[tuple[int, int, int, int, int]]:
    """(cin, cout, h, k, stride) draws; see the module docstring."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int, int, int, int]] = []
    while len(out) < n:
        cin, cout, h = int(rng.choice(CHANNELS)), int(rng.choice(CHANNELS)), int(rng.choice(MAPS))
        k = int(rng.choice([1, 3, 3, 5]))
        s = 1 if k == 1 else int(rng.choice([1, 1, 1, 2]))
        flops = 2 * cin * cout * k * k * (h // s) ** 2
        if 2e5 <= flops <= 4e8:
            out.append((cin, cout, h, k, s))
    return out


def _score(errs: np.ndarray) -> dict:
    a = np.abs(errs)
    return {"n": int(a.size), "within_10_pct": float((a <= 10).mean() * 100),
            "within_20_pct": float((a <= 20).mean() * 100), "median_abs_error_pct": float(np.median(a)),
            "max_abs_error_pct": float(a.max())}


def run(shapes, profiles: list[str], dtype: str, rounds: int, min_time: float, log=print) -> dict:
    import onnx

    from edgeplan.hardware_profiles import load_profile
    from edgeplan.planner.calibrate import _quantize, _single_conv, time_models_ms
    from edgeplan.planner.cost import predict
    from edgeplan.planner.graph import analyse

    profs = [load_profile(p) for p in profiles]
    rng = np.random.default_rng(0)
    paths, preds = [], []
    with tempfile.TemporaryDirectory(prefix="edgeplan-bench-conv-") as tmpd:
        for i, (cin, cout, h, k, s) in enumerate(shapes):
            p = Path(tmpd) / f"c{i}.onnx"
            onnx.save(_single_conv(cin, cout, h, k, s, rng), str(p))
            if dtype == "int8":
                q = Path(tmpd) / f"c{i}.int8.onnx"
                _quantize(p, q, (1, cin, h, h))
                p = q
            a = analyse(str(p))
            preds.append([predict(a, pr).latency_ms for pr in profs])
            paths.append(p)
        log(f"timing {len(paths)} {dtype} convs, {rounds} interleaved rounds of {min_time} s")
        meas = time_models_ms(paths, threads=1, min_time_s=min_time, rounds=rounds)
    errs = np.array([[(p / m - 1) * 100 for p in row] for row, m in zip(preds, meas)])
    rows = [{"cin": c[0], "cout": c[1], "h": c[2], "k": c[3], "stride": c[4], "measured_ms": m,
             "predicted_ms": dict(zip(profiles, pr))} for c, m, pr in zip(shapes, meas, preds)]
    return {"rows": rows, "scores": {p: _score(errs[:, j]) for j, p in enumerate(profiles)}, "errors": errs}


def to_markdown(res: dict, meta: dict) -> str:
    title = f"Single {meta['dtype']} convs: predicted vs measured ({meta['n']} random shapes, seed {meta['seed']})"
    lines = [f"### {title}", "",
             f"Run {meta['date']} on {meta['cpu']}, onnxruntime {meta['onnxruntime']}, 1 thread, smallest of "
             f"{meta['rounds']} interleaved round medians ({meta['min_time_s']} s per round).", "",
             "| profile | within ±10 % | within ±20 % | median | max |", "|---|---:|---:|---:|---:|"]
    for p, sc in res["scores"].items():
        lines.append(f"| {p} | {sc['within_10_pct']:.0f} % | {sc['within_20_pct']:.0f} % | "
                     f"{sc['median_abs_error_pct']:.1f} % | {sc['max_abs_error_pct']:.0f} % |")
    last = list(res["scores"])[-1]
    order = np.argsort(-np.abs(res["errors"][:, -1]))[:8]
    lines += ["", f"Largest errors with `{last}`:", "", "| cin | cout | map | k | stride | measured us | error |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for i in order:
        r = res["rows"][i]
        lines.append(f"| {r['cin']} | {r['cout']} | {r['h']} | {r['k']} | {r['stride']} | "
                     f"{r['measured_ms'] * 1e3:.1f} | {res['errors'][i, -1]:+.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", action="append", default=None, help="profile name or TOML (repeatable; default host)")
    ap.add_argument("--n", type=int, default=160, help="number of random shapes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dtype", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds of timed runs per round")
    ap.add_argument("--tiny", action="store_true", help="3 shapes, one short round (for tests)")
    ap.add_argument("--out", default=None, help="markdown file to write")
    ap.add_argument("--json", default=None, help="rows and scores as JSON")
    args = ap.parse_args(argv)
    if args.tiny:
        args.n, args.rounds, args.min_time = 3, 1, 0.01
    profiles = args.profile or ["host"]
    import onnxruntime as ort

    from edgeplan.planner.measure import cpu_model

    t0 = time.perf_counter()
    res = run(random_shapes(args.n, args.seed), profiles, args.dtype, args.rounds, args.min_time,
              log=lambda m: print(m, file=sys.stderr, flush=True))
    meta = {"dtype": args.dtype, "n": args.n, "seed": args.seed, "rounds": args.rounds, "min_time_s": args.min_time,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "onnxruntime": ort.__version__, "seconds": round(time.perf_counter() - t0, 1)}
    md = to_markdown(res, meta)
    from edgeplan.hardware_profiles.atomic import atomic_write_text

    if args.out:
        atomic_write_text(args.out, md)
    if args.json:
        doc = {"meta": meta, "scores": res["scores"], "rows": res["rows"]}
        atomic_write_text(args.json, json.dumps(doc, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
