"""Split runtime benchmark: measured end-to-end latency of ``edgeplan serve`` + ``SplitClient`` vs the planner's
prediction for the same link.

Run (as root for the kernel-shaped mode):  .venv/bin/python benchmarks/bench_runtime.py [--repeats 15]
                                               [--out benchmarks/RESULTS_runtime.md]

What is compared, and why:
- The model is a small CNN (3x64x64 input) exported with ``compressor.export.export_onnx``; the plan is the
  prefix cut with the largest cut tensor (so the network term is large and measurable), priced by the
  planner with ``tiers=["host", "host"]``: the calibrated profile of *this* machine on both sides, because
  both parts really run here (server and client in one process, ORT CPU, 1 thread each). A pi4/t4
  prediction could not be checked on this machine; the network part of the prediction does not depend on
  the tier profiles, so it is the part checked most directly.
- Predicted network = RTT + jitter (0 for these links) + serialise (bytes / 500 MB/s) + uplink bits /
  bandwidth + downlink bits / bandwidth (``SplitPlan.network_ms``). Measured network = request wall time
  minus the compute time the server reports (``X-Edgeplan-Compute-Ms``). Measured end-to-end = the
  client's wall time for one inference (device part + request + decode).
- Link modes (the report says which were used):
  * ``tbf``: only when running as root and ``ip netns add`` works: client and server run in a fresh
    network namespace whose loopback (MTU 1500) is shaped by a kernel token bucket (``tc qdisc tbf``), so
    the bandwidth term is real TCP over a real rate limit. ``netem`` (for delay) is unavailable on this
    kernel, so the RTT is still added by the client as a sleep (emulated). The namespace is always deleted.
  * ``emulated``: plain loopback; the client sleeps ``rtt + sent*8/uplink + received*8/downlink`` per
    request. This checks the runtime's own overheads (HTTP, wire encoding, loopback), not a network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LINKS = [(10.0, 40.0), (50.0, 20.0), (200.0, 5.0)]  # (Mbit/s both ways, RTT ms)
NS = "edgeplan-bench"


@dataclass(frozen=True)
class RttOnly:
    rtt_ms: float
    uplink_mbps: float = float("inf")
    downlink_mbps: float = float("inf")


def build_bundle(work: Path, link_spec: str):
    import torch
    from torch import nn

    from edgeplan.compressor.export import export_onnx
    from edgeplan.planner.bundle import write_bundle
    from edgeplan.planner.split import evaluate, prefix_assignments, run_split

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10)).eval()
    x = torch.randn(1, 3, 64, 64)
    onnx_path = work / f"cnn-{link_spec.replace('/', '_')}.onnx"
    export_onnx(model, (x,), onnx_path)
    res = run_split(onnx_path, tiers=["host", "host"], links=[link_spec], schedule=False)
    pb = res.problem
    cands = [evaluate(pb, lab, name="bench-cut") for lab in prefix_assignments(pb)]
    cands = [p for p in cands if p.is_split and not p.sends_raw_input and p.feasible]
    plan = max(cands, key=lambda p: p.transfer_bytes)
    shapes = {n: (s, dt) for n, s, dt in zip(pb.tensor_names, pb.tensor_shapes, pb.tensor_dtypes)}
    out = write_bundle(work / f"bundle-{link_spec.replace('/', '_')}", plan=plan, source_onnx=onnx_path,
                       profiles={"target": res.tier_profiles[0], "cloud": res.tier_profiles[1]},
                       link=res.link_profiles[0], tensor_shapes=shapes, overwrite=True)
    return out, plan, x.numpy()


def measure(mode: str, repeats: int, work: Path) -> list[dict]:
    from edgeplan.planner.runtime_client import SplitClient
    from edgeplan.planner.runtime_server import make_server
    from edgeplan.planner.split import LinkSpec

    rows = []
    for mbps, rtt in LINKS:
        spec = f"{mbps:g}mbps/{rtt:g}ms"
        bundle, plan, x = build_bundle(work, spec)
        if mode == "tbf":
            _tc(["qdisc", "replace", "dev", "lo", "root", "tbf", "rate", f"{mbps:g}mbit", "burst", "4500",
                 "latency", "2000ms"])
            emulate = RttOnly(rtt)
        else:
            emulate = LinkSpec(spec, mbps, mbps, rtt)
        srv = make_server(bundle, "127.0.0.1", 0)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        try:
            client = SplitClient(bundle, srv.url, timeout_s=30, emulate=emulate)
            for _ in range(3):  # warm-up: sessions, connection, TCP window
                client.infer({"input": x} if "input" in client.input_names() else {client.input_names()[0]: x})
            feeds = {client.input_names()[0]: x}
            rs = [client.infer(feeds) for _ in range(repeats)]
            client.close()
        finally:
            srv.stop()
            t.join(timeout=5)
        assert all(r.mode == "split" for r in rs), [r.reason for r in rs]
        net = [r.network_ms for r in rs]
        e2e = [r.total_ms for r in rs]
        rows.append({
            "mode": mode, "link": spec, "cut": [c.name for c in plan.cut_tensors], "sent_bytes": rs[0].sent_bytes,
            "pred_network_ms": plan.network_ms, "meas_network_ms": statistics.median(net),
            "meas_network_p90_ms": float(np.percentile(net, 90)),
            "pred_e2e_ms": plan.latency_ms, "meas_e2e_ms": statistics.median(e2e),
            "meas_e2e_p90_ms": float(np.percentile(e2e, 90)),
            "pred_device_ms": plan.tier_latency_ms[0], "meas_device_ms": statistics.median(r.device_ms for r in rs),
            "pred_cloud_ms": plan.tier_latency_ms[1], "meas_server_ms": statistics.median(r.server_ms for r in rs),
            "error_band_pct": plan.error_band_pct, "repeats": repeats,
        })
    if mode == "tbf":
        _tc(["qdisc", "del", "dev", "lo", "root"], check=False)
    return rows


def _tc(args: list[str], check: bool = True) -> None:
    subprocess.run(["tc", *args], check=check, capture_output=True, timeout=10)


def netns_available() -> str | None:
    """None if the tbf mode can run, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "ip/tc not installed"
    probe = f"{NS}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.decode().strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate",
                            "10mbit", "burst", "4500", "latency", "100ms"], capture_output=True, timeout=10)
        return None if r.returncode == 0 else f"tc tbf failed: {r.stderr.decode().strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)


