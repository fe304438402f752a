"""Collectives under a latency-bandwidth (alpha-beta) model over a two-level hierarchy.

Devices of one group sit `local` to a scale-up domain (NVLink, xGMI, ICI, PCIe); a group larger
than the domain spans domains over the scale-out NICs. Ring algorithms; bandwidths are per
direction per device; `efficiency` is the fraction of link bandwidth a collective reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import ArrayLike, BoolArray, FloatArray, arr


@dataclass(frozen=True)
class Fabric:
    """Per-device link figures: bytes/s per direction and one-way latency in seconds."""

    up_bw_bytes_s: float
    up_latency_s: float
    domain: float
    out_bw_bytes_s: float
    out_latency_s: float
    efficiency: float = 0.8


@dataclass(frozen=True)
class _RingPlan:
    """The parts of `passes` ring passes over `n` devices that do not depend on the bytes
    (the same expressions `_ring` evaluates, so its results are bit-identical)."""

    on: BoolArray
    latency: FloatArray
    share: FloatArray
    rate: float

    @classmethod
    def of(cls, n: FloatArray, bw: float, lat: float, eff: float, passes: float) -> _RingPlan:
        n = np.maximum(n, 1.0)
        steps = passes * (n - 1.0)
        return cls(n > 1.0, steps * lat, passes * (n - 1.0) / n, bw * eff)

    def __call__(self, size: FloatArray) -> FloatArray:
        out: FloatArray = np.where(self.on, self.latency + self.share * size / self.rate, 0.0)
        return out


def _ring(size: FloatArray, n: FloatArray, bw: float, lat: float, eff: float,
          passes: float) -> FloatArray:
    """`passes` ring passes (1 for reduce-scatter / all-gather, 2 for all-reduce)."""
    return _RingPlan.of(n, bw, lat, eff, passes)(size)


def _local(n: FloatArray, fabric: Fabric, domain: ArrayLike | None) -> FloatArray:
    """Members of the group that share one scale-up domain. `domain` overrides the fabric's
    where the group's ranks are strided (a data-parallel group skips the tensor-parallel
    ranks between its members, so fewer of them share a domain)."""
    room = fabric.domain if domain is None else np.maximum(arr(domain), 1.0)
    return np.minimum(n, room)


@dataclass(frozen=True)
class AllReduce:
    """`all_reduce` over one group and fabric with what does not depend on the bytes worked out
    once: `AllReduce.of(group, fabric, domain)(size)` is `all_reduce(size, group, fabric,
    domain)`, bit for bit."""

    local: FloatArray
    inside: _RingPlan
    across: _RingPlan
    spans: BoolArray
    """Where the group spans scale-up domains (an all-reduce across them too)."""
    any_spans: bool

    @classmethod
    def of(cls, group: ArrayLike, fabric: Fabric, domain: ArrayLike | None = None) -> AllReduce:
        n = arr(group)
        local = _local(n, fabric, domain)
        remote = np.maximum(n / local, 1.0)
        spans = remote > 1.0
        return cls(local,
                   _RingPlan.of(local, fabric.up_bw_bytes_s, fabric.up_latency_s,
                                fabric.efficiency, 2.0),
                   _RingPlan.of(remote, fabric.out_bw_bytes_s, fabric.out_latency_s,
                                fabric.efficiency, 2.0),
                   spans, bool(np.any(spans)))

    def __call__(self, size_bytes: ArrayLike) -> FloatArray:
        size = arr(size_bytes)
        inside = self.inside(size)
        if not self.any_spans:
            # Every across term is masked to 0.0 (and has the shape of `inside`): adding the
            # zero keeps the sum bit-identical without pricing what it masks.
            out: FloatArray = inside + 0.0
            return out
        across = self.across(size / self.local)
        result: FloatArray = inside + np.where(self.spans, across, 0.0)
        return result


def all_reduce(size_bytes: ArrayLike, group: ArrayLike, fabric: Fabric,
               domain: ArrayLike | None = None) -> FloatArray:
    """Time of an all-reduce of `size_bytes` per device over `group` devices.

    Within a domain: ring. Across domains: reduce-scatter inside, all-reduce of the shard
    across domains over the NICs, all-gather inside (the hierarchical algorithm NCCL uses).
    """
    return AllReduce.of(group, fabric, domain)(size_bytes)


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


@dataclass(frozen=True)
class AllToAll:
    """`all_to_all` over one group and fabric with what does not depend on the bytes worked
    out once: `AllToAll.of(group, fabric, domain)(send)` is `all_to_all(send, group, fabric,
    domain)`, bit for bit."""

    on: BoolArray
    latency: FloatArray
    bw: FloatArray

    @classmethod
    def of(cls, group: ArrayLike, fabric: Fabric, domain: ArrayLike | None = None) -> AllToAll:
        n = arr(group)
        spans = n > _local(n, fabric, domain)
        bw = np.where(spans, fabric.out_bw_bytes_s, fabric.up_bw_bytes_s) * fabric.efficiency
        lat = np.where(spans, fabric.out_latency_s, fabric.up_latency_s)
        return cls(n > 1.0, lat * np.log2(np.maximum(n, 2.0)), bw)

    def __call__(self, send_bytes: ArrayLike) -> FloatArray:
        out: FloatArray = np.where(self.on, self.latency + arr(send_bytes) / self.bw, 0.0)
        return out


def all_to_all(send_bytes: ArrayLike, group: ArrayLike, fabric: Fabric,
               domain: ArrayLike | None = None) -> FloatArray:
    """Each device sends `send_bytes` in total, spread evenly over the other devices."""
    return AllToAll.of(group, fabric, domain)(send_bytes)


@dataclass(frozen=True)
class SendRecv:
    """`send_recv` between one pair of stages with its link worked out once:
    `SendRecv.of(cross_domain, fabric)(size)` is `send_recv(size, cross_domain, fabric)`, bit
    for bit."""

    latency: FloatArray
    bw: FloatArray

    @classmethod
    def of(cls, cross_domain: ArrayLike, fabric: Fabric) -> SendRecv:
        spans = np.asarray(cross_domain, dtype=bool)
        bw = np.where(spans, fabric.out_bw_bytes_s, fabric.up_bw_bytes_s) * fabric.efficiency
        lat = np.where(spans, fabric.out_latency_s, fabric.up_latency_s)
        return cls(lat, bw)

    def __call__(self, size_bytes: ArrayLike) -> FloatArray:
        out: FloatArray = self.latency + arr(size_bytes) / self.bw
        return out


def send_recv(size_bytes: ArrayLike, cross_domain: ArrayLike, fabric: Fabric) -> FloatArray:
    """Point-to-point transfer between neighbouring pipeline stages."""
    return SendRecv.of(cross_domain, fabric)(size_bytes)
