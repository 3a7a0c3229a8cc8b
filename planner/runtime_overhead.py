"""Measure the split runtime's own costs on this machine: the planner's ``request_overhead_ms`` (a fixed cost
per request) and ``serialise_mb_per_s`` (its cost per byte of cut tensor).

Both come from real split inferences of throw-away probe bundles written with the ordinary bundle writer in a
temporary folder, served by the real ``edgeplan serve`` server (``runtime_server.make_server``) on loopback in
a thread of this process and run with the real ``SplitClient`` (no emulated delay). From each inference's
wall time (``InferResult.total_ms``: device part, wire encode, HTTP request, server decode + cloud part +
encode, client decode) the split planner's prediction for the same plan is subtracted with the request
overhead and the serialisation term left out: the two parts' predicted compute on ``profile``, plus a link
of 0 ms RTT at 1e6 Mbit/s (microseconds). What is left is what the runtime adds.

- ``measure_request_overhead_ms``: the *tiny* probe (``x[1,4] -> Relu -> Tanh -> y``, cut after the Relu: 16
  bytes cross). The median of what is left is the per-request overhead: HTTP framing, wire encode/decode,
  Python, the ONNX Runtime ``run`` call of each part beyond the profile's per-inference overhead.
- ``measure_runtime_costs``: the tiny probe *and* a *large* probe (``x[1,N] -> Relu -> ReduceMean -> y[1,1]``,
  cut after the Relu: 4N bytes cross, default N = 65536 = 256 kB; the reduction keeps the reply as small as
  the tiny probe's, so only the uplink grows, and is cheap, so little compute is mixed in), served by two
  servers and run interleaved (tiny, large, tiny, ...) so that both see the same load. The per-byte cost is the difference of the two
  medians divided by the difference of the cut bytes; its inverse is the runtime's effective
  ``serialise_mb_per_s`` (client encode, HTTP body copies through loopback, server decode: everything the
  runtime spends per byte sent, beyond the link's bits / bandwidth). A difference that is not positive or
  gives a rate outside ``SANE_MB_PER_S`` is noise, not a rate: the result then carries the assumed
  default (``split.DEFAULT_SERIALISE_MB_PER_S``), ``measured=False`` and a note saying why.

Requests are spaced ``gap_ms`` apart (default 5 ms), as real ones are: a client waits at least one RTT
between requests and the link sleeps in between. Measured here: the tiny probe took 0.65 ms back to back but
1.3-1.9 ms with 2-20 ms idle gaps (caches and the CPU cool down; 2026-11-23, this machine), and that
idle-gap cost is what made end-to-end predictions 1-2 ms low on fast links before the gap was added.

It is a calibration: run it on the device that will run ``edgeplan run`` (client and server share this
machine here, so a slow device's number also includes a slow server; on a real deployment the server
side is usually faster). Servers are always stopped and folders removed, also on errors.
"""

from __future__ import annotations

import math
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeplan.hardware_profiles.errors import ConfigError

#: Effective per-byte rates outside this range (MB/s) are rejected as noise: below 1 MB/s a 256 kB loopback
#: request would take a quarter of a second; above 50 GB/s is beyond a memory copy.
SANE_MB_PER_S = (1.0, 50_000.0)


