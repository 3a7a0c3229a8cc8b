"""The device side of the split runtime: run a bundle's device part locally, the rest on an ``edgeplan serve``.

``SplitClient(bundle_dir, cloud_url, token=..., timeout_s=...)`` then ``client.infer({input: array})``
returns an ``InferResult`` (outputs, how it ran, measured timings). ``run_bundle`` is what ``edgeplan run``
calls (``--repeat N`` gives latency percentiles and throughput).

Design decisions (and what they mean for users):
- **Fall-back.** If the server cannot be reached within ``timeout_s`` (refused, reset, timed out, 5xx),
  the device finishes the inference itself: it has already run its own part, so it runs the bundle's
  remaining parts locally on the same cut tensors (the cheapest "nearest cut the device can finish alone":
  nothing computed is thrown away). The result says ``mode="local-fallback"`` and the reason
  ("fell back to local: <reason>"). After a failure the server is not tried again for ``retry_after_s``
  (so a dead server costs one timeout, not one per request). A 4xx answer (bad token, payload rejected,
  too large) is a configuration error, not an outage: it raises instead of hiding the problem.
- **Device-only / --local-only.** A one-part bundle runs its ``model.onnx``. A split bundle has no full
  model file, so "device-only" composes all its parts locally (edge then cloud, same outputs within ORT
  rounding; the bundle's ``verify`` proves that composition equals the source model).
- **Adaptive cut.** Each split request measures its network time (request wall time minus the server's
  reported compute time) and bytes sent. The uplink estimate is ``bytes * 8 / (network time - RTT)``
  (median of the last ``window`` requests; RTT = the minimum network time seen for a small request,
  starting from the health probe). When the bundle carries schedule parts (``edgeplan split
  --schedule-parts``), the client uses the segment that the bundle's network schedule prescribes for the
  estimated uplink (a device-only segment means: run locally). Without schedule parts it keeps the one cut
  (``InferResult.adaptive_note`` says so). Until ``min_samples`` measurements exist it uses the plan's cut.
- **Emulated link.** ``emulate=LinkSpec`` (or any object with uplink_mbps/downlink_mbps/rtt_ms) adds
  ``rtt + sent*8/uplink + received*8/downlink`` of sleep per request: a loopback stand-in for a real link
  when network namespaces are unavailable (benchmarks say which was used).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

from edgeplan.hardware_profiles.errors import CheckFailed, ConfigError, InputError
from edgeplan.planner import wire
from edgeplan.planner.runtime_server import PartRunner, Variant, bundle_variants, manifest_sha256


class ServerUnavailable(Exception):
    """Internal: the server could not be used for this request (-> local fall-back)."""


@dataclass(frozen=True)
class InferResult:
    """One inference. Timings are measured (time.perf_counter on this machine), in ms."""

    outputs: dict[str, np.ndarray]
    mode: str  # "split", "local" (asked for / prescribed), "local-fallback"
    variant: int  # -1 the plan's cut, i schedule segment i
    total_ms: float
    device_ms: float  # device part(s) + any local finishing
    network_ms: float | None  # request wall time minus server compute (split only)
    server_ms: float | None  # compute time reported by the server
    sent_bytes: int = 0
    received_bytes: int = 0
    reason: str | None = None  # why it ran locally
    adaptive_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "variant": self.variant, "total_ms": self.total_ms, "device_ms": self.device_ms,
                "network_ms": self.network_ms, "server_ms": self.server_ms, "sent_bytes": self.sent_bytes,
                "received_bytes": self.received_bytes, "reason": self.reason, "adaptive_note": self.adaptive_note,
                "outputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in self.outputs.items()}}


@dataclass
class LinkEstimator:
    """Recent network measurements -> RTT and uplink throughput estimates.

    RTT = the smallest network time seen (health probes and requests). A request's uplink sample is
    ``sent_bytes * 8 / (network_ms - rtt)``, kept only when the excess over the RTT is at least
    ``min_excess_ms`` (below that the payload was too small to say anything about bandwidth: timer and
    scheduling noise dominate). The estimate is the median of the last ``window`` (5) samples, or None:
    robust to one outlier, and a changed link shows after 3 requests.
    """

    window: int = 5
    min_excess_ms: float = 1.0
    rtt_ms: float | None = None
    samples: deque = field(default_factory=deque)  # (sent_bytes, network_ms), the last ``window``

    def __post_init__(self) -> None:
        self.samples = deque(self.samples, maxlen=self.window)

    def add_rtt(self, ms: float) -> None:
        self.rtt_ms = ms if self.rtt_ms is None else min(self.rtt_ms, ms)

    def add(self, sent_bytes: int, network_ms: float) -> None:
        self.add_rtt(network_ms)
        self.samples.append((sent_bytes, network_ms))

    def uplink_mbps(self) -> float | None:
        rtt = self.rtt_ms or 0.0
        rates = [b * 8.0 / ((ms - rtt) * 1e3) for b, ms in self.samples if ms - rtt >= self.min_excess_ms]
        return float(np.median(rates)) if rates else None


@dataclass(frozen=True)
class RepeatReport:
    results: tuple[InferResult, ...]
    wall_s: float

    def percentiles(self) -> dict[str, float]:
        lat = np.array([r.total_ms for r in self.results])
        return {"p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean())}

    def to_dict(self) -> dict[str, Any]:
        modes: dict[str, int] = {}
        for r in self.results:
            modes[r.mode] = modes.get(r.mode, 0) + 1
        return {"n": len(self.results), "wall_s": self.wall_s,
                "throughput_per_s": len(self.results) / self.wall_s if self.wall_s > 0 else None,
                **self.percentiles(), "modes": modes,
                "reasons": sorted({r.reason for r in self.results if r.reason}),
                "variants": sorted({r.variant for r in self.results}),
                "measured": "wall clock (time.perf_counter) of each inference on this machine, sequential"}


class SplitClient:
    """Runs one bundle against one server (one client per thread: it keeps one persistent connection)."""

    def __init__(
        self,
        bundle_dir: str | Path,
        cloud_url: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        compress: str | None = "plan",
        cafile: str | Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        adaptive: bool = True,
        min_samples: int = 2,
        retry_after_s: float = 2.0,
        emulate: Any | None = None,
        threads: int | None = None,
    ) -> None:
        from edgeplan.planner.bundle import load_manifest

        self.dir = Path(bundle_dir)
        self.manifest = load_manifest(self.dir)
        self.sha256 = manifest_sha256(self.dir)
        self.variants = {v.index: v for v in bundle_variants(self.manifest)}
        self.runner = PartRunner(self.dir, threads)
        for v in self.variants.values():  # load every session now: timings never include session creation
            for p in v.parts:
                self.runner.session(p.file)
        self.token = token
        self.timeout_s = float(timeout_s)
        if timeout_s <= 0:
            raise ConfigError("the timeout must be positive")
        wd = self.manifest.wire_dtype
        self.compress = (wd if wd in ("fp16", "int8") else None) if compress == "plan" else compress
        self.adaptive = adaptive
        self.min_samples = min_samples
        self.retry_after_s = retry_after_s
        self.emulate = emulate
        self.link = LinkEstimator()
        self.probe_every = 10
        self._n = 0
        self._last_variant = self.variants[-1]
        self._probed_last = False
        self._down_until = 0.0
        self._conn: http.client.HTTPConnection | None = None
        self._checked = False
        self.url = cloud_url
        if cloud_url is not None:
            u = urlsplit(cloud_url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ConfigError(f"--cloud must be an http(s)://host:port URL, got {cloud_url!r}")
            self._scheme, self._host = u.scheme, u.hostname
            self._port = u.port or (443 if u.scheme == "https" else 80)
            self._ssl = ssl_context
            if u.scheme == "https" and self._ssl is None:
                self._ssl = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        sched_parts = [v for i, v in self.variants.items() if i >= 0]
        self.has_schedule_parts = bool(sched_parts)
        self.adaptive_note = None if self.has_schedule_parts else (
            "the bundle has no schedule parts (write it with --schedule-parts to adapt); keeping the plan's cut")

    # ---------------------------------------------------------------- local execution

    def input_names(self) -> list[str]:
        return [t.name for t in self.manifest.inputs]

    def run_local(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The whole model on this machine: ``model.onnx`` for one-part bundles, else all parts composed."""
        pool = self.runner.run(self.variants[-1].parts, dict(inputs))
        return {t.name: pool[t.name] for t in self.manifest.outputs}

    def choose_variant(self) -> Variant:
        """The plan's cut until ``min_samples`` informative measurements exist, then the schedule's segment
        for the measured uplink. While a device-only segment is prescribed, every ``probe_every``-th request
        goes out with the plan's cut anyway (if it splits), so the client notices when the link recovers."""
        self._n += 1
        if not (self.adaptive and self.has_schedule_parts) or len(self.link.samples) < self.min_samples:
            return self.variants[-1]
        bw = self.link.uplink_mbps()
        if bw is None:
            return self._last_variant
        chosen = self._segment_for(bw)
        self._last_variant = chosen
        if not chosen.is_split and self.variants[-1].is_split:
            # probe: every probe_every-th request, and again right after a probe whose own rate points to
            # another segment (so a recovered link is confirmed in a few requests, not a whole window)
            last_b, last_ms = self.link.samples[-1]
            excess = last_ms - (self.link.rtt_ms or 0.0)
            last_rate = last_b * 8.0 / (excess * 1e3) if excess >= self.link.min_excess_ms else None
            disagrees = last_rate is not None and self._segment_for(last_rate).index != chosen.index
            if self._n % self.probe_every == 0 or (disagrees and self._probed_last):
                self._probed_last = True
                return self.variants[-1]
        self._probed_last = False
        return chosen

    def _segment_for(self, bw: float) -> Variant:
        segs = [v for i, v in sorted(self.variants.items()) if i >= 0]
        for v in segs:
            if v.max_mbps is not None and bw < v.max_mbps:
                return v
        return segs[-1]

    # ---------------------------------------------------------------- network

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": wire.CONTENT_TYPE} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):  # one silent retry when a kept-alive connection was closed by the server
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 1:
                    raise ServerUnavailable(f"connection to {self.url} lost ({type(e).__name__})") from e
            except (socket.timeout, TimeoutError) as e:
                self.close()
                raise ServerUnavailable(f"no answer from {self.url} within {self.timeout_s:g} s") from e
            except ssl.SSLError as e:
                self.close()
                raise ServerUnavailable(f"TLS with {self.url} failed: {e.reason or e}") from e
            except OSError as e:
                self.close()
                raise ServerUnavailable(f"cannot reach {self.url}: {e.strerror or e}") from e
        raise ServerUnavailable(f"cannot reach {self.url}")  # pragma: no cover

    def _raise_for(self, status: int, data: bytes) -> None:
        try:
            msg = json.loads(data.decode("utf-8")).get("error", "")
        except (ValueError, UnicodeDecodeError, AttributeError):
            msg = ""
        if status >= 500:
            raise ServerUnavailable(f"server error HTTP {status}: {msg}")
        if status == 401:
            raise ConfigError(f"the server at {self.url} rejected the token (HTTP 401)")
        raise InputError(f"the server at {self.url} rejected the request (HTTP {status}: {msg})")

    def health(self, probes: int = 2) -> dict[str, Any]:
        """GET /v1/health ``probes`` times; checks that the server holds this very bundle (manifest sha256).
        The RTT estimate takes the fastest probe after the first (the first pays connection set-up and the
        TLS handshake, which later requests on the kept-alive connection do not)."""
        times = []
        for _ in range(max(probes, 1)):
            t0 = time.perf_counter()
            status, _, data = self._request("GET", "/v1/health")
            times.append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                break
        ms = min(times[1:] or times)
        if status != 200:
            self._raise_for(status, data)
        try:
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ServerUnavailable(f"bad health answer from {self.url}") from e
        if doc.get("manifest_sha256") != self.sha256:
            raise CheckFailed(f"the server at {self.url} serves a different bundle (manifest sha256 "
                              f"{str(doc.get('manifest_sha256'))[:12]}..., here {self.sha256[:12]}...)")
        self.link.add_rtt(ms + self._emulated_ms(0, 0))
        return doc

    def _emulated_ms(self, sent: int, received: int) -> float:
        e = self.emulate
        if e is None:
            return 0.0
        return float(e.rtt_ms) + sent * 8.0 / (float(e.uplink_mbps) * 1e3) + received * 8.0 / (
            float(e.downlink_mbps) * 1e3)

    # ---------------------------------------------------------------- inference

    def infer(self, inputs: dict[str, np.ndarray], *, local_only: bool = False) -> InferResult:
        """One inference (see the module docstring for the fall-back and adaptive rules)."""
        names = self.input_names()
        if set(inputs) != set(names):
            raise InputError(f"the bundle needs inputs {names}, got {sorted(inputs)}")
        for t in self.manifest.inputs:
            a = inputs[t.name]
            if a.dtype != np.dtype(t.dtype) or a.ndim != len(t.shape) or any(
                    w > 0 and w != g for w, g in zip(t.shape, a.shape)):
                raise InputError(f"input {t.name!r}: {a.dtype.name} {list(a.shape)}, the bundle expects "
                                 f"{t.dtype} {t.shape}")
        t0 = time.perf_counter()
        if local_only or self.url is None:
            out = self.run_local(inputs)
            ms = (time.perf_counter() - t0) * 1e3
            return InferResult(out, "local", -1, ms, ms, None, None,
                               reason="--local-only" if local_only else "no cloud URL given")
        v = self.choose_variant()
        if not v.is_split:
            out = self.run_local(inputs) if v.index == -1 else self._finish_local(v, dict(inputs))
            ms = (time.perf_counter() - t0) * 1e3
            bw = self.link.uplink_mbps()
            return InferResult(out, "local", v.index, ms, ms, None, None,
                               reason="the bundle's plan is device-only" if v.index == -1 else
                               f"the network schedule prescribes device-only at {bw:.3g} Mbit/s (measured)",
                               adaptive_note=self.adaptive_note)
        pool = self.runner.run(v.device_parts, dict(inputs))
        dev_ms = (time.perf_counter() - t0) * 1e3
        if time.monotonic() < self._down_until:
            return self._fallback(v, pool, t0, dev_ms, self._down_reason)
        try:
            if not self._checked:
                self.health()
                self._checked = True
            payload = wire.encode({n: pool[n] for n in v.cut}, compress=self.compress, meta={"variant": v.index})
            t1 = time.perf_counter()
            status, headers, data = self._request("POST", "/v1/infer", payload)
            if status != 200:
                self._raise_for(status, data)
            emu = self._emulated_ms(len(payload), len(data))
            if emu:
                time.sleep(emu / 1e3)
            req_ms = (time.perf_counter() - t1) * 1e3
            try:
                remote = wire.decode(data, {n: (None, pool_dtype(self.manifest, n)) for n in v.remote_outputs})
            except wire.WireError as e:
                raise ServerUnavailable(f"bad answer from the server: {e}") from e
        except ServerUnavailable as e:
            self._down_until = time.monotonic() + self.retry_after_s
            self._down_reason = str(e)
            return self._fallback(v, pool, t0, dev_ms, str(e))
        try:
            server_ms = float(headers.get("x-edgeplan-compute-ms", "0"))
        except ValueError:
            server_ms = 0.0
        net_ms = max(req_ms - server_ms, 0.0)
        self.link.add(len(payload), net_ms)
        pool.update(remote)
        out = {t.name: pool[t.name] for t in self.manifest.outputs}
        total = (time.perf_counter() - t0) * 1e3
        return InferResult(out, "split", v.index, total, dev_ms, net_ms, server_ms, len(payload), len(data),
                           adaptive_note=self.adaptive_note)

    def _finish_local(self, v: Variant, pool: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.runner.run(v.parts, pool)
        return {t.name: pool[t.name] for t in self.manifest.outputs}

    def _fallback(self, v: Variant, pool: dict[str, np.ndarray], t0: float, dev_ms: float, why: str) -> InferResult:
        self.runner.run(v.remote_parts, pool)
        out = {t.name: pool[t.name] for t in self.manifest.outputs}
        total = (time.perf_counter() - t0) * 1e3
        return InferResult(out, "local-fallback", v.index, total, total, None, None,
                           reason=f"fell back to local: {why}", adaptive_note=self.adaptive_note)

    def repeat(self, inputs: dict[str, np.ndarray], n: int, *, local_only: bool = False,
               progress: Callable[[int, int], None] | None = None) -> RepeatReport:
        """``n`` sequential inferences; latency percentiles and throughput in the report."""
        if n < 1:
            raise ConfigError("--repeat must be at least 1")
        results = []
        t0 = time.perf_counter()
        for i in range(n):
            results.append(self.infer(inputs, local_only=local_only))
            if progress:
                progress(i + 1, n)
        return RepeatReport(tuple(results), time.perf_counter() - t0)


def pool_dtype(manifest: Any, name: str) -> str:
    for t in manifest.outputs:
        if t.name == name:
            return t.dtype
    return "float32"


def load_input(bundle_dir: str | Path, path: str | Path) -> dict[str, np.ndarray]:
    """Inputs from a .npy (one-input models) or .npz (keys = input names), never unpickling."""
    from edgeplan.planner.bundle import load_manifest

    m = load_manifest(bundle_dir)
    p = Path(path)
    names = [t.name for t in m.inputs]
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {p} as .npy/.npz (pickled arrays are refused): {e}") from e
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise InputError(f"the model has {len(names)} inputs {names}: pass an .npz keyed by input name")
        arrays = {names[0]: loaded}
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    dtypes = {t.name: np.dtype(t.dtype) for t in m.inputs}
    out = {}
    for k, a in arrays.items():
        if k in dtypes and a.dtype != dtypes[k] and a.dtype.kind == dtypes[k].kind == "f":
            a = a.astype(dtypes[k])  # float64 .npy files are common; the cast is exact for the value range
        out[k] = a
    return out


@dataclass(frozen=True)
class RunReport:
    """What ``edgeplan run`` returns."""

    result: InferResult  # the last inference
    repeat: RepeatReport | None
    output_path: Path | None
    adaptive_note: str | None

    def to_dict(self) -> dict[str, Any]:
        d = {"last": self.result.to_dict(), "output": str(self.output_path) if self.output_path else None,
             "adaptive_note": self.adaptive_note}
        if self.repeat is not None:
            d["repeat"] = self.repeat.to_dict()
        return d


def run_bundle(
    bundle_dir: str | Path,
    input_path: str | Path,
    cloud_url: str | None,
    *,
    token: str | None = None,
    output_path: str | Path | None = None,
    local_only: bool = False,
    repeat: int = 1,
    timeout_s: float = 5.0,
    cafile: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunReport:
    """``edgeplan run`` as one call: load the input, infer (``repeat`` times), write the output."""
    from edgeplan.hardware_profiles.atomic import atomic_path

    if cloud_url is None and not local_only:
        raise ConfigError("pass --cloud URL (or --local-only to run the whole model on this device)")
    inputs = load_input(bundle_dir, input_path)
    client = SplitClient(bundle_dir, None if local_only else cloud_url, token=token, timeout_s=timeout_s,
                         cafile=cafile)
    try:
        rep = client.repeat(inputs, repeat, local_only=local_only, progress=progress)
    finally:
        client.close()
    last = rep.results[-1]
    out = None
    if output_path is not None:
        out = Path(output_path)
        arrays = list(last.outputs.values())
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                if len(arrays) == 1 and out.suffix != ".npz":
                    np.save(f, arrays[0], allow_pickle=False)
                else:
                    np.savez(f, **last.outputs)
    return RunReport(last, rep if repeat > 1 else None, out, client.adaptive_note)


__all__ = ["InferResult", "LinkEstimator", "RepeatReport", "RunReport", "SplitClient", "load_input", "run_bundle"]
