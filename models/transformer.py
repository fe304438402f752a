"""Transformer operators: FLOPs and bytes moved per step, per device, for one pipeline stage.

A step runs `prefill_tokens` prompt tokens (attending on average to `prefill_ctx` earlier
positions) and `decode_seqs` generating sequences (each with `decode_tokens_per_seq` new tokens,
more than one under speculative decoding, over a mean context of `decode_ctx`). Everything is an
array that broadcasts, so one call prices a whole grid of candidates.

Parallelism follows the Megatron / TensorRT-LLM layout: attention heads and dense MLPs are split
`tp` ways; routed experts are split over the same `tp` devices (`ep`-way by expert, `tp/ep`-way
inside each expert); layers are split `pp` ways. With attention data parallelism (`attn_dp`, as
SGLang's --enable-dp-attention and TensorRT-LLM's enable_attention_dp run MoE models), the `tp`
devices form `attn_dp` groups that each run attention for their own share of the sequences,
heads split `tp/attn_dp` ways inside a group; the token rows are gathered for the MLP or experts
and scattered back after them. Per-device figures are for one stage; the embedding and LM head
are charged to the bottleneck stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hardware.llm import ModelArch
from .arrays import ArrayLike, FloatArray, arr


@dataclass(frozen=True)
class StepShape:
    """The work of one engine step (all arrays broadcast together)."""

    prefill_tokens: FloatArray
    prefill_ctx: FloatArray
    prefill_seqs: FloatArray
    decode_seqs: FloatArray
    decode_ctx: FloatArray
    decode_tokens_per_seq: FloatArray

    @classmethod
    def of(cls, *, prefill_tokens: ArrayLike = 0.0, prefill_ctx: ArrayLike = 0.0,
           prefill_seqs: ArrayLike = 0.0, decode_seqs: ArrayLike = 0.0,
           decode_ctx: ArrayLike = 0.0, decode_tokens_per_seq: ArrayLike = 1.0) -> StepShape:
        return cls(arr(prefill_tokens), arr(prefill_ctx), arr(prefill_seqs), arr(decode_seqs),
                   arr(decode_ctx), arr(decode_tokens_per_seq))

    @property
    def decode_tokens(self) -> FloatArray:
        return self.decode_seqs * self.decode_tokens_per_seq

    @property
    def tokens(self) -> FloatArray:
        """Token rows every dense GEMM processes this step."""
        return self.prefill_tokens + self.decode_tokens

    @property
    def logit_rows(self) -> FloatArray:
        """Rows of the LM head: the last prompt token of each prefill, every decode token."""
        return self.prefill_seqs + self.decode_tokens


@dataclass(frozen=True)
class Parallel:
    """Tensor, pipeline, expert and attention-data parallel degrees (arrays that broadcast);
    `attn_dp` divides `tp`."""

    tp: FloatArray
    pp: FloatArray
    ep: FloatArray
    attn_dp: FloatArray

    @classmethod
    def of(cls, tp: ArrayLike = 1, pp: ArrayLike = 1, ep: ArrayLike = 1,
           attn_dp: ArrayLike = 1) -> Parallel:
        return cls(arr(tp), arr(pp), arr(ep), arr(attn_dp))

    @property
    def devices(self) -> FloatArray:
        return self.tp * self.pp

    @property
    def attn_tp(self) -> FloatArray:
        """Devices one sequence's attention heads are split over."""
        return self.tp / self.attn_dp


@dataclass(frozen=True)
class Formats:
    """Bytes per value of weights, KV cache and activations (arrays that broadcast)."""

    weight_bytes: FloatArray
    kv_bytes: FloatArray
    act_bytes: FloatArray

    @classmethod
    def of(cls, weight_bytes: ArrayLike, kv_bytes: ArrayLike, act_bytes: ArrayLike = 2.0) \
            -> Formats:
        return cls(arr(weight_bytes), arr(kv_bytes), arr(act_bytes))


@dataclass(frozen=True)
class Op:
    """One operator class for one step on one device: FLOPs, bytes by kind, GEMM rows."""

    name: str
    flops: FloatArray
    weight_bytes: FloatArray
    kv_bytes: FloatArray
    act_bytes: FloatArray
    rows: FloatArray
    """Rows (tokens) per GEMM, which decides how close to peak the GEMM runs."""
    kernels: float
    """Kernels this operator class launches per layer (for host overhead)."""
    weight_format_math: bool = True
    """True for GEMMs against weights (they run in the weight format, fp8 or fp4 included);
    attention and element-wise math run in the 16-bit activation format."""
    grouped: bool = False
    """A grouped GEMM over many experts (MoE), which reaches less of the hardware."""

    @property
    def bytes(self) -> FloatArray:
        return self.weight_bytes + self.kv_bytes + self.act_bytes


