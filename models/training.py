"""Training step time, memory and FLOPs of a transformer under TP x PP x DP x CP x EP, vectorised
over a grid of layouts.

One optimizer step runs `microbatches` micro-batches of `micro_batch` sequences of `seq_len`
tokens through every pipeline stage (1F1B, interleaved over `vp` virtual stages), then reduces
gradients over the data-parallel group and steps the optimizer. Each device's work per
micro-batch is priced by the same roofline and collective models as inference; recomputation
re-runs the forward pass (full) or the norms and activation functions (selective).

Rank order follows Megatron-Core (tensor innermost, then context, expert/data, pipeline
outermost), so a data-parallel group is strided by tp x cp ranks, which decides how many of its
members share one scale-up domain. Experts are split `ep` ways by expert and `tp` ways inside
each expert (Megatron's default expert tensor parallelism).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet, Efficiency, TrainingEfficiency
from ..hardware.llm import ModelArch
from ..hardware.precision import bytes_per_value
from ..hardware.training_engine import RECOMPUTE, TrainingEngine
from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .comm import Fabric, all_gather, all_reduce, all_to_all, send_recv
from .device import Device

ACT_BYTES: Final = 2.0
"""Activations, gradients of activations and attention run in bf16."""
PARAM_BYTES: Final = 2.0
"""Model weights kept in bf16 for the forward and backward passes."""
OPTIMIZER_BYTES_PER_PARAM: Final = 12.0
"""Adam in mixed precision: an fp32 master copy and the two fp32 moments."""
ADAM_TRAFFIC_BYTES_PER_PARAM: Final = 30.0
"""Bytes the optimizer step streams per parameter: read the fp32 master, both moments and the
gradient (16), write master and moments (12), write the bf16 weight (2)."""
LOGIT_BYTES: Final = 4.0
"""Logits and their gradient are kept in fp32 for the cross-entropy."""
ATTENTION_BACKWARD: Final = 2.5
"""Flash-attention backward runs five matrix products against the forward's two."""
GEMM_BACKWARD: Final = 2.0
"""A GEMM's backward is two GEMMs of its size: activation gradient and weight gradient."""

RECOMPUTE_CODES: Final = {name: float(i) for i, name in enumerate(RECOMPUTE)}


@dataclass(frozen=True)
class TrainLayout:
    """Parallel degrees, batch sizes and memory options; arrays that broadcast together.

    `recompute` holds codes 0 none, 1 selective, 2 full; `zero` the ZeRO stage 0..3 (1 is
    Megatron's distributed optimizer, 3 is FSDP); `offload_optimizer` 1 keeps optimizer states
    and the optimizer step in host memory; `offload_activations` is the fraction of layers
    whose saved activations are copied to host memory between forward and backward.
    """

    tp: FloatArray
    pp: FloatArray
    dp: FloatArray
    cp: FloatArray
    ep: FloatArray
    vp: FloatArray
    micro_batch: FloatArray
    global_batch: FloatArray
    seq_len: FloatArray
    recompute: FloatArray
    zero: FloatArray
    offload_optimizer: FloatArray
    offload_activations: FloatArray

    @classmethod
    def of(cls, *, tp: ArrayLike = 1, pp: ArrayLike = 1, dp: ArrayLike = 1, cp: ArrayLike = 1,
           ep: ArrayLike = 1, vp: ArrayLike = 1, micro_batch: ArrayLike = 1,
           global_batch: ArrayLike, seq_len: ArrayLike, recompute: ArrayLike = 0,
           zero: ArrayLike = 1, offload_optimizer: ArrayLike = 0,
           offload_activations: ArrayLike = 0) -> TrainLayout:
        parts = np.broadcast_arrays(*(arr(x) for x in (
            tp, pp, dp, cp, ep, vp, micro_batch, global_batch, seq_len, recompute, zero,
            offload_optimizer, offload_activations)))
        return cls(*(np.array(p, dtype=np.float64) for p in parts))

    @property
    def devices(self) -> FloatArray:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def microbatches(self) -> FloatArray:
        """Micro-batches each data-parallel rank runs per step (gradient accumulation)."""
        return self.global_batch / (self.dp * self.micro_batch)

    @property
    def tokens_per_step(self) -> FloatArray:
        return self.global_batch * self.seq_len


@dataclass(frozen=True)
class TrainSetup:
    """Everything but the layout: model, device, framework, precision, fitted fractions."""

    arch: ModelArch
    device: Device
    engine: TrainingEngine
    precision: str
    """Format the weight GEMMs run in (bf16, fp16, fp8, fp4)."""
    training: TrainingEfficiency

    @property
    def efficiency(self) -> Efficiency:
        return self.device.efficiency


