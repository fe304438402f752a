"""Training search: the fastest layout for an accelerator count, and the cheapest (or fastest)
accelerator type and count for a token budget under a deadline or a budget.

The layout grid (TP x PP x CP x EP x VP x micro-batch x recomputation x ZeRO x activation
offload, with DP taking the remaining devices) is one array evaluated by one call of the
training model; infeasible layouts are masked, never raised. The choice over accelerator types
and counts is an exhaustive enumeration of a small set, so its answer is exact over the grid.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from ..hardware.llm import ModelArch
from ..hardware.training_engine import RECOMPUTE
from ..models.arrays import BoolArray, FloatArray
from ..models.training import RECOMPUTE_CODES, TrainLayout, TrainSetup, TrainStep, training_step


@dataclass(frozen=True)
class TrainSpace:
    """Values each layout knob may take; an unstated knob is searched over these."""

    tp: tuple[int, ...] = (1, 2, 4, 8)
    pp: tuple[int, ...] = (1, 2, 4, 8, 16)
    cp: tuple[int, ...] = (1, 2, 4)
    ep: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    vp: tuple[int, ...] = (1, 2, 4, 5, 8)
    micro_batch: tuple[int, ...] = (1, 2, 4)
    recompute: tuple[str, ...] = RECOMPUTE
    zero: tuple[int, ...] = (1, 3)
    offload_activations: tuple[float, ...] = (0.0, 0.25, 0.5)
    offload_optimizer: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "ep", "vp", "micro_batch"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name} needs values >= 1")
        if not self.recompute or any(r not in RECOMPUTE for r in self.recompute):
            raise ValueError(f"recompute values must be among {', '.join(RECOMPUTE)}")
        if not self.zero or any(z not in (0, 1, 2, 3) for z in self.zero):
            raise ValueError("zero values must be 0..3")
        if any(not 0 <= f <= 1 for f in self.offload_activations):
            raise ValueError("offload_activations values must be in [0, 1]")

    def pinned(self, **values: object) -> TrainSpace:
        """This space with the given knobs fixed to one value each (None leaves a knob)."""
        fixed: dict[str, Any] = {k: (v,) for k, v in values.items() if v is not None}
        return replace(self, **fixed)


def layout_grid(arch: ModelArch, devices: int, global_batch: Sequence[int], seq_len: int,
                space: TrainSpace) -> TrainLayout:
    """Every combination of the space's knobs whose tp x pp x cp divides `devices` (data
    parallelism takes the rest), as one layout of flat arrays. Dense models only get ep 1."""
    eps = space.ep if arch.moe is not None else (1,)
    combos = [c for c in itertools.product(space.tp, space.pp, space.cp)
              if devices % (c[0] * c[1] * c[2]) == 0]
    if not combos:
        return TrainLayout.of(tp=np.zeros(0), global_batch=np.zeros(0), seq_len=seq_len)
    base = np.array(combos, dtype=np.float64)
    rest = [eps, space.vp, space.micro_batch,
            [RECOMPUTE_CODES[r] for r in space.recompute], space.zero,
            space.offload_activations, space.offload_optimizer, list(global_batch)]
    grids = np.meshgrid(np.arange(len(base)), *[np.asarray(v, dtype=np.float64) for v in rest],
                        indexing="ij")
    flat = [g.ravel() for g in grids]
    idx = flat[0].astype(np.int64)
    tp, pp, cp = base[idx, 0], base[idx, 1], base[idx, 2]
    return TrainLayout.of(tp=tp, pp=pp, cp=cp, dp=devices / (tp * pp * cp), ep=flat[1],
                          vp=flat[2], micro_batch=flat[3], recompute=flat[4], zero=flat[5],
                          offload_activations=flat[6], offload_optimizer=flat[7],
                          global_batch=flat[8], seq_len=seq_len)


@dataclass(frozen=True)
class Best:
    """The fastest feasible layout of a grid, or why there is none."""

    index: int | None
    step: TrainStep
    layout: TrainLayout
    candidates: int
    feasible: int
    reason: str = ""


def fastest(setup: TrainSetup, layout: TrainLayout) -> Best:
    """The layout with the most tokens per second per device among those that are legal and
    fit in memory (ties go to the earlier, simpler layout)."""
    step = training_step(setup, layout)
    ok = step.feasible
    n = int(np.size(ok))
    if n == 0:
        return Best(None, step, layout, 0, 0, "no layout: tp x pp x cp divides no count")
    if not ok.any():
        valid = step.valid
        if not valid.any():
            return Best(None, step, layout, n, 0, "no legal layout (head, layer, batch or "
                                                  "expert counts do not divide)")
        need = float(np.min(np.where(valid, step.memory.total, np.inf)))
        return Best(None, step, layout, n, 0, f"does not fit: the smallest layout needs "
                                              f"{need / 2**30:.0f} GiB of "
                                              f"{step.memory.capacity / 2**30:.0f} GiB")
    score = np.where(ok, step.tokens_per_s_per_device, -np.inf)
    return Best(int(np.argmax(score)), step, layout, n, int(ok.sum()))


def pick(values: FloatArray | BoolArray, index: int) -> float:
    return float(np.asarray(values).reshape(-1)[index])


# ----------------------------------------------------------------------------- planning


Objective = Literal["cost", "time"]


@dataclass(frozen=True)
class Option:
    """One accelerator type and count, at its fastest layout."""

    accelerator: str
    devices: int
    precision: str
    layout: Mapping[str, float]
    tokens_per_s: float
    """Whole-job training throughput, tokens/s."""
    time_s: float
    cost_usd: float | None
    mfu: float
    memory_bytes: float
    capacity_bytes: float
    meets: bool
    """Meets the deadline and the budget."""


@dataclass(frozen=True)
class TrainPlanResult:
    """Status is 'optimal' (best over the enumerated grid), or 'infeasible' with the closest
    option; `options` holds every (type, count) evaluated, `pareto` the time-cost front."""

    status: Literal["optimal", "infeasible"]
    objective: Objective
    chosen: Option | None
    closest: Option | None
    options: tuple[Option, ...]
    pareto: tuple[Option, ...]
    layouts_evaluated: int
    time_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def plan_training(setups: Mapping[tuple[str, str], TrainSetup],
                  counts: Mapping[str, Sequence[int]], prices_usd_h: Mapping[str, float | None],
                  *, tokens: float, seq_len: int, global_batch: Sequence[int],
                  space: TrainSpace, deadline_s: float | None, budget_usd: float | None,
                  objective: Objective) -> TrainPlanResult:
    """Evaluate every (accelerator, precision) setup at every count, keep its fastest layout,
    and choose the cheapest option that meets the deadline and budget (or the fastest, for
    objective 'time')."""
    started = time.perf_counter()
    options: list[Option] = []
    evaluated = 0
    notes: list[str] = []
    for (acc_id, precision), setup in sorted(setups.items()):
        for n in sorted(set(counts[acc_id])):
            layout = layout_grid(setup.arch, n, global_batch, seq_len, space)
            best = fastest(setup, layout)
            evaluated += best.candidates
            if best.index is None:
                notes.append(f"{acc_id} x{n} {precision}: {best.reason}")
                continue
            i = best.index
            rate = pick(best.step.tokens_per_s_per_device, i) * n
            duration = tokens / rate
            price = prices_usd_h.get(acc_id)
            cost = None if price is None else price * n * duration / 3600.0
            meets = (deadline_s is None or duration <= deadline_s) and \
                (budget_usd is None or (cost is not None and cost <= budget_usd))
            options.append(Option(
                accelerator=acc_id, devices=n, precision=precision,
                layout=describe_layout(best.layout, i), tokens_per_s=rate, time_s=duration,
                cost_usd=cost, mfu=pick(best.step.mfu, i),
                memory_bytes=pick(best.step.memory.total, i),
                capacity_bytes=best.step.memory.capacity, meets=meets))
    front = pareto(options)
    meeting = [o for o in options if o.meets]
    if meeting:
        chosen = min(meeting, key=lambda o: _rank(o, objective))
        return TrainPlanResult("optimal", objective, chosen, None, tuple(options), front,
                               evaluated, time.perf_counter() - started, tuple(notes))
    closest = min(options, key=lambda o: _shortfall(o, deadline_s, budget_usd)) \
        if options else None
    return TrainPlanResult("infeasible", objective, None, closest, tuple(options), front,
                           evaluated, time.perf_counter() - started, tuple(notes))


def _rank(o: Option, objective: Objective) -> tuple[float, float, int, str]:
    cost = o.cost_usd if o.cost_usd is not None else np.inf
    if objective == "time":
        return (o.time_s, cost, o.devices, o.accelerator)
    return (cost, o.time_s, o.devices, o.accelerator)


def _shortfall(o: Option, deadline_s: float | None, budget_usd: float | None) -> float:
    """How far an option misses the limits, as the larger relative overshoot."""
    over = 0.0
    if deadline_s is not None:
        over = max(over, o.time_s / deadline_s - 1.0)
    if budget_usd is not None:
        over = max(over, np.inf if o.cost_usd is None else o.cost_usd / budget_usd - 1.0)
    return over


def pareto(options: Sequence[Option]) -> tuple[Option, ...]:
    """Options no other option beats on both time and cost (priced options only)."""
    priced = sorted((o for o in options if o.cost_usd is not None),
                    key=lambda o: (o.time_s, o.cost_usd or 0.0, o.accelerator, o.devices))
    front: list[Option] = []
    best_cost = np.inf
    for o in priced:
        if o.cost_usd is not None and o.cost_usd < best_cost:
            front.append(o)
            best_cost = o.cost_usd
    return tuple(front)


def describe_layout(layout: TrainLayout, index: int) -> dict[str, float]:
    """One layout of a grid as plain numbers (recompute and zero as their codes)."""
    return {f.name: pick(getattr(layout, f.name), index) for f in fields(layout)}