@dataclass(frozen=True)
class StepOps:
    """The operators of one step on one device of the bottleneck pipeline stage."""

    ops: tuple[Op, ...]
    layers_per_stage: FloatArray
    tp_allreduce_bytes: FloatArray
    """Bytes each all-reduce over the whole tensor group carries: one per attention and one per
    MLP block per layer; with attention data parallelism only the MLP block's (the gather of
    the token rows before it and the scatter after it move the same bytes)."""
    allreduces_per_stage: FloatArray
    attn_allreduce_bytes: FloatArray
    """Bytes of each attention block's all-reduce inside its `attn_tp` group (attention data
    parallelism only; none where each group is one device)."""
    attn_allreduces_per_stage: FloatArray
    ep_alltoall_bytes: FloatArray
    """Bytes each device sends in the expert dispatch+combine all-to-all, per MoE layer."""
    moe_layers_per_stage: FloatArray
    pp_send_bytes: FloatArray
    """Activation bytes handed to the next pipeline stage."""

    def total(self, attr: str) -> FloatArray:
        out: FloatArray = sum((getattr(op, attr) for op in self.ops), start=arr(0.0))
        return out


def _kv_shards(arch: ModelArch, par: Parallel) -> FloatArray:
    """Devices one layer's KV cache is spread over, on average per cached token: KV heads split
    over the attention group until each device holds one head (then replicated), MLA's shared
    latent replicated on every rank of the group; the `attn_dp` groups hold disjoint sequences."""
    if arch.attention.kind == "mla":
        return par.attn_dp * np.ones_like(par.tp)
    return np.minimum(par.attn_tp, float(arch.attention.num_kv_heads)) * par.attn_dp


def kv_bytes_per_token(arch: ModelArch, par: Parallel, fmt: Formats,
                       context: ArrayLike | None = None) -> FloatArray:
    """KV-cache bytes one token of context occupies on one device of a stage.

    With `context`, sliding-window layers only keep the last `window` tokens, so the figure is
    the mean per token for a sequence of that context length.
    """
    per_layer = arch.attention.kv_values_per_token() * fmt.kv_bytes / _kv_shards(arch, par)
    layers = _attended_layers(arch, context)
    return per_layer * layers / par.pp


def _attended_layers(arch: ModelArch, context: ArrayLike | None) -> FloatArray:
    """Layers weighted by the fraction of `context` they attend to (windows cap it)."""
    if context is None or not arch.window_layers:
        return arr(float(arch.layers))
    ctx = np.maximum(arr(context), 1.0)
    full = arch.layers - arch.window_layers
    return full + arch.window_layers * np.minimum(ctx, arch.sliding_window) / ctx


def expected_experts_touched(num_experts: int, top_k: int, tokens: ArrayLike) -> FloatArray:
    """Distinct experts a batch of `tokens` routes to, for uniform independent top-k routing:
    E * (1 - (1 - k/E)^T)."""
    t = np.maximum(arr(tokens), 0.0)
    return num_experts * (1.0 - np.power(1.0 - top_k / num_experts, t))


@dataclass(frozen=True)
class StepConstants:
    """The parts of `step_ops` that depend only on the model, its parallelism and its formats,
    not on the step's shape: worked out once per replica and reused by every step priced on
    it (each is the same expression `step_ops` evaluated inline, so the results are
    bit-identical)."""

    proj_params: float
    mlp_params: float
    expert_params: float
    shared_params: float
    router_params: float
    head_params: float
    lps: FloatArray
    """Layers per stage."""
    qkvo_weight: FloatArray
    attn_flops_scale: FloatArray
    """2 heads / tp: the factor in front of the attention FLOPs."""
    kv_tok: FloatArray
    """KV bytes per token per layer per device."""
    kv_heads_local: FloatArray
    """KV heads (or their replicas) one device of the attention group holds: min(attn_tp,
    KV heads)."""
    mlp_layers: FloatArray | None
    mlp_weight: FloatArray | None
    moe_layers: FloatArray
    ep_minus_1: FloatArray
    shared_weight: FloatArray | None
    head_weight: FloatArray
    allreduces: FloatArray
    attn_allreduces: FloatArray


