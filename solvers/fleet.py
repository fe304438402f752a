"""A fleet plan end to end: search every (model, accelerator) family, choose the mix, check the
chosen plan through the models again, and place its replicas onto nodes.

`plan_fleet` answers from the performance models; `plan_measured` from a measured capacity
table (Mélange's input). Both return a `FleetPlan`. `plan_hours` re-solves the mix of a plan for
each hour of a daily rate profile with the same candidates (what autoscaling would run).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import numpy as np

from ..models.arrays import FloatArray
from ..models.disaggregation import KvLink, serve_disaggregated
from ..models.inference import Replica
from ..models.queueing import serve as serve_load
from ..models.queueing import slo_slack
from .disaggregated import SCALE_UP, Units, search_units, unit_goodput_at_limits
from .mix import IntArray, MixCheck, MixProblem, MixResult, check_mix, restate, solve_mix
from .packing import PackingProblem, Placement, ReplicaKind, pack
from .search import (
    BucketLoad,
    Candidates,
    Family,
    SearchSpace,
    goodput_of_rows,
    replica_of,
    rows_at_limits,
    screen,
    search_family,
)

T = TypeVar("T")

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
    """Accelerators per replica (tp x pp), or per unit of a disaggregated candidate."""
    cost_usd_h: float
    n_prefill: int = 0
    """Prefill replicas per unit of a disaggregated candidate (0: a co-located replica)."""
    n_decode: int = 0
    """Decode replicas per unit of a disaggregated candidate."""
    kv_link: KvLink | None = None
    """The path of a disaggregated unit's KV caches from its prefill to its decode pool."""
    kv_path: str = ""
    """"scale-up" (the unit lies in one scale-up domain) or "scale-out" (over the NICs)."""
    prefill_parallel: tuple[int, int, int] | None = None
    """A disaggregated unit's prefill replicas' (tp, pp, ep); tp, pp and ep above are then its
    decode replicas'. None: as tp, pp and ep."""
    attn_dp: int = 1
    """Attention data-parallel groups inside the tensor group (a unit's decode replicas';
    its prefill replicas run one prompt at a time, with attention over the whole group)."""

    @property
    def disaggregated(self) -> bool:
        return self.n_prefill > 0

    @property
    def prefill_tp_pp_ep(self) -> tuple[int, int, int]:
        """The prefill replicas' (tp, pp, ep): a unit's own, else the candidate's."""
        return self.prefill_parallel or (self.tp, self.pp, self.ep)


@dataclass(frozen=True)
class Served:
    """A bucket's share on one chosen candidate, checked again through the serving model."""

    bucket: str
    bucket_index: int
    choice: int
    fraction: float
    """Share of the bucket's demand routed here."""
    rate_per_replica_rps: float
    """Requests/s of the bucket per replica (per unit of a disaggregated candidate)."""
    load_fraction: float
    """The candidate's planned load over its replicas' capacity (<= 1 - headroom)."""
    ttft_p99_s: float
    tpot_p99_s: float
    e2e_p99_s: float
    slo_ratio: float
    """Worst latency / objective at this load (<= 1 meets the SLO); nan without a model."""
    slo_term: str


@dataclass(frozen=True)
class HourPlan:
    """The mix for one hour of a daily rate profile, chosen among the peak plan's candidates
    and checked again like the peak plan."""

    hour: int
    """Hour of the day, 0-23."""
    demand_rps: FloatArray
    """(buckets,) request rate of each bucket in this hour, requests/s."""
    mix: MixResult
    served: tuple[Served, ...]
    """Each routed (bucket, candidate) re-checked at this hour's load."""
    check: MixCheck | None
    """Constraint residuals re-derived from the hour's plan (demand routed, load within the
    replicas' capacity at 1 - headroom, availability); None when the hour has no plan."""
    placements: tuple[Placement | None, ...] = ()
    """The hour's replicas on nodes, per group as `FleetPlan.placements`."""


