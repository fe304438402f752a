"""LLM architectures as typed, immutable specs, read from Hugging Face `config.json` fields.

The same parser reads the catalog's models and a user's own config.json. Parameter counts come
from the architecture (never from a name), so a catalog test can hold them to published counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .errors import SpecError
from .fields import Fields

MODEL_TYPES: Final = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe",
                      "deepseek_v3", "llama4", "gpt2", "gpt_neox", "gptj", "falcon", "gpt_oss",
                      "phi3")

_GATED_ACTS: Final = ("silu", "swiglu", "swish")


@dataclass(frozen=True, slots=True)
class Attention:
    """Self-attention of one layer. `kind` gqa covers MHA (kv_heads == heads) and MQA."""

    kind: Literal["gqa", "mla"]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    # MLA (DeepSeek-V2/V3): low-rank compressed KV of kv_lora_rank + rope dims per token.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    sinks: bool = False

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.kind == "mla" \
            else self.head_dim

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim if self.kind == "mla" else self.head_dim

    def params(self, hidden: int) -> int:
        """Weights of Q, K, V and O projections (and their biases) in values."""
        h = self.num_heads
        if self.kind == "mla":
            qk = self.qk_head_dim
            if self.q_lora_rank:
                q = hidden * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * h * qk
            else:
                q = hidden * h * qk
            kv = (hidden * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
                  + self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim))
            o = h * self.v_head_dim * hidden
            return q + kv + o
        q = hidden * h * self.head_dim
        kv = 2 * hidden * self.num_kv_heads * self.head_dim
        o = h * self.head_dim * hidden
        bias = (h + 2 * self.num_kv_heads) * self.head_dim if self.qkv_bias else 0
        bias += hidden if self.o_bias else 0
        return q + kv + o + bias + (h if self.sinks else 0)

    def kv_values_per_token(self) -> int:
        """Values cached per token per layer (K and V; MLA caches the compressed latent)."""
        if self.kind == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim


@dataclass(frozen=True, slots=True)
class Mlp:
    """A feed-forward block: `intermediate` wide, gated (SwiGLU: 3 matrices) or not (2)."""

    intermediate: int
    gated: bool
    bias: bool = False

    @property
    def matrices(self) -> int:
        return 3 if self.gated else 2

    def params(self, hidden: int) -> int:
        bias = (self.intermediate * (self.matrices - 1) + hidden) if self.bias else 0
        return self.matrices * hidden * self.intermediate + bias


@dataclass(frozen=True, slots=True)
class Moe:
    """Mixture of experts: `num_experts` routed experts, `top_k` per token, plus shared ones."""

    num_experts: int
    top_k: int
    expert: Mlp
    shared: Mlp | None = None
    router_bias: bool = False

    def router_params(self, hidden: int) -> int:
        return hidden * self.num_experts + (self.num_experts if self.router_bias else 0)

    def params(self, hidden: int) -> int:
        shared = self.shared.params(hidden) if self.shared else 0
        return self.num_experts * self.expert.params(hidden) + shared + self.router_params(hidden)

    def active_params(self, hidden: int) -> int:
        shared = self.shared.params(hidden) if self.shared else 0
        return self.top_k * self.expert.params(hidden) + shared + self.router_params(hidden)


@dataclass(frozen=True, slots=True)
class ModelArch:
    """A decoder-only transformer. Layers are counted by kind, since cost is additive over them:
    `dense_layers` carry `mlp`, `moe_layers` carry `moe`; `window_layers` of all layers attend
    over at most `sliding_window` tokens."""

    id: str
    name: str
    model_type: str
    hidden: int
    layers: int
    vocab: int
    attention: Attention
    dense_layers: int
    mlp: Mlp | None
    moe_layers: int = 0
    moe: Moe | None = None
    tied_embeddings: bool = False
    learned_positions: int = 0
    lm_head_bias: bool = False
    norm_values_per_layer: int = 0
    sliding_window: int = 0
    window_layers: int = 0
    max_context: int = 0
    published_params: float | None = None
    published_active_params: float | None = None
    published_active_counts_input_embedding: bool = True
    source: str = ""
    params_source: str = ""

    def __post_init__(self) -> None:
        if min(self.hidden, self.layers, self.vocab) < 1:
            raise ValueError("hidden, layers and vocab must be >= 1")
        if self.dense_layers + self.moe_layers != self.layers:
            raise ValueError("dense_layers + moe_layers must equal layers")
        if self.dense_layers and self.mlp is None:
            raise ValueError("dense layers need an mlp")
        if self.moe_layers and self.moe is None:
            raise ValueError("moe layers need a moe block")
        if not 0 <= self.window_layers <= self.layers:
            raise ValueError("window_layers must be within 0..layers")

    @property
    def is_moe(self) -> bool:
        return self.moe_layers > 0

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden + self.learned_positions * self.hidden

    @property
    def lm_head_params(self) -> int:
        """Unembedding weights that are not shared with the embedding (0 when tied)."""
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return head + (self.vocab if self.lm_head_bias else 0)

    @property
    def attention_params_per_layer(self) -> int:
        return self.attention.params(self.hidden)

    def _layer_params(self, active: bool) -> int:
        attn = self.layers * (self.attention_params_per_layer + self.norm_values_per_layer)
        dense = self.dense_layers * (self.mlp.params(self.hidden) if self.mlp else 0)
        moe = 0
        if self.moe is not None:
            per = self.moe.active_params(self.hidden) if active else self.moe.params(self.hidden)
            moe = self.moe_layers * per
        return attn + dense + moe

    @property
    def params(self) -> int:
        """Total parameters (values), embeddings and final norm included."""
        return self.embedding_params + self._layer_params(False) + self.lm_head_params \
            + self.hidden

    @property
    def active_params(self) -> int:
        """Parameters a token touches (routed experts counted top_k times, not num_experts),
        each stored matrix counted once, as total parameters count them."""
        return self.embedding_params + self._layer_params(True) + self.lm_head_params \
            + self.hidden

    @property
    def matmul_params_per_token(self) -> int:
        """Weights multiplied per token (2 FLOPs each): the active layers and the unembedding,
        which is a GEMM even when it shares the embedding's matrix."""
        return self._layer_params(True) + self.vocab * self.hidden

    @property
    def comparable_active_params(self) -> int:
        """Active parameters counted the way the publisher counted them: some publishers leave
        the input embedding (a table lookup, no FLOPs) out of the active count."""
        if self.published_active_counts_input_embedding:
            return self.active_params
        return self.matmul_params_per_token + self.hidden

    @property
    def kv_values_per_token(self) -> int:
        """KV-cache values per token over all layers (one sequence, full context)."""
        return self.layers * self.attention.kv_values_per_token()


