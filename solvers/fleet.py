"""A fleet plan end to end: search every (model, accelerator) family, choose the mix, check the
chosen plan through the models again, and place its replicas onto nodes.

`plan_fleet` answers from the performance models; `plan_measured` from a measured capacity
table (Mélange's input). Both return a `FleetPlan`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..models.arrays import FloatArray
from ..models.inference import build_replica
from ..models.queueing import serve as serve_load
from ..models.queueing import slo_slack
from .mix import MixProblem, MixResult, solve_mix
from .packing import PackingProblem, Placement, ReplicaKind, pack
from .search import BucketLoad, Candidates, Family, SearchSpace, search_family


@dataclass(frozen=True)
class Group:
    """An accelerator type of the pool: how many may be used and the node shape."""

    accelerator: str
    available: float
    """Accelerators (inf when unlimited)."""
    accelerators_per_node: int
    scale_up_domain: int
    price_usd_h: float


@dataclass(frozen=True)
class Choice:
    """One candidate configuration (a row of the mix problem)."""

    name: str
    group: int
    family: str
    precision: str
    tp: int
    pp: int
    ep: int
    max_batch: int
    prefill_chunk: int
    devices: int
    cost_usd_h: float


@dataclass(frozen=True)
class Served:
    """A bucket's share on one chosen candidate, checked again through the serving model."""

    bucket: str
    bucket_index: int
    choice: int
    fraction: float
    """Share of the bucket's demand routed here."""
    rate_per_replica_rps: float
    load_fraction: float
    """The candidate's planned load over its replicas' capacity (<= 1 - headroom)."""
    ttft_p99_s: float
    tpot_p99_s: float
    e2e_p99_s: float
    slo_ratio: float
    """Worst latency / objective at this load (<= 1 meets the SLO); nan without a model."""
    slo_term: str


@dataclass(frozen=True)
class FleetPlan:
    """The decision and its evidence."""

    choices: tuple[Choice, ...]
    groups: tuple[Group, ...]
    buckets: tuple[BucketLoad, ...]
    capacity_rps: FloatArray
    """(choices, buckets) goodput per replica."""
    mix: MixResult
    served: tuple[Served, ...]
    placements: tuple[Placement | None, ...]
    """Per group; None where the plan uses none of it."""
    candidates: tuple[Candidates, ...] = field(default=())
    """The searched families (empty for a measured capacity table)."""


def _choice_name(c: Candidates, j: int) -> str:
    return (f"{c.family.key}/{c.precision[j]}/tp{c.tp[j]}pp{c.pp[j]}"
            f"{f'ep{c.ep[j]}' if c.ep[j] > 1 else ''}/b{c.max_batch[j]}/c{c.prefill_chunk[j]}")


def _dedupe(c: Candidates) -> np.ndarray:
    """Rows to keep: of candidates alike but for the batch limit and with the same goodput on
    every bucket (the KV cache, not the limit, bounds them), the smallest limit."""
    seen: dict[tuple[object, ...], int] = {}
    keep = []
    order = np.lexsort((c.max_batch, np.arange(len(c))))
    for j in order:
        key = (c.precision[j], int(c.tp[j]), int(c.pp[j]), int(c.ep[j]), int(c.prefill_chunk[j]),
               *np.round(c.goodput_rps[j], 9).tolist())
        if key not in seen:
            seen[key] = int(j)
            keep.append(int(j))
    return np.array(sorted(keep), dtype=np.int64)


def plan_fleet(families: list[Family], family_group: list[int], groups: list[Group],
               buckets: list[BucketLoad], bucket_model: list[str], space: SearchSpace, *,
               objective: str, routing: str, headroom: float, time_limit_s: float,
               progress: Callable[[str, int, int], None] | None = None) -> FleetPlan:
    """Search each family on its model's buckets, solve the mix, re-check and place it.
    `progress(what, done, total)` hears of each family searched."""
    searched: list[Candidates] = []
    choices: list[Choice] = []
    rows: list[FloatArray] = []
    idle: list[float] = []
    busy: list[float] = []
    nb = len(buckets)
    for f, fam in enumerate(families):
        mine = [k for k in range(nb) if bucket_model[k] == fam.arch.id]
        if progress is not None:
            progress(fam.key, f, len(families))
        cands = search_family(fam, [buckets[k] for k in mine], space)
        searched.append(cands)
        for j in _dedupe(cands):
            cap = np.zeros(nb)
            cap[mine] = cands.goodput_rps[j]
            if not np.any(cap > 0):
                continue
            choices.append(Choice(_choice_name(cands, j), family_group[f], fam.key,
                                  str(cands.precision[j]), int(cands.tp[j]), int(cands.pp[j]),
                                  int(cands.ep[j]), int(cands.max_batch[j]),
                                  int(cands.prefill_chunk[j]), int(cands.devices[j]),
                                  float(cands.cost_usd_h[j])))
            rows.append(cap)
            idle.append(float(cands.power_idle_w[j]))
            busy.append(float(cands.power_busy_w[j]))
    capacity = np.array(rows).reshape(len(rows), nb)
    mix = _solve(choices, groups, buckets, capacity, idle, busy, objective=objective,
                 routing=routing, headroom=headroom, time_limit_s=time_limit_s)
    served = _recheck(families, choices, buckets, capacity, mix, headroom)
    return FleetPlan(tuple(choices), tuple(groups), tuple(buckets), capacity, mix, served,
                     _place(choices, groups, mix, space.allow_cross_node_tp), tuple(searched))


