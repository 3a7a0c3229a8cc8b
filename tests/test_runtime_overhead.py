"""The split runtime's per-request overhead, measured with the real server and client on loopback."""

from __future__ import annotations

import math
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from edgeplan.hardware_profiles.errors import ConfigError
from edgeplan.planner.runtime_overhead import (
    SANE_MB_PER_S,
    RequestOverhead,
    measure_request_overhead_ms,
    measure_runtime_costs,
    serialise_rate,
)
from edgeplan.planner.split import DEFAULT_SERIALISE_MB_PER_S


def test_measure_request_overhead_is_positive_and_shuts_the_server_down():
    tmp = Path(tempfile.gettempdir())
    before_dirs = set(tmp.glob("edgeplan-overhead-*"))
    before_threads = {t.ident for t in threading.enumerate()}
    r = measure_request_overhead_ms(repeats=15, warmup=3)
    assert math.isfinite(r.median_ms) and math.isfinite(r.p90_ms)
    assert 0 < r.median_ms <= r.p90_ms < 1000  # a loopback request costs something, and not seconds
    assert r.wall_median_ms > r.predicted_ms >= 0 and r.repeats == 15 and r.cut_bytes == 16
    assert r.median_ms == pytest.approx(r.wall_median_ms - r.predicted_ms)
    assert "loopback" in r.how and r.to_dict()["how"] == r.how
    assert 0 < r.request_ms < r.wall_median_ms and 0 < r.device_part_ms and 0 < r.server_part_ms
    # the server is gone: its serving thread has ended (joined before returning), its connection handlers end
    # as soon as their socket is closed, and its port refuses connections
    assert not [t for t in threading.enumerate() if t.name == "edgeplan-overhead-server"]
    deadline = time.monotonic() + 5
    while [t for t in threading.enumerate() if t.ident not in before_threads] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.ident not in before_threads]
    u = urlsplit(r.url)
    assert u.hostname == "127.0.0.1"
    with pytest.raises(OSError):
        socket.create_connection((u.hostname, u.port), timeout=2).close()
    # and the throw-away bundle folder is removed
    assert set(tmp.glob("edgeplan-overhead-*")) == before_dirs


def test_measure_request_overhead_rejects_bad_repeats():
    with pytest.raises(ConfigError):
        measure_request_overhead_ms(repeats=0)
    with pytest.raises(ConfigError):
        measure_runtime_costs(repeats=0)
    with pytest.raises(ConfigError):
        measure_runtime_costs(repeats=3, large_elements=4)


def test_measure_runtime_costs_gives_a_positive_finite_rate():
    """Real probes on loopback: a 1 MB cut costs measurably more than a 16-byte one (about 1 ms here; the
    noise of 20 medians is ~0.1 ms), so the rate is measured, not the fall-back."""
    before = set(Path(tempfile.gettempdir()).glob("edgeplan-overhead-*"))
    c = measure_runtime_costs(repeats=20, warmup=3, large_elements=1 << 18)
    s = c.serialise
    assert s.measured and not s.note, s.note
    assert math.isfinite(s.mb_per_s) and SANE_MB_PER_S[0] <= s.mb_per_s <= SANE_MB_PER_S[1]
    assert c.overhead.cut_bytes == 16 and c.large.cut_bytes == 4 << 18 and s.delta_bytes == (4 << 18) - 16
    assert s.extra_ms == pytest.approx(c.large.median_ms - c.overhead.median_ms) and s.extra_ms > 0
    assert s.mb_per_s == pytest.approx(s.delta_bytes / s.extra_ms / 1e3)
    # the large probe's prediction has more compute than the tiny one's (it is subtracted), both small
    assert 0 < c.overhead.predicted_ms < c.large.predicted_ms < c.large.wall_median_ms
    d = c.to_dict()
    assert d["serialise"]["mb_per_s"] == s.mb_per_s and "interleaved" in d["serialise"]["how"]
    assert set(Path(tempfile.gettempdir()).glob("edgeplan-overhead-*")) == before


def _probe(median_ms: float, cut_bytes: int) -> RequestOverhead:
    return RequestOverhead(median_ms=median_ms, p90_ms=median_ms, repeats=9, wall_median_ms=median_ms + 0.1,
                           predicted_ms=0.1, cut_bytes=cut_bytes, profile="host", url="http://127.0.0.1:1")


def test_serialise_rate_derivation_and_guards():
    tiny = _probe(0.5, 16)
    ok = serialise_rate(tiny, _probe(1.5, 1_000_016), 123.0)  # 1 MB more for 1 ms more = 1000 MB/s
    assert ok.measured and ok.mb_per_s == pytest.approx(1000.0) and ok.extra_ms == pytest.approx(1.0)
    assert ok.delta_bytes == 1_000_000 and "1.000 ms more" in ok.how and ok.to_dict()["measured"]
    for large, why in ((_probe(0.5, 1_000_016), "not slower"), (_probe(0.4, 1_000_016), "not slower"),
                       (_probe(0.5 + 1e-7, 1_000_016), "outside the plausible"),  # 10 TB/s
                       (_probe(2000.5, 1_000_016), "outside the plausible")):  # 0.5 MB/s
        r = serialise_rate(tiny, large, DEFAULT_SERIALISE_MB_PER_S)
        assert not r.measured and r.mb_per_s == DEFAULT_SERIALISE_MB_PER_S and why in r.note
        assert r.how.startswith("assumed default") and why in r.how
    with pytest.raises(ConfigError):
        serialise_rate(tiny, _probe(1.0, 16), 500.0)