def step_constants(arch: ModelArch, par: Parallel, fmt: Formats) -> StepConstants:
    """The shape-independent quantities of `step_ops` for one (arch, par, fmt)."""
    att = arch.attention
    tp, pp, adp = par.tp, par.pp, par.attn_dp
    attn_tp = par.attn_tp
    lps = arr(arch.layers) / pp
    wb = fmt.weight_bytes
    proj_params = float(att.params(arch.hidden))
    heads = float(att.num_heads)
    mlp_params = expert_params = shared_params = router = 0.0
    if arch.moe is not None:
        expert_params = float(arch.moe.expert.params(arch.hidden))
        router = float(arch.moe.router_params(arch.hidden))
    mlp_layers = mlp_weight = None
    if arch.dense_layers and arch.mlp is not None:
        mlp_params = float(arch.mlp.params(arch.hidden))
        mlp_layers = arr(arch.dense_layers) / pp
        mlp_weight = mlp_params * wb / tp * mlp_layers
    shared_weight = None
    if arch.moe_layers and arch.moe is not None and arch.moe.shared is not None:
        shared_params = float(arch.moe.shared.params(arch.hidden))
        shared_weight = shared_params * wb / tp
    head_params = float(arch.vocab * arch.hidden)
    split = adp > 1.0
    return StepConstants(
        proj_params=proj_params,
        mlp_params=mlp_params,
        expert_params=expert_params,
        shared_params=shared_params,
        router_params=router,
        head_params=head_params,
        lps=lps,
        qkvo_weight=proj_params * wb / attn_tp * lps,
        attn_flops_scale=2.0 * heads / tp,
        kv_tok=kv_bytes_per_token(arch, par, fmt) * pp / arch.layers,
        kv_heads_local=np.minimum(attn_tp, float(att.num_kv_heads)),
        mlp_layers=mlp_layers,
        mlp_weight=mlp_weight,
        moe_layers=arr(arch.moe_layers) / pp,
        ep_minus_1=par.ep - 1.0,
        shared_weight=shared_weight,
        head_weight=head_params * wb / tp,
        allreduces=np.where(split, 1.0, 2.0) * lps,
        attn_allreduces=np.where(split & (attn_tp > 1.0), lps, 0.0),
    )


def step_ops(arch: ModelArch, shape: StepShape, par: Parallel, fmt: Formats,
             consts: StepConstants | None = None) -> StepOps:
    """Operators of one step for the bottleneck stage, on one device. `consts` (from
    `step_constants` of the same arch, par and fmt) skips recomputing what the shape does not
    change."""
    c = step_constants(arch, par, fmt) if consts is None else consts
    att = arch.attention
    d = float(arch.hidden)
    tp, pp, adp = par.tp, par.pp, par.attn_dp
    lps = c.lps
    decode_tokens = shape.decode_seqs * shape.decode_tokens_per_seq
    tokens = shape.prefill_tokens + decode_tokens
    zeros = arr(0.0) * tokens
    wb, ab = fmt.weight_bytes, fmt.act_bytes
    ops: list[Op] = []

    # Q/K/V/O projections: dense GEMMs over each attention group's tokens, weights split over
    # the group (so attention data parallelism reads them `attn_dp` times over).
    proj_params = c.proj_params
    ops.append(Op("qkvo", 2.0 * tokens * proj_params / tp * lps, c.qkvo_weight,
                  arr(0.0), tokens * (3.0 * d) * ab / tp * lps, tokens / adp, 3.0))

    # Attention itself: scores and weighted values over the context.
    heads = float(att.num_heads)
    if att.kind == "mla":
        # Decode uses the absorbed form over the shared latent (kv_lora + rope per position);
        # prefill expands to per-head qk (nope+rope) and v dims.
        dec_dims = 2.0 * att.kv_lora_rank + att.qk_rope_head_dim
        pre_dims = float(att.qk_head_dim + att.value_head_dim)
    else:
        dec_dims = pre_dims = 2.0 * att.head_dim
    dec_layers = _attended_layers(arch, shape.decode_ctx)
    pre_layers = _attended_layers(arch, shape.prefill_ctx)
    attn_flops = c.attn_flops_scale * (
        decode_tokens * shape.decode_ctx * dec_dims * dec_layers
        + shape.prefill_tokens * shape.prefill_ctx * pre_dims * pre_layers) / pp
    # Decode streams every cached position once per step (per sequence, not per speculative
    # token); prefill writes its new KV and (flash attention) re-reads the prompt's KV per tile,
    # which the write term dominates.
    attn_kv = c.kv_tok * (shape.decode_seqs * shape.decode_ctx * dec_layers
                          + shape.prefill_tokens * arch.layers) / pp
    q_dims = float(att.qk_head_dim + att.value_head_dim)
    attn_act = tokens * heads * q_dims * ab / tp * lps
    ops.append(Op("attention", attn_flops, zeros, attn_kv, attn_act,
                  np.maximum(shape.decode_tokens_per_seq * heads / c.kv_heads_local, 1.0)
                  + shape.prefill_tokens / adp, 1.0, weight_format_math=False))

    # Dense MLP layers.
    if arch.dense_layers and arch.mlp is not None:
        assert c.mlp_layers is not None and c.mlp_weight is not None
        mlp_params = c.mlp_params
        n = c.mlp_layers
        ops.append(Op("mlp", 2.0 * tokens * mlp_params / tp * n, c.mlp_weight,
                      arr(0.0), tokens * (d + arch.mlp.intermediate * 2.0) * ab / tp * n,
                      tokens, 2.0))

    # MoE layers: routed experts (weights read only for experts some token chose), shared
    # experts, router.
    moe_layers_ps = c.moe_layers
    alltoall = zeros
    if arch.moe_layers and arch.moe is not None:
        moe = arch.moe
        expert_params = c.expert_params
        touched = expected_experts_touched(moe.num_experts, moe.top_k, tokens)
        routed_tokens = tokens * moe.top_k
        n = moe_layers_ps
        flops = 2.0 * routed_tokens * expert_params / tp
        wbytes = touched * expert_params * wb / tp
        act = routed_tokens * (d + moe.expert.intermediate * 2.0) * ab / tp
        if moe.shared is not None:
            assert c.shared_weight is not None
            shared_params = c.shared_params
            flops = flops + 2.0 * tokens * shared_params / tp
            wbytes = wbytes + c.shared_weight
        router = c.router_params
        flops = flops + 2.0 * tokens * router
        ops.append(Op("moe", flops * n, wbytes * n, arr(0.0), act * n,
                      routed_tokens / np.maximum(touched, 1.0), 4.0, grouped=True))
        # Expert-parallel dispatch and combine: each routed token's activation leaves its
        # device with probability (ep-1)/ep, twice (there and back).
        alltoall = 2.0 * routed_tokens * d * ab / tp * c.ep_minus_1 / par.ep

    # Embedding lookup and LM head (charged to the bottleneck stage).
    rows = shape.prefill_seqs + decode_tokens
    head_params = c.head_params
    ar_bytes = tokens * d * ab
    ops.append(Op("lm_head", 2.0 * rows * head_params / tp, c.head_weight, arr(0.0),
                  rows * arch.vocab * 4.0 / tp + ar_bytes, rows, 0.0))

    # Norms, residual adds, rotary: bandwidth over the activations.
    ops.append(Op("elementwise", 10.0 * tokens * d * lps, zeros, zeros,
                  6.0 * tokens * d * ab * lps, tokens, 0.0, weight_format_math=False))

    return StepOps(tuple(ops), lps, ar_bytes, c.allreduces, ar_bytes / adp, c.attn_allreduces,
                   alltoall, moe_layers_ps, ar_bytes)