@dataclass(frozen=True)
class FleetPlan:
    """The decision and its evidence."""

    choices: tuple[Choice, ...]
    groups: tuple[Group, ...]
    buckets: tuple[BucketLoad, ...]
    capacity_rps: FloatArray
    """(choices, buckets) goodput per replica."""
    problem: MixProblem
    """The mix problem solved at the planned (peak) demand."""
    mix: MixResult
    served: tuple[Served, ...]
    placements: tuple[Placement | None, ...]
    """Per group; None where the plan uses none of it."""
    candidates: tuple[Candidates, ...] = field(default=())
    """The searched families (empty for a measured capacity table)."""
    units: tuple[Units, ...] = field(default=())
    """The disaggregated units searched per family (empty when disaggregation is off)."""
    hours: tuple[HourPlan, ...] = field(default=())
    """Per hour of the day when a workload has a rate profile (see `plan_hours`), else
    empty."""
    allow_cross_node_tp: bool = False
    """Whether a TP group may span nodes (as placed)."""


def _par_name(tp: int, pp: int, ep: int, attn_dp: int) -> str:
    """tpTppP, with epE and adpA where experts or attention spread."""
    return (f"tp{tp}pp{pp}{f'ep{ep}' if ep > 1 else ''}"
            f"{f'adp{attn_dp}' if attn_dp > 1 else ''}")


def _choice_name(c: Candidates, j: int) -> str:
    return (f"{c.family.key}/{c.precision[j]}/{_par_name(c.tp[j], c.pp[j], c.ep[j], c.attn_dp[j])}"
            f"/b{c.max_batch[j]}/c{c.prefill_chunk[j]}")


def _unit_name(u: Units, j: int) -> str:
    """family/format/parallelism/pdP:D/bB/cC; the parallelism is one for both pools when they
    share it, else the prefill pool's and the decode pool's ("ptp4pp4-dtp4pp1")."""
    decode = _par_name(u.tp[j], u.pp[j], u.ep[j], u.attn_dp[j])
    prefill = _par_name(u.prefill_tp[j], u.prefill_pp[j], u.prefill_ep[j], 1)
    pools = decode if prefill == decode else f"p{prefill}-d{decode}"
    return (f"{u.family.key}/{u.precision[j]}/{pools}/pd{u.n_prefill[j]}:{u.n_decode[j]}"
            f"/b{u.max_batch[j]}/c{u.prefill_chunk[j]}")


