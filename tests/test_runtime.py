"""Split runtime: wire format, server security/validation, client fall-back and adaptation (loopback only).

Every server runs in a thread on port 0 and is stopped in a ``finally``; every socket has a timeout.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_split import _residual_onnx, _synth_options, _tiers_for  # noqa: E402

from edgeplan.hardware_profiles.errors import ConfigError, InputError  # noqa: E402
from edgeplan.planner import wire  # noqa: E402
from edgeplan.planner.bundle import write_bundle  # noqa: E402
from edgeplan.planner.runtime_client import SplitClient  # noqa: E402
from edgeplan.planner.runtime_server import make_server  # noqa: E402
from edgeplan.planner.split_extract import run_model  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two bundles of a tiny residual CNN: one from run_split (pi4 -> t4 over 4g, the split plan), and one
    whose network schedule has two segments (device-only below ~8.6 Mbit/s, a split above) with parts."""
    from edgeplan.planner.graph import analyse
    from edgeplan.planner.split import LinkSpec, build_problem, run_split, solve
    from edgeplan.planner.split_schedule import network_schedule

    d = tmp_path_factory.mktemp("rt")
    src = _residual_onnx(d / "res.onnx")
    res = run_split(src, tiers=["pi4", "t4"], links=["4g"])
    plan = res.plans.best if res.plans.best.is_split else res.plans.best_offload
    assert plan.is_split
    shapes = {n: (s, dt) for n, s, dt in zip(res.problem.tensor_names, res.problem.tensor_shapes,
                                             res.problem.tensor_dtypes)}
    main = write_bundle(d / "main", plan=plan, source_onnx=src, profiles={"target": res.tier_profiles[0],
                        "cloud": res.tier_profiles[1]}, link=res.link_profiles[0], schedule=res.schedule,
                        tensor_shapes=shapes)
    analysis = analyse(str(src))
    problem = build_problem(analysis, _tiers_for(analysis), [LinkSpec("l", 10.0, 10.0, 5.0)], _synth_options())
    sched = network_schedule(problem)
    assert len(sched.segments) == 2 and sched.segments[0].nodes_on_device == problem.n_nodes
    adaptive = write_bundle(d / "adaptive", plan=solve(problem), source_onnx=src, schedule=sched,
                            schedule_parts=True)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    return {"src": src, "main": main, "adaptive": adaptive, "sched": sched, "x": x,
            "y": run_model(src, {"x": x})["y"]}


@contextmanager
def serving(bundle, **kw):
    srv = make_server(bundle, "127.0.0.1", 0, **kw)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.stop()
        t.join(timeout=5)


def _post(srv, body: bytes, headers: dict | None = None, path="/v1/infer", method="POST"):
    host, port = srv.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ------------------------------------------------------------------------------------------ wire format


def test_wire_round_trip_and_compression_error_bounds():
    rng = np.random.default_rng(0)
    t = {"a": rng.standard_normal((2, 8, 5, 5)).astype(np.float32), "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
         "empty": np.zeros((0, 4), np.float32)}
    back = wire.decode(wire.encode(t), {"a": ([2, 8, -1, 5], "float32"), "ids": ([2, 3], "int64"),
                                        "empty": ([0, 4], "float32")})
    assert all(np.array_equal(back[k], t[k]) and back[k].dtype == t[k].dtype for k in t)
    raw_len = len(wire.encode(t))
    p16 = wire.encode(t, compress="fp16")
    b16 = wire.decode(p16)
    assert b16["a"].dtype == np.float32 and np.array_equal(b16["ids"], t["ids"])  # ints never compressed
    assert np.abs(b16["a"] - t["a"]).max() <= np.abs(t["a"]).max() * 2 ** -11
    p8 = wire.encode(t, compress="int8")
    b8 = wire.decode(p8)
    scale = (t["a"].max() - t["a"].min()) / 255
    assert np.abs(b8["a"] - t["a"]).max() <= scale / 2 + 1e-6
    assert len(p8) < len(p16) < raw_len
    # the real wire rounds exactly as the planner's wire_cast simulation does
    from edgeplan.planner.split_extract import wire_cast

    np.testing.assert_allclose(b8["a"], wire_cast(t["a"], "int8"), atol=1e-6)
    with pytest.raises(wire.WireError):
        wire.encode(t, compress="zip")


