"""Training-framework profiles: what a framework does by default, and how it counts the
model FLOPs it reports (conventions differ between versions, so a measurement is compared on
the basis its own framework used)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from .fields import Fields

RECOMPUTE: Final = ("none", "selective", "full")
AttentionCount = Literal["causal", "full"]


@dataclass(frozen=True, slots=True)
class TrainingEngine:
    """Defaults of a training framework. Bytes and seconds are SI."""

    id: str
    name: str
    flops_attention: AttentionCount
    """How the framework's model-FLOPs formula counts attention scores: over the causal half of
    the sequence, or over all of it (the 2021-2024 Megatron/NeMo formulas)."""
    flops_include_recompute: bool
    """Whether the reported FLOPs count recomputed forward passes (hardware FLOPs)."""
    recompute: str
    """Activation recomputation used when a run does not say: none, selective or full."""
    zero: int
    """Optimizer-state sharding used when a run does not say (1: distributed optimizer)."""
    sequence_parallel: bool
    """Whether norms and element-wise work are split over the tensor-parallel group."""
    tp_comm_overlap: bool
    """Whether tensor-parallel collectives are overlapped with the GEMMs around them."""
    dp_comm_overlap: bool
    """Whether gradient reduction and parameter gathers overlap the backward and forward."""
    grad_reduce_bytes: float
    """Bytes per gradient value in the data-parallel reduce-scatter / all-reduce."""
    runtime_reserve_bytes: float
    """Device memory the framework keeps for itself (CUDA context, NCCL and GEMM workspaces,
    allocator fragmentation)."""
    step_overhead_s: float
    """Host time per optimizer step outside the model (data loading, logging, launch gaps)."""
    source: str

    def __post_init__(self) -> None:
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}")
        if self.zero not in (0, 1, 2, 3):
            raise ValueError("zero must be 0, 1, 2 or 3")
        if self.grad_reduce_bytes <= 0 or self.runtime_reserve_bytes < 0 \
                or self.step_overhead_s < 0:
            raise ValueError("grad_reduce_bytes must be > 0, runtime_reserve and "
                             "step_overhead >= 0")


def parse_training_engine(f: Fields, engine_id: str) -> TrainingEngine:
    try:
        attention = f.choice("flops_attention", ("causal", "full"))
        return TrainingEngine(
            id=engine_id, name=f.string("name"),
            flops_attention="causal" if attention == "causal" else "full",
            flops_include_recompute=f.boolean("flops_include_recompute"),
            recompute=f.choice("recompute", RECOMPUTE),
            zero=f.integer("zero"),
            sequence_parallel=f.boolean("sequence_parallel"),
            tp_comm_overlap=f.boolean("tp_comm_overlap"),
            dp_comm_overlap=f.boolean("dp_comm_overlap"),
            grad_reduce_bytes=f.number("grad_reduce_bytes", positive=True),
            runtime_reserve_bytes=f.quantity("runtime_reserve", "bytes"),
            step_overhead_s=f.quantity("step_overhead", "time", positive=False),
            source=f.string("source"))
    except ValueError as err:
        if hasattr(err, "file"):
            raise
        raise f.error(None, str(err)) from None