def plan_fleet(families: list[Family], family_group: list[int], groups: list[Group],
               buckets: list[BucketLoad], bucket_model: list[str], space: SearchSpace, *,
               objective: str, routing: str, headroom: float, time_limit_s: float,
               progress: Callable[[str, int, int], None] | None = None) -> FleetPlan:
    """Search each family on its model's buckets, solve the mix, re-check and place it.
    `progress(what, done, total)` hears of each family searched. With `space.disaggregation`
    on or auto, each family's disaggregated units join the candidates after its co-located
    replicas (on: instead of them)."""
    searched: list[Candidates] = []
    searched_units: list[Units] = []
    choices: list[Choice] = []
    rows: list[FloatArray] = []
    idle: list[float] = []
    busy: list[float] = []
    nb = len(buckets)
    owned = [[k for k in range(nb) if bucket_model[k] == fam.arch.id] for fam in families]

    def search(f: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Family f's candidates and units, their fields but the family (which the parent
        holds: the results cross a pipe when the families are searched in workers)."""
        fam = families[f]
        fam_buckets = [buckets[k] for k in owned[f]]
        screened = screen(fam, fam_buckets, space)
        found = search_family(fam, fam_buckets, space, screened)
        units = None if space.disaggregation == "off" else \
            search_units(fam, fam_buckets, space, screened)
        return _fields(found), None if units is None else _fields(units)

    results = _ordered(search, len(families))
    for f, fam in enumerate(families):
        if progress is not None:
            progress(fam.key, f, len(families))
        found, found_units = next(results)
        mine = owned[f]
        cands = Candidates(family=fam, **found)
        searched.append(cands)
        # One row per replica (the search prices the largest batch limit only).
        colocated = range(len(cands)) if space.disaggregation != "on" else range(0)
        for j in colocated:
            cap = np.zeros(nb)
            cap[mine] = cands.goodput_rps[j]
            if not np.any(cap > 0):
                continue
            choices.append(Choice(_choice_name(cands, j), family_group[f], fam.key,
                                  str(cands.precision[j]), int(cands.tp[j]), int(cands.pp[j]),
                                  int(cands.ep[j]), int(cands.max_batch[j]),
                                  int(cands.prefill_chunk[j]), int(cands.devices[j]),
                                  float(cands.cost_usd_h[j]), attn_dp=int(cands.attn_dp[j])))
            rows.append(cap)
            idle.append(float(cands.power_idle_w[j]))
            busy.append(float(cands.power_busy_w[j]))
        if found_units is None:
            continue
        units = Units(family=fam, **found_units)
        searched_units.append(units)
        for j in range(len(units)):
            cap = np.zeros(nb)
            cap[mine] = units.goodput_rps[j]
            if not np.any(cap > 0):
                continue
            choices.append(Choice(_unit_name(units, j), family_group[f], fam.key,
                                  str(units.precision[j]), int(units.tp[j]), int(units.pp[j]),
                                  int(units.ep[j]), int(units.max_batch[j]),
                                  int(units.prefill_chunk[j]), int(units.devices[j]),
                                  float(units.cost_usd_h[j]), int(units.n_prefill[j]),
                                  int(units.n_decode[j]), units.link(j), str(units.kv_path[j]),
                                  _prefill_parallel(units, j), int(units.attn_dp[j])))
            rows.append(cap)
            idle.append(float(units.power_idle_w[j]))
            busy.append(float(units.power_busy_w[j]))
    capacity = np.array(rows).reshape(len(rows), nb)
    problem = _problem(choices, groups, buckets, capacity, idle, busy, objective=objective,
                       routing=routing, headroom=headroom, time_limit_s=time_limit_s)
    mix = solve_mix(problem)
    if mix.feasible and objective != "energy":
        # The energy objective prices load as a share of each row's capacity, so a tighter
        # limit would change the objective the solver proved; its plan keeps the limits solved.
        refined = _refine_limits(families, owned, choices, groups, buckets, capacity, idle,
                                 busy, problem, mix, space.max_batch)
        if refined is not None:
            choices, capacity, problem, mix = refined
    served = _recheck(families, choices, buckets, capacity, [(problem.demand_rps, mix)],
                      headroom)[0]
    return FleetPlan(tuple(choices), tuple(groups), tuple(buckets), capacity, problem, mix,
                     served, _place(choices, groups, mix, space.allow_cross_node_tp),
                     tuple(searched), units=tuple(searched_units),
                     allow_cross_node_tp=space.allow_cross_node_tp)


def _prefill_parallel(u: Units, j: int) -> tuple[int, int, int] | None:
    """Unit j's prefill (tp, pp, ep) where it differs from its decode pool's, else None."""
    prefill = (int(u.prefill_tp[j]), int(u.prefill_pp[j]), int(u.prefill_ep[j]))
    return None if prefill == (int(u.tp[j]), int(u.pp[j]), int(u.ep[j])) else prefill


def _refine_limits(families: list[Family], owned: list[list[int]], choices: list[Choice],
                   groups: list[Group], buckets: list[BucketLoad], capacity: FloatArray,
                   idle: list[float], busy: list[float], problem: MixProblem, mix: MixResult,
                   limits: tuple[int, ...]
                   ) -> tuple[list[Choice], FloatArray, MixProblem, MixResult] | None:
    """The solved plan with each chosen candidate at its smallest sufficient batch limit (see
    `_smallest_limits`): the candidates with the new rows, each right after the row it
    refines (so reports keep their order), their capacities, the problem rebuilt over them and
    the mix restated on it; None when nothing changes."""
    refined = _smallest_limits(families, owned, choices, buckets, capacity, problem, mix,
                               limits)
    if refined is None:
        return None
    rows_of, capacity, moved_replicas, moved_routing = refined
    choices = choices + [replace(choices[c], name=_limit_name(choices[c], limit),
                                 max_batch=limit) for c, limit in rows_of]
    idle = idle + [idle[c] for c, _ in rows_of]
    busy = busy + [busy[c] for c, _ in rows_of]
    n = len(choices) - len(rows_of)
    order = sorted(range(len(choices)), key=lambda j: (j if j < n else rows_of[j - n][0], j))
    choices = [choices[j] for j in order]
    problem = _problem(choices, groups, buckets, capacity[order], [idle[j] for j in order],
                       [busy[j] for j in order], objective=problem.objective,
                       routing=problem.routing, headroom=problem.headroom,
                       time_limit_s=problem.time_limit_s)
    return (choices, capacity[order], problem,
            restate(problem, mix.facts, moved_replicas[order], moved_routing[:, order]))


def _limit_name(ch: Choice, limit: int) -> str:
    """`ch`'s name with the batch limit `limit`."""
    head, _sep, tail = ch.name.rpartition(f"/b{ch.max_batch}/")
    return f"{head}/b{limit}/{tail}"


