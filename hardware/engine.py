"""Serving-engine profiles: the scheduler limits and runtime overheads of an inference engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .fields import REQUIRED, Fields


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """What an engine does by default. Times in seconds, fractions of free device memory."""

    id: str
    name: str
    max_batch: int
    """Most sequences in one step (max_batch_size / max_num_seqs)."""
    max_tokens_per_step: int
    """Token budget of one step (max_num_tokens / max_num_batched_tokens)."""
    kv_memory_fraction: float
    """Fraction of device memory left after weights and workspace given to the KV cache."""
    runtime_reserve_bytes: float
    """Device memory the runtime keeps for itself (CUDA context, workspaces, allocator slack)."""
    kernels_per_layer: int
    """Kernels launched per transformer layer per step."""
    graphs: bool
    """Whether decode steps replay CUDA graphs (one launch per step instead of one per kernel)."""
    kernel_launch_s: float
    """Host time to issue one kernel on the reference x86 server host (driver launch plus the
    engine's own dispatch: C++ runtimes pay a few microseconds, Python eager loops more)."""
    step_overhead_s: float
    """Fixed host time per step: scheduling, sampling, bookkeeping."""
    reserve_kv_for_output: bool
    """Admission reserves KV for the whole output (no-evict policy) rather than the prompt."""
    chunked_prefill: bool
    sliding_window: bool
    """Whether the engine applies a model's sliding attention window by default."""
    source: str
    moe_attention_dp: bool = False
    """Whether MoE models run attention data-parallel across the tensor group (each rank
    attends for its own sequences; experts stay split over the group)."""

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_tokens_per_step < 1:
            raise ValueError("max_batch and max_tokens_per_step must be >= 1")
        if not 0 < self.kv_memory_fraction <= 1:
            raise ValueError("kv_memory_fraction must be in (0, 1]")
        if self.runtime_reserve_bytes < 0 or self.step_overhead_s < 0 or \
                self.kernel_launch_s <= 0:
            raise ValueError("runtime_reserve_bytes and step_overhead_s must be >= 0, "
                             "kernel_launch_s > 0")


_FIELDS = ("name", "max_batch", "max_tokens_per_step", "kv_memory_fraction", "runtime_reserve",
           "kernels_per_layer", "graphs", "kernel_launch", "step_overhead",
           "reserve_kv_for_output", "chunked_prefill", "sliding_window", "moe_attention_dp",
           "source", "inherits")


def parse_engine(f: Fields, engine_id: str,
                 known: Mapping[str, EngineProfile] | None = None) -> EngineProfile:
    """An engine entry; `inherits: ID` takes every field it does not set from an entry above
    it (a release range that changed a few defaults of its family)."""
    for key in f:
        if key not in _FIELDS:
            raise f.error(key, f"unknown field; one of {', '.join(_FIELDS)}")
    parent: EngineProfile | None = None
    if f.has("inherits"):
        base = f.string("inherits")
        if known is None or base not in known:
            raise f.error("inherits", f"{base!r} is not an engine defined above this one")
        parent = known[base]

    def up(attr: str) -> object:
        return getattr(parent, attr) if parent is not None else REQUIRED

    try:
        return EngineProfile(
            id=engine_id, name=f.string("name", up("name")),
            max_batch=f.integer("max_batch", up("max_batch"), minimum=1),
            max_tokens_per_step=f.integer("max_tokens_per_step", up("max_tokens_per_step"),
                                          minimum=1),
            kv_memory_fraction=f.number("kv_memory_fraction", up("kv_memory_fraction"),
                                        positive=True),
            runtime_reserve_bytes=f.quantity("runtime_reserve", "bytes",
                                             up("runtime_reserve_bytes")),
            kernels_per_layer=f.integer("kernels_per_layer", up("kernels_per_layer"),
                                        minimum=1),
            graphs=f.boolean("graphs", up("graphs")),
            kernel_launch_s=f.quantity("kernel_launch", "time", up("kernel_launch_s")),
            step_overhead_s=f.quantity("step_overhead", "time", up("step_overhead_s"),
                                       positive=False),
            reserve_kv_for_output=f.boolean("reserve_kv_for_output",
                                            up("reserve_kv_for_output")),
            chunked_prefill=f.boolean("chunked_prefill", up("chunked_prefill")),
            sliding_window=f.boolean("sliding_window", up("sliding_window")),
            source=f.string("source", up("source")),
            moe_attention_dp=f.boolean("moe_attention_dp",
                                       parent.moe_attention_dp if parent else False))
    except ValueError as err:
        if hasattr(err, "file"):
            raise
        raise f.error(None, str(err)) from None
