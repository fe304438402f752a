"""Transformer operators: FLOPs and bytes moved per step, per device, for one pipeline stage.

A step runs `prefill_tokens` prompt tokens (attending on average to `prefill_ctx` earlier
positions) and `decode_seqs` generating sequences (each with `decode_tokens_per_seq` new tokens,
more than one under speculative decoding, over a mean context of `decode_ctx`). Everything is an
array that broadcasts, so one call prices a whole grid of candidates.

Parallelism follows the Megatron / TensorRT-LLM layout: attention heads and dense MLPs are split
`tp` ways; routed experts are split over the same `tp` devices (`ep`-way by expert, `tp/ep`-way
inside each expert); layers are split `pp` ways. Per-device figures are for one stage; the
embedding and LM head are charged to the bottleneck stage.
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
    """Tensor, pipeline and expert parallel degrees (arrays that broadcast)."""

    tp: FloatArray
    pp: FloatArray
    ep: FloatArray

    @classmethod
    def of(cls, tp: ArrayLike = 1, pp: ArrayLike = 1, ep: ArrayLike = 1) -> Parallel:
        return cls(arr(tp), arr(pp), arr(ep))

    @property
    def devices(self) -> FloatArray:
        return self.tp * self.pp


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
    """Bytes each TP all-reduce carries (one per attention and one per MLP block per layer)."""
    allreduces_per_stage: FloatArray
    ep_alltoall_bytes: FloatArray
    """Bytes each device sends in the expert dispatch+combine all-to-all, per MoE layer."""
    moe_layers_per_stage: FloatArray
    pp_send_bytes: FloatArray
    """Activation bytes handed to the next pipeline stage."""

    def total(self, attr: str) -> FloatArray:
        out: FloatArray = sum((getattr(op, attr) for op in self.ops), start=arr(0.0))
        return out


def _kv_shards(arch: ModelArch, tp: FloatArray) -> FloatArray:
    """Devices one layer's KV cache is split over: KV heads split by TP until each device holds
    one head (then replicated); MLA's shared latent is replicated on every TP rank."""
    if arch.attention.kind == "mla":
        return np.ones_like(tp)
    return np.minimum(tp, float(arch.attention.num_kv_heads))


def kv_bytes_per_token(arch: ModelArch, par: Parallel, fmt: Formats,
                       context: ArrayLike | None = None) -> FloatArray:
    """KV-cache bytes one token of context occupies on one device of a stage.

    With `context`, sliding-window layers only keep the last `window` tokens, so the figure is
    the mean per token for a sequence of that context length.
    """
    per_layer = arch.attention.kv_values_per_token() * fmt.kv_bytes / _kv_shards(arch, par.tp)
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