def training_setup(catalog: Catalog, calibration: CalibrationSet, arch: ModelArch,
                   accelerator: str, precision: str, engine: str) -> TrainSetup:
    """The setup of a training job from catalog ids. The Device's serving-engine profile is
    not read by the training model (only the accelerator, its efficiencies, fabric and host
    link are); any catalog engine fills the slot."""
    acc = catalog.accelerator(accelerator)
    device = Device(acc, calibration.for_device(acc.id, None), catalog.engine("trtllm"))
    return TrainSetup(arch, device, catalog.training_engine(engine), precision,
                      calibration.training)


@dataclass(frozen=True)
class TrainMemory:
    """Bytes per device on the fullest pipeline stage (arrays over layouts)."""

    weights: FloatArray
    gradients: FloatArray
    optimizer: FloatArray
    activations: FloatArray
    logits: FloatArray
    reserve: float
    capacity: float
    optimizer_host: FloatArray
    """Optimizer bytes kept in host memory (offload), not counted against the device."""

    @property
    def total(self) -> FloatArray:
        return (self.weights + self.gradients + self.optimizer + self.activations
                + self.logits + self.reserve)

    @property
    def fits(self) -> BoolArray:
        return np.asarray(self.total <= self.capacity, dtype=bool)

    def components(self) -> dict[str, FloatArray]:
        return {"weights": self.weights, "gradients": self.gradients,
                "optimizer": self.optimizer, "activations": self.activations,
                "logits": self.logits, "reserve": arr(self.reserve) + 0 * self.weights}


@dataclass(frozen=True)
class TrainStep:
    """Seconds per optimizer step and where they go (arrays over layouts)."""

    step_time_s: FloatArray
    compute_s: FloatArray
    """GEMMs and attention of every micro-batch, recomputation included."""
    memory_s: FloatArray
    """Bandwidth-bound element-wise work (norms, activations, casts, cross-entropy)."""
    bubble_s: FloatArray
    """Pipeline fill and drain."""
    tp_comm_s: FloatArray
    cp_comm_s: FloatArray
    ep_comm_s: FloatArray
    pp_comm_s: FloatArray
    dp_comm_s: FloatArray
    """Exposed (not overlapped) communication of each kind."""
    optimizer_s: FloatArray
    overhead_s: float
    tokens_per_s_per_device: FloatArray
    model_flops_per_token: FloatArray
    """As the framework counts them (its attention and recomputation conventions)."""
    hardware_flops_per_token: FloatArray
    """What the devices execute: causal attention, recomputation included."""
    peak_flops: float
    """Dense peak of the precision the weight GEMMs run in, FLOP/s."""
    memory: TrainMemory
    valid: BoolArray
    """The layout is a legal one for the model and batch (divisibility, ranks)."""

    @property
    def model_flops_per_s_per_device(self) -> FloatArray:
        return self.model_flops_per_token * self.tokens_per_s_per_device

    @property
    def mfu(self) -> FloatArray:
        return self.model_flops_per_s_per_device / self.peak_flops

    @property
    def feasible(self) -> BoolArray:
        return np.asarray(self.valid & self.memory.fits, dtype=bool)

    def breakdown(self) -> dict[str, FloatArray]:
        """Seconds per step by cause, summing to `step_time_s`."""
        return {"compute": self.compute_s, "memory": self.memory_s, "bubble": self.bubble_s,
                "tp_comm": self.tp_comm_s, "cp_comm": self.cp_comm_s,
                "ep_comm": self.ep_comm_s, "pp_comm": self.pp_comm_s,
                "dp_comm": self.dp_comm_s, "optimizer": self.optimizer_s,
                "overhead": arr(self.overhead_s) + 0 * self.step_time_s}


# ----------------------------------------------------------------------------- FLOPs


def _attended_context(arch: ModelArch, seq_len: FloatArray, causal: bool) -> FloatArray:
    """Key positions per query, summed over layers: s/2 for causal attention (s for the full
    count), a sliding window caps its layers."""
    ctx = seq_len / 2.0 if causal else seq_len
    full = arch.layers - arch.window_layers
    window = np.minimum(ctx, float(arch.sliding_window)) if arch.window_layers else 0.0
    return full * ctx + arch.window_layers * window