def _smallest_limits(families: list[Family], owned: list[list[int]], choices: list[Choice],
                     buckets: list[BucketLoad], capacity: FloatArray, problem: MixProblem,
                     mix: MixResult, limits: tuple[int, ...]
                     ) -> tuple[list[tuple[int, int]], FloatArray, IntArray, FloatArray] | None:
    """Each chosen candidate at the smallest listed batch limit that still carries its planned
    load: the goodput at that limit, capped at the solved row's (so that the new row never
    beats the one the solver chose and the solve's bound still holds), may ask no more of the
    replicas than the solved row did. Returns the new rows ((solved row, limit) each), the
    capacity matrix with them appended, and the plan moved onto them; None when every chosen
    candidate already runs its smallest sufficient limit. The co-located candidates of one
    family share one exact pass; the families' passes run in forked workers."""
    by_key = {f.key: (f, owned[i]) for i, f in enumerate(families)}
    # Per chosen candidate: the listed limits below its own, and their goodput (limits, B).
    lower: dict[int, list[int]] = {}
    per_family: dict[str, list[int]] = {}
    for c in np.flatnonzero(mix.replicas > 0).tolist():
        ch = choices[c]
        lower[c] = [m for m in sorted(limits) if m < ch.max_batch]
        if lower[c]:
            per_family.setdefault(ch.family, []).append(c)
    keys = sorted(per_family)

    def exact(f: int) -> list[FloatArray]:
        """Goodput at the lower limits of family keys[f]'s chosen candidates, in order."""
        fam, mine = by_key[keys[f]]
        mine_buckets = [buckets[k] for k in mine]
        cs = per_family[keys[f]]
        found: dict[int, FloatArray] = {}
        colocated = [c for c in cs if choices[c].kv_link is None]
        for c in cs:
            ch = choices[c]
            if ch.kv_link is not None:
                found[c] = unit_goodput_at_limits(fam, _prefill_row(ch), _row(ch),
                                                  ch.n_prefill, ch.n_decode, ch.kv_link,
                                                  mine_buckets, lower[c])
        if colocated:
            parts = [rows_at_limits(_row(choices[c]), lower[c]) for c in colocated]
            sel = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
            blocks = np.split(goodput_of_rows(fam, sel, mine_buckets),
                              np.cumsum([len(lower[c]) for c in colocated])[:-1])
            found.update(zip(colocated, blocks, strict=True))
        return [found[c] for c in cs]

    # A family's pass takes 0.1-0.2 s, well over what a pool costs to start.
    gp: dict[int, FloatArray] = {}
    for key, blocks in zip(keys, _ordered(exact, len(keys), min_items=2), strict=True):
        gp.update(zip(per_family[key], blocks, strict=True))

    demand = problem.demand_rps
    keep = 1.0 - problem.headroom
    rows_of: list[tuple[int, int]] = []
    new_rows: list[FloatArray] = []
    for c in sorted(gp):
        mine = by_key[choices[c].family][1]
        cap = np.zeros((len(lower[c]), len(buckets)))
        cap[:, mine] = np.minimum(gp[c], capacity[c, mine])
        routed = demand * mix.routing[:, c]
        need = routed > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            load = np.sum(np.where(need, routed / (keep * cap), 0.0), axis=1)
        allowed = max(float(mix.replicas[c]), float(mix.load[c]))
        fits = np.flatnonzero(np.all(cap[:, need] > 0, axis=1) & (load <= allowed))
        if fits.size:
            rows_of.append((c, lower[c][int(fits[0])]))
            new_rows.append(cap[int(fits[0])])
    if not rows_of:
        return None
    n = len(choices)
    replicas = np.concatenate([mix.replicas, np.zeros(len(rows_of), dtype=np.int64)])
    routing = np.concatenate([mix.routing, np.zeros((len(buckets), len(rows_of)))], axis=1)
    for k, (c, _limit) in enumerate(rows_of):
        replicas[n + k], replicas[c] = replicas[c], 0
        routing[:, n + k], routing[:, c] = routing[:, c], 0.0
    return rows_of, np.vstack([capacity, *new_rows]), replicas, routing


