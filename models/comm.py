"""Collectives under a latency-bandwidth (alpha-beta) model over a two-level hierarchy.

Devices of one group sit `local` to a scale-up domain (NVLink, xGMI, ICI, PCIe); a group larger
than the domain spans domains over the scale-out NICs. Ring algorithms; bandwidths are per
direction per device; `efficiency` is the fraction of link bandwidth a collective reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import ArrayLike, FloatArray, arr


@dataclass(frozen=True)
class Fabric:
    """Per-device link figures: bytes/s per direction and one-way latency in seconds."""

    up_bw_bytes_s: float
    up_latency_s: float
    domain: float
    out_bw_bytes_s: float
    out_latency_s: float
    efficiency: float = 0.8


def _ring(size: FloatArray, n: FloatArray, bw: float, lat: float, eff: float,
          passes: float) -> FloatArray:
    """`passes` ring passes (1 for reduce-scatter / all-gather, 2 for all-reduce)."""
    n = np.maximum(n, 1.0)
    steps = passes * (n - 1.0)
    return np.where(n > 1.0, steps * lat + passes * (n - 1.0) / n * size / (bw * eff), 0.0)


def _local(n: FloatArray, fabric: Fabric, domain: ArrayLike | None) -> FloatArray:
    """Members of the group that share one scale-up domain. `domain` overrides the fabric's
    where the group's ranks are strided (a data-parallel group skips the tensor-parallel
    ranks between its members, so fewer of them share a domain)."""
    room = fabric.domain if domain is None else np.maximum(arr(domain), 1.0)
    return np.minimum(n, room)


def all_reduce(size_bytes: ArrayLike, group: ArrayLike, fabric: Fabric,
               domain: ArrayLike | None = None) -> FloatArray:
    """Time of an all-reduce of `size_bytes` per device over `group` devices.

    Within a domain: ring. Across domains: reduce-scatter inside, all-reduce of the shard
    across domains over the NICs, all-gather inside (the hierarchical algorithm NCCL uses).
    """
    size, n = arr(size_bytes), arr(group)
    local = _local(n, fabric, domain)
    remote = np.maximum(n / local, 1.0)
    inside = _ring(size, local, fabric.up_bw_bytes_s, fabric.up_latency_s, fabric.efficiency, 2.0)
    shard = size / local
    across = _ring(shard, remote, fabric.out_bw_bytes_s, fabric.out_latency_s,
                   fabric.efficiency, 2.0)
    return inside + np.where(remote > 1.0, across, 0.0)


def all_gather(size_bytes: ArrayLike, group: ArrayLike, fabric: Fabric,
               domain: ArrayLike | None = None) -> FloatArray:
    """Time to all-gather so each device ends with `size_bytes` (reduce-scatter: the same)."""
    size, n = arr(size_bytes), arr(group)
    local = _local(n, fabric, domain)
    remote = np.maximum(n / local, 1.0)
    inside = _ring(size / remote, local, fabric.up_bw_bytes_s, fabric.up_latency_s,
                   fabric.efficiency, 1.0)
    across = _ring(size, remote, fabric.out_bw_bytes_s, fabric.out_latency_s,
                   fabric.efficiency, 1.0)
    return inside + np.where(remote > 1.0, across, 0.0)


reduce_scatter = all_gather


def all_to_all(send_bytes: ArrayLike, group: ArrayLike, fabric: Fabric,
               domain: ArrayLike | None = None) -> FloatArray:
    """Each device sends `send_bytes` in total, spread evenly over the other devices."""
    size, n = arr(send_bytes), arr(group)
    spans = n > _local(n, fabric, domain)
    bw = np.where(spans, fabric.out_bw_bytes_s, fabric.up_bw_bytes_s) * fabric.efficiency
    lat = np.where(spans, fabric.out_latency_s, fabric.up_latency_s)
    return np.where(n > 1.0, lat * np.log2(np.maximum(n, 2.0)) + size / bw, 0.0)


def send_recv(size_bytes: ArrayLike, cross_domain: ArrayLike, fabric: Fabric) -> FloatArray:
    """Point-to-point transfer between neighbouring pipeline stages."""
    size = arr(size_bytes)
    spans = np.asarray(cross_domain, dtype=bool)
    bw = np.where(spans, fabric.out_bw_bytes_s, fabric.up_bw_bytes_s) * fabric.efficiency
    lat = np.where(spans, fabric.out_latency_s, fabric.up_latency_s)
    return lat + size / bw
