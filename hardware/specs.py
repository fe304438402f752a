"""Immutable hardware specs in SI units: accelerators, memory tiers, interconnects, nodes.

Each spec validates itself at construction; the catalog loader turns YAML into these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from .precision import PRECISIONS, compute_chain

AcceleratorKind = Literal["gpu", "tpu", "npu", "cim", "edge-soc"]
ACCELERATOR_KINDS: Final = ("gpu", "tpu", "npu", "cim", "edge-soc")
TierKind = Literal["hbm", "gddr", "lpddr", "sram", "cim", "dram"]
TIER_KINDS: Final = ("hbm", "gddr", "lpddr", "sram", "cim", "dram")
LinkScope = Literal["scale_up", "scale_out", "host"]
LINK_SCOPES: Final = ("scale_up", "scale_out", "host")
HostTierKind = Literal["host-dram", "cxl", "nvme"]
HOST_TIER_KINDS: Final = ("host-dram", "cxl", "nvme")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class MemoryTier:
    """One level of an accelerator's own memory: capacity in bytes, bandwidth in bytes/s."""

    kind: TierKind
    capacity_bytes: float
    bandwidth_bytes_s: float
    technology: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TIER_KINDS:
            raise ValueError(f"memory tier kind must be one of {TIER_KINDS}, got {self.kind!r}")
        _positive("capacity_bytes", self.capacity_bytes)
        _positive("bandwidth_bytes_s", self.bandwidth_bytes_s)

    @property
    def holds_weights_only(self) -> bool:
        """CIM arrays compute on the weights they store; they are no place for a KV cache."""
        return self.kind == "cim"


@dataclass(frozen=True, slots=True)
class Interconnect:
    """A link technology: bandwidth per direction in bytes/s, one-way latency in seconds."""

    id: str
    name: str
    scope: LinkScope
    bandwidth_per_direction_bytes_s: float
    latency_s: float
    source: str = ""

    def __post_init__(self) -> None:
        if self.scope not in LINK_SCOPES:
            raise ValueError(f"scope must be one of {LINK_SCOPES}, got {self.scope!r}")
        _positive("bandwidth_per_direction_bytes_s", self.bandwidth_per_direction_bytes_s)
        _non_negative("latency_s", self.latency_s)


@dataclass(frozen=True, slots=True)
class Link:
    """How one accelerator attaches to a link: its own bandwidth per direction (bytes/s)."""

    interconnect: Interconnect
    bandwidth_per_direction_bytes_s: float
    domain_size: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        _positive("bandwidth_per_direction_bytes_s", self.bandwidth_per_direction_bytes_s)
        if self.domain_size < 1:
            raise ValueError(f"domain_size must be >= 1, got {self.domain_size}")

    @property
    def latency_s(self) -> float:
        return self.interconnect.latency_s


@dataclass(frozen=True, slots=True)
class HostMemoryTier:
    """Memory beyond the accelerator (host DRAM, CXL, NVMe): bytes, bytes/s, seconds."""

    id: str
    name: str
    kind: HostTierKind
    capacity_bytes: float
    bandwidth_bytes_s: float
    latency_s: float
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in HOST_TIER_KINDS:
            raise ValueError(f"kind must be one of {HOST_TIER_KINDS}, got {self.kind!r}")
        _positive("capacity_bytes", self.capacity_bytes)
        _positive("bandwidth_bytes_s", self.bandwidth_bytes_s)
        _non_negative("latency_s", self.latency_s)


@dataclass(frozen=True, slots=True)
class Price:
    """On-demand price per accelerator-hour (USD), with the date it was read."""

    usd_per_hour: float
    date: str
    source: str

    def __post_init__(self) -> None:
        _positive("usd_per_hour", self.usd_per_hour)


@dataclass(frozen=True, slots=True)
class EnergySpec:
    """Energy per operation by precision (J/op), per byte by memory tier kind (J/byte), and
    static power (W). Engines without it get energy from power draw."""

    per_op_j: MappingProxyType[str, float]
    per_byte_j: MappingProxyType[str, float]
    static_power_w: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        for name, value in (*self.per_op_j.items(), *self.per_byte_j.items()):
            _non_negative(f"energy {name}", value)
        _non_negative("static_power_w", self.static_power_w)

    def op_energy_j(self, precision: str) -> float:
        """Energy of one operation at a precision, widening like compute does."""
        for candidate in compute_chain(precision):
            if candidate in self.per_op_j:
                return self.per_op_j[candidate]
        return max(self.per_op_j.values(), default=0.0)