@dataclass(frozen=True)
class RequestOverhead:
    """One probe's measurement. All ms; ``median_ms``/``p90_ms`` are wall minus predicted."""

    median_ms: float
    p90_ms: float
    repeats: int
    wall_median_ms: float  # measured wall time of one split inference (median)
    predicted_ms: float  # the planner's prediction for the same plan without overhead and serialisation
    cut_bytes: int  # bytes of the cut tensor as sent
    profile: str
    url: str  # where the (now stopped) server listened
    # medians of the measured parts of one inference (InferResult fields): the device part's ORT run, the
    # request (wall time minus the server's compute: HTTP, loopback, server wire decode/encode), and the
    # server part's ORT run; the rest of the wall time is the client's wire encode/decode and bookkeeping
    device_part_ms: float = 0.0
    request_ms: float = 0.0
    server_part_ms: float = 0.0
    gap_ms: float = 0.0  # idle time before each timed inference

    @property
    def how(self) -> str:
        return (f"median of {self.repeats} real split inferences (edgeplan serve + SplitClient on loopback, "
                f"{self.cut_bytes}-byte cut, no emulated delay, {self.gap_ms:g} ms idle before each) minus the "
                "predicted compute of both parts on "
                f"profile {self.profile!r} ({self.predicted_ms:.3f} ms)")

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "repeats": self.repeats,
                "wall_median_ms": self.wall_median_ms, "predicted_ms": self.predicted_ms,
                "cut_bytes": self.cut_bytes, "profile": self.profile, "device_part_ms": self.device_part_ms,
                "request_ms": self.request_ms, "server_part_ms": self.server_part_ms, "gap_ms": self.gap_ms, "how": self.how}


@dataclass(frozen=True)
class SerialiseRate:
    """The runtime's cost per byte of cut tensor, as the planner's ``serialise_mb_per_s``.

    ``mb_per_s`` is what to use: the measured rate, or the assumed default when the measurement was
    rejected (``measured=False``; ``note`` says why). ``extra_ms`` is the large probe's median excess minus
    the tiny probe's (wall minus predicted, each), ``delta_bytes`` the difference of their cut bytes."""

    mb_per_s: float
    measured: bool
    extra_ms: float
    delta_bytes: int
    note: str = ""

    @property
    def how(self) -> str:
        m = (f"{self.delta_bytes} more cut bytes cost {self.extra_ms:.3f} ms more (median of interleaved real split "
             f"inferences of a {self.delta_bytes + 16}-byte-cut and a 16-byte-cut probe on loopback, each minus "
             "its predicted compute)")
        return m if self.measured else f"assumed default; the measurement was rejected: {self.note} ({m})"

    def to_dict(self) -> dict[str, Any]:
        return {"mb_per_s": self.mb_per_s, "measured": self.measured, "extra_ms": self.extra_ms,
                "delta_bytes": self.delta_bytes, "note": self.note, "how": self.how}


def serialise_rate(tiny: RequestOverhead, large: RequestOverhead, default_mb_per_s: float) -> SerialiseRate:
    """The per-byte rate from the two probes' medians, or ``default_mb_per_s`` with a note when it is noise."""
    delta = large.cut_bytes - tiny.cut_bytes
    extra = large.median_ms - tiny.median_ms
    if delta <= 0:
        raise ConfigError("the large probe must send more bytes than the tiny one")
    lo, hi = SANE_MB_PER_S
    rate = delta / extra / 1e3 if extra > 0 else math.nan  # bytes per ms / 1e3 = MB/s
    if not math.isfinite(rate):
        note = f"the large cut was not slower than the tiny one ({extra:+.3f} ms): timing noise"
    elif not lo <= rate <= hi:
        note = f"{rate:.3g} MB/s is outside the plausible {lo:g}-{hi:g} MB/s: timing noise"
    else:
        return SerialiseRate(mb_per_s=rate, measured=True, extra_ms=extra, delta_bytes=delta)
    return SerialiseRate(mb_per_s=default_mb_per_s, measured=False, extra_ms=extra, delta_bytes=delta, note=note)


@dataclass(frozen=True)
class RuntimeCosts:
    """``measure_runtime_costs``' answer: the fixed cost (tiny probe), the per-byte rate, the large probe."""

    overhead: RequestOverhead
    serialise: SerialiseRate
    large: RequestOverhead

    def to_dict(self) -> dict[str, Any]:
        return {"overhead": self.overhead.to_dict(), "serialise": self.serialise.to_dict(),
                "large": self.large.to_dict()}


