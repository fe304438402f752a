"""What fleetplan predicts for a training measurement row.

A row states some knobs (TP, PP, CP, EP, VP, micro-batch, FSDP) and leaves others unstated
(recomputation, activation offload, sometimes the whole parallel layout). Stated knobs are
pinned; unstated ones take the framework's default when that fits in memory, and otherwise the
search picks the fastest setting that fits, as the engineers who ran the benchmark tuned it.
The metric is then computed on the framework's own FLOP-counting convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..hardware.catalog import Catalog, UnknownIdError
from ..hardware.efficiency import CalibrationSet
from ..hardware.errors import SpecError
from ..hardware.llm import ModelArch, parse_model
from ..hardware.precision import PRECISIONS
from ..models.measurements import CustomArch, TrainingMeasurement
from ..models.training import TrainSetup, TrainStep, training_setup
from .training import Best, TrainSpace, describe_layout, fastest, layout_grid, pick

# Where a gpt-custom row omits the head count: 128-dimensional heads (GPT-3, Megatron's
# GPT presets). Only which TP degrees divide the heads depends on it, not FLOPs or bytes.
_HEAD_DIM = 128


@dataclass(frozen=True)
class TrainingPrediction:
    value: float | None
    reason: str = ""
    bound: str = ""
    layout: dict[str, float] = field(default_factory=dict)
    searched: tuple[str, ...] = ()
    """Knobs the row left unstated and the search chose."""
    fits: bool | None = None


def custom_arch(c: CustomArch, seq_len: int, name: str) -> ModelArch:
    """A ModelArch from a measurement row's architecture columns: GPT-2 style (learned
    positions, non-gated MLP) or Llama style when the MLP is gated."""
    heads = c.heads or max(c.hidden // _HEAD_DIM, 1)
    config: dict[str, Any]
    if c.gated_mlp:
        config = {"model_type": "llama", "hidden_size": c.hidden, "num_hidden_layers": c.layers,
                  "num_attention_heads": heads, "num_key_value_heads": c.kv_heads or heads,
                  "intermediate_size": c.ffn_hidden, "vocab_size": c.vocab,
                  "max_position_embeddings": seq_len}
    else:
        config = {"model_type": "gpt2", "n_embd": c.hidden, "n_layer": c.layers, "n_head": heads,
                  "n_inner": c.ffn_hidden, "vocab_size": c.vocab, "n_positions": seq_len,
                  "activation_function": "gelu_new"}
    return parse_model(config, name, model_id=name)


def predict_training(m: TrainingMeasurement, catalog: Catalog,
                     calibration: CalibrationSet) -> TrainingPrediction:
    """The predicted metric of one row, or the reason there is none."""
    setup = row_setup(m, catalog, calibration)
    if isinstance(setup, str):
        return TrainingPrediction(None, setup)
    best, searched = fastest_for_row(setup, m)
    if best.index is None:
        return TrainingPrediction(None, best.reason, searched=searched, fits=False)
    i = best.index
    parts = {k: pick(v, i) for k, v in best.step.breakdown().items()}
    bound = max(sorted(parts), key=lambda k: parts[k])
    return TrainingPrediction(metric_value(best.step, i, m.metric), "", bound,
                              describe_layout(best.layout, i), searched, True)


def metric_value(step: TrainStep, index: int, metric: str) -> float:
    """A measurement metric (the CSV's units: TFLOP/s, fraction, tokens/s, s) of one layout."""
    if metric == "model_tflops_per_gpu":
        return pick(step.model_flops_per_s_per_device, index) / 1e12
    if metric == "mfu":
        return pick(step.mfu, index)
    if metric == "tokens_per_s_per_gpu":
        return pick(step.tokens_per_s_per_device, index)
    if metric == "step_time_s":
        return pick(step.step_time_s, index)
    raise ValueError(f"unknown training metric {metric!r}")


def row_setup(m: TrainingMeasurement, catalog: Catalog,
              calibration: CalibrationSet) -> TrainSetup | str:
    """The model, device and framework a row ran on, or why they cannot be built."""
    if m.precision not in PRECISIONS:
        return f"unknown precision {m.precision!r}"
    try:
        arch = custom_arch(m.custom, m.seq_len, f"gpt-custom line {m.line}") \
            if m.custom is not None else catalog.model(m.model)
        acc = catalog.accelerator(m.accelerator)
        if not acc.runs(m.precision):
            return f"{acc.id} has no rate for {m.precision}"
        return training_setup(catalog, calibration, arch, acc.id, m.precision,
                              m.engine or "megatron")
    except (UnknownIdError, SpecError) as err:
        return err.message


def fastest_for_row(setup: TrainSetup, m: TrainingMeasurement) -> tuple[Best, tuple[str, ...]]:
    """The fastest layout that fits with the row's stated knobs pinned: first with the
    framework's default recomputation and no offload, then, if nothing fits, with every
    memory-saving setting open."""
    engine = setup.engine
    zero = 3 if (m.fsdp or 0) > 1 else engine.zero
    # Context parallelism is opted into: a row that does not state it ran without it.
    pinned = TrainSpace().pinned(tp=m.tp, pp=m.pp, cp=m.cp or 1, ep=m.ep, vp=m.vp,
                                 micro_batch=m.micro_batch, zero=zero)
    if m.pp is None:
        # Deep models on many devices use pipeline depths that are not powers of two (35
        # stages of 3 layers for a 105-layer model): every divisor of the device count that
        # leaves a layer per stage.
        depths = tuple(d for d in range(1, setup.arch.layers + 1)
                       if m.num_accelerators % d == 0)
        pinned = replace(pinned, pp=depths)
    searched = tuple(k for k, v in (("tp", m.tp), ("pp", m.pp), ("ep", m.ep),
                                    ("vp", m.vp), ("micro_batch", m.micro_batch)) if v is None)
    first = pinned.pinned(recompute=engine.recompute, offload_activations=0.0)
    grid = layout_grid(setup.arch, m.num_accelerators, [m.global_batch], m.seq_len, first)
    best = fastest(setup, grid)
    if best.index is not None:
        return best, searched
    grid = layout_grid(setup.arch, m.num_accelerators, [m.global_batch], m.seq_len, pinned)
    return fastest(setup, grid), (*searched, "recompute", "offload_activations")
