"""Loading and listing hardware and link profiles.

Profiles are TOML files shipped as package data (``data/<name>.toml``, ``data/links/<name>.toml``) or any
``.toml`` file path a user passes (for example one written by ``edgeplan calibrate``). Only the standard
library (``tomllib``) and pydantic are imported here: ``edgeplan profiles list`` must stay instant, so this
module must never import torch, onnx or onnxruntime (tests/test_profiles.py checks ``sys.modules``).

Link spec grammar (``--link``), for links that are not one of the named profiles::

    RATE/RTT              symmetric link, e.g. "20mbps/40ms"
    DOWN/UP/RTT           e.g. "20mbps/5mbps/40ms" (downlink first, as ISPs quote it)
    RATE = <number>(kbps|mbps|gbps)   bits per second, SI prefixes
    RTT  = <number>(ms|s)

A spec link has zero jitter and no radio energy (unknown), and its provenance says "user".
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from edgeplan.hardware_profiles.errors import ProfileError
from edgeplan.hardware_profiles.schema import HardwareProfile, LinkProfile, Provenance

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DATA_DIR = Path(__file__).resolve().parent / "data"
LINKS_DIR = DATA_DIR / "links"

__all__ = [
    "DATA_DIR",
    "LINKS_DIR",
    "list_profiles",
    "load_profile",
    "list_links",
    "load_link",
    "parse_link_spec",
    "profile_from_toml",
    "profile_to_toml",
    "dict_to_toml",
]


def list_profiles() -> list[str]:
    """Names of the shipped hardware profiles, sorted."""
    return sorted(p.stem for p in DATA_DIR.glob("*.toml"))


def list_links() -> list[str]:
    """Names of the shipped link profiles, sorted."""
    return sorted(p.stem for p in LINKS_DIR.glob("*.toml"))


def _format_validation_error(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: field '{loc}': {first['msg']}{more}"


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ProfileError(f"profile file not found: {path}") from e
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from e
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e}") from e


def profile_from_toml(path: str | Path) -> HardwareProfile:
    """Load and validate one hardware profile file; errors name the file and the wrong field."""
    path = Path(path)
    data = _read_toml(path)
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(_format_validation_error(e, f"hardware profile {path}")) from e


@lru_cache(maxsize=64)
def _load_shipped(name: str) -> HardwareProfile:
    return profile_from_toml(DATA_DIR / f"{name}.toml")


def load_profile(name_or_path: str) -> HardwareProfile:
    """A shipped profile by name (``pi4``, ``h100``, ``host`` ...) or a profile TOML file by path.

    Raises ProfileError listing the valid names for an unknown name, or naming the field for a malformed file.
    """
    text = str(name_or_path).strip()
    if not text:
        raise ProfileError(f"empty profile name; valid names: {', '.join(list_profiles())}")
    if text in list_profiles():
        return _load_shipped(text)
    path = Path(text).expanduser()
    if text.endswith(".toml") or path.is_file():
        return profile_from_toml(path)
    raise ProfileError(
        f"unknown hardware profile '{text}'; valid names: {', '.join(list_profiles())} (or a path to a .toml file)"
    )


_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(kbps|mbps|gbps)\s*$", re.IGNORECASE)
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)\s*$", re.IGNORECASE)
_RATE_SCALE = {"kbps": 1e-3, "mbps": 1.0, "gbps": 1e3}


def _rate_mbps(part: str, spec: str) -> float:
    m = _RATE.match(part)
    if not m:
        raise ProfileError(f"link spec '{spec}': '{part}' is not a rate like 20mbps, 500kbps or 1gbps")
    value = float(m.group(1)) * _RATE_SCALE[m.group(2).lower()]
    if value <= 0:
        raise ProfileError(f"link spec '{spec}': rate must be > 0")
    return value


def _time_ms(part: str, spec: str) -> float:
    m = _TIME.match(part)
    if not m:
        raise ProfileError(f"link spec '{spec}': '{part}' is not a round-trip time like 40ms or 0.1s")
    return float(m.group(1)) * (1000.0 if m.group(2).lower() == "s" else 1.0)


def parse_link_spec(spec: str) -> LinkProfile:
    """Parse ``RATE/RTT`` or ``DOWN/UP/RTT`` (see the module docstring) into a LinkProfile."""
    parts = [p for p in spec.split("/")]
    if len(parts) == 2:
        down = up = _rate_mbps(parts[0], spec)
    elif len(parts) == 3:
        down, up = _rate_mbps(parts[0], spec), _rate_mbps(parts[1], spec)
    else:
        raise ProfileError(
            f"link spec '{spec}' must be RATE/RTT (20mbps/40ms) or DOWN/UP/RTT (20mbps/5mbps/40ms); "
            f"named links: {', '.join(list_links())}"
        )
    rtt = _time_ms(parts[-1], spec)
    user = Provenance(kind="user", source=f"command-line link spec '{spec}'")
    return LinkProfile(
        name=spec,
        description=f"user-defined link {spec}",
        uplink_mbps=up,
        downlink_mbps=down,
        rtt_ms=rtt,
        jitter_ms=0.0,
        radio_energy_nj_per_bit=None,
        provenance={"uplink_mbps": user, "downlink_mbps": user, "rtt_ms": user, "jitter_ms": user},
    )


@lru_cache(maxsize=32)
def _load_shipped_link(name: str) -> LinkProfile:
    path = LINKS_DIR / f"{name}.toml"
    data = _read_toml(path)
    try:
        return LinkProfile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(_format_validation_error(e, f"link profile {path}")) from e


def load_link(name_or_spec: str) -> LinkProfile:
    """A shipped link (``3g``, ``4g``, ``5g``, ``wifi``, ``ethernet``), a link TOML path, or a spec string."""
    text = str(name_or_spec).strip()
    if text.lower() in list_links():
        return _load_shipped_link(text.lower())
    if text.endswith(".toml"):
        path = Path(text).expanduser()
        data = _read_toml(path)
        try:
            return LinkProfile.model_validate(data)
        except ValidationError as e:
            raise ProfileError(_format_validation_error(e, f"link profile {path}")) from e
    if "/" in text:
        return parse_link_spec(text)
    raise ProfileError(
        f"unknown link '{text}'; valid names: {', '.join(list_links())}, or a spec like 20mbps/40ms "
        f"or 20mbps/5mbps/40ms (down/up/rtt)"
    )


# --- writing (used by planner.calibrate) -------------------------------------------------------------


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(round(v, 6)) if v == v else "nan"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def profile_to_toml(profile: HardwareProfile) -> str:
    """Serialise a profile as readable TOML (scalars first, then one table per dict field)."""
    return dict_to_toml(profile.model_dump(mode="python"))


def dict_to_toml(data: dict) -> str:
    """TOML text for a profile-shaped dict (scalars, flat tables, ``efficiency_by_dtype`` sub-tables)."""
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in tables:
        if name == "efficiency_by_dtype":
            for dt, sub in table.items():
                lines += ["", f"[efficiency_by_dtype.{dt}]"] + [f"{_key(k)} = {_toml_value(x)}" for k, x in sub.items()]
            continue
        if not table and name != "provenance":
            continue
        lines += ["", f"[{name}]"]
        for k, x in table.items():
            lines.append(f"{_key(k)} = {_toml_value(x)}")
    return "\n".join(lines) + "\n"