def _kv_values_per_token(arch: ModelArch) -> float:
    """Key and value values one token carries into attention, per layer: the KV heads' (MLA
    expands its latent to every head for training)."""
    att = arch.attention
    heads = att.num_heads if att.kind == "mla" else att.num_kv_heads
    return float(heads * (att.qk_head_dim + att.value_head_dim))


def _attention_dims(arch: ModelArch) -> float:
    """Query-key plus value dimensions over all heads: the width of the two score GEMMs."""
    att = arch.attention
    return float(att.num_heads * (att.qk_head_dim + att.value_head_dim))


def model_flops_per_token(arch: ModelArch, seq_len: ArrayLike, *, causal: bool,
                          include_recompute: bool = False) -> FloatArray:
    """Training FLOPs per token (forward and backward) as frameworks count model FLOPs: 6 per
    weight a token multiplies (the LM head included), plus the attention scores and values
    over the causal half or all of the sequence; `include_recompute` adds the forward pass of
    the layers again (Megatron-LM 2021's formula, closer to hardware FLOPs)."""
    s = arr(seq_len)
    gemm = 6.0 * float(arch.matmul_params_per_token - arch.vocab * arch.hidden)
    attention = 6.0 * _attention_dims(arch) * _attended_context(arch, s, causal)
    head = 6.0 * float(arch.vocab * arch.hidden)
    layers = (gemm + attention) * (4.0 / 3.0 if include_recompute else 1.0)
    return layers + head


# ----------------------------------------------------------------------------- shapes


def layout_valid(arch: ModelArch, lay: TrainLayout) -> BoolArray:
    """Layouts the model, batch and ranks allow (boolean array)."""
    t, p, d, c, e, v = (np.asarray(x, dtype=np.int64) for x in (
        lay.tp, lay.pp, lay.dp, lay.cp, lay.ep, lay.vp))
    mb, gb, s = (np.asarray(x, dtype=np.int64) for x in (lay.micro_batch, lay.global_batch,
                                                         lay.seq_len))
    att = arch.attention
    ok = (t >= 1) & (p >= 1) & (d >= 1) & (c >= 1) & (e >= 1) & (v >= 1) & (mb >= 1) & (s >= 1)
    ok &= att.num_heads % np.maximum(t, 1) == 0
    if att.kind == "gqa":
        ok &= (att.num_kv_heads % np.maximum(t, 1) == 0) | (t % att.num_kv_heads == 0)
    ok &= p * v <= arch.layers
    ok &= (v == 1) | (p > 1)
    ok &= gb % np.maximum(d * mb, 1) == 0
    m = gb // np.maximum(d * mb, 1)
    # The interleaved schedule runs micro-batches in groups of pp.
    ok &= (v == 1) | (m % np.maximum(p, 1) == 0)
    # Load-balanced context parallelism cuts each sequence into 2 x cp chunks.
    ok &= (c == 1) | (s % np.maximum(2 * c, 1) == 0)
    ok &= (d * c) % np.maximum(e, 1) == 0
    ok &= (e == 1) if arch.moe is None else (arch.moe.num_experts % np.maximum(e, 1) == 0)
    ok &= np.asarray(lay.recompute, dtype=np.int64) <= 2
    ok &= (np.asarray(lay.zero, dtype=np.int64) >= 0) & (np.asarray(lay.zero, dtype=np.int64) <= 3)
    return np.asarray(ok, dtype=bool)


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _Params:
    """Parameters one device holds (values), split into those data-parallel over dp x cp and
    the routed experts, data-parallel over dp x cp / ep."""

    dense: FloatArray
    expert: FloatArray

    @property
    def total(self) -> FloatArray:
        return self.dense + self.expert


def _params_per_device(arch: ModelArch, lay: TrainLayout) -> _Params:
    """On the fullest stage: its share of the layers plus the embedding or LM head (both when
    there is one stage)."""
    expert_total = 0.0
    if arch.moe is not None:
        expert_total = float(arch.moe_layers * arch.moe.num_experts
                             * arch.moe.expert.params(arch.hidden))
    edge_total = float(arch.embedding_params + arch.lm_head_params)
    body = float(arch.params) - edge_total - expert_total
    edge_one = float(max(arch.embedding_params, arch.lm_head_params))
    if arch.tied_embeddings:
        # Tied weights are held (and their gradients summed) on the first and last stage.
        edge_one = float(arch.embedding_params)
    edge = np.where(lay.pp > 1, edge_one, edge_total)
    dense = (body / lay.pp + edge) / lay.tp
    expert = expert_total / (lay.pp * lay.ep * lay.tp)
    return _Params(dense, expert + 0 * dense)