def run_tbf(repeats: int) -> list[dict]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "add", NS], check=True, capture_output=True, timeout=10)
    try:
        for cmd in (["ip", "link", "set", "lo", "mtu", "1500"], ["ip", "link", "set", "lo", "up"]):
            subprocess.run(["ip", "netns", "exec", NS, *cmd], check=True, capture_output=True, timeout=10)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = Path(f.name)
        try:
            subprocess.run(["ip", "netns", "exec", NS, sys.executable, __file__, "--inner", "tbf", "--repeats",
                            str(repeats), "--inner-out", str(out)], check=True, timeout=1800)
            return json.loads(out.read_text())
        finally:
            out.unlink(missing_ok=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=10)


def pct(meas: float, pred: float) -> str:
    return f"{100 * (meas - pred) / pred:+.1f}%"


def render(rows: list[dict], why_no_tbf: str | None) -> str:
    lines = ["# Split runtime: measured vs predicted latency", "",
             f"Generated by `benchmarks/bench_runtime.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             "(2-core shared machine; other jobs were running, so medians are reported with p90).", "",
             "Model: 5-layer CNN on 3x64x64; cut = the prefix cut with the largest cut tensor (fp32). Prediction: "
             "`run_split(..., tiers=['host','host'], links=[link])` -> the plan's `network_ms` / `latency_ms` "
             "(host profile on both sides, because both parts run on this machine's CPU). Measured: medians "
             "of N sequential inferences after 3 warm-ups (time.perf_counter).", ""]
    if why_no_tbf:
        lines += [f"Kernel-shaped mode NOT used ({why_no_tbf}); all rows are **emulated** links (client sleeps "
                  "rtt + bytes/bandwidth).", ""]
    lines += ["Modes: **tbf** = bandwidth shaped by a kernel token bucket (`tc qdisc tbf` on the loopback of a fresh "
              "network namespace, MTU 1500) + RTT added by the client as a sleep (netem is not available on this "
              "kernel); **emulated** = plain loopback, the client sleeps rtt + bytes*8/bandwidth.", "",
              "| mode | link | sent | network pred ms | network meas ms (p90) | err | e2e pred ms | e2e meas ms (p90) "
              "| err | device pred/meas ms | cloud pred / server meas ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['link']} | {r['sent_bytes'] / 1e3:.1f} kB | {r['pred_network_ms']:.2f} | "
            f"{r['meas_network_ms']:.2f} ({r['meas_network_p90_ms']:.2f}) | "
            f"{pct(r['meas_network_ms'], r['pred_network_ms'])} | {r['pred_e2e_ms']:.2f} | "
            f"{r['meas_e2e_ms']:.2f} ({r['meas_e2e_p90_ms']:.2f}) | {pct(r['meas_e2e_ms'], r['pred_e2e_ms'])} | "
            f"{r['pred_device_ms']:.2f} / {r['meas_device_ms']:.2f} | {r['pred_cloud_ms']:.2f} / "
            f"{r['meas_server_ms']:.2f} |")
    ok = [abs(r["meas_e2e_ms"] - r["pred_e2e_ms"]) / r["pred_e2e_ms"] <= 0.15 for r in rows]
    okn = [abs(r["meas_network_ms"] - r["pred_network_ms"]) / r["pred_network_ms"] <= 0.15 for r in rows]
    lines += ["", f"Within the +-15% target: network part {sum(okn)}/{len(rows)} rows, end-to-end {sum(ok)}/{len(rows)} "
              f"rows. The host profile's own error band is +-{rows[0]['error_band_pct']:.0f}% for compute.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS_runtime.md")
    ap.add_argument("--inner", choices=["tbf", "emulated"], help=argparse.SUPPRESS)
    ap.add_argument("--inner-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--no-tbf", action="store_true", help="Only the emulated mode.")
    args = ap.parse_args()
    if args.inner:
        with tempfile.TemporaryDirectory() as d:
            rows = measure(args.inner, args.repeats, Path(d))
        args.inner_out.write_text(json.dumps(rows))
        return
    why = "--no-tbf" if args.no_tbf else netns_available()
    rows = []
    if why is None:
        rows += run_tbf(args.repeats)
    with tempfile.TemporaryDirectory() as d:
        rows += measure("emulated", args.repeats, Path(d))
    text = render(rows, why)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