# ----------------------------------------------------------------------------- parsing


def parse_model(data: Mapping[str, Any], file: str, *, model_id: str | None = None) -> ModelArch:
    """A catalog entry (`id`, `name`, `config`, published counts) or a bare config.json."""
    top = Fields(data, file)
    if top.has("config"):
        config = top.sub("config")
        mid = top.string("id") if model_id is None else model_id
        meta: dict[str, Any] = {
            "name": top.string("name", mid),
            "source": top.string("source", ""),
            "published_params": top.number("published_params", None, positive=True),
            "published_active_params": top.number("published_active_params", None,
                                                  positive=True),
            "params_source": top.string("params_source", ""),
            "published_active_counts_input_embedding":
                top.boolean("published_active_counts_input_embedding", True),
        }
    else:
        config = top
        mid = model_id or file
        meta = {"name": mid, "source": file}
    return _parse_config(config, mid, meta)


def _parse_config(cfg: Fields, model_id: str, meta: dict[str, Any]) -> ModelArch:
    model_type = cfg.choice("model_type", MODEL_TYPES)
    if model_type == "llama4":
        text = cfg.sub("text_config")
        return _build(text, model_id, model_type, meta, family="llama4")
    return _build(cfg, model_id, model_type, meta, family=model_type)


def _gated(cfg: Fields, default_act: str) -> bool:
    act = cfg.string("hidden_act", None) or cfg.string("activation_function", None) \
        or default_act
    return act in _GATED_ACTS