def _tamper(payload: bytes, fn) -> bytes:
    hlen = int.from_bytes(payload[8:12], "little")
    header = json.loads(payload[12:12 + hlen])
    fn(header)
    h = json.dumps(header).encode()
    return payload[:8] + len(h).to_bytes(4, "little") + h + payload[12 + hlen:]


def test_wire_rejects_malformed_payloads():
    good = wire.encode({"a": np.ones((2, 3), np.float32)})
    hlen = int.from_bytes(good[8:12], "little")
    exp = {"a": ([2, 3], "float32")}
    assert issubclass(wire.WireError, InputError)
    bad = {
        "magic": b"XXXX" + good[4:],
        "version": good[:4] + (2).to_bytes(2, "little") + good[6:],
        "flags": good[:6] + (1).to_bytes(2, "little") + good[8:],
        "short": good[:7],
        "header past end": good[:8] + (10 ** 6).to_bytes(4, "little") + good[12:],
        "truncated data": good[:-1],
        "trailing": good + b"\0",
        "not json": good[:12] + b"{" * hlen + good[12 + hlen:],
        "nbytes": _tamper(good, lambda h: h["tensors"][0].update(nbytes=8)),
        "shape": _tamper(good, lambda h: h["tensors"][0].update(shape=[3, 2])),
        "negative": _tamper(good, lambda h: h["tensors"][0].update(shape=[-2, -3])),
        "dtype": _tamper(good, lambda h: h["tensors"][0].update(dtype="int32")),
        "object dtype": _tamper(good, lambda h: h["tensors"][0].update(dtype="object")),
        "offset": _tamper(good, lambda h: h["tensors"][0].update(offset=4)),
        "extra key": _tamper(good, lambda h: h["tensors"][0].update(pickle=True)),
        "name": _tamper(good, lambda h: h["tensors"][0].update(name="b")),
        "dup": _tamper(good, lambda h: h["tensors"].append(dict(h["tensors"][0]))),
        "nesting": good[:8] + (200_000).to_bytes(4, "little") + b"[" * 100_000 + b"]" * 100_000,
        "nan": _tamper(good, lambda h: h["meta"].update(x=1000)).replace(b'"x": 1000', b'"x": NaN '),
    }
    for what, payload in bad.items():
        with pytest.raises(wire.WireError):
            wire.decode(payload, exp)
            pytest.fail(f"accepted a payload with a bad {what}")
    with pytest.raises(wire.WireError, match="limit"):
        wire.decode(good, exp, max_bytes=len(good) - 1)
    assert wire.decode(good, exp, max_bytes=len(good))["a"].shape == (2, 3)


# ------------------------------------------------------------------------------------------ server + client


