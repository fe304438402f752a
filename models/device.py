"""What the performance models need to know of an accelerator, resolved once per grid."""

from __future__ import annotations

from dataclasses import dataclass

from ..hardware.efficiency import Efficiency
from ..hardware.engine import EngineProfile
from ..hardware.specs import Accelerator, HostMemoryTier
from .comm import Fabric

# Where a catalog entry names no NIC, fleetplan assumes one 400 Gb/s port per accelerator
# (InfiniBand NDR / 400G RoCE, the common scale-out rate of 2023-2026 AI servers) with the
# small-message latency NCCL reports over InfiniBand.
_DEFAULT_NIC_BW_BYTES_S = 400e9 / 8
_DEFAULT_NIC_LATENCY_S = 5e-6
# An accelerator without a scale-up link talks to its peers through the host.
_FALLBACK_LINK_LATENCY_S = 10e-6


@dataclass(frozen=True)
class Device:
    """An accelerator with the efficiencies, engine and host memory it runs under."""

    accelerator: Accelerator
    efficiency: Efficiency
    engine: EngineProfile
    host_tier: HostMemoryTier | None = None

    @property
    def kernel_launch_s(self) -> float:
        """Host time per kernel launch: the engine's cost on an x86 server host, scaled by the
        system's own host CPU where the catalog names one."""
        cpu = self.accelerator.host_cpu
        speed = cpu.relative_launch_speed if cpu is not None else 1.0
        return self.engine.kernel_launch_s / speed

    @property
    def fabric(self) -> Fabric:
        acc = self.accelerator
        if acc.scale_up is not None:
            up_bw, up_lat, domain = (acc.scale_up.bandwidth_per_direction_bytes_s,
                                     acc.scale_up.latency_s, float(acc.scale_up.domain_size))
        elif acc.host_link is not None:
            up_bw, up_lat, domain = (acc.host_link.bandwidth_per_direction_bytes_s,
                                     acc.host_link.latency_s + _FALLBACK_LINK_LATENCY_S, 1.0)
        else:
            up_bw, up_lat, domain = (_DEFAULT_NIC_BW_BYTES_S, _FALLBACK_LINK_LATENCY_S, 1.0)
        if acc.scale_out is not None:
            out_bw, out_lat = (acc.scale_out.bandwidth_per_direction_bytes_s,
                               acc.scale_out.latency_s)
        else:
            out_bw, out_lat = _DEFAULT_NIC_BW_BYTES_S, _DEFAULT_NIC_LATENCY_S
        return Fabric(up_bw, up_lat, domain, out_bw, out_lat, self.efficiency.network)

    @property
    def host_bw_bytes_s(self) -> float:
        """Bandwidth from the accelerator to host memory: the slower of link and memory."""
        link = self.accelerator.host_link
        bw = link.bandwidth_per_direction_bytes_s if link else 0.0
        if self.host_tier is not None:
            bw = min(bw, self.host_tier.bandwidth_bytes_s) if bw else \
                self.host_tier.bandwidth_bytes_s
        return bw
