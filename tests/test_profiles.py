"""Hardware/link profiles: shipped files load, bad input names the problem, `edgeplan profiles` is instant."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edgeplan.hardware_profiles import (
    HardwareProfile,
    ProfileError,
    list_links,
    list_profiles,
    load_link,
    load_profile,
    profile_from_toml,
    profile_to_toml,
)
from edgeplan.hardware_profiles.registry import DATA_DIR, dict_to_toml

EXPECTED = {"pi4", "pi5", "jetson-nano", "jetson-orin-nano", "t4", "a10g", "a100", "h100", "host"}


def test_all_required_profiles_ship_and_validate():
    names = set(list_profiles())
    assert EXPECTED <= names
    for name in names:
        p = load_profile(name)
        assert isinstance(p, HardwareProfile) and p.name == name
        # every numeric field carries provenance (the schema enforces it; check the summary names kinds)
        assert all(p._has_provenance(f) for f in p.numeric_fields())
        assert p.error_band_pct > 0
        if p.kind == "cloud":
            assert p.price_usd_per_hour and p.price_usd_per_hour > 0
            assert "price_usd_per_hour" in p.provenance
        else:
            assert p.price_usd_per_hour is None


def test_h100_is_measured_and_others_scaled_from_it():
    h = load_profile("h100")
    assert h.peak_gops["fp32"] == 51000.0 and h.peak_gops["fp16"] == 747000.0
    assert h.provenance_of("peak_gops.fp32").kind == "measured"
    assert h.provenance_of("memory_bandwidth_gbps").kind == "measured"
    assert h.provenance_of("per_node_overhead_us").kind == "estimate"
    assert h.overhead_mode == "max"  # launch-bound at small batch
    for name in ("t4", "a10g", "a100"):
        p = load_profile(name)
        prov = p.provenance_of("peak_gops.fp32")
        assert prov.kind == "fitted" and "scaled from h100 by datasheet ratio" in prov.source
        assert p.peak_gops["fp32"] < h.peak_gops["fp32"]


def test_host_profile_is_measured_here():
    host = load_profile("host")
    assert host.kind == "host"
    assert host.provenance_of("peak_gops.fp32").kind == "measured"
    assert host.provenance_of("efficiency.conv").kind == "fitted"
    for key in ("cpu_model", "onnxruntime", "threads", "date", "governor"):
        assert key in host.calibration


def test_unknown_profile_lists_valid_names():
    with pytest.raises(ProfileError) as e:
        load_profile("raspberry-pi-9")
    msg = str(e.value)
    assert "raspberry-pi-9" in msg and "pi4" in msg and "h100" in msg


def _pi4_dict() -> dict:
    with (DATA_DIR / "pi4.toml").open("rb") as f:
        return tomllib.load(f)


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(dict_to_toml(data))  # unvalidated: serialise whatever we were given
    return p


def test_malformed_profile_names_the_field(tmp_path):
    data = _pi4_dict()
    data["efficiency"] = {**data["efficiency"], "conv": -0.5}
    with pytest.raises(ProfileError, match=r"efficiency\.conv"):
        profile_from_toml(_write(tmp_path, data))

    data = _pi4_dict()
    data["cores"] = "four"
    with pytest.raises(ProfileError, match=r"field 'cores'"):
        load_profile(str(_write(tmp_path, data)))

    data = _pi4_dict()
    del data["provenance"]["memory_bytes"]
    with pytest.raises(ProfileError, match=r"provenance is missing for: memory_bytes"):
        load_profile(str(_write(tmp_path, data)))

    data = _pi4_dict()  # a fitted conv-shape term needs its provenance, and cannot be negative
    data["partial_filter_set"] = {"kxk": 0.3}
    with pytest.raises(ProfileError, match=r"provenance is missing for: partial_filter_set"):
        load_profile(str(_write(tmp_path, data)))
    data["provenance"]["partial_filter_set"] = {"kind": "fitted", "source": "a test"}
    data["partial_filter_set"] = {"kxk": -0.3}
    with pytest.raises(ProfileError, match=r"partial_filter_set\.kxk"):
        load_profile(str(_write(tmp_path, data)))

    data = _pi4_dict()
    data["surprise"] = 1
    with pytest.raises(ProfileError, match=r"surprise"):
        load_profile(str(_write(tmp_path, data)))

    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(broken))
    with pytest.raises(ProfileError, match="not found"):
        load_profile(str(tmp_path / "missing.toml"))


def test_toml_round_trip(tmp_path):
    for name in ("pi4", "h100", "host"):
        p = load_profile(name)
        out = tmp_path / f"{name}.toml"
        out.write_text(profile_to_toml(p))
        assert profile_from_toml(out) == p


def test_links_and_specs():
    assert {"3g", "4g", "5g", "wifi", "ethernet"} <= set(list_links())
    lte = load_link("4g")
    assert lte.uplink_mbps < lte.downlink_mbps and lte.radio_energy_nj_per_bit == pytest.approx(438.0)
    sym = load_link("20mbps/40ms")
    assert (sym.uplink_mbps, sym.downlink_mbps, sym.rtt_ms) == (20.0, 20.0, 40.0)
    assert sym.provenance["rtt_ms"].kind == "user" and sym.radio_energy_nj_per_bit is None
    asym = load_link("20mbps/500kbps/0.1s")
    assert (asym.downlink_mbps, asym.uplink_mbps, asym.rtt_ms) == (20.0, 0.5, 100.0)
    assert sym.transfer_ms(2_500_000) == pytest.approx(1000.0)  # 20 Mbit at 20 Mbit/s
    with pytest.raises(ProfileError, match="valid names: 3g"):
        load_link("6g")
    with pytest.raises(ProfileError, match="not a rate"):
        load_link("fast/40ms")
    with pytest.raises(ProfileError, match="round-trip"):
        load_link("20mbps/forty")


def test_cli_profiles_list_and_show(capsys):
    from edgeplan.cli.main import main

    assert main(["profiles", "list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert EXPECTED <= {p["name"] for p in doc["profiles"]}
    assert {"3g", "4g", "5g", "wifi", "ethernet"} <= {lk["name"] for lk in doc["links"]}

    assert main(["profiles", "show", "t4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "t4" and doc["price_usd_per_hour"] > 0 and "provenance" in doc

    assert main(["profiles", "show", "wifi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind_of_profile"] == "link"

    assert main(["profiles", "show", "pi4"]) == 0
    out = capsys.readouterr().out
    assert "datasheet" in out and "Cortex-A72" in out

    assert main(["profiles", "show", "nope"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_profiles_command_imports_no_heavy_library():
    code = (
        "import sys, io, contextlib\n"
        "from edgeplan.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['profiles', 'list', '--json']) == 0\n"
        "    assert main(['profiles', 'show', 'h100']) == 0\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"edgeplan profiles imported: {res.stdout.strip()}"