def _row(ch: Choice) -> dict[str, object]:
    """The grid row of `ch`'s replica (a unit's decode replica), but its batch limit."""
    return {"precision": ch.precision, "tp": ch.tp, "pp": ch.pp, "ep": ch.ep,
            "attn_dp": ch.attn_dp, "prefill_chunk": ch.prefill_chunk}


def _prefill_row(ch: Choice) -> dict[str, object]:
    """The grid row of a unit's prefill replica, but its batch limit (one attention group)."""
    tp, pp, ep = ch.prefill_tp_pp_ep
    return {**_row(ch), "tp": tp, "pp": pp, "ep": ep, "attn_dp": 1}


def _fields(result: Candidates | Units) -> dict[str, Any]:
    """A search result's fields but its family."""
    return {f.name: getattr(result, f.name) for f in fields(result) if f.name != "family"}


# Independent work items (the families' searches, the hours' solves) run in forked worker
# processes where the machine has more than one core: a worker inherits the parent's imports
# and inputs, and only item numbers and results cross the pipes. Each item runs the same code
# on the same inputs as in the serial loop, so the results are the same to the last bit, and
# they are taken in order. FLEETPLAN_WORKERS caps the workers (1: serial).
# Fewer items than this run serially: a pool costs some 30-40 ms to fork and tear down, which
# the few families of a small plan do not win back (on 2 cores: 4 edge families took 0.19 s
# serially and 0.22 s over workers; 9 families and 10 hourly solves of a multi-model fleet
# went from 1.3-1.5 s to 0.9-1.2 s).
_MIN_PARALLEL_ITEMS = 5
_WORK: list[Callable[[int], Any]] = []
"""The work the next workers fork with (set only while they are started)."""


def _run_item(k: int) -> Any:
    return _WORK[0](k)


