"""Pydantic schema of hardware profiles and network-link profiles (the TOML files in ``data/``).

Design decisions a later engineer needs:

- **Every number carries provenance.** ``HardwareProfile.provenance`` is a table keyed by field name
  (``cores``, ``peak_gops``, ``efficiency`` ... or a dotted key such as ``peak_gops.int8`` for one entry of a
  table). A model validator refuses a profile in which any numeric field has no provenance, so a profile
  cannot silently ship a made-up number. Kinds: ``datasheet`` (``source`` names the document),
  ``measured`` (``source`` says how, plus ``date`` and ``runtime``), ``fitted`` (``source`` says fitted to
  what, e.g. "least squares on 40 ORT micro-benchmarks" or "scaled from h100 by datasheet ratio") and
  ``estimate`` (a literature/engineering estimate that has NOT been fitted to measurements yet; we say so
  rather than pretend it is a datasheet number); ``user`` marks a value typed on the command line
  (``--link 20mbps/40ms``).
- **Units are in the names.** ``peak_gops`` is GFLOP/s for fp32/fp16 and GOP/s (multiply-adds count 2) for
  int8. ``memory_bandwidth_gbps`` is GB/s (10^9 *bytes* per second, the unit datasheets use for memory),
  not Gbit/s; link profiles use Mbit/s (``uplink_mbps``) as network people do.
- **Efficiencies.** ``efficiency[op_class]`` is the fraction of ``peak_gops[dtype]`` a node of that class
  reaches (compute roof); ``memory_efficiency[op_class]`` multiplies ``memory_bandwidth_gbps`` (memory
  roof). A fitted CPU profile can have ``memory_efficiency`` > 1: batch-1 activations mostly live in the
  L2/L3 cache, which is faster than the DRAM bandwidth in the datasheet. ``efficiency_by_dtype`` overrides
  ``efficiency`` per dtype (int8 kernels reach a different share of their peak than fp32 kernels).
- **Overheads.** ``per_node_overhead_us`` is the runtime's fixed cost per executed node (ORT CPU kernel
  dispatch, or a GPU kernel launch). ``overhead_mode`` says how it combines with the roofline time:
  ``additive`` (CPU: the core does the dispatch, then the work) or ``max`` (GPU eager execution: launches are
  asynchronous, so a node costs at least one launch interval; small-batch GPU inference is launch-bound).
  ``per_inference_overhead_us`` is the fixed cost per ``run()`` call (session bookkeeping, host<->device
  copies). ``class_overhead_us[op_class]`` adds a fixed cost per node of a class: conv/MatMul kernels pay
  setup (weight packing, im2col buffers, thread-pool partitioning) that a pure roofline misses, which is
  why small convs and the small MatMuls of a tiny transformer run far below the roofline rate.
- **Fusion.** ``fusable_op_types`` lists op types the runtime fuses into the preceding conv/gemm (ORT fuses
  Conv+BatchNorm, Conv+Relu/Clip, Conv+Add for residuals, QDQ pairs into QLinear kernels). Such nodes are
  priced at zero in ``planner.cost``. ``fusion_source = "onnxruntime"`` (profiles of devices that run ONNX
  Runtime's CPU EP: host, pi4, pi5) replaces those rules by ORT's own optimised graph
  (``planner.ort_fusion``); only the layout-level fusions (residual Add/activation into NCHWc convs) are then
  taken from ``fusable_op_types``. ``"rules"`` (GPU profiles: PyTorch eager / CUDA kernels) keeps the rules.
- **Row overhead.** ``row_overhead_ns[op_class]`` adds a fixed cost per output row per channel block
  (``N x ceil(C_out / conv_channel_block) x H_out``) of conv/dwconv/pool nodes: MLAS computes an NCHWc conv
  one output row of one channel block per kernel call, so a depthwise conv on a 7x7 map with 960 channels
  costs far more than its FLOPs say (measured: 85 us per layer for 0.85 MFLOP here).
- **int8 output cost.** ``int8_output_ns`` is a cost per output element of an int8 conv/gemm kernel
  (QLinearConv, QLinearMatMul, QGemm): requantising the int32 accumulator to 8 bits, which does not shrink
  with the reduction depth, so int8 layers with few input channels run far below the int8 peak.
- **Channel blocking.** ``conv_channel_block``: ORT's x86 NCHWc convolutions work on blocks of 8 (AVX2) or
  16 (AVX-512) channels, so an fp32 conv with 12 input or output channels costs what one with 16 does, and
  the 3-channel stem conv of an image model costs what an 8-channel one does. The cost model prices fp32
  conv/dwconv FLOPs with input and output channels rounded up to this block (1 = no blocking: Arm, GPUs).
- **Filter sets.** MLAS computes an NCHWc conv ``conv_filter_set_blocks`` (4) output-channel blocks per
  pass, re-using each input load for all of them; a conv whose last set is short (8, 16 or 24 output
  channels; 40 = one full set + one block) loads inputs for fewer FMAs. ``partial_filter_set[kind]``
  (``kxk`` or ``pointwise``) is the fitted extra share of a missing block: the compute time is multiplied
  by ``1 + penalty x (blocks of all sets, full size / real blocks - 1)`` (measured here: a 3x3 conv with
  8 output channels runs at about half the rate of one with 32). ``pointwise_output_ns`` is a cost per
  output element of an fp32 1x1 conv: with few input channels (a 16 -> 256 expansion) each output does
  little work per load/store and the kernel runs at half its FLOP rate or less.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

OP_CLASSES: tuple[str, ...] = (
    "conv",
    "dwconv",
    "convtranspose",
    "gemm",
    "elementwise",
    "norm",
    "softmax",
    "pool",
    "resize",
    "data",
    "quant",
    "other",
)
DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8")

OpClass = Literal[
    "conv", "dwconv", "convtranspose", "gemm", "elementwise", "norm", "softmax", "pool", "resize", "data",
    "quant", "other",
]
Dtype = Literal["fp32", "fp16", "int8"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Provenance(BaseModel):
    """Where one number comes from."""

    model_config = _FROZEN

    kind: Literal["datasheet", "measured", "fitted", "estimate", "user"]
    source: str = Field(min_length=3, description="document/URL, measurement method, or what it was fitted to")
    date: str | None = Field(default=None, description="ISO date the number was taken or looked up")
    runtime: str | None = Field(default=None, description="runtime and version used for a measurement")


class HardwareProfile(BaseModel):
    """One inference target: an edge device, a cloud GPU, or the host this tool runs on."""

    model_config = _FROZEN

    name: str = Field(min_length=1)
    kind: Literal["edge", "cloud", "host"]
    description: str = ""
    device_type: Literal["cpu", "gpu"] = "cpu"
    runtime: str = Field(default="onnxruntime CPU EP", description="runtime the efficiencies refer to")
    cores: int = Field(gt=0, description="CPU cores, or GPU streaming multiprocessors / CUDA cores (see description)")
    clock_ghz: float = Field(gt=0)
    peak_gops: dict[Dtype, float] = Field(description="GFLOP/s (fp32, fp16) or GOP/s (int8); must contain fp32")
    memory_bandwidth_gbps: float = Field(gt=0, description="GB/s (10^9 bytes/s)")
    memory_bytes: int = Field(gt=0)
    efficiency: dict[OpClass, float] = Field(description="share of peak_gops reached, per op class")
    efficiency_by_dtype: dict[Dtype, dict[OpClass, float]] = Field(default_factory=dict)
    memory_efficiency: dict[OpClass, float] = Field(description="multiplier on memory_bandwidth_gbps per op class")
    per_node_overhead_us: float = Field(ge=0)
    per_inference_overhead_us: float = Field(default=0.0, ge=0)
    class_overhead_us: dict[OpClass, float] = Field(
        default_factory=dict, description="extra fixed cost per node of a class (kernel setup, packing), us"
    )
    row_overhead_ns: dict[OpClass, float] = Field(
        default_factory=dict, description="fixed cost per output row (x channel block) of a conv/pool node, ns"
    )
    int8_output_ns: float = Field(default=0.0, ge=0, description="cost per output element of an int8 conv/gemm, ns")
    overhead_mode: Literal["additive", "max"] = "additive"
    fusable_op_types: tuple[str, ...] = ()
    fusion_source: Literal["rules", "onnxruntime"] = "rules"
    conv_channel_block: int = Field(default=1, ge=1, description="fp32 conv channels are padded to a multiple of this")
    conv_filter_set_blocks: int = Field(default=1, ge=1, description="channel blocks an NCHWc conv computes per pass")
    partial_filter_set: dict[Literal["kxk", "pointwise"], float] = Field(
        default_factory=dict, description="extra compute share per missing block of a short filter set"
    )
    pointwise_output_ns: float = Field(default=0.0, ge=0, description="cost per output element of an fp32 1x1 conv, ns")
    active_power_w: float = Field(gt=0)
    idle_power_w: float = Field(ge=0)
    price_usd_per_hour: float | None = Field(default=None, gt=0)
    error_band_pct: float = Field(gt=0, le=1000)
    notes: str = ""
    calibration: dict[str, str | int | float] = Field(
        default_factory=dict, description="how a measured profile was calibrated (CPU model, governor, ORT version...)"
    )
    provenance: dict[str, Provenance]

    @model_validator(mode="after")
    def _check(self) -> "HardwareProfile":
        if "fp32" not in self.peak_gops:
            raise ValueError("peak_gops must contain fp32")
        for table_name in ("peak_gops", "efficiency", "memory_efficiency"):
            for k, v in getattr(self, table_name).items():
                if not v > 0:
                    raise ValueError(f"{table_name}.{k} must be > 0, got {v}")
        for table_name in ("class_overhead_us", "row_overhead_ns", "partial_filter_set"):
            for k, v in getattr(self, table_name).items():
                if v < 0:
                    raise ValueError(f"{table_name}.{k} must be >= 0, got {v}")
        for dt, table in self.efficiency_by_dtype.items():
            for k, v in table.items():
                if not v > 0:
                    raise ValueError(f"efficiency_by_dtype.{dt}.{k} must be > 0, got {v}")
        missing_eff = [c for c in OP_CLASSES if c not in self.efficiency]
        if missing_eff:
            raise ValueError(f"efficiency is missing op classes: {', '.join(missing_eff)}")
        missing_mem = [c for c in OP_CLASSES if c not in self.memory_efficiency]
        if missing_mem:
            raise ValueError(f"memory_efficiency is missing op classes: {', '.join(missing_mem)}")
        if self.kind == "cloud" and self.price_usd_per_hour is None:
            raise ValueError("a cloud profile needs price_usd_per_hour")
        if self.kind != "cloud" and self.price_usd_per_hour is not None:
            raise ValueError("price_usd_per_hour is for cloud profiles only")
        missing = [f for f in self.numeric_fields() if not self._has_provenance(f)]
        if missing:
            raise ValueError(f"provenance is missing for: {', '.join(missing)}")
        return self

    def numeric_fields(self) -> list[str]:
        """Names of the fields that hold numbers and therefore need a provenance entry."""
        names = [
            "cores", "clock_ghz", "peak_gops", "memory_bandwidth_gbps", "memory_bytes", "efficiency",
            "memory_efficiency", "per_node_overhead_us", "per_inference_overhead_us", "active_power_w",
            "idle_power_w", "error_band_pct",
        ]
        if self.efficiency_by_dtype:
            names.append("efficiency_by_dtype")
        if self.class_overhead_us:
            names.append("class_overhead_us")
        if self.row_overhead_ns:
            names.append("row_overhead_ns")
        if self.int8_output_ns:
            names.append("int8_output_ns")
        if self.conv_channel_block != 1:
            names.append("conv_channel_block")
        if self.conv_filter_set_blocks != 1:
            names.append("conv_filter_set_blocks")
        if self.partial_filter_set:
            names.append("partial_filter_set")
        if self.pointwise_output_ns:
            names.append("pointwise_output_ns")
        if self.price_usd_per_hour is not None:
            names.append("price_usd_per_hour")
        return names

    def _has_provenance(self, field: str) -> bool:
        if field in self.provenance:
            return True
        value = getattr(self, field, None)
        if isinstance(value, dict) and value:  # every entry named, e.g. peak_gops.fp32 and peak_gops.int8
            return all(f"{field}.{k}" in self.provenance for k in value)
        return False

    def provenance_of(self, field: str) -> Provenance | None:
        """Provenance of ``field`` or of a dotted entry (``peak_gops.int8`` falls back to ``peak_gops``)."""
        if field in self.provenance:
            return self.provenance[field]
        return self.provenance.get(field.split(".", 1)[0])

    def peak_for(self, dtype: str) -> float:
        """Peak GFLOP/s (GOP/s) for ``dtype``; a dtype the device has no native path for falls back to fp32."""
        return self.peak_gops.get(dtype, self.peak_gops["fp32"])  # type: ignore[call-overload]

    def efficiency_for(self, op_class: str, dtype: str) -> float:
        override = self.efficiency_by_dtype.get(dtype)  # type: ignore[call-overload]
        if override and op_class in override:
            return override[op_class]  # type: ignore[index]
        return self.efficiency.get(op_class, self.efficiency["other"])  # type: ignore[call-overload]

    def memory_efficiency_for(self, op_class: str) -> float:
        return self.memory_efficiency.get(op_class, self.memory_efficiency["other"])  # type: ignore[call-overload]

    def provenance_summary(self) -> str:
        """One line: which numbers are measured / fitted / datasheet / estimate."""
        groups: dict[str, list[str]] = {}
        for key, prov in sorted(self.provenance.items()):
            groups.setdefault(prov.kind, []).append(key)
        parts = [f"{kind}: {', '.join(keys)}" for kind, keys in sorted(groups.items())]
        return f"profile {self.name} ({'; '.join(parts)})"


class LinkProfile(BaseModel):
    """A network link between the edge device and the server/cloud."""

    model_config = _FROZEN

    name: str = Field(min_length=1)
    description: str = ""
    uplink_mbps: float = Field(gt=0, description="Mbit/s, device -> server")
    downlink_mbps: float = Field(gt=0, description="Mbit/s, server -> device")
    rtt_ms: float = Field(ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    radio_energy_nj_per_bit: float | None = Field(default=None, ge=0)
    provenance: dict[str, Provenance]

    @model_validator(mode="after")
    def _check(self) -> "LinkProfile":
        needed = ["uplink_mbps", "downlink_mbps", "rtt_ms", "jitter_ms"]
        if self.radio_energy_nj_per_bit is not None:
            needed.append("radio_energy_nj_per_bit")
        missing = [f for f in needed if f not in self.provenance]
        if missing:
            raise ValueError(f"provenance is missing for: {', '.join(missing)}")
        return self

    def transfer_ms(self, n_bytes: int, *, direction: Literal["up", "down"] = "up") -> float:
        """Serialisation time of ``n_bytes`` (no RTT): bytes * 8 / rate."""
        mbps = self.uplink_mbps if direction == "up" else self.downlink_mbps
        return n_bytes * 8 / (mbps * 1e6) * 1e3