# ----------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class _FfnBlock:
    """One kind of feed-forward block: the fraction of layers that have it, the copies of each
    token it runs (top-k for routed experts), whether it is gated (2 input projections), and
    its intermediate width."""

    share: float
    copies: float
    gated: float
    width: float


def _ffn_blocks(arch: ModelArch) -> list[_FfnBlock]:
    """Dense MLPs, routed experts and shared experts, by the fraction of layers holding them."""
    out: list[_FfnBlock] = []
    if arch.mlp is not None and arch.dense_layers:
        out.append(_FfnBlock(arch.dense_layers / arch.layers, 1.0,
                             2.0 if arch.mlp.gated else 1.0, float(arch.mlp.intermediate)))
    if arch.moe is not None and arch.moe_layers:
        moe, share = arch.moe, arch.moe_layers / arch.layers
        out.append(_FfnBlock(share, float(moe.top_k), 2.0 if moe.expert.gated else 1.0,
                             float(moe.expert.intermediate)))
        if moe.shared is not None:
            out.append(_FfnBlock(share, 1.0, 2.0 if moe.shared.gated else 1.0,
                                 float(moe.shared.intermediate)))
    return out


def _routed_copies(arch: ModelArch) -> float:
    """Routed copies of a token per layer, averaged over layers (top-k on MoE layers)."""
    if arch.moe is None or not arch.moe_layers:
        return 0.0
    return arch.moe.top_k * arch.moe_layers / arch.layers


def _activation_bytes_per_token(arch: ModelArch, lay: TrainLayout, sp: bool, gemm_bytes: float) \
        -> tuple[FloatArray, FloatArray]:
    """Activation bytes one layer keeps per token for the backward pass, on one device:
    (kept without recomputation, saved by selective recomputation). Flash attention keeps
    Q, K, V and the output, never the score matrix; the inputs of weight GEMMs are kept in the
    GEMM's format (the cast copy a low-precision GEMM made in the forward)."""
    att = arch.attention
    h = float(arch.hidden)
    a = ACT_BYTES
    tp = lay.tp
    split = tp if sp else arr(1.0) + 0 * tp
    q = float(att.num_heads * att.qk_head_dim)
    kv = _kv_values_per_token(arch)
    o = float(att.num_heads * att.value_head_dim)
    # Norm inputs (the residual stream) and norm outputs (GEMM inputs) of the two blocks are
    # replicated over the TP group unless sequence parallelism splits them.
    norms = 2.0 * h * (a + gemm_bytes) / split
    attention = ((q + kv) * a + o * gemm_bytes) / tp
    # Each routed copy of the token is kept for the expert GEMMs' weight gradients.
    ffn = _routed_copies(arch) * h * gemm_bytes
    ffn_saved = 0.0
    for b in _ffn_blocks(arch):
        # Activation-function input (bf16) and the down projection's input (GEMM format).
        ffn += b.share * b.copies * b.width * (b.gated * a + gemm_bytes)
        ffn_saved += b.share * b.copies * b.width * gemm_bytes
    per_layer = norms + attention + ffn / tp
    # Selective recomputation re-runs the norms and activation functions, so their outputs
    # are not kept.
    saved = 2.0 * h * gemm_bytes / split + ffn_saved / tp
    return per_layer, saved


def _inflight_microbatches(lay: TrainLayout) -> FloatArray:
    """Micro-batches whose activations the first stage holds at once: pp under 1F1B, raised
    by (pp - 1) / (pp x vp) under the interleaved schedule (Narayanan et al. 2021)."""
    m = lay.microbatches
    pp = lay.pp
    base = np.minimum(pp, m)
    return np.where(pp > 1, base * (1.0 + np.where(lay.vp > 1, (pp - 1.0) / (pp * lay.vp),
                                                     0.0)), 1.0)


def _gemm_input_bytes(precision: str) -> float:
    return min(bytes_per_value(precision), ACT_BYTES)


@dataclass(frozen=True)
class _LayerActivations:
    """Bytes of one layer's activations for one micro-batch on one device."""

    kept: FloatArray
    """What the layer keeps for the backward pass, after recomputation."""
    full: FloatArray
    """Everything it would keep without recomputation (what full recomputation rebuilds)."""


def _layer_activations(setup: TrainSetup, lay: TrainLayout) -> _LayerActivations:
    keep, saved = _activation_bytes_per_token(setup.arch, lay, setup.engine.sequence_parallel,
                                              _gemm_input_bytes(setup.precision))
    layer_input = setup.arch.hidden * ACT_BYTES / np.where(setup.engine.sequence_parallel,
                                                           lay.tp, 1.0)
    per_token = np.select([lay.recompute >= 2, lay.recompute >= 1],
                          [layer_input, keep - saved], keep)
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    return _LayerActivations(per_token * tokens, keep * tokens)


