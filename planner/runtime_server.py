"""The cloud side of the split runtime: an HTTP server that runs a bundle's cloud part(s) on received cut tensors.

``make_server(bundle_dir, host, port, token=..., tls=..., max_request_bytes=...)`` returns a stdlib
``ThreadingHTTPServer`` (no new dependencies); ``server.serve_forever()`` runs it, ``server.shutdown()``
stops it (tests run it in a thread on port 0). ``edgeplan serve`` is a thin wrapper.

Endpoints:
- ``POST /v1/infer``: body = an EPW1 payload (``planner.wire``) with exactly the cut tensors of one cut of
  the bundle; header ``meta.variant`` picks the cut: ``-1`` (default) the bundle's plan, ``i >= 0`` the
  parts of network-schedule segment ``i`` (bundles written with schedule parts). The server runs every
  non-device part in tier order (a three-tier bundle's edge-server and cloud parts both run here) and
  answers 200 with an EPW1 payload of the graph outputs those parts produce (always raw fp32: outputs
  are small and must be exact). Header ``X-Edgeplan-Compute-Ms`` is the server's measured compute time
  (ORT, wall clock) so a client can separate network time from compute time.
- ``GET /v1/health``: JSON ``{"ok": true, "manifest_sha256", "plan", "wire_version", "variants"}``; a
  client checks the hash so it never talks to a server holding a different bundle.

Security decisions:
- Bearer token (``Authorization: Bearer <token>``) compared with ``hmac.compare_digest`` (constant time);
  when a token is configured every endpoint, health included, needs it (401 otherwise).
- TLS: pass an ``ssl.SSLContext`` or ``(cert, key)`` paths. The handshake runs in the handler thread
  (``do_handshake_on_connect=False``), so a client that stalls in the handshake cannot block ``accept``.
- ``Content-Length`` is required and checked against ``max_request_bytes`` *before* reading the body
  (413, connection closed, body never read); a missing/invalid length is 411/400. Every socket read has
  a timeout (``request_timeout_s``), so a slow-loris client holds one thread for at most that long.
- Payloads are parsed only by ``wire.decode`` with the expected names/dtypes/shapes of the chosen cut
  (400 with a one-line reason otherwise). No pickle anywhere. A failing request never stops the server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeplan.hardware_profiles.errors import ConfigError, InputError
from edgeplan.planner import wire

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(bool)": "bool"}


# ------------------------------------------------------------------------------------------ bundle variants


@dataclass(frozen=True)
class Variant:
    """One way to run a bundle: the plan's own parts (index -1) or one network-schedule segment's (i >= 0).

    ``device_parts`` run on the device (tier 0), ``remote_parts`` on the server. ``cut`` lists the tensors
    sent up (inputs of the remote parts that they do not produce themselves). ``min_mbps``/``max_mbps``:
    the uplink range where the schedule prescribes this cut (None for the plan's own parts).
    """

    index: int
    parts: tuple[Any, ...]  # bundle.PartRef
    device_parts: tuple[Any, ...]
    remote_parts: tuple[Any, ...]
    cut: tuple[str, ...]
    remote_outputs: tuple[str, ...]
    min_mbps: float | None = None
    max_mbps: float | None = None

    @property
    def is_split(self) -> bool:
        return bool(self.remote_parts) and bool(self.device_parts)


def manifest_sha256(bundle_dir: str | Path) -> str:
    return hashlib.sha256((Path(bundle_dir) / "manifest.json").read_bytes()).hexdigest()


def bundle_variants(manifest: Any) -> list[Variant]:
    """The plan's variant first (index -1), then one per schedule segment with parts."""
    out_names = [t.name for t in manifest.outputs]

    def make(index: int, parts: list[Any], seg: dict | None) -> Variant:
        dev = tuple(p for p in parts if p.tier == 0)
        rem = tuple(p for p in parts if p.tier > 0)
        produced = {o for p in rem for o in p.outputs}
        cut: list[str] = []
        for p in rem:
            cut += [i for i in p.inputs if i not in produced and i not in cut]
        rem_out = tuple(n for n in out_names if n in produced)
        return Variant(index=index, parts=tuple(parts), device_parts=dev, remote_parts=rem, cut=tuple(cut),
                       remote_outputs=rem_out,
                       min_mbps=None if seg is None else float(seg["min_mbps"]),
                       max_mbps=None if seg is None else float(seg["max_mbps"]))

    variants = [make(-1, list(manifest.parts), None)]
    segs = (manifest.schedule or {}).get("segments", [])
    for i, parts in enumerate(manifest.schedule_parts or []):
        variants.append(make(i, list(parts), segs[i] if i < len(segs) else None))
    return variants


def new_session(path: Path, threads: int | None = None):
    """An ORT CPU session. Default: 1 intra-op thread and no spin-waiting. Parts at batch 1 are small, the
    server runs requests on several threads at once, and on a shared 2-core machine ORT's default
    spinning thread pool was measured to add tens of ms of jitter to a sub-ms part; the host profile is
    calibrated at 1 thread too, so predictions and runtime agree on the setting."""
    from edgeplan.compressor.ort_timing import make_session

    return make_session(path, threads or 1, spinning=False)


class PartRunner:
    """Runs bundle parts by name with cached ORT sessions (``InferenceSession.run`` is thread-safe)."""

    def __init__(self, bundle_dir: Path, threads: int | None = None) -> None:
        self.dir = Path(bundle_dir)
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def session(self, file: str):
        with self._lock:
            s = self._sessions.get(file)
            if s is None:
                s = self._sessions[file] = new_session(self.dir / file, self.threads)
            return s

    def run(self, parts: tuple[Any, ...], pool: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``parts`` in order over ``pool`` (updated in place with every part's outputs)."""
        for p in parts:
            s = self.session(p.file)
            feed = {i.name: pool[i.name] for i in s.get_inputs()}
            outs = [o.name for o in s.get_outputs()]
            pool.update(zip(outs, (np.asarray(v) for v in s.run(outs, feed))))
        return pool

    def input_specs(self, parts: tuple[Any, ...], names: tuple[str, ...]) -> dict[str, tuple[list, str]]:
        """name -> (shape with -1 for symbolic dims, numpy dtype) for ``names`` read by ``parts``."""
        specs: dict[str, tuple[list, str]] = {}
        for p in parts:
            for i in self.session(p.file).get_inputs():
                if i.name in names and i.name not in specs:
                    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (i.shape or [])]
                    specs[i.name] = (shape, _ORT_TYPES.get(i.type, "float32"))
        return specs


# ------------------------------------------------------------------------------------------ server


class BundleService:
    """What the HTTP handler calls: validated inference on one bundle (no HTTP in here, testable alone)."""

    def __init__(self, bundle_dir: str | Path, threads: int | None = None) -> None:
        from edgeplan.planner.bundle import load_manifest

        self.dir = Path(bundle_dir)
        self.manifest = load_manifest(self.dir)
        self.sha256 = manifest_sha256(self.dir)
        self.variants = {v.index: v for v in bundle_variants(self.manifest)}
        if not any(v.is_split for v in self.variants.values()):
            raise ConfigError(f"{self.dir}: the bundle has no cloud part to serve (a device-only plan)")
        self.runner = PartRunner(self.dir, threads)
        self.expected: dict[int, dict[str, tuple[list, str]]] = {}
        manifest_cuts = {c.name: (list(c.shape), c.dtype) for c in self.manifest.cut_tensors}
        for idx, v in self.variants.items():
            if not v.is_split:
                continue
            specs = self.runner.input_specs(v.remote_parts, v.cut)  # loads every session up front
            if idx == -1:  # the manifest is the authority for the plan's own cut
                specs.update({n: manifest_cuts[n] for n in v.cut if n in manifest_cuts})
            self.expected[idx] = specs

    def health(self) -> dict[str, Any]:
        return {"ok": True, "manifest_sha256": self.sha256, "plan": self.manifest.plan_name,
                "wire_version": wire.VERSION, "variants": sorted(self.expected)}

    def infer(self, payload: bytes, max_bytes: int | None = None) -> tuple[bytes, float]:
        """Decode, run the remote parts, encode the outputs. Returns (payload, compute_ms). ``WireError``
        for anything the client got wrong."""
        tensors, meta = wire.decode_with_meta(payload, max_bytes=max_bytes)
        idx = meta.get("variant", -1)
        if not isinstance(idx, int) or isinstance(idx, bool) or idx not in self.expected:
            raise wire.WireError(f"unknown cut variant {idx!r} (this server has {sorted(self.expected)})")
        wire.check_expected(tensors, self.expected[idx])
        v = self.variants[idx]
        t0 = time.perf_counter()
        pool = self.runner.run(v.remote_parts, dict(tensors))
        ms = (time.perf_counter() - t0) * 1e3
        return wire.encode({n: pool[n] for n in v.remote_outputs}), ms


class RuntimeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    service: BundleService
    token: bytes | None
    max_request_bytes: int
    request_timeout_s: float
    on_event: Callable[[str], None] | None
    tls: bool

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def process_request(self, request, client_address) -> None:
        with self._conn_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._conn_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop serving and drop every open connection (in-flight requests get a reset, as when the process
        dies). ``shutdown()`` alone would let kept-alive connections keep being served by their threads."""
        self.shutdown()
        self.server_close()
        with self._conn_lock:
            conns = list(self._open)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:  # noqa: D401 - keep serving, report quietly
        if self.on_event:
            self.on_event(f"connection from {client_address[0]} failed")


class _Handler(BaseHTTPRequestHandler):
    server: RuntimeServer
    protocol_version = "HTTP/1.1"
    server_version = "edgeplan-runtime"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.request_timeout_s
        super().setup()
        try:  # headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK add ~40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.on_event:
            self.server.on_event(format % args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json", extra: dict | None = None,
              close: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, msg: str, close: bool = False, extra: dict | None = None) -> None:
        self._send(code, json.dumps({"error": msg}).encode(), extra=extra, close=close)

    def _authorised(self) -> bool:
        tok = self.server.token
        if tok is None:
            return True
        got = self.headers.get("Authorization", "")
        given = got[7:].strip().encode() if got[:7].lower() == "bearer " else b""
        if hmac.compare_digest(given, tok):
            return True
        self._error(401, "missing or bad bearer token", extra={"WWW-Authenticate": 'Bearer realm="edgeplan"'},
                    close=True)
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._authorised():
            return
        if self.path != "/v1/health":
            self._error(404, f"no such endpoint {self.path}")
            return
        self._send(200, json.dumps(self.server.service.health()).encode())

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._authorised():
            return
        if self.path != "/v1/infer":
            self._error(404, f"no such endpoint {self.path}", close=True)
            return
        raw_len = self.headers.get("Content-Length")
        if raw_len is None:
            self._error(411, "Content-Length is required", close=True)
            return
        try:
            length = int(raw_len)
            if length < 0:
                raise ValueError
        except ValueError:
            self._error(400, "bad Content-Length", close=True)
            return
        limit = self.server.max_request_bytes
        if length > limit:  # checked before reading a byte of the body
            self._error(413, f"request of {length} bytes exceeds the limit of {limit}", close=True)
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self._error(400, "request body shorter than Content-Length", close=True)
            return
        try:
            out, ms = self.server.service.infer(body, max_bytes=limit)
        except InputError as e:
            self._error(400, str(e))
            return
        except Exception as e:  # noqa: BLE001 - a failing part must not stop the server
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            self._error(500, f"running the cloud part failed: {first}")
            return
        self._send(200, out, wire.CONTENT_TYPE, extra={"X-Edgeplan-Compute-Ms": f"{ms:.4f}"})


def tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the TLS certificate/key ({cert}, {key}): {e}") from e
    return ctx


def make_server(
    bundle_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8471,
    *,
    token: str | None = None,
    tls: ssl.SSLContext | tuple[str | Path, str | Path] | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    request_timeout_s: float = 30.0,
    threads: int | None = None,
    on_event: Callable[[str], None] | None = None,
) -> RuntimeServer:
    """A ready (bound, not yet serving) server for ``bundle_dir``. Call ``serve_forever()`` (in a thread
    if you like) and ``shutdown()`` + ``server_close()`` to stop. Port 0 picks a free port (see ``.url``).

    Raises ``CheckFailed`` for a broken bundle (it is verified first), ``ConfigError`` for a device-only
    bundle or bad TLS files, ``InputError`` if the address cannot be bound.
    """
    from edgeplan.planner.bundle import verify_bundle

    if token is not None and not token.strip():
        raise ConfigError("the bearer token is empty")
    if max_request_bytes <= 0:
        raise ConfigError("max_request_bytes must be positive")
    verify_bundle(bundle_dir)
    service = BundleService(bundle_dir, threads=threads)
    try:
        srv = RuntimeServer((host, port), _Handler)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    srv.service = service
    srv._open = set()
    srv._conn_lock = threading.Lock()
    srv.token = token.strip().encode() if token is not None else None
    srv.max_request_bytes = int(max_request_bytes)
    srv.request_timeout_s = float(request_timeout_s)
    srv.on_event = on_event
    srv.tls = tls is not None
    if tls is not None:
        ctx = tls if isinstance(tls, ssl.SSLContext) else tls_context(*tls)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    return srv


def read_token_file(path: str | Path) -> str:
    """The first line of ``path``, stripped (a token file must not be empty)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8").strip().splitlines()
    except OSError as e:
        raise InputError(f"cannot read the token file {p}: {e.strerror or e}") from e
    if not text or not text[0].strip():
        raise ConfigError(f"the token file {p} is empty")
    return text[0].strip()


__all__ = ["BundleService", "DEFAULT_MAX_REQUEST_BYTES", "PartRunner", "RuntimeServer", "Variant", "bundle_variants",
           "make_server", "manifest_sha256", "read_token_file", "tls_context"]