def step_ops(arch: ModelArch, shape: StepShape, par: Parallel, fmt: Formats) -> StepOps:
    """Operators of one step for the bottleneck stage, on one device."""
    att = arch.attention
    d = float(arch.hidden)
    tp, pp = par.tp, par.pp
    lps = arr(arch.layers) / pp
    tokens = shape.tokens
    wb, ab = fmt.weight_bytes, fmt.act_bytes
    ops: list[Op] = []

    # Q/K/V/O projections: dense GEMMs over all tokens.
    proj_params = float(att.params(arch.hidden))
    ops.append(Op("qkvo", 2.0 * tokens * proj_params / tp * lps, proj_params * wb / tp * lps,
                  arr(0.0), tokens * (3.0 * d) * ab / tp * lps, tokens, 3.0))

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
    kv_tok = kv_bytes_per_token(arch, par, fmt) * pp / arch.layers  # per layer per device
    attn_flops = 2.0 * heads / tp * (
        shape.decode_tokens * shape.decode_ctx * dec_dims * dec_layers
        + shape.prefill_tokens * shape.prefill_ctx * pre_dims * pre_layers) / pp
    # Decode streams every cached position once per step (per sequence, not per speculative
    # token); prefill writes its new KV and (flash attention) re-reads the prompt's KV per tile,
    # which the write term dominates.
    attn_kv = kv_tok * (shape.decode_seqs * shape.decode_ctx * dec_layers
                        + shape.prefill_tokens * arch.layers) / pp
    q_dims = float(att.qk_head_dim + att.value_head_dim)
    attn_act = tokens * heads * q_dims * ab / tp * lps
    ops.append(Op("attention", attn_flops, arr(0.0) * tokens, attn_kv, attn_act,
                  np.maximum(shape.decode_tokens_per_seq * heads / np.minimum(
                      tp, float(att.num_kv_heads)), 1.0) + shape.prefill_tokens, 1.0,
                  weight_format_math=False))

    # Dense MLP layers.
    if arch.dense_layers and arch.mlp is not None:
        mlp_params = float(arch.mlp.params(arch.hidden))
        n = arr(arch.dense_layers) / pp
        ops.append(Op("mlp", 2.0 * tokens * mlp_params / tp * n, mlp_params * wb / tp * n,
                      arr(0.0), tokens * (d + arch.mlp.intermediate * 2.0) * ab / tp * n,
                      tokens, 2.0))

    # MoE layers: routed experts (weights read only for experts some token chose), shared
    # experts, router.
    moe_layers_ps = arr(arch.moe_layers) / pp
    alltoall = arr(0.0) * tokens
    if arch.moe_layers and arch.moe is not None:
        moe = arch.moe
        expert_params = float(moe.expert.params(arch.hidden))
        touched = expected_experts_touched(moe.num_experts, moe.top_k, tokens)
        routed_tokens = tokens * moe.top_k
        n = moe_layers_ps
        flops = 2.0 * routed_tokens * expert_params / tp
        wbytes = touched * expert_params * wb / tp
        act = routed_tokens * (d + moe.expert.intermediate * 2.0) * ab / tp
        if moe.shared is not None:
            shared_params = float(moe.shared.params(arch.hidden))
            flops = flops + 2.0 * tokens * shared_params / tp
            wbytes = wbytes + shared_params * wb / tp
        router = float(moe.router_params(arch.hidden))
        flops = flops + 2.0 * tokens * router
        ops.append(Op("moe", flops * n, wbytes * n, arr(0.0), act * n,
                      routed_tokens / np.maximum(touched, 1.0), 4.0, grouped=True))
        # Expert-parallel dispatch and combine: each routed token's activation leaves its
        # device with probability (ep-1)/ep, twice (there and back).
        alltoall = 2.0 * routed_tokens * d * ab / tp * (par.ep - 1.0) / par.ep

    # Embedding lookup and LM head (charged to the bottleneck stage).
    rows = shape.logit_rows
    head_params = float(arch.vocab * arch.hidden)
    ops.append(Op("lm_head", 2.0 * rows * head_params / tp, head_params * wb / tp, arr(0.0),
                  rows * arch.vocab * 4.0 / tp + tokens * d * ab, rows, 0.0))

    # Norms, residual adds, rotary: bandwidth over the activations.
    ops.append(Op("elementwise", 10.0 * tokens * d * lps, arr(0.0) * tokens, arr(0.0),
                  6.0 * tokens * d * ab * lps, tokens, 0.0, weight_format_math=False))

    ar_bytes = tokens * d * ab
    return StepOps(tuple(ops), lps, ar_bytes, 2.0 * lps, alltoall, moe_layers_ps,
                   tokens * d * ab)


def weight_bytes_per_device(arch: ModelArch, par: Parallel, fmt: Formats) -> FloatArray:
    """Weights one device holds: layers split by pp, matrices by tp; embeddings and LM head
    split by tp on the first and last stage (charged to each device of the worst stage)."""
    layer_params = float(arch.params - arch.embedding_params - arch.lm_head_params - arch.hidden)
    edge = float(max(arch.embedding_params, arch.lm_head_params) if not arch.tied_embeddings
                 else arch.embedding_params)
    edge_per_device = np.where(par.pp > 1, edge, float(arch.embedding_params + arch.lm_head_params))
    return (layer_params / par.pp + edge_per_device) * fmt.weight_bytes / par.tp


def parallel_fits(arch: ModelArch, tp: ArrayLike, pp: ArrayLike, ep: ArrayLike) -> np.ndarray:
    """Which (tp, pp, ep) the model's shapes allow (boolean array): tp divides the attention
    heads, and the KV heads and tp divide one another (split, or replicated past them); at most
    one layer per stage; ep divides the experts and tp (experts spread over the tensor group),
    and is 1 for a dense model."""
    t, p, e = (np.asarray(x, dtype=np.int64) for x in (tp, pp, ep))
    att = arch.attention
    ok = (t >= 1) & (p >= 1) & (e >= 1) & (att.num_heads % t == 0) & (p <= arch.layers)
    if att.kind == "gqa":
        kv = att.num_kv_heads
        ok &= (kv % t == 0) | (t % kv == 0)
    ok &= t % e == 0
    ok &= (e == 1) if arch.moe is None else (arch.moe.num_experts % e == 0)
    return np.asarray(ok, dtype=bool)
