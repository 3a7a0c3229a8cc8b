"""Measure the split runtime's own per-request cost on this machine (the planner's ``request_overhead_ms``).

``measure_request_overhead_ms(repeats=...)`` builds a throw-away two-node bundle (``x[1,4] -> Relu ->
Tanh -> y``, cut after the Relu: 16 bytes cross) in a temporary folder with the ordinary bundle writer,
serves it with the real ``edgeplan serve`` server (``runtime_server.make_server``) on loopback in a thread
of this process, and runs real split inferences with the real ``SplitClient`` (no emulated delay). The
overhead is the median wall time of one inference (``InferResult.total_ms``: device part, wire encode,
HTTP request, server decode + cloud part + encode, client decode) minus the split planner's prediction for
the same plan with the overhead set to 0 (the two parts' predicted compute on ``profile``, and a link of
0 ms RTT at 1e6 Mbit/s, i.e. microseconds). What is left is what the runtime adds per request whatever
the link: HTTP framing, wire encode/decode, Python, and the ONNX Runtime ``run`` call of each part beyond
the profile's per-inference overhead.

It is a calibration: run it on the device that will run ``edgeplan run`` (client and server share this
machine here, so a slow device's number also includes a slow server; on a real deployment the server
side is usually faster). The server is always stopped and the folder removed, also on errors.
"""

from __future__ import annotations

import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeplan.hardware_profiles.errors import ConfigError


@dataclass(frozen=True)
class RequestOverhead:
    """The measurement. All ms; ``median_ms``/``p90_ms`` are the overhead (wall minus predicted)."""

    median_ms: float
    p90_ms: float
    repeats: int
    wall_median_ms: float  # measured wall time of one split inference (median)
    predicted_ms: float  # the planner's prediction for the same plan without the overhead
    cut_bytes: int  # bytes of the cut tensor as sent
    profile: str
    url: str  # where the (now stopped) server listened
    # medians of the measured parts of one inference (InferResult fields): the device part's ORT run, the
    # request (wall time minus the server's compute: HTTP, loopback, server wire decode/encode), and the
    # server part's ORT run; the rest of the wall time is the client's wire encode/decode and bookkeeping
    device_part_ms: float = 0.0
    request_ms: float = 0.0
    server_part_ms: float = 0.0

    @property
    def how(self) -> str:
        return (f"median of {self.repeats} real split inferences (edgeplan serve + SplitClient on loopback, "
                f"{self.cut_bytes}-byte cut, no emulated delay) minus the predicted compute of both parts on "
                f"profile {self.profile!r} ({self.predicted_ms:.3f} ms)")

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "repeats": self.repeats,
                "wall_median_ms": self.wall_median_ms, "predicted_ms": self.predicted_ms,
                "cut_bytes": self.cut_bytes, "profile": self.profile, "device_part_ms": self.device_part_ms,
                "request_ms": self.request_ms, "server_part_ms": self.server_part_ms, "how": self.how}


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["h"], name="relu"),
                               helper.make_node("Tanh", ["h"], ["y"], name="tanh")],
                              "edgeplan_overhead_probe", [x], [y], value_info=[h])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _probe_bundle(work: Path, profile: str):
    """(bundle dir, plan priced with request_overhead_ms=0) for the tiny model, cut after its first node."""
    from edgeplan.hardware_profiles import load_profile
    from edgeplan.planner.bundle import write_bundle
    from edgeplan.planner.cost import predict
    from edgeplan.planner.graph import analyse
    from edgeplan.planner.split import LinkSpec, SplitOptions, build_problem, evaluate, tier_from_prediction

    src = _tiny_onnx(work / "probe.onnx")
    analysis = analyse(str(src))
    prof = load_profile(profile)
    spec = tier_from_prediction(prof, predict(analysis, prof))
    problem = build_problem(analysis, [spec, spec], [LinkSpec("loopback", 1e6, 1e6, 0.0)],
                            SplitOptions(request_overhead_ms=0.0))
    labels = np.arange(problem.n_nodes) > 0  # first node on the device, the rest served
    plan = evaluate(problem, labels.astype(np.int64), name="overhead-probe")
    if not plan.is_split or len(plan.cut_tensors) != 1:
        raise RuntimeError("the overhead probe model did not split as expected")  # pragma: no cover
    shapes = {n: (s, d) for n, s, d in zip(problem.tensor_names, problem.tensor_shapes, problem.tensor_dtypes)}
    bundle = write_bundle(work / "bundle", plan=plan, source_onnx=src, tensor_shapes=shapes,
                          predicted_provenance=f"overhead probe, profile {profile}")
    return bundle, plan


def measure_request_overhead_ms(repeats: int = 200, *, warmup: int = 20, profile: str = "host",
                                threads: int | None = None) -> RequestOverhead:
    """Measure the per-request overhead of the split runtime here (see the module docstring).

    ``repeats`` timed inferences after ``warmup`` untimed ones (sessions, connection, caches). Returns a
    ``RequestOverhead`` (``median_ms``, ``p90_ms``, and what they were derived from). Raises ``ConfigError``
    for ``repeats < 1``.
    """
    from edgeplan.planner.runtime_client import SplitClient
    from edgeplan.planner.runtime_server import make_server

    if repeats < 1 or warmup < 0:
        raise ConfigError("repeats must be >= 1 and warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="edgeplan-overhead-") as d:
        bundle, plan = _probe_bundle(Path(d), profile)
        srv = make_server(bundle, "127.0.0.1", 0, threads=threads)
        url = srv.url
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                             name="edgeplan-overhead-server")
        t.start()
        try:
            client = SplitClient(bundle, url, timeout_s=10, adaptive=False, threads=threads)
            try:
                x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
                feeds = {client.input_names()[0]: x}
                for _ in range(warmup):
                    client.infer(feeds)
                results = [client.infer(feeds) for _ in range(repeats)]
            finally:
                client.close()
        finally:
            srv.stop()  # shutdown() waits for serve_forever to return; then every connection is dropped
            t.join(timeout=10)
    bad = [r for r in results if r.mode != "split"]
    if bad:
        raise RuntimeError(f"overhead probe did not run split: {bad[0].reason}")
    wall = np.array([r.total_ms for r in results])
    pred = float(plan.latency_ms)
    over = wall - pred
    med, p90 = float(np.median(over)), float(np.percentile(over, 90))
    if not (math.isfinite(med) and math.isfinite(p90)):
        raise RuntimeError("overhead probe produced non-finite timings")  # pragma: no cover
    return RequestOverhead(median_ms=med, p90_ms=p90, repeats=repeats, wall_median_ms=float(np.median(wall)),
                           predicted_ms=pred, cut_bytes=int(plan.transfer_bytes), profile=profile, url=url,
                           device_part_ms=float(np.median([r.device_ms for r in results])),
                           request_ms=float(np.median([r.network_ms for r in results])),
                           server_part_ms=float(np.median([r.server_ms for r in results])))


__all__ = ["RequestOverhead", "measure_request_overhead_ms"]