def test_end_to_end_split_equals_full_model_and_cli(bundles, tmp_path, capsys):
    from edgeplan.cli.main import main

    with serving(bundles["main"], token=TOKEN) as srv:
        client = SplitClient(bundles["main"], srv.url, token=TOKEN, timeout_s=5)
        r = client.infer({"x": bundles["x"]})
        client.close()
        assert r.mode == "split" and r.sent_bytes > 0 and r.server_ms is not None
        np.testing.assert_allclose(r.outputs["y"], bundles["y"], rtol=1e-5, atol=1e-5)
        assert r.adaptive_note and "no schedule parts" in r.adaptive_note
        np.save(tmp_path / "x.npy", bundles["x"])
        (tmp_path / "tok").write_text(TOKEN + "\n")
        code = main(["run", str(bundles["main"]), "--input", str(tmp_path / "x.npy"), "--cloud", srv.url,
                     "--token-file", str(tmp_path / "tok"), "-o", str(tmp_path / "y.npy"), "--repeat", "5", "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert code == 0 and doc["repeat"]["modes"] == {"split": 5}
        assert doc["repeat"]["p50_ms"] <= doc["repeat"]["p99_ms"] and doc["repeat"]["throughput_per_s"] > 0
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), bundles["y"], rtol=1e-5, atol=1e-5)
        # a wrong token from the CLI is an error (exit 2), not a silent fall-back
        (tmp_path / "bad").write_text("nope\n")
        code = main(["run", str(bundles["main"]), "--input", str(tmp_path / "x.npy"), "--cloud", srv.url,
                     "--token-file", str(tmp_path / "bad")])
        assert code == 2 and "401" in capsys.readouterr().err
    # --local-only needs no server
    code = main(["run", str(bundles["main"]), "--input", str(tmp_path / "x.npy"), "--local-only", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["last"]["mode"] == "local"


def test_bad_requests_get_4xx_and_server_keeps_serving(bundles):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    good = wire.encode({c: np.zeros((1, 8, 1, 1), np.float32) for c in ["gap"]})
    with serving(bundles["main"], token=TOKEN, max_request_bytes=4096) as srv:
        cut = list(srv.service.expected[-1])
        shape, dtype = srv.service.expected[-1][cut[0]]
        good = wire.encode({cut[0]: np.zeros(shape, dtype)})
        assert _post(srv, good, {})[0] == 401
        assert _post(srv, good, {"Authorization": "Bearer wrong"})[0] == 401
        assert _post(srv, b"", {}, "/v1/health", "GET")[0] == 401
        assert _post(srv, b"garbage", auth)[0] == 400
        assert _post(srv, wire.encode({"other": np.zeros(shape, dtype)}), auth)[0] == 400
        assert _post(srv, wire.encode({cut[0]: np.zeros(shape, np.float64)}), auth)[0] == 400
        assert _post(srv, wire.encode({cut[0]: np.zeros(shape, dtype)}, meta={"variant": 7}), auth)[0] == 400
        status, body = _post(srv, b"\0" * 5000, auth)
        assert status == 413 and b"limit" in body
        # Content-Length is checked before the body is read: a huge claimed length gets 413 at once
        host, port = srv.server_address[:2]
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.putrequest("POST", "/v1/infer")
        c.putheader("Authorization", f"Bearer {TOKEN}")
        c.putheader("Content-Length", str(10 ** 9))
        c.endheaders()
        assert c.getresponse().status == 413
        c.close()
        status, body = _post(srv, good, auth)
        assert status == 200 and set(wire.decode(body)) == {"y"}
        status, body = _post(srv, b"", auth, "/v1/health", "GET")
        assert status == 200 and json.loads(body)["manifest_sha256"] == srv.service.sha256


def test_eight_concurrent_clients(bundles):
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    want = [run_model(bundles["src"], {"x": x})["y"] for x in xs]
    with serving(bundles["main"], token=TOKEN) as srv:
        def work(i):
            c = SplitClient(bundles["main"], srv.url, token=TOKEN, timeout_s=10)
            try:
                return [c.infer({"x": xs[i]}) for _ in range(3)]
            finally:
                c.close()

        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(work, range(8)))
    for i, rs in enumerate(results):
        for r in rs:
            assert r.mode == "split"
            np.testing.assert_allclose(r.outputs["y"], want[i], rtol=1e-5, atol=1e-5)


def test_server_killed_mid_request_client_falls_back(bundles):
    with serving(bundles["main"]) as srv:
        real = srv.service.infer
        entered = threading.Event()

        def slow(payload, max_bytes=None):
            entered.set()
            time.sleep(1.5)
            return real(payload, max_bytes)

        srv.service.infer = slow
        client = SplitClient(bundles["main"], srv.url, timeout_s=10)
        client.health()
        threading.Thread(target=lambda: (entered.wait(5), srv.stop()), daemon=True).start()
        t0 = time.perf_counter()
        r = client.infer({"x": bundles["x"]})
        assert time.perf_counter() - t0 < 5
    assert r.mode == "local-fallback" and r.reason.startswith("fell back to local:")
    np.testing.assert_allclose(r.outputs["y"], bundles["y"], rtol=1e-5, atol=1e-5)
    # the next request does not wait for the dead server again (retry_after_s)
    r2 = client.infer({"x": bundles["x"]})
    assert r2.mode == "local-fallback"


def test_timeout_and_unreachable_fall_back(bundles, tmp_path, capsys):
    from edgeplan.cli.main import main

    with serving(bundles["main"]) as srv:
        real = srv.service.infer
        srv.service.infer = lambda p, max_bytes=None: (time.sleep(1.0), real(p, max_bytes))[1]
        client = SplitClient(bundles["main"], srv.url, timeout_s=0.3)
        r = client.infer({"x": bundles["x"]})
        client.close()
        assert r.mode == "local-fallback" and "within 0.3 s" in r.reason
        port = srv.server_address[1]
    np.save(tmp_path / "x.npy", bundles["x"])
    code = main(["run", str(bundles["main"]), "--input", str(tmp_path / "x.npy"), "--cloud",
                 f"http://127.0.0.1:{port}", "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "fell back to local" in out


def test_adaptive_client_follows_the_network_schedule(bundles):
    from edgeplan.planner.split import LinkSpec

    sched = bundles["sched"]
    with serving(bundles["adaptive"]) as srv:
        slow = SplitClient(bundles["adaptive"], srv.url, timeout_s=5, emulate=LinkSpec("slow", 2.0, 50.0, 5.0))
        fast = SplitClient(bundles["adaptive"], srv.url, timeout_s=5, emulate=LinkSpec("fast", 30.0, 50.0, 5.0))
        rs = [slow.infer({"x": bundles["x"]}) for _ in range(4)]
        rf = [fast.infer({"x": bundles["x"]}) for _ in range(4)]
        slow.close()
        fast.close()
    # the first two use the plan's cut (no measurements yet), then the schedule decides
    assert [r.mode for r in rs[:2]] == ["split", "split"]
    bw_slow = slow.link.uplink_mbps()
    assert 0.3 < bw_slow < 2.2  # measured through the emulated 2 Mbit/s link (load only lowers it)
    assert sched.cut_for(bw_slow) is sched.segments[0]
    assert rs[-1].mode == "local" and "prescribes device-only" in rs[-1].reason
    bw_fast = fast.link.uplink_mbps()
    want = sched.segments.index(sched.cut_for(bw_fast))
    assert rf[-1].variant == want and rf[-1].mode == ("split" if want == 1 else "local")
    for r in rs + rf:
        np.testing.assert_allclose(r.outputs["y"], bundles["y"], rtol=1e-5, atol=1e-5)


def test_link_estimator_and_variant_choice_are_deterministic(bundles):
    from edgeplan.planner.runtime_client import LinkEstimator

    est = LinkEstimator()
    assert est.uplink_mbps() is None
    est.add_rtt(10.0)
    est.add(100, 10.2)  # too small to say anything about bandwidth
    assert est.uplink_mbps() is None
    est.add(125_000, 110.0)  # 1 Mbit in 100 ms over the RTT -> 10 Mbit/s
    est.add(125_000, 60.0)  # 20 Mbit/s
    est.add(125_000, 43.333333)  # 30 Mbit/s
    assert est.uplink_mbps() == pytest.approx(20.0, rel=1e-3)
    c = SplitClient(bundles["adaptive"], "http://127.0.0.1:9", timeout_s=1)
    c.link = est
    assert c.choose_variant().index == 1  # 20 Mbit/s is above the ~8.6 Mbit/s breakpoint
    for _ in range(8):  # the window (8) now holds only 2 Mbit/s samples
        est.add(125_000, 510.0)
    assert c.link.uplink_mbps() == pytest.approx(2.0, rel=1e-3)
    chosen = [c.choose_variant().index for _ in range(20)]
    assert chosen.count(0) == 18 and chosen.count(-1) == 2  # device-only, probing with the plan's cut


def test_tls_with_self_signed_certificate(bundles, tmp_path):
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a self-signed certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    with serving(bundles["main"], token=TOKEN, tls=(cert, key)) as srv:
        assert srv.url.startswith("https://")
        client = SplitClient(bundles["main"], srv.url, token=TOKEN, timeout_s=5, cafile=cert)
        r = client.infer({"x": bundles["x"]})
        client.close()
        assert r.mode == "split"
        np.testing.assert_allclose(r.outputs["y"], bundles["y"], rtol=1e-5, atol=1e-5)
        # a client that does not trust the certificate does not send its data: it falls back
        untrusting = SplitClient(bundles["main"], srv.url, token=TOKEN, timeout_s=5,
                                 ssl_context=ssl.create_default_context())
        r2 = untrusting.infer({"x": bundles["x"]})
        untrusting.close()
        assert r2.mode == "local-fallback" and "TLS" in r2.reason
        # plain HTTP against the TLS port gets nothing useful either, and the server keeps serving
        assert SplitClient(bundles["main"], srv.url.replace("https", "http"), timeout_s=2).infer(
            {"x": bundles["x"]}).mode == "local-fallback"
        client = SplitClient(bundles["main"], srv.url, token=TOKEN, timeout_s=5, cafile=cert)
        assert client.infer({"x": bundles["x"]}).mode == "split"
        client.close()


def test_config_errors(bundles, tmp_path):
    with pytest.raises(ConfigError):
        SplitClient(bundles["main"], "ftp://x", timeout_s=1)
    with pytest.raises(ConfigError):
        make_server(bundles["main"], "127.0.0.1", 0, token="  ")
    other = tmp_path / "other"
    shutil.copytree(bundles["adaptive"], other)
    with serving(bundles["main"]) as srv:
        from edgeplan.hardware_profiles.errors import CheckFailed

        c = SplitClient(other, srv.url, timeout_s=2)
        with pytest.raises(CheckFailed, match="different bundle"):
            c.infer({"x": bundles["x"]})
        c.close()


def test_cli_serve_help_and_config_errors(bundles, tmp_path, capsys):
    from edgeplan.cli.main import main

    assert main(["serve", "--help"]) == 0 and "Example" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    assert main(["serve", str(bundles["main"]), "--tls-cert", str(tmp_path / "c.pem")]) == 2
    assert "go together" in capsys.readouterr().err
    (tmp_path / "empty").write_text("\n")
    assert main(["serve", str(bundles["main"]), "--token-file", str(tmp_path / "empty")]) == 2
    np.save(tmp_path / "x.npy", bundles["x"])
    assert main(["run", str(bundles["main"]), "--input", str(tmp_path / "x.npy")]) == 2  # no --cloud
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert main(["run", str(bundles["main"]), "--input", str(tmp_path / "bad.npy"), "--local-only"]) == 2
    assert "expects" in capsys.readouterr().err


def test_compressed_wire_end_to_end(bundles):
    with serving(bundles["adaptive"]) as srv:
        for comp, tol in (("fp16", 1e-2), ("int8", 5e-2)):
            c = SplitClient(bundles["adaptive"], srv.url, timeout_s=5, compress=comp, adaptive=False)
            raw = SplitClient(bundles["adaptive"], srv.url, timeout_s=5, compress=None, adaptive=False)
            r, r0 = c.infer({"x": bundles["x"]}), raw.infer({"x": bundles["x"]})
            c.close()
            raw.close()
            assert r.mode == r0.mode == "split" and r.sent_bytes < r0.sent_bytes
            scale = float(np.abs(bundles["y"]).max())
            np.testing.assert_allclose(r.outputs["y"], bundles["y"], atol=tol * scale)


def test_real_serve_process_killed_client_falls_back(bundles, tmp_path):
    """`edgeplan serve` as a real process; SIGKILL it; the client falls back and says why."""
    import os
    import re
    import selectors
    import signal

    exe = Path(sys.executable).parent / "edgeplan"
    if not exe.exists():
        pytest.skip("the edgeplan console script is not installed in this environment")
    (tmp_path / "tok").write_text(TOKEN)
    proc = subprocess.Popen([str(exe), "serve", str(bundles["main"]), "--port", "0", "--token-file",
                             str(tmp_path / "tok")], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        text, deadline = b"", time.monotonic() + 30
        while b"Ctrl-C" not in text and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=1):
                text += os.read(proc.stderr.fileno(), 4096)
        m = re.search(rb"(http://127\.0\.0\.1:\d+)", text)
        assert m, text.decode(errors="replace")
        client = SplitClient(bundles["main"], m.group(1).decode(), token=TOKEN, timeout_s=5)
        assert client.infer({"x": bundles["x"]}).mode == "split"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        r = client.infer({"x": bundles["x"]})
        client.close()
        assert r.mode == "local-fallback" and r.reason.startswith("fell back to local:")
        np.testing.assert_allclose(r.outputs["y"], bundles["y"], rtol=1e-5, atol=1e-5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_slow_client_is_cut_off_and_others_are_served(bundles):
    import socket

    with serving(bundles["main"], request_timeout_s=0.5) as srv:
        host, port = srv.server_address[:2]
        s = socket.create_connection((host, port), timeout=5)
        try:
            s.sendall(b"POST /v1/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)  # then stalls
            c = SplitClient(bundles["main"], srv.url, timeout_s=5)
            assert c.infer({"x": bundles["x"]}).mode == "split"  # served while the slow client hangs
            c.close()
            t0 = time.perf_counter()
            data = s.recv(4096)  # the server gives up on the stalled body after its read timeout
            assert time.perf_counter() - t0 < 4.5
            assert data == b"" or b"400" in data.split(b"\r\n")[0]
        finally:
            s.close()
