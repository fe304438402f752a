"""Memory footprint per device: weights, KV cache, activations, runtime reserve; placement over
the accelerator's tiers (CIM arrays or SRAM hold weights where they fit, DRAM/HBM behind), KV
capacity in tokens, and what reading each kind of byte costs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hardware.llm import ModelArch
from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .device import Device
from .transformer import Formats, Parallel, kv_bytes_per_token, weight_bytes_per_device


@dataclass(frozen=True)
class MemoryPlan:
    """Per-device memory of one replica configuration (arrays over candidates)."""

    weights_bytes: FloatArray
    activation_bytes: FloatArray
    runtime_reserve_bytes: float
    capacity_bytes: float
    kv_capacity_bytes: FloatArray
    """Device memory given to the KV cache."""
    kv_host_capacity_bytes: FloatArray
    """KV bytes that may live in host memory (0 without offload)."""
    kv_bytes_per_token: FloatArray
    """Per device, one token of context in every layer of a stage."""
    weight_s_per_byte: FloatArray
    """Seconds to stream one weight byte, averaged over the tiers holding the weights."""
    kv_s_per_byte: float
    act_s_per_byte: float
    host_s_per_byte: float
    fits: BoolArray
    """Weights and workspace fit, with room for at least some KV cache."""

    @property
    def kv_capacity_tokens(self) -> FloatArray:
        """Tokens of context the replica can cache on its devices (all layers)."""
        return np.floor(self.kv_capacity_bytes / self.kv_bytes_per_token)

    @property
    def kv_total_capacity_tokens(self) -> FloatArray:
        """Device plus host-offload KV capacity, in tokens."""
        return np.floor((self.kv_capacity_bytes + self.kv_host_capacity_bytes)
                        / self.kv_bytes_per_token)

    def kv_seconds_per_byte(self, demand_tokens: ArrayLike) -> FloatArray:
        """Mean time per KV byte when `demand_tokens` are cached: the part past device
        capacity is read from host memory over the host link."""
        demand = np.maximum(arr(demand_tokens), 1.0)
        spill = np.clip(1.0 - self.kv_capacity_tokens / demand, 0.0, 1.0)
        return (1.0 - spill) * self.kv_s_per_byte + spill * self.host_s_per_byte


def activation_bytes(arch: ModelArch, par: Parallel, act_bytes: ArrayLike,
                     tokens_per_step: ArrayLike) -> FloatArray:
    """Peak activation workspace of one step on one device: the widest layer's inputs and
    outputs for every token of the step, plus fp32 logits of the LM head."""
    widest = max(arch.mlp.intermediate if arch.mlp else 0,
                 arch.moe.expert.intermediate * arch.moe.top_k if arch.moe else 0)
    tokens = arr(tokens_per_step)
    per_token = (4.0 * arch.hidden + 2.0 * widest / par.tp) * arr(act_bytes)
    return tokens * per_token + 4.0 * arch.vocab / par.tp * np.minimum(tokens, 512.0)


def plan_memory(arch: ModelArch, device: Device, par: Parallel, fmt: Formats,
                tokens_per_step: ArrayLike, *, kv_offload: bool = False) -> MemoryPlan:
    """Place weights over the device tiers (fastest first) and give what is left of the main
    tier, times the engine's KV fraction, to the KV cache."""
    acc, eff, engine = device.accelerator, device.efficiency, device.engine
    weights = weight_bytes_per_device(arch, par, fmt)
    act = activation_bytes(arch, par, fmt.act_bytes, tokens_per_step)
    main = acc.main_memory
    reserve = engine.runtime_reserve_bytes
    remaining = weights.copy()
    weight_time = np.zeros_like(weights)
    main_free = arr(0.0)
    for tier in acc.device_memory:
        room = tier.capacity_bytes - (reserve + act if tier is main else 0.0)
        placed = np.clip(np.minimum(remaining, room), 0.0, None)
        weight_time = weight_time + placed / (tier.bandwidth_bytes_s * eff.memory)
        remaining = remaining - placed
        if tier is main:
            main_free = np.maximum(room - placed, 0.0)
    kv_capacity = main_free * engine.kv_memory_fraction
    host_bw = device.host_bw_bytes_s
    host_cap = arr(0.0)
    if kv_offload and device.host_tier is not None and host_bw > 0:
        host_cap = arr(device.host_tier.capacity_bytes / np.maximum(par.tp * par.pp, 1.0))
    kv_per_token = kv_bytes_per_token(arch, par, fmt)
    fits = (remaining <= 1e-6 * np.maximum(weights, 1.0)) & (kv_capacity > kv_per_token)
    return MemoryPlan(
        weights_bytes=weights, activation_bytes=act, runtime_reserve_bytes=reserve,
        capacity_bytes=acc.device_memory_bytes, kv_capacity_bytes=kv_capacity,
        kv_host_capacity_bytes=host_cap * np.ones_like(weights), kv_bytes_per_token=kv_per_token,
        weight_s_per_byte=weight_time / np.maximum(weights, 1.0),
        kv_s_per_byte=1.0 / (main.bandwidth_bytes_s * eff.memory),
        act_s_per_byte=1.0 / (main.bandwidth_bytes_s * eff.memory),
        host_s_per_byte=1.0 / (host_bw * eff.memory) if host_bw > 0 else float("inf"),
        fits=np.asarray(fits, dtype=bool))