@dataclass(frozen=True, slots=True)
class HostCpu:
    """The host CPU a system pairs with the accelerator, where it differs from a plain x86
    server (Grace in GH200/GB200): how fast it issues kernels relative to that server."""

    name: str
    relative_launch_speed: float
    source: str = ""

    def __post_init__(self) -> None:
        _positive("relative_launch_speed", self.relative_launch_speed)


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator chip or package, as the catalog describes it (SI units)."""

    id: str
    name: str
    kind: AcceleratorKind
    vendor: str
    peak_flops: MappingProxyType[str, float]
    memory: tuple[MemoryTier, ...]
    tdp_w: float | None
    """Board / module power limit in W; None where the vendor publishes none (some TPUs)."""
    scale_up: Link | None = None
    host_link: Link | None = None
    scale_out: Link | None = None
    price: Price | None = None
    energy: EnergySpec | None = None
    host_cpu: HostCpu | None = None
    sources: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    derived: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ACCELERATOR_KINDS:
            raise ValueError(f"kind must be one of {ACCELERATOR_KINDS}, got {self.kind!r}")
        if not self.peak_flops:
            raise ValueError("peak_flops needs at least one precision")
        for precision, value in self.peak_flops.items():
            if precision not in PRECISIONS:
                raise ValueError(f"unknown precision {precision!r} in peak_flops")
            _positive(f"peak_flops.{precision}", value)
        if not self.memory:
            raise ValueError("memory needs at least one tier")
        if self.tdp_w is not None:
            _positive("tdp_w", self.tdp_w)
        if self.kind == "cim" and self.energy is None:
            raise ValueError("a cim accelerator needs an energy block: it has no power-draw model")

    def supports(self, precision: str) -> bool:
        """True when the chip has a native matrix rate for the format."""
        return precision in self.peak_flops

    def runs(self, precision: str) -> bool:
        """True when the chip has a rate for the format or a wider one it widens to."""
        return any(p in self.peak_flops for p in compute_chain(precision))

    def compute_precision(self, precision: str) -> str:
        """The format a GEMM in `precision` actually runs in on this chip."""
        for candidate in compute_chain(precision):
            if candidate in self.peak_flops:
                return candidate
        return max(self.peak_flops, key=lambda p: self.peak_flops[p])

    def peak_flops_for(self, precision: str) -> float:
        """Dense peak FLOP/s (or OP/s) a GEMM in `precision` can reach."""
        return self.peak_flops[self.compute_precision(precision)]

    @property
    def device_memory(self) -> tuple[MemoryTier, ...]:
        """Tiers that can hold model state (caches such as a GPU's L2 excluded)."""
        if self.kind in ("gpu", "tpu"):
            return tuple(t for t in self.memory if t.kind != "sram")
        return self.memory

    @property
    def device_memory_bytes(self) -> float:
        return sum(t.capacity_bytes for t in self.device_memory)

    @property
    def main_memory(self) -> MemoryTier:
        """The tier that holds the KV cache and activations: the fastest DRAM-class device tier
        (HBM, GDDR, LPDDR, DRAM); CIM arrays and small SRAMs hold weights only."""
        for tier in self.device_memory:
            if tier.kind in ("hbm", "gddr", "lpddr", "dram"):
                return tier
        return self.device_memory[-1]

    @property
    def price_usd_h(self) -> float | None:
        return self.price.usd_per_hour if self.price else None


@dataclass(frozen=True, slots=True)
class Node:
    """A server: `accelerators_per_node` of one accelerator, joined by its scale-up link."""

    accelerator: Accelerator
    accelerators_per_node: int
    scale_up_domain: int

    def __post_init__(self) -> None:
        if self.accelerators_per_node < 1:
            raise ValueError("accelerators_per_node must be >= 1")
        if self.scale_up_domain < 1:
            raise ValueError("scale_up_domain must be >= 1")

    @classmethod
    def default_for(cls, accelerator: Accelerator) -> Node:
        """The reference system's shape: the scale-up domain, at most 8 per chassis for GPUs."""
        domain = accelerator.scale_up.domain_size if accelerator.scale_up else 1
        per_node = min(domain, 8) if accelerator.kind == "gpu" else max(1, min(domain, 8))
        return cls(accelerator, per_node, domain)


@dataclass(frozen=True, slots=True)
class Pool:
    """What may be used: an accelerator, at most `max_count` of it, at `price_usd_h` each."""

    node: Node
    max_count: int | None = None
    price_usd_h: float | None = None

    def __post_init__(self) -> None:
        if self.max_count is not None and self.max_count < 0:
            raise ValueError("max_count must be >= 0")
        if self.price_usd_h is not None:
            _positive("price_usd_h", self.price_usd_h)