def plan_measured(groups: list[Group], buckets: list[BucketLoad], capacity: FloatArray, *,
                  routing: str, headroom: float, time_limit_s: float) -> FleetPlan:
    """The mix from a measured capacity table: one accelerator per replica, `capacity` is
    (groups, buckets) requests/s per accelerator at the SLO."""
    choices = [Choice(g.accelerator, k, g.accelerator, "measured", 1, 1, 1, 0, 0, 1,
                      g.price_usd_h) for k, g in enumerate(groups)]
    zeros = [0.0] * len(choices)
    mix = _solve(choices, groups, buckets, capacity, zeros, zeros, objective="cost",
                 routing=routing, headroom=headroom, time_limit_s=time_limit_s)
    served = tuple(
        Served(buckets[b].name, b, c, float(mix.routing[b, c]),
               float(buckets[b].demand_rps * mix.routing[b, c] / mix.replicas[c]),
               float(mix.utilization[c] * (1.0 - headroom)), math.nan, math.nan, math.nan,
               math.nan, "measured")
        for c in range(len(choices)) for b in range(len(buckets))
        if mix.replicas[c] > 0 and mix.routing[b, c] > 0)
    return FleetPlan(tuple(choices), tuple(groups), tuple(buckets), capacity, mix, served,
                     _place(choices, groups, mix, allow_cross_node_tp=False))


def _solve(choices: list[Choice], groups: list[Group], buckets: list[BucketLoad],
           capacity: FloatArray, idle: list[float], busy: list[float], *, objective: str,
           routing: str, headroom: float, time_limit_s: float) -> MixResult:
    idle_a = np.nan_to_num(np.asarray(idle, dtype=float), nan=0.0)
    busy_a = np.maximum(np.nan_to_num(np.asarray(busy, dtype=float), nan=0.0), idle_a)
    problem = MixProblem(
        demand_rps=np.array([b.demand_rps for b in buckets], dtype=float),
        capacity_rps=capacity,
        group=np.array([c.group for c in choices], dtype=np.int64),
        devices=np.array([c.devices for c in choices], dtype=np.int64),
        cost_usd_h=np.array([c.cost_usd_h for c in choices], dtype=float),
        power_idle_w=idle_a, power_busy_w=busy_a,
        available=np.array([g.available for g in groups], dtype=float),
        objective=objective,  # type: ignore[arg-type]
        routing=routing,  # type: ignore[arg-type]
        headroom=headroom, time_limit_s=time_limit_s,
        bucket_names=[b.name for b in buckets], group_names=[g.accelerator for g in groups],
        candidate_names=[c.name for c in choices])
    return solve_mix(problem)


def _recheck(families: list[Family], choices: list[Choice], buckets: list[BucketLoad],
             capacity: FloatArray, mix: MixResult, headroom: float) -> tuple[Served, ...]:
    """Each routed (bucket, candidate) through the serving model again, at the occupancy the
    plan gives one replica. The mix counts load as shares of capacity that add up over the
    buckets a replica carries (Mélange's model), so each bucket is priced at that total share
    of its own goodput."""
    by_key = {f.key: f for f in families}
    out = []
    for c, ch in enumerate(choices):
        n = int(mix.replicas[c])
        if n == 0:
            continue
        fraction = float(mix.load[c]) * (1.0 - headroom) / n
        fam = by_key[ch.family]
        rep = build_replica(fam.arch, fam.device, tp=ch.tp, pp=ch.pp, ep=ch.ep,
                            weight_precision=ch.precision, tokens_per_step=ch.prefill_chunk)
        for b, bucket in enumerate(buckets):
            share = float(mix.routing[b, c])
            if share <= 0:
                continue
            res = serve_load(rep, bucket.load.at_rate(max(fraction * capacity[c, b], 1e-9)),
                             max_batch=ch.max_batch, token_budget=ch.prefill_chunk)
            ratio, term = slo_slack(res, bucket.slo)
            out.append(Served(bucket.name, b, c, share, bucket.demand_rps * share / n, fraction,
                              float(res.ttft.p99), float(res.tpot.p99), float(res.e2e.p99),
                              float(ratio), str(term)))
    return tuple(out)


def _place(choices: list[Choice], groups: list[Group], mix: MixResult,
           allow_cross_node_tp: bool) -> tuple[Placement | None, ...]:
    out: list[Placement | None] = []
    for g, group in enumerate(groups):
        kinds = tuple(ReplicaKind(ch.name, ch.tp, ch.pp, int(mix.replicas[c]))
                      for c, ch in enumerate(choices)
                      if ch.group == g and mix.replicas[c] > 0)
        if not kinds:
            out.append(None)
            continue
        out.append(pack(PackingProblem(group.accelerators_per_node, group.scale_up_domain,
                                       kinds, allow_cross_domain_tp=allow_cross_node_tp)))
    return tuple(out)