def training_memory(setup: TrainSetup, lay: TrainLayout) -> TrainMemory:
    """Bytes per device: weights, gradients, optimizer states, activations, logits."""
    return _memory(setup, lay, _layer_activations(setup, lay))


def _memory(setup: TrainSetup, lay: TrainLayout, layer: _LayerActivations) -> TrainMemory:
    arch, engine = setup.arch, setup.engine
    params = _params_per_device(arch, lay)
    dp_group = lay.dp * lay.cp
    edp_group = np.maximum(dp_group / lay.ep, 1.0)
    zero = lay.zero

    def sharded(values: _Params, stage: float) -> FloatArray:
        # ZeRO stage `stage` and above shard this state over the data-parallel groups.
        on = zero >= stage
        return np.where(on, values.dense / dp_group + values.expert / edp_group, values.total)

    lowp = bytes_per_value(setup.precision)
    # Low-precision GEMMs keep a cast copy of each weight beside the bf16 one.
    lowp_copy = lowp if lowp < PARAM_BYTES else 0.0
    weights = sharded(params, 3) * (PARAM_BYTES + lowp_copy)
    gradients = sharded(params, 2) * engine.grad_reduce_bytes
    optimizer_all = sharded(params, 1) * OPTIMIZER_BYTES_PER_PARAM
    offload = lay.offload_optimizer > 0
    optimizer = np.where(offload, 0.0, optimizer_all)
    optimizer_host = np.where(offload, optimizer_all, 0.0)

    tokens = lay.micro_batch * lay.seq_len / lay.cp
    acts = layer.kept * arch.layers / lay.pp * _inflight_microbatches(lay) \
        * (1.0 - lay.offload_activations)
    # Full recomputation rebuilds one layer's activations at a time during the backward.
    acts = acts + np.where(lay.recompute >= 2, layer.full, 0.0)
    logits = 2.0 * tokens * arch.vocab / lay.tp * LOGIT_BYTES
    return TrainMemory(weights, gradients, optimizer, acts, logits,
                       engine.runtime_reserve_bytes,
                       setup.device.accelerator.device_memory_bytes, optimizer_host)


# ----------------------------------------------------------------------------- time


@dataclass(frozen=True)
class _MicroBatch:
    """Seconds of one micro-batch on one device of the bottleneck stage."""

    forward: FloatArray
    backward: FloatArray
    recompute: FloatArray
    elementwise: FloatArray
    attention_compute: FloatArray
    """Forward attention time per layer (what context-parallel exchange overlaps with)."""


def _train_gemm_efficiency(rows: FloatArray, setup: TrainSetup) -> FloatArray:
    """Fraction of dense peak a training GEMM with `rows` rows reaches: the fitted training
    fraction, falling for short GEMMs as the accelerator's calibrated size curve says."""
    m = np.maximum(rows, 1.0)
    return setup.training.gemm * m / (m + setup.efficiency.gemm_rows_half)


def _gemm_seconds(flops: FloatArray, weight_bytes: FloatArray, rows: FloatArray,
                  peak: float, setup: TrainSetup, grouped: bool = False) -> FloatArray:
    compute = flops / (peak * _train_gemm_efficiency(rows, setup))
    memory = weight_bytes / (setup.device.accelerator.main_memory.bandwidth_bytes_s
                             * setup.efficiency.memory)
    t = np.maximum(compute, memory)
    return t / setup.training.moe if grouped else t