def _workers(items: int, min_items: int = _MIN_PARALLEL_ITEMS) -> int:
    """Worker processes for `items` independent items: one per core, at most one per item;
    none (serial) for fewer than `min_items`, where the platform cannot fork safely, or where
    this process may not have children."""
    if items < min_items or not sys.platform.startswith("linux") \
            or multiprocessing.current_process().daemon:
        return 1
    cores = len(os.sched_getaffinity(0))
    limit = os.environ.get("FLEETPLAN_WORKERS", "").strip()
    if limit.isdigit():
        cores = min(cores, int(limit))
    return max(1, min(cores, items))


def _ordered(work: Callable[[int], T], items: int,
             min_items: int = _MIN_PARALLEL_ITEMS) -> Iterator[T]:
    """work(0), work(1), ... work(items - 1), in order: computed one by one as they are taken,
    or in forked worker processes (see `_workers`; `min_items` or more items, for work whose
    items each take well over what a pool costs to start)."""
    workers = _workers(items, min_items)
    if workers < 2:
        return (work(k) for k in range(items))
    return _forked(work, items, workers)


def _forked(work: Callable[[int], T], items: int, workers: int) -> Iterator[T]:
    _WORK[:] = [work]
    try:
        pool = multiprocessing.get_context("fork").Pool(workers)
    finally:
        # The workers hold their copy; the parent's is no longer needed.
        _WORK.clear()
    with pool:
        yield from pool.imap(_run_item, range(items), chunksize=1)


def plan_measured(groups: list[Group], buckets: list[BucketLoad], capacity: FloatArray, *,
                  routing: str, headroom: float, time_limit_s: float) -> FleetPlan:
    """The mix from a measured capacity table: one accelerator per replica, `capacity` is
    (groups, buckets) requests/s per accelerator at the SLO."""
    choices = [Choice(g.accelerator, k, g.accelerator, "measured", 1, 1, 1, 0, 0, 1,
                      g.price_usd_h) for k, g in enumerate(groups)]
    zeros = [0.0] * len(choices)
    problem = _problem(choices, groups, buckets, capacity, zeros, zeros, objective="cost",
                       routing=routing, headroom=headroom, time_limit_s=time_limit_s)
    mix = solve_mix(problem)
    return FleetPlan(tuple(choices), tuple(groups), tuple(buckets), capacity, problem, mix,
                     _measured_served(buckets, mix, headroom),
                     _place(choices, groups, mix, allow_cross_node_tp=False))


def plan_hours(plan: FleetPlan, hourly_demand_rps: FloatArray) -> tuple[HourPlan, ...]:
    """The cheapest fleet (in the plan's objective) for each hour of the day: the plan's mix
    problem re-solved with row h of `hourly_demand_rps` ((hours, buckets), requests/s) as the
    demand, over the same candidates, capacities, availability limits and headroom. Each
    hour's plan is re-checked like the peak plan: residuals re-derived (`check_mix`) and every
    routed (bucket, candidate) priced by the serving model at the hour's load (measured
    capacity tables: load over capacity only), and its replicas placed onto nodes.

    Hours with the same demand share one solve; an hour at exactly the planned demand takes
    the plan's own mix and re-check."""
    demand = np.array(hourly_demand_rps, dtype=float)
    demand.flags.writeable = False
    if demand.ndim != 2 or demand.shape[1] != len(plan.buckets):
        raise ValueError(f"hourly_demand_rps: shape {demand.shape}, expected (hours, "
                         f"{len(plan.buckets)})")
    peak = plan.problem.demand_rps.tobytes()
    # One solve per distinct demand, in order of first appearance.
    problems: dict[bytes, tuple[FloatArray, MixProblem]] = {}
    for row in demand:
        key = row.tobytes()
        if key != peak and key not in problems:
            problems[key] = (row, replace(plan.problem, demand_rps=row))
    order = list(problems.values())
    choices, groups = list(plan.choices), list(plan.groups)

    def solve_and_place(k: int) -> tuple[MixResult, tuple[Placement | None, ...]]:
        mix = solve_mix(order[k][1])
        return mix, _place(choices, groups, mix, plan.allow_cross_node_tp)

    mixes = _ordered(solve_and_place, len(order))
    solves = {key: (row, problem, *next(mixes)) for key, (row, problem) in problems.items()}
    served = dict(zip(solves, _served_at(plan, [(d, m) for d, _, m, _ in solves.values()]),
                      strict=True))
    solved = {k: (m, served[k], _check(p, m), placed)
              for k, (_, p, m, placed) in solves.items()}
    solved[peak] = (plan.mix, plan.served, _check(plan.problem, plan.mix), plan.placements)
    out = []
    for h, row in enumerate(demand):
        mix, checked, check, placed = solved[row.tobytes()]
        out.append(HourPlan(h, row, mix, checked, check, placed))
    return tuple(out)


