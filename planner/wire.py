"""The edgeplan wire format (EPW1): a documented, versioned binary container for named tensors.

Used by ``edgeplan serve`` / ``edgeplan run`` to move cut tensors (device -> cloud) and outputs back. It
is deliberately tiny and never uses pickle: a reader only ever parses fixed-width integers, one JSON
document and raw little-endian array bytes, so a hostile payload can at worst be rejected.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic  b"EPW1"
    4       2     version (uint16) = 1
    6       2     flags (uint16) = 0 (reserved; a reader rejects unknown flags)
    8       4     header_len (uint32): length of the JSON header in bytes (at most 1 MiB)
    12      H     header: UTF-8 JSON object (see below)
    12+H    ...   data: the tensors' bytes, back to back, in header order, no padding

Header::

    {"tensors": [{"name": str, "dtype": str, "shape": [int, ...], "offset": int, "nbytes": int,
                  "encoding": "raw" | "fp16" | "int8",
                  "scale": float, "zero_point": float}, ...],      # scale/zero_point for int8 only
     "meta": {...}}                                                # optional, small, JSON only

- ``dtype`` is the tensor's *logical* numpy dtype (what ``decode`` returns), one of ``DTYPES``.
- ``encoding`` says how the bytes are stored: ``raw`` (the dtype itself, little-endian), ``fp16`` (float
  tensors rounded to IEEE half; decoded back to ``dtype``) or ``int8`` (per-tensor affine uint8:
  ``x = q * scale + zero_point``, where ``zero_point`` is the real value of ``q = 0``, i.e. the tensor
  minimum; the maximum error is ``scale / 2``). This is the same rounding ``split_extract.wire_cast``
  simulates, so the planner's wire-fidelity checks hold for the real wire. Only float tensors are
  compressed; integer tensors always go ``raw``.
- ``offset`` is relative to the start of the data section; offsets must be contiguous (tensor i starts
  where tensor i-1 ends) and the data section must end exactly after the last tensor: no slack, no
  overlap, so every byte of a payload is accounted for.
- ``nbytes`` must equal ``prod(shape) * itemsize(encoding)``.

``decode`` validates all of that, plus, when given ``expected`` (name -> (shape, dtype), typically from
the bundle manifest), that the names are exactly the expected ones, the dtypes match and the shapes match
(``-1``/``None`` in an expected shape matches any size). Any violation raises ``WireError`` (an
``InputError``), which the server turns into HTTP 400.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Mapping

import numpy as np

from edgeplan.hardware_profiles.errors import InputError

MAGIC = b"EPW1"
VERSION = 1
PREFIX = struct.Struct("<4sHHI")  # magic, version, flags, header_len
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 4096
MAX_NDIM = 16
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
ENCODINGS = ("raw", "fp16", "int8")
CONTENT_TYPE = "application/x-edgeplan-wire"
_ENTRY_KEYS = {"name", "dtype", "shape", "offset", "nbytes", "encoding"}
_INT8_KEYS = {"scale", "zero_point"}


class WireError(InputError):
    """A payload that does not follow the EPW1 format or does not match what the bundle expects."""


def _encoded_dtype(dtype: str, encoding: str) -> np.dtype:
    if encoding == "raw":
        return np.dtype(dtype).newbyteorder("<")
    if encoding == "fp16":
        return np.dtype("<f2")
    return np.dtype("u1")


def encode(tensors: Mapping[str, np.ndarray], compress: str | None = None,
           meta: Mapping[str, Any] | None = None) -> bytes:
    """Serialise ``tensors`` (name -> array) as one EPW1 payload.

    ``compress``: None/"fp32" (raw), "fp16" or "int8" for the float tensors (see the module docstring).
    ``meta``: a small JSON-serialisable dict carried in the header (the runtime uses it to name the cut).
    """
    if compress in (None, "fp32", "raw"):
        compress = "raw"
    if compress not in ENCODINGS:
        raise WireError(f"unknown wire compression {compress!r} (use fp16 or int8)")
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = 0
    for name, value in tensors.items():
        arr = np.asarray(value)
        dtype = arr.dtype.name
        if dtype not in DTYPES:
            raise WireError(f"tensor {name!r}: dtype {dtype} is not supported on the wire")
        enc = compress if (arr.dtype.kind == "f" and compress != "raw") else "raw"
        entry: dict[str, Any] = {"name": str(name), "dtype": dtype, "shape": [int(d) for d in arr.shape],
                                 "encoding": enc}
        if enc == "raw":
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        elif enc == "fp16":
            data = np.ascontiguousarray(arr, dtype="<f2").tobytes()
        else:
            if arr.size and not np.all(np.isfinite(arr)):
                raise WireError(f"tensor {name!r}: int8 wire compression needs finite values")
            lo = float(arr.min()) if arr.size else 0.0
            hi = float(arr.max()) if arr.size else 0.0
            scale = (hi - lo) / 255.0 if hi > lo else 1.0
            q = np.clip(np.round((arr.astype(np.float64) - lo) / scale), 0, 255).astype(np.uint8)
            data = q.tobytes()
            entry["scale"] = scale
            entry["zero_point"] = lo
        entry["offset"] = offset
        entry["nbytes"] = len(data)
        offset += len(data)
        entries.append(entry)
        chunks.append(data)
    header = json.dumps({"tensors": entries, "meta": dict(meta or {})}, separators=(",", ":"),
                        allow_nan=False).encode("utf-8")
    if len(header) > MAX_HEADER_BYTES:
        raise WireError(f"wire header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    return PREFIX.pack(MAGIC, VERSION, 0, len(header)) + header + b"".join(chunks)


def decode_with_meta(
    data: bytes | bytearray | memoryview,
    expected: Mapping[str, tuple[Any, str]] | None = None,
    max_bytes: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``decode`` that also returns the header's ``meta`` dict."""
    buf = memoryview(data)
    if max_bytes is not None and len(buf) > max_bytes:
        raise WireError(f"payload of {len(buf)} bytes exceeds the limit of {max_bytes}")
    if len(buf) < PREFIX.size:
        raise WireError(f"payload of {len(buf)} bytes is shorter than the {PREFIX.size}-byte prefix")
    magic, version, flags, hlen = PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise WireError("not an edgeplan wire payload (bad magic)")
    if version != VERSION:
        raise WireError(f"wire version {version} is not supported (this edgeplan reads {VERSION})")
    if flags != 0:
        raise WireError(f"unknown wire flags {flags:#x}")
    if hlen > MAX_HEADER_BYTES or PREFIX.size + hlen > len(buf):
        raise WireError(f"header length {hlen} does not fit the payload of {len(buf)} bytes")
    try:
        header = json.loads(bytes(buf[PREFIX.size:PREFIX.size + hlen]).decode("utf-8"),
                            parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise WireError(f"header is not valid UTF-8 JSON: {e}") from None
    except RecursionError:
        raise WireError("header JSON is nested too deeply") from None
    if not isinstance(header, dict) or set(header) - {"tensors", "meta"} or "tensors" not in header:
        raise WireError("header must be an object with 'tensors' (and optionally 'meta')")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise WireError("header 'meta' must be an object")
    entries = header["tensors"]
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise WireError("header 'tensors' must be a list of at most 4096 entries")
    body = buf[PREFIX.size + hlen:]
    out: dict[str, np.ndarray] = {}
    pos = 0
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise WireError(f"tensor entry {i} is not an object")
        enc = e.get("encoding")
        keys = _ENTRY_KEYS | (_INT8_KEYS if enc == "int8" else set())
        if set(e) != keys:
            raise WireError(f"tensor entry {i}: keys {sorted(e)} (want {sorted(keys)})")
        name, dtype, shape, offset, nbytes = e["name"], e["dtype"], e["shape"], e["offset"], e["nbytes"]
        if not isinstance(name, str) or not name or len(name) > 1024:
            raise WireError(f"tensor entry {i}: bad name")
        if name in out:
            raise WireError(f"tensor {name!r} appears twice")
        if dtype not in DTYPES or enc not in ENCODINGS:
            raise WireError(f"tensor {name!r}: unsupported dtype/encoding {dtype!r}/{enc!r}")
        if enc != "raw" and np.dtype(dtype).kind != "f":
            raise WireError(f"tensor {name!r}: encoding {enc} is only for float tensors")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise WireError(f"tensor {name!r}: shape must be a list of non-negative integers")
        for k in ("offset", "nbytes"):
            if not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < 0:
                raise WireError(f"tensor {name!r}: {k} must be a non-negative integer")
        edt = _encoded_dtype(dtype, enc)
        count = math.prod(shape)
        if count * edt.itemsize != nbytes:
            raise WireError(f"tensor {name!r}: nbytes {nbytes} != {count} elements x {edt.itemsize} bytes")
        if offset != pos:
            raise WireError(f"tensor {name!r}: offset {offset}, expected {pos} (tensors must be contiguous)")
        if pos + nbytes > len(body):
            raise WireError(f"tensor {name!r}: data runs past the end of the payload")
        arr = np.frombuffer(body, dtype=edt, count=count, offset=pos).reshape(shape)
        if enc == "raw":
            val = arr.astype(np.dtype(dtype), copy=True)
        elif enc == "fp16":
            val = arr.astype(np.dtype(dtype))
        else:
            scale, zp = e["scale"], e["zero_point"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in (scale, zp)) or scale <= 0:
                raise WireError(f"tensor {name!r}: int8 needs a finite positive scale and a finite zero_point")
            val = (arr.astype(np.float64) * scale + zp).astype(np.dtype(dtype))
        out[name] = val
        pos += nbytes
    if pos != len(body):
        raise WireError(f"{len(body) - pos} trailing bytes after the last tensor")
    if expected is not None:
        check_expected(out, expected)
    return out, meta


def decode(
    data: bytes | bytearray | memoryview,
    expected: Mapping[str, tuple[Any, str]] | None = None,
    max_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Parse one EPW1 payload into name -> array, validating everything (see the module docstring).

    ``expected``: name -> (shape, dtype); shape entries of -1 or None match any size; a shape of None
    skips the shape check. ``max_bytes`` bounds the whole payload. Raises ``WireError``.
    """
    return decode_with_meta(data, expected, max_bytes)[0]


def check_expected(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[Any, str]]) -> None:
    """Names exactly ``expected``'s, dtypes equal, shapes equal (-1/None = any). Raises ``WireError``."""
    got, want = set(tensors), set(expected)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        raise WireError(f"tensor names do not match the bundle: missing {missing}, unexpected {extra}")
    for name, (shape, dtype) in expected.items():
        arr = tensors[name]
        if np.dtype(dtype) != arr.dtype:
            raise WireError(f"tensor {name!r}: dtype {arr.dtype.name}, the bundle expects {np.dtype(dtype).name}")
        if shape is None:
            continue
        if len(shape) != arr.ndim or any(w not in (-1, None) and int(w) != g for w, g in zip(shape, arr.shape)):
            raise WireError(f"tensor {name!r}: shape {list(arr.shape)}, the bundle expects {list(shape)}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a wire header")


__all__ = ["CONTENT_TYPE", "MAGIC", "VERSION", "WireError", "check_expected", "decode", "decode_with_meta", "encode"]