def _probe_onnx(path: Path, width: int, reduce: bool) -> Path:
    """``x[1,w] -> Relu -> h -> Tanh -> y`` (tiny probe), or ``x[1,w] -> Relu -> h -> ReduceMean -> y[1,1]``
    (large probe: a reply as small as the tiny one's and a cheap cloud part, so that little compute, and
    little of the cost model's error on it, is mixed into the per-byte difference)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1] if reduce else [1, width])
    second = (helper.make_node("ReduceMean", ["h"], ["y"], name="mean", axes=[1], keepdims=1) if reduce
              else helper.make_node("Tanh", ["h"], ["y"], name="tanh"))  # opset 17: axes is an attribute
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["h"], name="relu"), second],
                              "edgeplan_overhead_probe", [x], [y], value_info=[h])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _probe_bundle(work: Path, profile: str, width: int = 4, reduce: bool = False):
    """(bundle dir, plan priced with request_overhead_ms=0, predicted ms without the serialisation term)."""
    from edgeplan.hardware_profiles import load_profile
    from edgeplan.planner.bundle import write_bundle
    from edgeplan.planner.cost import predict
    from edgeplan.planner.graph import analyse
    from edgeplan.planner.split import LinkSpec, SplitOptions, build_problem, evaluate, tier_from_prediction

    work.mkdir(parents=True, exist_ok=True)
    src = _probe_onnx(work / "probe.onnx", width, reduce)
    analysis = analyse(str(src))
    prof = load_profile(profile)
    spec = tier_from_prediction(prof, predict(analysis, prof))
    opts = SplitOptions(request_overhead_ms=0.0)
    problem = build_problem(analysis, [spec, spec], [LinkSpec("loopback", 1e6, 1e6, 0.0)], opts)
    labels = np.arange(problem.n_nodes) > 0  # first node on the device, the rest served
    plan = evaluate(problem, labels.astype(np.int64), name="overhead-probe")
    if not plan.is_split or len(plan.cut_tensors) != 1:
        raise RuntimeError("the overhead probe model did not split as expected")  # pragma: no cover
    shapes = {n: (s, d) for n, s, d in zip(problem.tensor_names, problem.tensor_shapes, problem.tensor_dtypes)}
    bundle = write_bundle(work / "bundle", plan=plan, source_onnx=src, tensor_shapes=shapes,
                          predicted_provenance=f"overhead probe, profile {profile}")
    # what the planner prices besides the request overhead and the serialisation term being measured
    predicted = float(plan.latency_ms) - plan.transfer_bytes / (opts.serialise_mb_per_s * 1e3)
    return bundle, predicted, int(plan.transfer_bytes), width


@contextmanager
def _served(bundle: Path, threads: int | None) -> Iterator[tuple[Any, str]]:
    """A real server for ``bundle`` in a thread and a client for it; both stopped on exit."""
    from edgeplan.planner.runtime_client import SplitClient
    from edgeplan.planner.runtime_server import make_server

    srv = make_server(bundle, "127.0.0.1", 0, threads=threads)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name="edgeplan-overhead-server")
    t.start()
    try:
        client = SplitClient(bundle, srv.url, timeout_s=10, adaptive=False, threads=threads)
        try:
            yield client, srv.url
        finally:
            client.close()
    finally:
        srv.stop()  # shutdown() waits for serve_forever to return; then every connection is dropped
        t.join(timeout=10)


def _summary(results: list, predicted: float, cut_bytes: int, profile: str, url: str) -> RequestOverhead:
    bad = [r for r in results if r.mode != "split"]
    if bad:
        raise RuntimeError(f"overhead probe did not run split: {bad[0].reason}")
    wall = np.array([r.total_ms for r in results])
    over = wall - predicted
    med, p90 = float(np.median(over)), float(np.percentile(over, 90))
    if not (math.isfinite(med) and math.isfinite(p90)):
        raise RuntimeError("overhead probe produced non-finite timings")  # pragma: no cover
    return RequestOverhead(median_ms=med, p90_ms=p90, repeats=len(results), wall_median_ms=float(np.median(wall)),
                           predicted_ms=predicted, cut_bytes=cut_bytes, profile=profile, url=url,
                           device_part_ms=float(np.median([r.device_ms for r in results])),
                           request_ms=float(np.median([r.network_ms for r in results])),
                           server_part_ms=float(np.median([r.server_ms for r in results])))


def _measure(widths: list[tuple[int, bool]], repeats: int, warmup: int, profile: str,
             threads: int | None, gap_ms: float = 5.0) -> list[RequestOverhead]:
    """One probe per (width, reduce), each with its own server; inferences interleaved round robin, each timed
    inference after ``gap_ms`` of idle time (see the module docstring)."""
    import time

    if repeats < 1 or warmup < 0 or not (0 <= gap_ms <= 1000):
        raise ConfigError("repeats must be >= 1, warmup >= 0 and gap_ms in [0, 1000]")
    with tempfile.TemporaryDirectory(prefix="edgeplan-overhead-") as d, ExitStack() as stack:
        probes = [_probe_bundle(Path(d) / f"p{i}", profile, w, red) for i, (w, red) in enumerate(widths)]
        served = [stack.enter_context(_served(p[0], threads)) for p in probes]
        rng = np.random.default_rng(0)
        feeds = [{c.input_names()[0]: rng.standard_normal((1, p[3])).astype(np.float32)}
                 for (c, _), p in zip(served, probes)]
        for _ in range(warmup):
            for (c, _), f in zip(served, feeds):
                c.infer(f)
        results: list[list] = [[] for _ in probes]
        for _ in range(repeats):
            for i, ((c, _), f) in enumerate(zip(served, feeds)):
                if gap_ms:
                    time.sleep(gap_ms / 1000.0)
                results[i].append(c.infer(f))
    from dataclasses import replace

    return [replace(_summary(rs, p[1], p[2], profile, url), gap_ms=float(gap_ms))
            for rs, p, (_, url) in zip(results, probes, served)]


def measure_request_overhead_ms(repeats: int = 200, *, warmup: int = 20, profile: str = "host",
                                threads: int | None = None, gap_ms: float = 5.0) -> RequestOverhead:
    """Measure the per-request overhead of the split runtime here with the tiny probe (module docstring).

    ``repeats`` timed inferences after ``warmup`` untimed ones (sessions, connection, caches). Returns a
    ``RequestOverhead`` (``median_ms``, ``p90_ms``, and what they were derived from). Raises ``ConfigError``
    for ``repeats < 1``.
    """
    return _measure([(4, False)], repeats, warmup, profile, threads, gap_ms)[0]


def measure_runtime_costs(repeats: int = 200, *, warmup: int = 20, profile: str = "host",
                          threads: int | None = None, large_elements: int = 65536,
                          gap_ms: float = 5.0) -> RuntimeCosts:
    """Measure the request overhead (tiny probe) and the per-byte rate (tiny vs large probe, interleaved).

    ``repeats`` timed inferences of each probe after ``warmup`` untimed ones; the large probe's cut is
    ``large_elements`` float32 values. Raises ``ConfigError`` for ``repeats < 1`` or ``large_elements <= 4``.
    """
    from edgeplan.planner.split import DEFAULT_SERIALISE_MB_PER_S

    if large_elements <= 4:
        raise ConfigError("large_elements must be > 4 (the tiny probe's cut)")
    tiny, large = _measure([(4, False), (large_elements, True)], repeats, warmup, profile, threads, gap_ms)
    return RuntimeCosts(overhead=tiny, serialise=serialise_rate(tiny, large, DEFAULT_SERIALISE_MB_PER_S),
                        large=large)


__all__ = ["RequestOverhead", "RuntimeCosts", "SANE_MB_PER_S", "SerialiseRate", "measure_request_overhead_ms",
           "measure_runtime_costs", "serialise_rate"]
