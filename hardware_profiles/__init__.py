"""Hardware and network-link profiles (the lowest layer: imports only pydantic and the standard library).

Public API::

    load_profile(name_or_path) -> HardwareProfile      list_profiles() -> list[str]
    load_link(name_or_spec) -> LinkProfile             list_links() -> list[str]

Importing this package must stay cheap (no torch/onnx/onnxruntime): ``edgeplan profiles list`` is instant.
"""

from __future__ import annotations

from edgeplan.hardware_profiles.errors import ProfileError
from edgeplan.hardware_profiles.registry import (
    list_links,
    list_profiles,
    load_link,
    load_profile,
    parse_link_spec,
    profile_from_toml,
    profile_to_toml,
)
from edgeplan.hardware_profiles.schema import (
    DTYPES,
    OP_CLASSES,
    HardwareProfile,
    LinkProfile,
    Provenance,
)

__all__ = [
    "DTYPES",
    "OP_CLASSES",
    "HardwareProfile",
    "LinkProfile",
    "ProfileError",
    "Provenance",
    "list_links",
    "list_profiles",
    "load_link",
    "load_profile",
    "parse_link_spec",
    "profile_from_toml",
    "profile_to_toml",
]