def _microbatch(setup: TrainSetup, lay: TrainLayout) -> _MicroBatch:
    arch, acc = setup.arch, setup.device.accelerator
    eff = setup.efficiency
    tp, pp = lay.tp, lay.pp
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    h = float(arch.hidden)
    gemm_peak = acc.peak_flops_for(setup.precision)
    attn_peak = acc.peak_flops_for("bf16")
    wb = bytes_per_value(setup.precision)

    # Dense GEMMs of the stage's layers: attention projections everywhere, MLPs on dense
    # layers, shared experts and routers on MoE layers.
    dense_params = float(arch.layers * arch.attention_params_per_layer)
    if arch.mlp is not None:
        dense_params += arch.dense_layers * float(arch.mlp.params(arch.hidden))
    expert_flops_params = 0.0
    expert_touch_params = 0.0
    if arch.moe is not None:
        moe = arch.moe
        shared = float(moe.shared.params(arch.hidden)) if moe.shared is not None else 0.0
        dense_params += arch.moe_layers * (shared + float(moe.router_params(arch.hidden)))
        expert_flops_params = float(arch.moe_layers * moe.top_k * moe.expert.params(arch.hidden))
        expert_touch_params = float(arch.moe_layers * moe.num_experts
                                    * moe.expert.params(arch.hidden))
    dense_f = 2.0 * tokens * dense_params / (tp * pp)
    dense_t = _gemm_seconds(dense_f, dense_params * wb / (tp * pp), tokens, gemm_peak, setup)
    expert_t = arr(0.0) * tokens
    if arch.moe is not None:
        rows = tokens * arch.moe.top_k * lay.ep / arch.moe.num_experts
        expert_t = _gemm_seconds(2.0 * tokens * expert_flops_params / (tp * pp),
                                 expert_touch_params * wb / (tp * pp * lay.ep), rows,
                                 gemm_peak, setup, grouped=True)
    head_f = 2.0 * tokens * arch.vocab * h / tp
    head_t = _gemm_seconds(head_f, arch.vocab * h * wb / tp, tokens, gemm_peak, setup)
    # The LM head sits on the last stage, which is the bottleneck unless pp splits it off.
    attn_f = 2.0 * tokens * _attention_dims(arch) / tp \
        * _attended_context(arch, lay.seq_len, causal=True) / pp
    attn_t = attn_f / (attn_peak * _train_gemm_efficiency(tokens, setup))

    bw = acc.main_memory.bandwidth_bytes_s * eff.memory
    elem_b = _elementwise_bytes(setup, lay, tokens)
    elem = _Elementwise(elem_b.forward / bw, elem_b.backward / bw, elem_b.selective / bw)
    layer_fwd = dense_t + expert_t + attn_t
    forward = layer_fwd + head_t
    backward = GEMM_BACKWARD * (dense_t + expert_t + head_t) + ATTENTION_BACKWARD * attn_t
    recompute = np.select([lay.recompute >= 2, lay.recompute >= 1],
                          [layer_fwd + elem.forward, elem.selective], 0.0)
    return _MicroBatch(forward, backward, recompute, elem.forward + elem.backward,
                       attn_t * pp / arch.layers)


@dataclass(frozen=True)
class _Elementwise:
    forward: FloatArray
    backward: FloatArray
    selective: FloatArray
    """Bytes re-run by selective recomputation (norms and activation functions)."""


def _elementwise_bytes(setup: TrainSetup, lay: TrainLayout, tokens: FloatArray) -> _Elementwise:
    """Bytes the bandwidth-bound kernels of one micro-batch move on one device: norms,
    residual adds, rotary embedding, activation functions, MoE token permutation and the
    cross-entropy (their backward moves twice the forward's bytes), and the casts around
    low-precision GEMMs: each GEMM input in the forward and each output gradient in the
    backward is scanned for its scale, cast, and written in both orientations (the weight
    gradient GEMM needs the transpose)."""
    arch = setup.arch
    att = arch.attention
    h = float(arch.hidden)
    sp = lay.tp if setup.engine.sequence_parallel else arr(1.0) + 0 * lay.tp
    a = ACT_BYTES
    low = bytes_per_value(setup.precision)
    cast = 2.0 * a + 2.0 * low if low < a else 0.0
    q = float(att.num_heads * att.qk_head_dim)
    k = float(att.num_kv_heads * att.qk_head_dim)
    kv = _kv_values_per_token(arch)
    o = float(att.num_heads * att.value_head_dim)
    # Two norms (read, write) and two residual adds (two reads, one write) on the residual
    # stream; rotary on queries and keys.
    stream = (4.0 + 6.0) * h * a / sp
    plain = stream + 2.0 * (q + k) * a / lay.tp
    gemm_in = (h + o) / lay.tp
    gemm_out = (q + kv + h) / lay.tp
    norms_acts = 4.0 * h * a / sp
    # Permute each routed copy of the token to its expert and back (read and write).
    plain = plain + _routed_copies(arch) * 4.0 * h * a / lay.tp
    act_fn = 0.0
    for b in _ffn_blocks(arch):
        act_fn += b.share * b.copies * (b.gated + 1.0) * b.width * a
        gemm_in = gemm_in + b.share * b.copies * (h + b.width) / lay.tp
        gemm_out = gemm_out + b.share * b.copies * (b.gated * b.width + h) / lay.tp
    plain = plain + act_fn / lay.tp
    layers = arch.layers / lay.pp
    # Cross-entropy: write the fp32 logits, softmax, gradient (three passes over them).
    ce = tokens * arch.vocab / lay.tp * LOGIT_BYTES
    forward = tokens * layers * (plain + gemm_in * cast) + ce
    backward = tokens * layers * (2.0 * plain + gemm_out * cast) + 2.0 * ce
    selective = tokens * layers * (norms_acts + act_fn / lay.tp)
    return _Elementwise(forward, backward, selective)