def _build(cfg: Fields, model_id: str, model_type: str, meta: dict[str, Any],
           family: str) -> ModelArch:
    if family in ("gpt2", "gptj"):
        hidden = cfg.integer("n_embd", minimum=1)
        layers = cfg.integer("n_layer", minimum=1)
        heads = cfg.integer("n_head", minimum=1)
        kv_heads = heads
        inner = cfg.integer("n_inner", None, minimum=1) or 4 * hidden
        max_ctx = cfg.integer("n_positions", 0)
    else:
        hidden = cfg.integer("hidden_size", minimum=1)
        layers = cfg.integer("num_hidden_layers", minimum=1)
        heads = cfg.integer("num_attention_heads", minimum=1)
        kv_key = "num_kv_heads" if family == "falcon" else "num_key_value_heads"
        kv_heads = cfg.integer(kv_key, heads, minimum=1)
        if family == "falcon" and not cfg.boolean("new_decoder_architecture", False) \
                and cfg.boolean("multi_query", True):
            kv_heads = 1
        inner = cfg.integer("intermediate_size", None, minimum=1) \
            or cfg.integer("ffn_hidden_size", None, minimum=1) or 4 * hidden
        max_ctx = cfg.integer("max_position_embeddings", 0)
    vocab = cfg.integer("vocab_size", minimum=1)
    if heads % kv_heads:
        raise cfg.error("num_key_value_heads", f"{kv_heads} does not divide {heads} heads")
    head_dim = cfg.integer("head_dim", None, minimum=1) or hidden // heads

    biased = family in ("gpt2", "gpt_neox", "falcon") and cfg.boolean("bias", family != "falcon")
    attn_bias = cfg.boolean("attention_bias", family in ("qwen2", "gpt_oss")) or biased
    if family == "deepseek_v3":
        attention = Attention(
            kind="mla", num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            q_lora_rank=cfg.integer("q_lora_rank", 0),
            kv_lora_rank=cfg.integer("kv_lora_rank", minimum=1),
            qk_nope_head_dim=cfg.integer("qk_nope_head_dim", minimum=1),
            qk_rope_head_dim=cfg.integer("qk_rope_head_dim", minimum=1),
            v_head_dim=cfg.integer("v_head_dim", minimum=1))
    else:
        attention = Attention(kind="gqa", num_heads=heads, num_kv_heads=kv_heads,
                              head_dim=head_dim, qkv_bias=attn_bias,
                              o_bias=attn_bias and family != "qwen2",
                              sinks=family == "gpt_oss")

    gated = family not in ("gpt2", "gpt_neox", "gptj", "falcon") and _gated(cfg, "silu")
    mlp_bias = family in ("gpt2", "gpt_neox", "gptj") or biased
    dense_mlp = Mlp(inner, gated, bias=mlp_bias)
    moe: Moe | None = None
    moe_layers = 0
    if family == "mixtral":
        moe = Moe(cfg.integer("num_local_experts", minimum=1),
                  cfg.integer("num_experts_per_tok", minimum=1), Mlp(inner, True))
        moe_layers = layers
    elif family == "qwen3_moe":
        expert = Mlp(cfg.integer("moe_intermediate_size", minimum=1), True)
        shared_size = cfg.integer("shared_expert_intermediate_size", 0)
        moe = Moe(cfg.integer("num_experts", minimum=1),
                  cfg.integer("num_experts_per_tok", minimum=1), expert,
                  Mlp(shared_size, True) if shared_size else None)
        step = cfg.integer("decoder_sparse_step", 1, minimum=1)
        only_dense = cfg.raw("mlp_only_layers", [])
        moe_layers = sum(1 for i in range(layers)
                         if i not in only_dense and (i + 1) % step == 0)
    elif family == "deepseek_v3":
        expert = Mlp(cfg.integer("moe_intermediate_size", minimum=1), True)
        n_shared = cfg.integer("n_shared_experts", 0)
        moe = Moe(cfg.integer("n_routed_experts", minimum=1),
                  cfg.integer("num_experts_per_tok", minimum=1), expert,
                  Mlp(n_shared * expert.intermediate, True) if n_shared else None)
        first_dense = cfg.integer("first_k_dense_replace", 0)
        freq = cfg.integer("moe_layer_freq", 1, minimum=1)
        moe_layers = sum(1 for i in range(first_dense, layers) if i % freq == 0)
    elif family == "llama4":
        expert = Mlp(inner, True)
        moe = Moe(cfg.integer("num_local_experts", minimum=1),
                  cfg.integer("num_experts_per_tok", minimum=1), expert, Mlp(inner, True))
        dense_mlp = Mlp(cfg.integer("intermediate_size_mlp", inner, minimum=1), True)
        listed = cfg.raw("moe_layers", None)
        if isinstance(listed, list):
            moe_layers = len(listed)
        else:
            step = cfg.integer("interleave_moe_layer_step", 1, minimum=1)
            moe_layers = sum(1 for i in range(layers) if (i + 1) % step == 0)
    elif family == "gpt_oss":
        size = inner
        moe = Moe(cfg.integer("num_local_experts", minimum=1),
                  cfg.integer("num_experts_per_tok", None, minimum=1)
                  or cfg.integer("experts_per_token", minimum=1),
                  Mlp(size, True, bias=True), router_bias=True)
        moe_layers = layers

    window, window_layers = _sliding_window(cfg, family, layers)
    norm_values = 4 * hidden if family in ("gpt2", "gpt_neox", "falcon") else 2 * hidden
    if family == "gptj":
        norm_values = 2 * hidden  # one LayerNorm with bias ahead of the parallel block
    tied_default = family in ("gpt2",)
    try:
        return ModelArch(
            id=model_id, name=meta["name"], model_type=model_type, hidden=hidden, layers=layers,
            vocab=vocab, attention=attention, dense_layers=layers - moe_layers,
            mlp=dense_mlp if layers - moe_layers else None, moe_layers=moe_layers, moe=moe,
            tied_embeddings=cfg.boolean("tie_word_embeddings", tied_default),
            learned_positions=max_ctx if family == "gpt2" else 0,
            lm_head_bias=family == "gptj", norm_values_per_layer=norm_values,
            sliding_window=window, window_layers=window_layers, max_context=max_ctx,
            published_params=meta.get("published_params"),
            published_active_params=meta.get("published_active_params"),
            published_active_counts_input_embedding=meta.get(
                "published_active_counts_input_embedding", True),
            source=meta.get("source", ""), params_source=meta.get("params_source", ""))
    except ValueError as err:
        raise SpecError(str(err), file=cfg.file, field=cfg.path or None) from None


def _sliding_window(cfg: Fields, family: str, layers: int) -> tuple[int, int]:
    """(window tokens, layers that use it). Chunked attention (Llama 4) counts as a window."""
    if family == "llama4":
        chunk = cfg.integer("attention_chunk_size", 0)
        no_rope = cfg.raw("no_rope_layers", None)
        if chunk and isinstance(no_rope, list) and len(no_rope) == layers:
            # no_rope_layers[i] == 1 means layer i uses RoPE and chunked (local) attention.
            return chunk, sum(1 for flag in no_rope if flag)
        if chunk:
            return chunk, layers - layers // 4
        return 0, 0
    window = cfg.integer("sliding_window", 0) if cfg.has("sliding_window") else 0
    if not window or not cfg.boolean("use_sliding_window", True):
        return 0, 0
    layer_types = cfg.raw("layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == layers:
        return window, sum(1 for kind in layer_types if kind == "sliding_attention")
    if family in ("qwen2", "qwen3", "qwen3_moe"):
        limit = cfg.integer("max_window_layers", layers)
        return window, max(0, layers - limit)
    return window, layers
