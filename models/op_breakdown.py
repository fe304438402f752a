"""Per-operator roofline figures of one replica configuration: FLOPs, bytes and time of each
operator class in the prefill step and the decode step an estimate prices (for roofline charts).

The step shapes mirror `inference.static` and `inference.max_throughput`, and the per-operator
times mirror `inference.step_time`, so the operators of a phase add up to that phase's compute
plus memory time (one pipeline stage; network and host overhead are not operators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import ArrayLike, FloatArray, arr
from .inference import Replica, SpecDecode, micro_batch
from .roofline import op_time
from .transformer import StepShape, step_ops


@dataclass(frozen=True)
class Phase:
    """One step an estimate prices: its name, its shape and the KV tokens cached meanwhile
    (None: the device tier's KV bandwidth, as `step_time` takes it)."""

    name: str
    shape: StepShape
    kv_demand_tokens: FloatArray | None = None


@dataclass(frozen=True)
class OpPoint:
    """One operator class of one step on one device of the bottleneck stage (all layers of
    the stage together): FLOPs, bytes moved, and roofline seconds."""

    phase: str
    name: str
    flops: float
    bytes_moved: float
    time_s: float
    compute_s: float
    memory_s: float

    @property
    def intensity_flop_per_byte(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved > 0 else float("inf")

    @property
    def achieved_flops_s(self) -> float:
        return self.flops / self.time_s if self.time_s > 0 else 0.0

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


def static_phases(rep: Replica, *, batch: ArrayLike, input_len: ArrayLike,
                  output_len: ArrayLike, spec: SpecDecode | None = None) -> tuple[Phase, Phase]:
    """The prefill of the whole batch and a decode step at the mean context, as
    `inference.static` prices them."""
    b, i, o = arr(batch), arr(input_len), arr(output_len)
    k = 0 if spec is None else spec.draft_len
    pre = StepShape.of(prefill_tokens=b * i, prefill_ctx=i / 2.0, prefill_seqs=b)
    dec = StepShape.of(decode_seqs=micro_batch(b, rep.par.pp), decode_ctx=i + o / 2.0,
                       decode_tokens_per_seq=1.0 + k)
    return Phase("prefill", pre), Phase("decode", dec, b * (i + o))


def max_throughput_phases(rep: Replica, *, batch: ArrayLike, input_len: ArrayLike,
                          output_len: ArrayLike, spec: SpecDecode | None = None) \
        -> tuple[Phase, Phase]:
    """The loaded step that carries new prompts beside the running sequences ("prefill") and
    a decode-only step, for `batch` running sequences (the `Estimate.batch` of
    `inference.max_throughput`)."""
    i, o = arr(input_len), arr(output_len)
    b = np.maximum(arr(batch), 1.0)
    micro = micro_batch(b, rep.par.pp)
    k = 0 if spec is None else spec.draft_len
    gain = 1.0 if spec is None else spec.expected_tokens
    ctx = i + o / 2.0
    mixed = StepShape.of(decode_seqs=micro, decode_ctx=ctx, decode_tokens_per_seq=1.0 + k,
                         prefill_tokens=micro * i / (o / gain), prefill_ctx=i / 2.0,
                         prefill_seqs=micro / (o / gain))
    dec = StepShape.of(decode_seqs=micro, decode_ctx=ctx, decode_tokens_per_seq=1.0 + k)
    return Phase("prefill", mixed, b * ctx), Phase("decode", dec)


def op_points(rep: Replica, phase: Phase) -> tuple[OpPoint, ...]:
    """Each operator of `phase` on one device of a scalar (single-candidate) replica."""
    ops = step_ops(rep.arch, phase.shape, rep.par, rep.fmt)
    mem = rep.memory
    kv_spb = mem.kv_s_per_byte if phase.kv_demand_tokens is None or not rep.kv_offload \
        else mem.kv_seconds_per_byte(phase.kv_demand_tokens)
    out = []
    for op in ops.ops:
        peak = rep.peak_flops if op.weight_format_math else rep.act_peak_flops
        t = op_time(op, peak, rep.device.efficiency, mem.weight_s_per_byte, kv_spb,
                    mem.act_s_per_byte, streamed=rep.streams_weights)
        out.append(OpPoint(phase.name, op.name, _scalar(op.flops), _scalar(op.bytes),
                           _scalar(t.time), _scalar(t.compute), _scalar(t.memory)))
    return tuple(out)


def _scalar(value: ArrayLike) -> float:
    a = np.asarray(value, dtype=np.float64)
    if a.size != 1:
        raise ValueError(f"op_points needs a single-candidate replica, got {a.size} values")
    return float(a.reshape(()))