def _check(problem: MixProblem, mix: MixResult) -> MixCheck | None:
    """Residuals of a plan that exists; None for an infeasible one."""
    return check_mix(problem, mix) if mix.feasible else None


def _served_at(plan: FleetPlan, mixes: list[tuple[FloatArray, MixResult]]
               ) -> list[tuple[Served, ...]]:
    """Mixes of `plan`'s candidates, each solved for its (buckets,) demand in requests/s,
    re-checked the way `plan` was."""
    headroom = plan.problem.headroom
    if not plan.candidates:
        return [_measured_served([replace(b, demand_rps=float(d))
                                  for b, d in zip(plan.buckets, demand.tolist(), strict=True)],
                                 mix, headroom) for demand, mix in mixes]
    return _recheck([c.family for c in plan.candidates], list(plan.choices),
                    list(plan.buckets), plan.capacity_rps, mixes, headroom)


def _measured_served(buckets: list[BucketLoad], mix: MixResult,
                     headroom: float) -> tuple[Served, ...]:
    """Routed (bucket, candidate) pairs of a measured-capacity plan: the rate per replica and
    the load over capacity; no latency model."""
    return tuple(
        Served(buckets[b].name, b, c, float(mix.routing[b, c]),
               float(buckets[b].demand_rps * mix.routing[b, c] / mix.replicas[c]),
               float(mix.utilization[c] * (1.0 - headroom)), math.nan, math.nan, math.nan,
               math.nan, "measured")
        for c in range(len(mix.replicas)) for b in range(len(buckets))
        if mix.replicas[c] > 0 and mix.routing[b, c] > 0)


