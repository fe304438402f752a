"""Inference step times and scenario answers (static batch, maximum throughput).

A `Replica` is one model on `tp x pp` devices of one accelerator type, with arrays over
candidates for parallelism and formats. `step_time` prices one engine step; `static` and
`max_throughput` turn steps into time-to-first-token, time per output token and throughput.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import cached_property
from typing import TypeVar

import numpy as np

from ..hardware.llm import ModelArch
from ..hardware.precision import bytes_per_value
from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .comm import AllReduce, AllToAll, SendRecv
from .device import Device
from .memory import MemoryPlan, plan_memory
from .roofline import op_time_at
from .transformer import (
    Formats,
    Parallel,
    StepConstants,
    StepOps,
    StepShape,
    step_constants,
    step_ops,
)

BOUNDS = ("compute", "memory", "network", "overhead")
T = TypeVar("T")

# A GPU's draw when it waits (clocks up, SMs idle), as a fraction of its power limit. H100 SXM
# boards draw about 100-150 W of 700 W between kernels of a running server; an assumption of
# this model, reported in every estimate's assumptions.
IDLE_POWER_FRACTION = 0.25
# Launches a replayed CUDA graph costs the host per step (one graph per stage, plus inputs).
GRAPH_LAUNCHES_PER_STEP = 4.0


@dataclass(frozen=True)
class Replica:
    """One model replica on `tp * pp` devices, vectorised over candidates."""

    arch: ModelArch
    device: Device
    par: Parallel
    fmt: Formats
    peak_flops: FloatArray
    """Dense peak FLOP/s of the format the weight GEMMs run in, per candidate."""
    act_peak_flops: float
    """Dense peak FLOP/s of the 16-bit activation format (attention, element-wise math)."""
    memory: MemoryPlan
    op_energy_j: FloatArray
    """Energy of one operation in the format the GEMMs run in (J/op); 0 without an energy
    model (such chips are priced by power draw)."""
    kv_offload: bool = False

    @property
    def devices(self) -> FloatArray:
        return self.par.devices

    @property
    def streams_weights(self) -> bool:
        """Whether GEMMs stream weights into a compute pipeline (not compute-in-memory)."""
        return self.device.accelerator.kind != "cim"

    @cached_property
    def step_plan(self) -> StepPlan:
        """What `step_time` needs of this replica whatever the step's shape, worked out on
        first use (the replica is immutable; `replace` makes a new one with its own)."""
        return StepPlan.of(self)


@dataclass(frozen=True)
class StepPlan:
    """The shape-independent inputs of `step_time` for one replica: the operators' constants,
    peak rates as arrays, the collectives' latency and bandwidth terms, the launches of an
    ungraphed step. Each is the expression `step_time` would evaluate on every call, so
    using them keeps its results bit-identical."""

    ops: StepConstants
    peak: FloatArray
    real_peak: FloatArray
    """peak * the efficiency a large GEMM reaches."""
    act_peak: FloatArray
    act_real_peak: FloatArray
    weight_spb: FloatArray
    kv_spb: FloatArray
    act_spb: FloatArray
    streamed: bool
    tp_allreduce: AllReduce
    attn_allreduce: AllReduce | None
    """None without attention data parallelism (the tensor group's all-reduce serves)."""
    alltoall: AllToAll | None
    """None for a dense model."""
    launches: FloatArray
    """Kernel launches of a step without CUDA graphs."""
    cross_shape: tuple[int, ...]
    p2p: SendRecv | None
    """None where every candidate is one stage."""
    multi_stage: BoolArray
    stages_minus_1: FloatArray
    devices: FloatArray

    @classmethod
    def of(cls, rep: Replica) -> StepPlan:
        arch, dev, par = rep.arch, rep.device, rep.par
        eff, engine, fabric, mem = dev.efficiency, dev.engine, dev.fabric, rep.memory
        consts = step_constants(arch, par, rep.fmt)
        peak, act_peak = arr(rep.peak_flops), arr(rep.act_peak_flops)
        cross = par.tp * par.pp > fabric.domain
        single = bool(np.all(par.pp <= 1))
        return cls(
            ops=consts,
            peak=peak,
            real_peak=peak * eff.compute,
            act_peak=act_peak,
            act_real_peak=act_peak * eff.compute,
            weight_spb=arr(mem.weight_s_per_byte),
            kv_spb=arr(mem.kv_s_per_byte),
            act_spb=arr(mem.act_s_per_byte),
            streamed=rep.streams_weights,
            tp_allreduce=AllReduce.of(par.tp, fabric),
            attn_allreduce=None if np.all(par.attn_dp == 1.0) else
            AllReduce.of(par.attn_tp, fabric),
            alltoall=AllToAll.of(par.ep, fabric) if arch.is_moe else None,
            launches=engine.kernels_per_layer * consts.lps + 4.0,
            cross_shape=np.shape(cross),
            p2p=None if single else SendRecv.of(cross, fabric),
            multi_stage=par.pp > 1,
            stages_minus_1=par.pp - 1.0,
            devices=par.devices,
        )


def default_kv_precision(device: Device, weight: str) -> str:
    """The KV-cache format an engine pairs with a weight format: the weight format itself for
    8-bit and wider weights, fp8 for narrower ones (bf16 where the chip has no fp8)."""
    if weight in ("fp4", "int4", "fp6", "posit4") or weight == "fp8":
        return "fp8" if device.accelerator.supports("fp8") else "bf16"
    return weight


def default_attention_dp(arch: ModelArch, device: Device, tp: ArrayLike) -> FloatArray:
    """Attention data-parallel groups an engine uses unless told: the whole tensor group for
    MoE models where the engine runs them that way (`moe_attention_dp`), else one group."""
    t = arr(tp)
    if arch.is_moe and device.engine.moe_attention_dp:
        return t
    return np.ones_like(t)


def micro_batch(seqs: ArrayLike, pp: ArrayLike) -> FloatArray:
    """Sequences in one pipeline micro-batch: the batch split over the `pp` stages, but never
    less than one whole sequence (with fewer sequences than stages, some stages idle)."""
    b = arr(seqs)
    return np.minimum(b, np.maximum(b / arr(pp), 1.0))


def precision_arrays(device: Device, weight: ArrayLike, kv: ArrayLike | None,
                     ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(weight bytes, kv bytes, peak FLOP/s, J per op) for arrays of precision names.

    GEMMs run in the weight format when the chip has a native rate for it (fp8 and fp4
    weights come with activations in the same format, as TensorRT-LLM and vLLM run them);
    weight-only formats without a native rate widen to the next one the chip has. Names are
    resolved once per distinct value, not once per candidate.
    """
    acc = device.accelerator
    w_names, w_index = np.unique(np.asarray(weight).astype(str), return_inverse=True)
    wb = np.array([bytes_per_value(p) for p in w_names])[w_index].reshape(np.shape(weight))
    peak = np.array([acc.peak_flops_for(p) for p in w_names])[w_index].reshape(np.shape(weight))
    energy = acc.energy
    op_j = np.array([energy.op_energy_j(acc.compute_precision(p)) if energy else 0.0
                     for p in w_names])[w_index].reshape(np.shape(weight))
    if kv is None:
        kb = np.array([bytes_per_value(default_kv_precision(device, p))
                       for p in w_names])[w_index].reshape(np.shape(weight))
    else:
        k_names, k_index = np.unique(np.asarray(kv).astype(str), return_inverse=True)
        kb = np.array([bytes_per_value(p) for p in k_names])[k_index].reshape(np.shape(kv))
    return wb, kb, peak, op_j


def build_replica(arch: ModelArch, device: Device, *, tp: ArrayLike = 1, pp: ArrayLike = 1,
                  ep: ArrayLike = 1, weight_precision: ArrayLike = "bf16",
                  kv_precision: ArrayLike | None = None, kv_offload: bool = False,
                  tokens_per_step: ArrayLike | None = None,
                  attn_dp: ArrayLike | None = None) -> Replica:
    """A replica with its memory plan; `kv_precision` defaults per `default_kv_precision`,
    `attn_dp` (attention data-parallel groups inside the tensor group) per
    `default_attention_dp`."""
    wb, kb, peak, op_j = precision_arrays(device, weight_precision, kv_precision)
    if not device.engine.sliding_window:
        # The engine attends over the whole context even where the model was trained with a
        # window, so it also caches and reads all of it.
        arch = replace(arch, sliding_window=0, window_layers=0)
    par = Parallel.of(tp, pp, ep, default_attention_dp(arch, device, tp) if attn_dp is None
                      else attn_dp)
    fmt = Formats.of(wb, kb, 2.0)
    budget = device.engine.max_tokens_per_step if tokens_per_step is None else tokens_per_step
    plan = plan_memory(arch, device, par, fmt, budget, kv_offload=kv_offload)
    act_peak = device.accelerator.peak_flops_for("bf16")
    return Replica(arch, device, par, fmt, peak, act_peak, plan, op_j, kv_offload)


@dataclass(frozen=True)
class StepTime:
    """One engine step of the whole replica (all pipeline stages), in seconds, with the part
    of it each resource accounts for, and its energy in joules."""

    time: FloatArray
    compute: FloatArray
    memory: FloatArray
    network: FloatArray
    overhead: FloatArray
    energy_j: FloatArray
    stage_time: FloatArray
    flops: FloatArray = field(repr=False)

    def bound(self) -> np.ndarray:
        """Per candidate, which of compute / memory / network / overhead took longest."""
        parts = np.stack(np.broadcast_arrays(self.compute, self.memory, self.network,
                                             self.overhead))
        labels: np.ndarray = np.asarray(BOUNDS, dtype=object)[np.argmax(parts, axis=0)]
        return labels


def step_time(rep: Replica, shape: StepShape, *, kv_demand_tokens: ArrayLike | None = None) \
        -> StepTime:
    """Time of one step that carries `shape` through every pipeline stage in turn.

    Per stage: roofline of each operator, TP all-reduces and EP all-to-alls (not overlapped
    with compute, as in decode), and the host's kernel launches: in an engine with CUDA
    graphs they hide behind the device's work unless they take longer (the CPU-bound regime
    of small batches); in one without, each kernel's launch adds to the step. Then the
    stages run one after another, and the engine's fixed per-step host time is added once.
    """
    arch, dev, par = rep.arch, rep.device, rep.par
    eff, engine = dev.efficiency, dev.engine
    plan = rep.step_plan
    ops = step_ops(arch, shape, par, rep.fmt, plan.ops)
    kv_spb = plan.kv_spb if kv_demand_tokens is None or not rep.kv_offload \
        else arr(rep.memory.kv_seconds_per_byte(kv_demand_tokens))
    compute = arr(0.0)
    memory = arr(0.0)
    flops = arr(0.0)
    for op in ops.ops:
        if op.weight_format_math:
            peak, real_peak = plan.peak, plan.real_peak
        else:
            peak, real_peak = plan.act_peak, plan.act_real_peak
        t = op_time_at(op, peak, real_peak, eff, plan.weight_spb, kv_spb, plan.act_spb,
                       streamed=plan.streamed)
        is_compute = t.compute >= t.memory
        compute = compute + np.where(is_compute, t.time, 0.0)
        memory = memory + np.where(is_compute, 0.0, t.time)
        flops = flops + op.flops
    tp_allreduce = plan.tp_allreduce(ops.tp_allreduce_bytes)
    # Without attention data parallelism the attention group is the tensor group and its
    # all-reduce carries the same bytes: the same collective, priced once.
    attn_allreduce = tp_allreduce if plan.attn_allreduce is None else \
        plan.attn_allreduce(ops.attn_allreduce_bytes)
    network = (ops.allreduces_per_stage * tp_allreduce
               + ops.attn_allreduces_per_stage * attn_allreduce)
    if plan.alltoall is not None:
        network = network + ops.moe_layers_per_stage * plan.alltoall(ops.ep_alltoall_bytes)
    device_time = compute + memory + network
    graphed = np.asarray(shape.prefill_tokens <= 0) & engine.graphs
    launches = np.where(graphed, GRAPH_LAUNCHES_PER_STEP, plan.launches)
    host = launches * dev.kernel_launch_s
    # A graph-capturing engine replays decode as one graph and runs prompt-carrying steps
    # with kernels long enough (or piecewise-captured) for the host to stay ahead: launches
    # hide behind the device unless they take longer. An engine without graphs launches every
    # kernel of every step one by one; the element-wise kernels between the GEMMs finish
    # faster than the next launch, so the device waits kernel by kernel and the launches add
    # to its time (the small-batch gap that CUDA graphs close).
    stage = np.maximum(device_time, host) if engine.graphs else device_time + host
    if plan.p2p is None:
        # One stage: no hand-over (the zeros the expression below gives, without pricing it).
        p2p = np.zeros(np.broadcast_shapes(np.shape(par.pp), np.shape(ops.pp_send_bytes),
                                           plan.cross_shape))
    else:
        p2p = np.where(plan.multi_stage, plan.stages_minus_1 * plan.p2p(ops.pp_send_bytes), 0.0)
    # Per-sequence host work (scheduling, sampling, block tables) runs between device steps;
    # attention data-parallel groups each schedule their own share of the sequences.
    seqs = (shape.decode_seqs + shape.prefill_seqs) * par.pp / par.attn_dp
    serial_host = engine.step_overhead_s + eff.seq_overhead_s * seqs
    total = par.pp * stage + p2p + serial_host
    overhead = par.pp * (stage - device_time) + serial_host
    pp = par.pp
    energy = _energy(rep, ops, ops_flops=flops * pp, time=total, busy=pp * device_time + p2p)
    return StepTime(total, pp * compute, pp * memory, pp * network + p2p, overhead, energy,
                    stage, flops * plan.devices)


def _energy(rep: Replica, ops: StepOps, *, ops_flops: FloatArray, time: FloatArray,
            busy: FloatArray) -> FloatArray:
    """Joules of one step for the whole replica. Chips with an energy model (CIM, NPU) pay per
    operation and per byte by tier (the bytes of `ops`, every stage) plus static power; the
    others draw power between idle and their limit in proportion to how busy they are."""
    acc = rep.device.accelerator
    devices = rep.par.devices
    if acc.energy is not None:
        pp = rep.par.pp
        weight_bytes = sum((o.weight_bytes for o in ops.ops), start=arr(0.0)) * pp
        kv_bytes = sum((o.kv_bytes for o in ops.ops), start=arr(0.0)) * pp
        act_bytes = sum((o.act_bytes for o in ops.ops), start=arr(0.0)) * pp
        e = acc.energy
        op_j = rep.op_energy_j
        weight_tier = acc.device_memory[0].kind
        main_tier = acc.main_memory.kind
        byte_w = e.per_byte_j.get(weight_tier, 0.0)
        byte_kv = e.per_byte_j.get(main_tier, 0.0)
        per_device = (ops_flops * op_j + weight_bytes * byte_w + (kv_bytes + act_bytes) * byte_kv
                      + e.static_power_w * time)
        return per_device * devices
    if acc.tdp_w is None:
        return np.full(np.broadcast(time, devices).shape, np.nan)
    util = np.clip(busy / np.maximum(time, 1e-30), 0.0, 1.0)
    power = acc.tdp_w * (IDLE_POWER_FRACTION + (1.0 - IDLE_POWER_FRACTION) * util)
    return power * time * devices


# ----------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class SpecDecode:
    """Speculative decoding: `draft_len` drafted tokens per step, each accepted with
    probability `acceptance` (independently, as in Leviathan et al. 2023). The draft costs
    `draft_len` decode steps of `draft` (a small model on the same devices) or, for drafting
    heads inside the target (MTP, EAGLE, Medusa), `draft_cost_fraction` of a target step."""

    draft_len: int
    acceptance: float
    draft: Replica | None = None
    draft_cost_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.draft_len < 1:
            raise ValueError("draft_len must be >= 1")
        if not 0.0 <= self.acceptance <= 1.0:
            raise ValueError("acceptance must be within 0..1")
        if self.draft_cost_fraction < 0:
            raise ValueError("draft_cost_fraction must be >= 0")

    @property
    def expected_tokens(self) -> float:
        """Tokens emitted per verification step: (1 - a^(k+1)) / (1 - a)."""
        a, k = self.acceptance, self.draft_len
        return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


def draft_cost(rep: Replica, spec: SpecDecode, seqs: ArrayLike, ctx: ArrayLike,
               ) -> tuple[FloatArray, FloatArray]:
    """Seconds and joules to draft `spec.draft_len` tokens for the `seqs` sequences one target
    step carries: that many decode steps of the draft model, or for drafting heads inside the
    target a fraction of a target decode step each."""
    if spec.draft is not None:
        one = step_time(spec.draft, StepShape.of(decode_seqs=seqs, decode_ctx=ctx))
        scale = float(spec.draft_len)
    else:
        one = step_time(rep, StepShape.of(decode_seqs=seqs, decode_ctx=ctx))
        scale = spec.draft_cost_fraction * spec.draft_len
    return scale * one.time, scale * one.energy_j


def _decode_step(rep: Replica, seqs: FloatArray, ctx: FloatArray, spec: SpecDecode | None,
                 kv_demand: FloatArray | None, extra: StepShape | None = None) \
        -> tuple[StepTime, FloatArray]:
    """A decode step (optionally sharing the step with prefill work) and the output tokens
    each sequence gains from it."""
    k = 0 if spec is None else spec.draft_len
    shape = StepShape.of(decode_seqs=seqs, decode_ctx=ctx, decode_tokens_per_seq=1.0 + k,
                         prefill_tokens=0.0 if extra is None else extra.prefill_tokens,
                         prefill_ctx=0.0 if extra is None else extra.prefill_ctx,
                         prefill_seqs=0.0 if extra is None else extra.prefill_seqs)
    step = step_time(rep, shape, kv_demand_tokens=kv_demand)
    if spec is None:
        return step, arr(1.0)
    extra_time, extra_energy = draft_cost(rep, spec, seqs, ctx)
    combined = StepTime(step.time + extra_time, step.compute, step.memory, step.network,
                        step.overhead + extra_time, step.energy_j + extra_energy,
                        step.stage_time, step.flops)
    return combined, arr(spec.expected_tokens)


@dataclass(frozen=True)
class Estimate:
    """Scenario answer per candidate (arrays), SI units."""

    ttft_s: FloatArray
    tpot_s: FloatArray
    output_tok_s_total: FloatArray
    output_tok_s_per_accelerator: FloatArray
    batch: FloatArray
    energy_j_per_token: FloatArray
    feasible: BoolArray
    prefill: StepTime
    decode: StepTime
    kv_tokens_needed: FloatArray
    limit: np.ndarray
    """What capped the batch: "requested", "engine", "kv_cache", "token_budget"."""


def _chunks(tokens: FloatArray, budget: ArrayLike) -> FloatArray:
    return np.maximum(np.ceil(tokens / arr(budget)), 1.0)


def static(rep: Replica, *, batch: ArrayLike, input_len: ArrayLike, output_len: ArrayLike,
           spec: SpecDecode | None = None) -> Estimate:
    """`batch` requests of `input_len` tokens start together and generate `output_len` each.

    TTFT is one prefill of the whole batch; every decode step then runs the batch at its mean
    context (attention cost is linear in context, so the mean step is the mean of the steps).
    """
    b, i, o = arr(batch), arr(input_len), arr(output_len)
    pre = step_time(rep, StepShape.of(prefill_tokens=b * i, prefill_ctx=i / 2.0,
                                      prefill_seqs=b))
    micro = micro_batch(b, rep.par.pp)
    dec, per_step = _decode_step(rep, micro, i + o / 2.0, spec, b * (i + o))
    tpot = dec.time / per_step
    total = pre.time + np.maximum(o - 1.0, 0.0) * tpot
    out_total = b * o / total
    needed = b * (i + o)
    cap = rep.memory.kv_total_capacity_tokens if rep.kv_offload else \
        rep.memory.kv_capacity_tokens
    feasible = rep.memory.fits & (needed <= cap)
    energy = (pre.energy_j + np.maximum(o - 1.0, 0.0) * dec.energy_j / per_step) / (b * o)
    return Estimate(pre.time, tpot, out_total, out_total / rep.devices, b * np.ones_like(total),
                    energy, np.asarray(feasible, dtype=bool), pre, dec, needed,
                    np.full(np.shape(total), "requested", dtype=object))


def max_throughput(rep: Replica, *, input_len: ArrayLike, output_len: ArrayLike,
                   max_batch: ArrayLike | None = None, prefill_chunk: ArrayLike | None = None,
                   spec: SpecDecode | None = None) -> Estimate:
    """Identical requests arrive without limit; the engine keeps as many in flight as its batch
    limit, its token budget per step and the KV cache allow.

    Steady state (Little's law over steps): with `b` sequences in flight, each finishing after
    `output_len` steps, `b / output_len` requests start per step, so a step carries `b` decode
    tokens and `b * input_len / output_len` prompt tokens, and emits `b` output tokens.
    """
    if rep.kv_offload:
        # Spilling KV to host memory buys a larger batch at the price of host-link reads; an
        # engine spills only where that raises throughput, so take the better per candidate.
        spilled = _max_throughput(rep, input_len, output_len, max_batch, prefill_chunk, spec)
        resident = _max_throughput(replace(rep, kv_offload=False), input_len, output_len,
                                   max_batch, prefill_chunk, spec)
        return _pick(spilled.output_tok_s_total >= resident.output_tok_s_total, spilled,
                     resident)
    return _max_throughput(rep, input_len, output_len, max_batch, prefill_chunk, spec)


def _pick(mask: ArrayLike, a: T, b: T) -> T:
    """Element-wise choice between two results of the same dataclass type."""
    values = {}
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        values[f.name] = _pick(mask, x, y) if is_dataclass(x) else np.where(mask, x, y)
    return type(a)(**values)


def _max_throughput(rep: Replica, input_len: ArrayLike, output_len: ArrayLike,
                    max_batch: ArrayLike | None, prefill_chunk: ArrayLike | None,
                    spec: SpecDecode | None) -> Estimate:
    i, o = arr(input_len), arr(output_len)
    engine = rep.device.engine
    per_seq = i + o if engine.reserve_kv_for_output else i + o / 2.0
    cap = rep.memory.kv_total_capacity_tokens if rep.kv_offload else \
        rep.memory.kv_capacity_tokens
    by_kv = np.floor(cap / per_seq)
    budget = arr(engine.max_tokens_per_step if prefill_chunk is None else prefill_chunk)
    by_budget = np.floor(budget / (1.0 + i / o)) * rep.par.pp
    by_engine = arr(engine.max_batch if max_batch is None else max_batch) * rep.par.pp
    b = np.maximum(np.minimum(np.minimum(by_kv, by_budget), by_engine), 0.0)
    limit = np.where(b == by_kv, "kv_cache", np.where(b == by_budget, "token_budget",
                                                      "engine")).astype(object)
    b_safe = np.maximum(b, 1.0)
    micro = micro_batch(b_safe, rep.par.pp)
    gain = 1.0 if spec is None else spec.expected_tokens
    prefill = StepShape.of(prefill_tokens=micro * i / (o / gain), prefill_ctx=i / 2.0,
                           prefill_seqs=micro / (o / gain))
    mixed, per_step = _decode_step(rep, micro, i + o / 2.0, spec, b_safe * (i + o / 2.0),
                                   extra=prefill)
    out_total = b_safe * per_step / mixed.time
    # A new prompt joins a loaded step; long prompts take several chunks of the budget.
    ttft = mixed.time * _chunks(i, budget)
    decode_only, _ = _decode_step(rep, micro, i + o / 2.0, spec, None)
    feasible = rep.memory.fits & (b >= 1.0)
    energy = mixed.energy_j / (b_safe * per_step)
    return Estimate(ttft, mixed.time / per_step, out_total, out_total / rep.devices, b, energy,
                    np.asarray(feasible, dtype=bool), mixed, decode_only, b * per_seq, limit)
