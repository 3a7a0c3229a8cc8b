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
from edgeplan.planner.runtime_overhead import measure_request_overhead_ms


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