def _problem(choices: list[Choice], groups: list[Group], buckets: list[BucketLoad],
             capacity: FloatArray, idle: list[float], busy: list[float], *, objective: str,
             routing: str, headroom: float, time_limit_s: float) -> MixProblem:
    """The mix problem over the candidate rows at the buckets' demand."""
    idle_a = np.nan_to_num(np.asarray(idle, dtype=float), nan=0.0)
    busy_a = np.maximum(np.nan_to_num(np.asarray(busy, dtype=float), nan=0.0), idle_a)
    return MixProblem(
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


def _recheck(families: list[Family], choices: list[Choice], buckets: list[BucketLoad],
             capacity: FloatArray, mixes: list[tuple[FloatArray, MixResult]],
             headroom: float) -> list[tuple[Served, ...]]:
    """Each routed (bucket, candidate) of each mix through the serving model again, at the
    occupancy the mix gives one replica; a mix comes with its (buckets,) demand in requests/s
    (the buckets' own `demand_rps` is not used). The mix counts load as shares of capacity
    that add up over the buckets a replica carries (Mélange's model), so each bucket is priced
    at that total share of its own goodput. One serving-model call per (candidate, bucket),
    vectorised over the mixes that route it. A disaggregated unit is priced through
    `serve_disaggregated` at the unit's rate over both pools."""
    by_key = {f.key: f for f in families}
    # (candidate, bucket) -> (mix index, load fraction of a replica) of each mix routing it.
    uses: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for k, (_, mix) in enumerate(mixes):
        for c in np.flatnonzero(mix.replicas > 0).tolist():
            fraction = float(mix.load[c]) * (1.0 - headroom) / int(mix.replicas[c])
            for b in np.flatnonzero(mix.routing[:, c] > 0).tolist():
                uses.setdefault((c, b), []).append((k, fraction))
    out: list[list[Served]] = [[] for _ in mixes]
    replicas: dict[int, Replica] = {}
    prefill: dict[int, Replica] = {}
    for (c, b), routed in sorted(uses.items()):
        ch = choices[c]
        if c not in replicas:
            fam = by_key[ch.family]
            replicas[c] = replica_of(fam, _row(ch))
            prefill[c] = replicas[c] if _prefill_row(ch) == _row(ch) \
                else replica_of(fam, _prefill_row(ch))
        bucket = buckets[b]
        rates = np.array([max(f * capacity[c, b], 1e-9) for _, f in routed])
        # A lone rate goes in as a scalar: the fixed point then iterates exactly as for one
        # plan, whatever other mixes would need.
        load = bucket.load.at_rate(rates if len(routed) > 1 else rates[0])
        if ch.kv_link is not None:
            # A unit: both pools at the unit's rate, the KV caches over its link.
            res = serve_disaggregated(prefill[c], replicas[c], load, n_prefill=ch.n_prefill,
                                      n_decode=ch.n_decode, link=ch.kv_link,
                                      max_batch=ch.max_batch, token_budget=ch.prefill_chunk)
        else:
            res = serve_load(replicas[c], load, max_batch=ch.max_batch,
                             token_budget=ch.prefill_chunk)
        ratio, term = slo_slack(res, bucket.slo)
        for i, (k, fraction) in enumerate(routed):
            demand, mix = mixes[k]
            share = float(mix.routing[b, c])
            out[k].append(Served(
                bucket.name, b, c, share, float(demand[b]) * share / int(mix.replicas[c]),
                fraction, _at(res.ttft.p99, i), _at(res.tpot.p99, i), _at(res.e2e.p99, i),
                _at(ratio, i), str(np.asarray(term, dtype=object).reshape(-1)[i])))
    return [tuple(s) for s in out]


def _at(values: FloatArray, i: int) -> float:
    """Element i of a result vectorised over rates (a 0-d result for a single rate)."""
    return float(np.asarray(values, dtype=float).reshape(-1)[i])


def _kinds(ch: Choice, count: int) -> tuple[ReplicaKind, ...]:
    """What the packer places for `count` replicas (or units) of a candidate. A unit whose KV
    caches take the scale-up link must lie in one scale-up domain: it goes in as one group of
    all its accelerators. A unit over the NICs is its two pools' replicas, placed freely."""
    if not ch.disaggregated:
        return (ReplicaKind(ch.name, ch.tp, ch.pp, count),)
    if ch.kv_path == SCALE_UP:
        return (ReplicaKind(ch.name, ch.devices, 1, count),)
    p_tp, p_pp, _ep = ch.prefill_tp_pp_ep
    return (ReplicaKind(f"{ch.name}/prefill", p_tp, p_pp, count * ch.n_prefill),
            ReplicaKind(f"{ch.name}/decode", ch.tp, ch.pp, count * ch.n_decode))


def _place(choices: list[Choice], groups: list[Group], mix: MixResult,
           allow_cross_node_tp: bool) -> tuple[Placement | None, ...]:
    out: list[Placement | None] = []
    for g, group in enumerate(groups):
        kinds = tuple(kind for c, ch in enumerate(choices)
                      if ch.group == g and mix.replicas[c] > 0
                      for kind in _kinds(ch, int(mix.replicas[c])))
        if not kinds:
            out.append(None)
            continue
        out.append(pack(PackingProblem(group.accelerators_per_node, group.scale_up_domain,
                                       kinds, allow_cross_domain_tp=allow_cross_node_tp)))
    return tuple(out)