def _strided_domain(fabric: Fabric, stride: FloatArray) -> FloatArray:
    """Members of a group whose ranks are `stride` apart that share one scale-up domain."""
    return np.maximum(np.floor(fabric.domain / stride), 1.0)


def training_step(setup: TrainSetup, lay: TrainLayout) -> TrainStep:
    """Step time, throughput, FLOPs and memory of every layout in `lay`."""
    arch, engine, acc = setup.arch, setup.engine, setup.device.accelerator
    fabric = setup.device.fabric
    valid = layout_valid(arch, lay)
    tp, pp, dp, cp, ep, vp = lay.tp, lay.pp, lay.dp, lay.cp, lay.ep, lay.vp
    tokens = lay.micro_batch * lay.seq_len / cp
    h = float(arch.hidden)
    a = ACT_BYTES
    mb = _microbatch(setup, lay)
    layers = arch.layers / pp
    overlap = setup.training.overlap

    # Tensor parallel: with sequence parallelism each block all-gathers its input and
    # reduce-scatters its output (two blocks a layer); the backward mirrors them and gathers
    # the input again for the weight gradient. Without it, one all-reduce per block each way.
    tp_domain = np.minimum(tp, fabric.domain)
    act = tokens * h * a
    if engine.sequence_parallel:
        fwd_tp = 2.0 * (all_gather(act, tp, fabric, tp_domain)
                        + all_gather(act, tp, fabric, tp_domain))
        bwd_tp = fwd_tp + 2.0 * all_gather(act, tp, fabric, tp_domain)
    else:
        fwd_tp = 2.0 * all_reduce(act, tp, fabric, tp_domain)
        bwd_tp = fwd_tp
    recompute_tp = np.where(lay.recompute >= 2, fwd_tp, 0.0)
    tp_total = (fwd_tp + bwd_tp + recompute_tp) * layers
    tp_exposed = tp_total * ((1.0 - overlap) if engine.tp_comm_overlap else 1.0)

    # Context parallel: a ring passes each device's K and V block cp - 1 times; the backward
    # passes K, V and their gradients. Each pass overlaps the attention of the previous block.
    kv_block = tokens * _kv_values_per_token(arch) * a / np.minimum(
        tp, float(arch.attention.num_kv_heads))
    cp_cross = tp * cp > fabric.domain
    hop = send_recv(kv_block, cp_cross, fabric)
    cp_fwd = (cp - 1.0) * np.maximum(hop - mb.attention_compute / np.maximum(cp, 1.0), 0.0)
    cp_bwd = (cp - 1.0) * np.maximum(2.0 * hop - ATTENTION_BACKWARD * mb.attention_compute
                                     / np.maximum(cp, 1.0), 0.0)
    cp_exposed = np.where(cp > 1, (cp_fwd + cp_bwd) * layers, 0.0)

    # Expert parallel: dispatch and combine all-to-alls per MoE layer, twice more backward.
    ep_exposed = arr(0.0) * tokens
    if arch.moe is not None:
        send = tokens * arch.moe.top_k * h * a / tp * (ep - 1.0) / ep
        ep_domain = _strided_domain(fabric, tp * cp)
        one = all_to_all(send, ep, fabric, ep_domain)
        passes = 4.0 + np.where(lay.recompute >= 2, 2.0, 0.0)
        ep_exposed = np.where(ep > 1, passes * one * arch.moe_layers / pp, 0.0) \
            * ((1.0 - overlap) if engine.tp_comm_overlap else 1.0)

    # Pipeline: each micro-batch crosses vp stage boundaries forward and backward per device.
    boundary = act / np.where(engine.sequence_parallel, tp, 1.0)
    pp_cross = tp * cp * dp > fabric.domain
    pp_exposed = np.where(pp > 1, 2.0 * vp * send_recv(boundary, pp_cross, fabric), 0.0)

    # Activation offload: saved activations go to host memory during the forward and come
    # back during the backward, overlapped with them.
    host_bw = setup.device.host_bw_bytes_s
    host_rate = host_bw if host_bw > 0 else 1e-9
    layer_acts = _layer_activations(setup, lay)
    moved = layer_acts.kept * layers * lay.offload_activations
    copy_s = moved / host_rate
    offload_exposed = np.maximum(copy_s - mb.forward, 0.0) + np.maximum(copy_s - mb.backward,
                                                                        0.0)
    per_mb = (mb.forward + mb.backward + mb.recompute + mb.elementwise
              + tp_exposed + cp_exposed + ep_exposed + pp_exposed + offload_exposed)
    m = lay.microbatches
    bubble_mbs = np.where(pp > 1, (pp - 1.0) / vp, 0.0)

    # Data parallel over dp x cp (experts over dp x cp / ep): gradients reduced, weights
    # gathered back (distributed optimizer), or all-reduced without ZeRO; under ZeRO-3 the
    # weights are gathered for every micro-batch's forward and backward.
    params = _params_per_device(arch, lay)
    dp_group = dp * cp
    edp_group = np.maximum(dp_group / ep, 1.0)
    dp_domain = _strided_domain(fabric, tp * cp)
    grad_b = engine.grad_reduce_bytes

    def collective(per_param_bytes: float, kind: str) -> FloatArray:
        dense = params.dense * per_param_bytes
        expert = params.expert * per_param_bytes
        fn = all_reduce if kind == "all_reduce" else all_gather
        return fn(dense, dp_group, fabric, dp_domain) + fn(expert, edp_group, fabric,
                                                           dp_domain * ep)

    zero = lay.zero
    reduce_s = np.where(zero >= 1, collective(grad_b, "reduce_scatter"),
                        collective(grad_b, "all_reduce"))
    gather_s = np.where(zero >= 1, collective(PARAM_BYTES, "all_gather"), 0.0)
    fsdp_mb = np.where(zero >= 3, 2.0 * collective(PARAM_BYTES, "all_gather"), 0.0)
    if engine.dp_comm_overlap:
        dp_exposed = (np.maximum(reduce_s - mb.backward, 0.0)
                      + np.maximum(gather_s - mb.forward, 0.0))
        fsdp_exposed = np.maximum(fsdp_mb - (mb.forward + mb.backward), 0.0)
    else:
        dp_exposed = reduce_s + gather_s
        fsdp_exposed = fsdp_mb
    dp_exposed = np.where(dp_group > 1, dp_exposed + m * fsdp_exposed, 0.0)

    # Optimizer step over this device's shard, on the device or on the host (offload).
    shard = np.where(zero >= 1, params.dense / dp_group + params.expert / edp_group,
                     params.total)
    on_device = shard * ADAM_TRAFFIC_BYTES_PER_PARAM / (
        acc.main_memory.bandwidth_bytes_s * setup.efficiency.memory)
    on_host = shard * ((grad_b + PARAM_BYTES) + ADAM_TRAFFIC_BYTES_PER_PARAM) / host_rate
    optimizer_s = np.where(lay.offload_optimizer > 0, on_host, on_device)

    compute_per_mb = mb.forward + mb.backward + mb.recompute
    step = (m + bubble_mbs) * per_mb + dp_exposed + optimizer_s + engine.step_overhead_s

    memory = _memory(setup, lay, layer_acts)
    valid = valid & (((lay.offload_optimizer <= 0) & (lay.offload_activations <= 0))
                     | (host_bw > 0))
    tokens_per_s = lay.tokens_per_step / step / lay.devices
    causal = engine.flops_attention == "causal"
    model_flops = model_flops_per_token(arch, lay.seq_len, causal=causal,
                                        include_recompute=engine.flops_include_recompute)
    hardware_flops = np.where(
        lay.recompute >= 2,
        model_flops_per_token(arch, lay.seq_len, causal=True, include_recompute=True),
        model_flops_per_token(arch, lay.seq_len, causal=True))
    return TrainStep(
        step_time_s=step,
        compute_s=m * compute_per_mb,
        memory_s=m * (mb.elementwise + offload_exposed),
        bubble_s=bubble_mbs * per_mb,
        tp_comm_s=m * tp_exposed, cp_comm_s=m * cp_exposed, ep_comm_s=m * ep_exposed,
        pp_comm_s=m * pp_exposed, dp_comm_s=dp_exposed, optimizer_s=optimizer_s,
        overhead_s=engine.step_overhead_s,
        tokens_per_s_per_device=tokens_per_s,
        model_flops_per_token=model_flops + 0 * step,
        hardware_flops_per_token=hardware_flops + 0 * step,
        peak_flops=acc.peak_flops_for(setup.precision),
        memory=memory, valid=valid)