def weight_bytes_per_device(arch: ModelArch, par: Parallel, fmt: Formats) -> FloatArray:
    """Weights one device holds: layers split by pp, matrices by tp (attention projections by
    the attention group, `tp / attn_dp`); embeddings and LM head split by tp on the first and
    last stage (charged to each device of the worst stage)."""
    layer_params = float(arch.params - arch.embedding_params - arch.lm_head_params - arch.hidden)
    edge = float(max(arch.embedding_params, arch.lm_head_params) if not arch.tied_embeddings
                 else arch.embedding_params)
    edge_per_device = np.where(par.pp > 1, edge, float(arch.embedding_params + arch.lm_head_params))
    attn_params = float(arch.attention.params(arch.hidden) * arch.layers)
    replicated = attn_params / par.pp * (1.0 / par.attn_tp - 1.0 / par.tp)
    return ((layer_params / par.pp + edge_per_device) / par.tp + replicated) * fmt.weight_bytes


def parallel_fits(arch: ModelArch, tp: ArrayLike, pp: ArrayLike, ep: ArrayLike,
                  attn_dp: ArrayLike = 1) -> np.ndarray:
    """Which (tp, pp, ep, attn_dp) the model's shapes allow (boolean array): attn_dp divides
    tp, the attention group (tp / attn_dp) divides the attention heads, and the KV heads and
    the group divide one another (split, or replicated past them); at most one layer per stage;
    ep divides the experts and tp (experts spread over the tensor group), and is 1 for a dense
    model."""
    t, p, e, a = (np.asarray(x, dtype=np.int64) for x in (tp, pp, ep, attn_dp))
    att = arch.attention
    ok = (t >= 1) & (p >= 1) & (e >= 1) & (a >= 1) & (p <= arch.layers)
    ok &= t % np.maximum(a, 1) == 0
    g = np.maximum(t // np.maximum(a, 1), 1)
    ok &= att.num_heads % g == 0
    if att.kind == "gqa":
        kv = att.num_kv_heads
        ok &= (kv % g == 0) | (g % kv == 0)
    ok &= t % e == 0
    ok &= (e == 1) if arch.moe is None else (arch.moe.num_experts % e == 0)
    return np.asarray(ok, dtype=bool)
