"""The accelerator mix: how many replicas of which candidate, and where each request bucket goes.

A generalisation of Mélange (Griggs et al., 2024): cost-aware bin packing of request buckets onto
a heterogeneous set of replica candidates, as an integer program built over whole arrays and
solved by HiGHS through highspy.

Variables: ``n_c`` (integer replicas of candidate ``c``) and ``x_bc`` (share of bucket ``b``'s
request rate routed to ``c``; binary under whole-bucket routing), one ``x`` per pair that can be
served at all. Constraint families, each named:

* ``demand[b]``: ``sum_c x_bc = 1`` for every bucket with demand;
* ``capacity[c]``: ``sum_b demand_b x_bc / ((1 - headroom) capacity_cb) <= n_c``;
* ``availability[g]``: ``sum_{c in g} devices_c n_c <= available_g`` (finite limits only).

Objectives: hourly cost (USD/h), accelerator count, or average fleet power (W) at the planned
load, which is linear because the load-proportional power of a candidate is linear in ``x``.

Candidates another candidate dominates (as fast on every bucket, no dearer in the objective, no
more of a limited type) are dropped before the solve; the optimum is unchanged and realistic
candidate grids, where most are dominated, solve several times faster. Under split routing the
branch and bound starts from a plan found by LP-guided rounding (`_rounded_plan`), usually the
optimum already, so that HiGHS spends its time on the proof rather than on its own heuristics.

An infeasible plan is a status, not an exception: the result then carries `Closest`, the largest
share of the demand any plan can serve under the same limits, and what blocks the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from .milp import Milp, Relaxation, Rows, SolveFacts, SolveStatus, solve_milp

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Objective = Literal["cost", "energy", "count"]
Routing = Literal["split", "whole"]
OBJECTIVES: tuple[Objective, ...] = ("cost", "energy", "count")
ROUTINGS: tuple[Routing, ...] = ("split", "whole")

# Residuals up to this (relative to max(1, value)) are solver tolerance, not a broken plan:
# HiGHS accepts 1e-7 primal and 1e-6 integrality violations.
TOLERANCE = 1e-6


def _frozen(values: object, dtype: type[np.generic], name: str) -> npt.NDArray[np.generic]:
    try:
        array = np.array(values, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: not convertible to {dtype.__name__}: {err}") from None
    array.flags.writeable = False
    return array


def _names(given: Sequence[str] | None, count: int, what: str) -> tuple[str, ...]:
    if given is None:
        return tuple(str(i) for i in range(count))
    names = tuple(given)
    if len(names) != count:
        raise ValueError(f"{what}: {len(names)} names for {count} entries")
    if len(set(names)) != count:
        raise ValueError(f"{what}: names are not unique")
    return names


@dataclass(frozen=True, eq=False)
class MixProblem:
    """One mix decision: B request buckets, C replica candidates, G accelerator types.

    Arrays are copied and made read-only; shape or sign errors raise ValueError (they are
    programming errors: user input is validated before it gets here).
    """

    demand_rps: FloatArray
    """(B,) request rate of each bucket, requests/s."""
    capacity_rps: FloatArray
    """(C, B) highest rate one replica of c sustains for bucket b alone within b's SLO,
    requests/s; 0 where c cannot serve b."""
    group: IntArray
    """(C,) accelerator type (index into `available`) of each candidate."""
    devices: IntArray
    """(C,) accelerators per replica (tp * pp), >= 1."""
    cost_usd_h: FloatArray
    """(C,) price of one replica, USD/h."""
    power_idle_w: FloatArray
    """(C,) power of one idle replica, W."""
    power_busy_w: FloatArray
    """(C,) power of one replica at full capacity, W."""
    available: FloatArray
    """(G,) most accelerators of each type that can be had; inf for no limit."""
    objective: Objective = "cost"
    routing: Routing = "split"
    headroom: float = 0.0
    """Share of each replica's capacity kept free: replicas are planned to (1 - headroom)."""
    time_limit_s: float = 10.0
    bucket_names: Sequence[str] | None = None
    group_names: Sequence[str] | None = None
    candidate_names: Sequence[str] | None = None
    buckets: tuple[str, ...] = field(init=False)
    groups: tuple[str, ...] = field(init=False)
    candidates: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        for name in ("demand_rps", "capacity_rps", "cost_usd_h", "power_idle_w", "power_busy_w",
                     "available"):
            put(name, _frozen(getattr(self, name), np.float64, name))
        for name in ("group", "devices"):
            raw = np.asarray(getattr(self, name))
            if raw.dtype.kind == "f" and not np.all(raw == np.round(raw)):
                raise ValueError(f"{name}: must hold integers")
            put(name, _frozen(raw, np.int64, name))
        for name, ndim in (("demand_rps", 1), ("available", 1), ("capacity_rps", 2)):
            if getattr(self, name).ndim != ndim:
                raise ValueError(f"{name}: shape {getattr(self, name).shape}, expected {ndim}-D")
        n_buckets, n_cands, n_groups = self.n_buckets, self.n_candidates, self.n_groups
        if self.capacity_rps.shape[1] != n_buckets:
            raise ValueError(f"capacity_rps: shape {self.capacity_rps.shape}, "
                             f"expected (C, B) with B = {n_buckets}")
        for name in ("group", "devices", "cost_usd_h", "power_idle_w", "power_busy_w"):
            shape = getattr(self, name).shape
            if shape != (n_cands,):
                raise ValueError(f"{name}: shape {shape}, expected (C,) = ({n_cands},)")
        for name in ("demand_rps", "capacity_rps", "cost_usd_h", "power_idle_w", "power_busy_w"):
            values = getattr(self, name)
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ValueError(f"{name}: must be finite and >= 0")
        if np.any(np.isnan(self.available)) or np.any(self.available < 0):
            raise ValueError("available: must be >= 0 (inf for no limit)")
        if np.any(self.power_busy_w < self.power_idle_w):
            raise ValueError("power_busy_w: must be >= power_idle_w")
        if np.any(self.devices < 1):
            raise ValueError("devices: must be >= 1")
        if np.any((self.group < 0) | (self.group >= n_groups)):
            raise ValueError(f"group: indices must lie in [0, {n_groups})")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: {self.objective!r}, expected one of {OBJECTIVES}")
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing: {self.routing!r}, expected one of {ROUTINGS}")
        if not 0.0 <= self.headroom < 1.0:
            raise ValueError(f"headroom: {self.headroom}, expected in [0, 1)")
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s: {self.time_limit_s}, expected > 0")
        put("buckets", _names(self.bucket_names, n_buckets, "bucket_names"))
        put("groups", _names(self.group_names, n_groups, "group_names"))
        put("candidates", _names(self.candidate_names, n_cands, "candidate_names"))

    @property
    def n_buckets(self) -> int:
        return int(self.demand_rps.shape[0])

    @property
    def n_candidates(self) -> int:
        return int(self.capacity_rps.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.available.shape[0])

    def load_per_rps(self) -> FloatArray:
        """(C, B) replicas of c needed per request/s of bucket b at the planned utilisation
        (1 - headroom); inf where c cannot serve b."""
        with np.errstate(divide="ignore"):
            return np.where(self.capacity_rps > 0,
                            1.0 / ((1.0 - self.headroom) * self.capacity_rps), np.inf)

    def unservable(self) -> tuple[str, ...]:
        """Names of buckets with demand that no candidate can serve within its SLO."""
        dead = (self.demand_rps > 0) & ~np.any(self.capacity_rps > 0, axis=0)
        return tuple(self.buckets[b] for b in np.flatnonzero(dead))


def dominated(p: MixProblem) -> npt.NDArray[np.bool_]:
    """(C,) candidates another candidate replaces replica for replica without loss: it serves
    every bucket at least as fast, costs no more in the objective, and uses no more of a limited
    type (same type and no more devices, or a type without limit). Exact: swapping each such
    replica for one of its dominator keeps every constraint and does not raise the objective.
    Of identical candidates the first is kept."""
    cap = p.capacity_rps
    unlimited = ~np.isfinite(p.available[p.group])
    price = per_replica_objective(p)
    if p.objective == "energy":
        with np.errstate(divide="ignore", invalid="ignore"):
            # Busy power above idle per request/s of each bucket.
            per_rps = np.where(cap > 0, (p.power_busy_w - p.power_idle_w)[:, None] / cap, np.inf)
    index = np.arange(p.n_candidates)
    same_group = p.group[:, None] == p.group[None, :]
    out = np.zeros(p.n_candidates, dtype=np.bool_)
    # One candidate at a time against all others: O(C B) memory, for grids of thousands.
    for c in range(p.n_candidates):
        # d can replace c, and c can replace d.
        better = (np.all(cap >= cap[c], axis=1) & (price <= price[c])
                  & ((same_group[c] & (p.devices <= p.devices[c])) | unlimited))
        worse = (np.all(cap <= cap[c], axis=1) & (price >= price[c])
                 & ((same_group[c] & (p.devices >= p.devices[c])) | unlimited[c]))
        if p.objective == "energy":
            better &= np.all(per_rps[:, cap[c] > 0] <= per_rps[c, cap[c] > 0], axis=1)
            worse &= np.all((cap <= 0) | (per_rps[c] <= per_rps), axis=1)
        # d dominates c strictly, or they are interchangeable and d comes first.
        wins = better & (~worse | (index < c))
        wins[c] = False
        out[c] = wins.any()
    return out


def availability_name(problem: MixProblem, g: int) -> str:
    return f"availability[{problem.groups[g]}]"


def capacity_name(problem: MixProblem, c: int) -> str:
    return f"capacity[{problem.candidates[c]}]"


@dataclass(frozen=True, eq=False)
class Closest:
    """The most of an infeasible demand that any plan can serve, and what blocks the rest.

    The plan maximises the served request rate; among such plans it minimises the problem's
    objective (when the first solve proved its optimum).
    """

    facts: SolveFacts
    """The solve that produced `replicas` and `routing` (objective: that of the problem when
    the second stage ran, else unserved requests/s)."""
    served: FloatArray
    """(B,) share of each bucket's demand served, in [0, 1] (1 for buckets without demand)."""
    served_rps: float
    served_fraction: float
    """Served share of the total demand."""
    replicas: IntArray
    routing: FloatArray
    """(B, C) share of each bucket's demand routed to each candidate."""
    cost_usd_h: float
    devices_by_group: IntArray
    unservable: tuple[str, ...]
    """Buckets with demand that no candidate can serve within the SLO."""
    blocking: tuple[str, ...]
    """Availability constraints whose lifting would serve more: finite limits of types able to
    serve some unserved demand."""
    reasons: tuple[str, ...]
    """One sentence per cause, for reports."""


@dataclass(frozen=True, eq=False)
class MixResult:
    """A solved mix. Arrays are zero (and `closest` set) when no plan exists."""

    facts: SolveFacts
    replicas: IntArray
    """(C,) replicas of each candidate."""
    routing: FloatArray
    """(B, C) share of each bucket's demand routed to each candidate; rows of buckets with demand
    sum to 1."""
    cost_usd_h: float
    devices_by_group: IntArray
    """(G,) accelerators used of each type."""
    power_w: float
    """Average fleet power at the planned load, W."""
    load: FloatArray
    """(C,) planned load of each candidate in replicas at (1 - headroom) of capacity."""
    utilization: FloatArray
    """(C,) load / replicas (<= 1); nan where no replica runs."""
    binding: tuple[str, ...]
    """Constraints that bind: availability with no room for another replica of the type, and
    capacity of candidates whose last replica is needed (load > replicas - 1)."""
    closest: Closest | None = None

    @property
    def feasible(self) -> bool:
        return self.facts.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


@dataclass(frozen=True, eq=False)
class _Model:
    """The mix ILP as arrays. Columns: ``n`` (C, replicas of each candidate), then ``x`` (K, one
    per servable (bucket, candidate) pair, sorted by bucket), then, in the max-served model only,
    ``u`` (unserved share of each bucket that has an ``x``). Rows: ``demand``, ``capacity``,
    ``availability``, in that order."""

    milp: Milp
    x_bucket: IntArray
    x_cand: IntArray
    x_load: FloatArray
    """(K,) replicas of the pair's candidate that all of the pair's bucket needs."""
    unserved_buckets: IntArray
    """Buckets with a ``u`` column, in column order (empty unless max-served)."""

    @property
    def n_candidates(self) -> int:
        return int(self.milp.n_cols - len(self.x_bucket) - len(self.unserved_buckets))

    def replicas(self, values: FloatArray) -> FloatArray:
        return values[:self.n_candidates]

    def shares(self, values: FloatArray) -> FloatArray:
        return values[self.n_candidates:self.n_candidates + len(self.x_bucket)]

    def unserved_cols(self) -> IntArray:
        return self.n_candidates + len(self.x_bucket) + np.arange(len(self.unserved_buckets))


def per_replica_objective(p: MixProblem) -> FloatArray:
    """(C,) what one replica adds to the objective whatever its load: USD/h, accelerators, or
    idle W (the energy objective's load-proportional part rides on the routing)."""
    if p.objective == "cost":
        return p.cost_usd_h
    if p.objective == "count":
        return p.devices.astype(np.float64)
    return p.power_idle_w


def _objective_costs(p: MixProblem, xb: IntArray, xc: IntArray, n_unserved: int) -> FloatArray:
    """The problem's objective per unit of each column (``n``, then the ``x`` of pairs
    (`xb`, `xc`), then `n_unserved` ``u``): per replica for ``n`` (USD/h, accelerators or W); for
    ``x`` under the energy objective, the busy power above idle that routing all of the bucket
    to the candidate adds, W (linear in the share); 0 for ``u``."""
    routed = np.zeros(len(xb))
    if p.objective == "energy":
        routed = ((p.power_busy_w - p.power_idle_w)[xc] * p.demand_rps[xb]
                  / p.capacity_rps[xc, xb])
    return np.concatenate([per_replica_objective(p), routed, np.zeros(n_unserved)])


def _build(p: MixProblem, *, partial: bool) -> _Model:
    """The model, built over whole arrays. `partial`: the max-served model, which may leave a
    share ``u`` of each bucket unserved and minimises the unserved request rate."""
    keep = ~dominated(p)
    pair = (p.capacity_rps > 0) & (p.demand_rps[None, :] > 0) & keep[:, None]
    # (C, B) replicas of c that all of bucket b needs; 0 off the pairs.
    load = np.where(pair, p.load_per_rps(), 0.0) * p.demand_rps[None, :]
    xb, xc = (a.astype(np.int64) for a in np.nonzero(pair.T))  # sorted by bucket
    coef = load[xc, xb]
    # Upper bounds on n: all servable load on c, and the type's limit; tight bounds help the
    # branch and bound and cost nothing.
    full = np.ceil(load.sum(axis=1))
    cap = np.floor(p.available[p.group] / p.devices)
    upper = np.where(keep, np.minimum(full, cap), 0.0)
    n_cands, n_pairs = p.n_candidates, len(xb)
    buckets, demand_row = np.unique(xb, return_inverse=True)
    n_unserved = len(buckets) if partial else 0
    x_cols = n_cands + np.arange(n_pairs)
    u_cols = n_cands + n_pairs + np.arange(n_unserved)
    ones = np.ones(len(buckets))

    # demand[b]: sum_c x_bc (+ u_b) = 1.
    demand = Rows(np.concatenate([demand_row, np.arange(n_unserved)]),
                  np.concatenate([x_cols, u_cols]), np.ones(n_pairs + n_unserved), ones, ones)
    # capacity[c]: sum_b load_cb x_bc - n_c <= 0, for candidates with a pair.
    served_by, capacity_row = np.unique(xc, return_inverse=True)
    capacity = Rows(np.concatenate([capacity_row, np.arange(len(served_by))]),
                    np.concatenate([x_cols, served_by]),
                    np.concatenate([coef, -np.ones(len(served_by))]),
                    np.full(len(served_by), -np.inf), np.zeros(len(served_by)))
    # availability[g]: sum_{c in g} devices_c n_c <= available_g, for finite limits.
    limited = np.flatnonzero(np.isfinite(p.available[p.group]))
    groups, availability_row = np.unique(p.group[limited], return_inverse=True)
    availability = Rows(availability_row.astype(np.int64), limited.astype(np.int64),
                        p.devices[limited].astype(np.float64), np.full(len(groups), -np.inf),
                        p.available[groups])

    integer = np.concatenate([np.ones(n_cands, dtype=np.bool_),
                              np.full(n_pairs, p.routing == "whole"),
                              np.zeros(n_unserved, dtype=np.bool_)])
    col_upper = np.concatenate([upper, np.ones(n_pairs + n_unserved)])
    if partial:  # the unserved request rate, requests/s
        cost = np.zeros(len(integer))
        cost[u_cols] = p.demand_rps[buckets]
    else:
        cost = _objective_costs(p, xb, xc, 0)
    milp = Milp.of(cost, np.zeros(len(integer)), col_upper, integer,
                   [demand, capacity, availability])
    return _Model(milp, xb, xc, coef, buckets.astype(np.int64) if partial else xb[:0])


def _links(m: _Model, pairs: IntArray) -> Rows:
    """``x_bc <= n_c`` for the pairs `pairs` (indices into the x columns): a share of a bucket on
    c needs a replica of c. Valid, and implied by ``capacity[c]`` when all of b needs a replica or
    more; for smaller buckets it is what keeps the LP from running a tenth of a replica."""
    count = len(pairs)
    rows = np.arange(count, dtype=np.int64)
    return Rows(np.concatenate([rows, rows]),
                np.concatenate([m.n_candidates + pairs, m.x_cand[pairs]]),
                np.concatenate([np.ones(count), -np.ones(count)]),
                np.full(count, -np.inf), np.zeros(count))


# A replica count this close to an integer is one (HiGHS's integrality tolerance is 1e-6).
_INTEGRAL = 1e-7


def _rounded_plan(m: _Model, *, deadline: float) -> FloatArray | None:
    """A good plan to start the branch and bound from, by LP-guided rounding (split routing): the
    column values of a feasible point; None when a replica count can be rounded neither up nor
    down (binding limits), or when the deadline (a `time.perf_counter()` value) passes.

    Solve the LP relaxation, strengthened by the `_links` it violates (added until it violates
    none); while some replica count is fractional, round up the one that costs least to round up
    (per-replica objective x missing fraction; if that makes the LP infeasible, a limit binds:
    round it down instead) and solve again. Then, with the counts fixed, drop every replica that
    can go, dearest first. On the benchmark instances the result is optimal or within a few per
    cent, in 30-50 warm-started LP solves.
    """
    cands = m.n_candidates
    per_replica = m.milp.cost[:cands]
    lp = Relaxation(m.milp, deadline=deadline)
    linked = m.x_load >= 1.0  # implied by the capacity rows already

    def solve() -> FloatArray | None:
        while (values := lp.solve()) is not None:
            short = ~linked & (m.shares(values) > m.replicas(values)[m.x_cand] + _INTEGRAL)
            if not short.any():
                return values
            linked[short] = True
            lp.add_rows(_links(m, np.flatnonzero(short)))
        return None

    lower, upper = np.zeros(cands), m.milp.col_upper[:cands].copy()
    values = solve()
    while values is not None:
        n = m.replicas(values)
        whole = np.floor(n + _INTEGRAL)
        fractional = np.flatnonzero(n - whole > _INTEGRAL)
        if fractional.size == 0:
            break
        c = fractional[np.argmin(per_replica[fractional] * (1.0 - (n - whole)[fractional]))]
        lp.set_bounds(np.array([c]), np.array([whole[c] + 1.0]), upper[c:c + 1])
        if (values := solve()) is not None:
            lower[c] = whole[c] + 1.0
        else:
            upper[c] = whole[c]
            lp.set_bounds(np.array([c]), lower[c:c + 1], upper[c:c + 1])
            values = solve()
    if values is None:
        return None
    every = np.arange(cands)
    n = np.round(m.replicas(values))
    lp.set_bounds(every, n, n)
    plan = lp.solve()
    for c in np.argsort(-per_replica, kind="stable").tolist():
        while plan is not None and n[c] > 0:
            fewer = np.array([n[c] - 1.0])
            lp.set_bounds(np.array([c]), fewer, fewer)
            if (values := lp.solve()) is None:
                lp.set_bounds(np.array([c]), n[c:c + 1], n[c:c + 1])
                break
            n[c], plan = fewer[0], values
    if plan is None:
        return None
    plan[:cands] = n
    return plan


def _plan(p: MixProblem, m: _Model, values: FloatArray) -> tuple[IntArray, FloatArray]:
    """Replicas and routing from the solver's values, cleaned of solver tolerance: binary routing
    rounded, split rows renormalised, and a replica added where the cleaned load would exceed the
    replicas by more than `TOLERANCE` (a plan must carry its load; this does not happen within
    HiGHS's default tolerances)."""
    routing = np.zeros((p.n_buckets, p.n_candidates))
    share = np.clip(m.shares(values), 0.0, 1.0)
    if p.routing == "whole":
        share = np.round(share)
    share[share < 1e-12] = 0.0
    routing[m.x_bucket, m.x_cand] = share
    rows = routing.sum(axis=1)
    # Served buckets sum to 1 up to solver tolerance; a partial share (max-served) stays.
    full = np.abs(rows - 1.0) < TOLERANCE
    routing[full] /= rows[full, None]
    replicas = np.round(m.replicas(values))
    load = _load(p, routing)
    short = load > replicas + TOLERANCE * np.maximum(1.0, replicas)
    replicas[short] = np.ceil(load[short])
    return replicas.astype(np.int64), routing


def _load(p: MixProblem, routing: FloatArray) -> FloatArray:
    """(C,) planned load in replicas of each candidate."""
    per = np.where(p.capacity_rps > 0, p.load_per_rps(), 0.0)
    load: FloatArray = np.einsum("cb,b,bc->c", per, p.demand_rps, routing)
    return load


def _power_w(p: MixProblem, replicas: IntArray, routing: FloatArray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        busy_share = np.where(p.capacity_rps > 0, p.demand_rps[None, :] / p.capacity_rps, 0.0)
    used = np.einsum("cb,bc->c", busy_share, routing)  # replicas' worth of full capacity
    return float(replicas @ p.power_idle_w + (p.power_busy_w - p.power_idle_w) @ used)


def _devices_by_group(p: MixProblem, replicas: IntArray) -> IntArray:
    return np.bincount(p.group, weights=p.devices * replicas,
                       minlength=p.n_groups).round().astype(np.int64)


def _full_groups(p: MixProblem, replicas: IntArray) -> list[int]:
    """Groups with a finite limit and no room for one more replica of any of its candidates that
    could matter: ones serving some bucket with demand and not dominated by another."""
    used = _devices_by_group(p, replicas)
    useful = np.any((p.capacity_rps > 0) & (p.demand_rps[None, :] > 0), axis=1) & ~dominated(p)
    out = []
    for g in range(p.n_groups):
        members = (p.group == g) & useful
        if math.isfinite(p.available[g]) and members.any():
            smallest = int(p.devices[members].min())
            if p.available[g] - used[g] < smallest:
                out.append(g)
    return out


def objective_value(p: MixProblem, replicas: IntArray, routing: FloatArray) -> float:
    """The problem's objective for a plan: USD/h, accelerators, or W."""
    if p.objective == "cost":
        return float(replicas @ p.cost_usd_h)
    if p.objective == "count":
        return float(replicas @ p.devices)
    return _power_w(p, replicas, routing)


def _no_solve(status: SolveStatus, objective: float, reason: str) -> SolveFacts:
    gap = 0.0 if status is SolveStatus.OPTIMAL else math.nan
    return SolveFacts(status, objective, objective, gap, 0.0, f"fleetplan: {reason}")


def solve_mix(problem: MixProblem) -> MixResult:
    """The best plan for `problem`, or its status and `Closest` when none exists. Never raises
    for an infeasible instance."""
    p = problem
    zeros_c = np.zeros(p.n_candidates, dtype=np.int64)
    empty_routing = np.zeros((p.n_buckets, p.n_candidates))
    if p.unservable():
        # No plan can serve a bucket no candidate serves: say so without asking the solver.
        facts = _no_solve(SolveStatus.INFEASIBLE, math.nan, "a bucket has no candidate")
    elif p.n_candidates == 0 or not np.any(p.demand_rps > 0):
        facts = _no_solve(SolveStatus.OPTIMAL, 0.0, "no demand")
        return _result(p, facts, zeros_c, empty_routing)
    else:
        model = _build(p, partial=False)
        facts, values = _solve_full(p, model)
        if facts.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            replicas, routing = _plan(p, model, values)
            return _result(p, facts, replicas, routing)
    closest = _closest(p) if facts.status is SolveStatus.INFEASIBLE else None
    return MixResult(facts, zeros_c, empty_routing, 0.0, np.zeros(p.n_groups, dtype=np.int64),
                     0.0, np.zeros(p.n_candidates), np.full(p.n_candidates, np.nan), (), closest)


def _solve_full(p: MixProblem, m: _Model) -> tuple[SolveFacts, FloatArray]:
    """Solve the full-demand model within the problem's time limit. Under split routing the
    branch and bound starts from `_rounded_plan` (given at most half the time), with HiGHS's own
    primal heuristics off: they would spend most of the solve re-finding that plan. Whole-bucket
    routing, where rounding the replica counts does not make the routing whole, keeps them.
    The reported time includes the rounding."""
    begin = time.perf_counter()
    start = (_rounded_plan(m, deadline=begin + p.time_limit_s / 2) if p.routing == "split"
             else None)
    spent = time.perf_counter() - begin
    facts, values = solve_milp(m.milp, time_limit_s=max(p.time_limit_s - spent, 1e-3),
                               start=start, heuristics=start is None)
    return replace(facts, time_s=facts.time_s + spent), values


def _result(p: MixProblem, facts: SolveFacts, replicas: IntArray,
            routing: FloatArray) -> MixResult:
    load = _load(p, routing)
    with np.errstate(divide="ignore", invalid="ignore"):
        utilization = np.where(replicas > 0, load / replicas, np.nan)
    binding = [availability_name(p, g) for g in _full_groups(p, replicas)]
    binding += [capacity_name(p, c) for c in np.flatnonzero(
        (replicas > 0) & (load > replicas - 1 + TOLERANCE)).tolist()]
    return MixResult(facts, replicas, routing, float(replicas @ p.cost_usd_h),
                     _devices_by_group(p, replicas), _power_w(p, replicas, routing), load,
                     utilization, tuple(binding))


def restate(problem: MixProblem, facts: SolveFacts, replicas: IntArray,
            routing: FloatArray) -> MixResult:
    """A decision (replicas and routing, with the facts of the solve that found it) stated
    against `problem`: cost, devices, power, load, utilisation and binding constraints derived
    from `problem`'s rows. For a plan carried over to a problem whose candidates were
    refined after the solve (the caller keeps `facts` true: same objective, and a bound that
    still holds)."""
    return _result(problem, facts, np.asarray(replicas, dtype=np.int64),
                   np.asarray(routing, dtype=float))


def _closest(p: MixProblem) -> Closest:
    """Maximise the served request rate under the same limits, then, at that rate, minimise the
    problem's objective (the first plan may waste replicas: it has no reason not to)."""
    unservable = p.unservable()
    if not np.any((p.capacity_rps > 0) & (p.demand_rps[None, :] > 0)):
        facts = _no_solve(SolveStatus.OPTIMAL, float(p.demand_rps.sum()), "nothing servable")
        replicas = np.zeros(p.n_candidates, dtype=np.int64)
        routing = np.zeros((p.n_buckets, p.n_candidates))
    else:
        model = _build(p, partial=True)
        facts, values = solve_milp(model.milp, time_limit_s=p.time_limit_s)
        replicas, routing = _plan(p, model, values)
        if facts.status is SolveStatus.OPTIMAL:
            # Second stage: keep the served rate, minimise the objective. The slack (1e-7 of the
            # demand, HiGHS's primal tolerance) only keeps the first optimum feasible; any more
            # would let the second stage trade served requests for cost.
            unserved = facts.objective + 1e-7 * max(1.0, float(p.demand_rps.sum()))
            u_cols = model.unserved_cols()
            served_rate = Rows(np.zeros(len(u_cols), dtype=np.int64), u_cols,
                               p.demand_rps[model.unserved_buckets], np.array([-np.inf]),
                               np.array([unserved]))
            cost = _objective_costs(p, model.x_bucket, model.x_cand, len(u_cols))
            second, values = solve_milp(model.milp.with_rows(served_rate).with_cost(cost),
                                        time_limit_s=p.time_limit_s)
            if second.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
                facts = second
                replicas, routing = _plan(p, model, values)
    demand = p.demand_rps
    served = np.where(demand > 0, np.minimum(routing.sum(axis=1), 1.0), 1.0)
    served_rps = float(demand @ served)
    total = float(demand.sum())
    short = served < 1.0 - TOLERANCE
    # A finite limit blocks when its type could serve some unserved demand: with that limit
    # lifted, replicas of that type could carry the rest of the bucket, so more would be served.
    # (Whole-bucket routing may leave a type's last devices unused, too few for the bucket.)
    used = _devices_by_group(p, replicas)
    blocking, reasons = [], [f"no candidate meets the SLO for bucket {b}" for b in unservable]
    for g in range(p.n_groups):
        could = np.any(p.capacity_rps[p.group == g][:, short] > 0, axis=0)
        if math.isfinite(p.available[g]) and could.any():
            name = availability_name(p, g)
            blocked = ", ".join(p.buckets[b] for b in np.flatnonzero(short)[could])
            blocking.append(name)
            reasons.append(f"{name}: {used[g]} of {p.available[g]:g} devices in use; more would "
                           f"serve more of bucket(s) {blocked}")
    return Closest(facts, served, served_rps, served_rps / total if total > 0 else 1.0,
                   replicas, routing, float(replicas @ p.cost_usd_h),
                   used, unservable, tuple(blocking), tuple(reasons))


@dataclass(frozen=True, eq=False)
class MixCheck:
    """Constraint residuals re-derived from a plan, independently of the solver's account."""

    routed: FloatArray
    """(B,) share of each bucket routed (1 for buckets with demand)."""
    routing_error: float
    """Largest |routed - 1| over buckets with demand, and any share outside [0, 1]."""
    stray_routing: float
    """Total share routed to candidates that cannot serve the bucket."""
    integrality_error: float
    """Largest distance of a share from {0, 1} under whole-bucket routing (else 0)."""
    load: FloatArray
    """(C,) planned load in replicas."""
    capacity_excess: float
    """Largest (load - replicas) / max(1, replicas); <= TOLERANCE when the plan carries its
    load."""
    devices_by_group: IntArray
    availability_excess: float
    """Largest devices used beyond a type's limit."""
    objective: float
    """The objective recomputed from the plan."""
    objective_error: float
    """|objective - solver's objective| / max(1, |objective|)."""

    def ok(self, tolerance: float = TOLERANCE) -> bool:
        return max(self.routing_error, self.stray_routing, self.integrality_error,
                   self.capacity_excess, self.availability_excess,
                   self.objective_error) <= tolerance


def check_mix(problem: MixProblem, result: MixResult) -> MixCheck:
    """Residuals of `result`'s plan against `problem`'s constraints, and its objective."""
    p, routing, replicas = problem, result.routing, result.replicas
    routed = routing.sum(axis=1)
    has_demand = p.demand_rps > 0
    routing_error = float(np.max(np.abs(routed[has_demand] - 1.0), initial=0.0))
    routing_error = max(routing_error, float(np.max(-routing, initial=0.0)),
                        float(np.max(routing - 1.0, initial=0.0)))
    stray = float(routing[(p.capacity_rps.T <= 0) & has_demand[:, None]].sum())
    integrality = (float(np.max(np.minimum(np.abs(routing), np.abs(routing - 1.0)),
                                initial=0.0)) if p.routing == "whole" else 0.0)
    load = _load(p, routing)
    excess = float(np.max((load - replicas) / np.maximum(1.0, replicas), initial=-np.inf))
    devices = _devices_by_group(p, replicas)
    finite = np.isfinite(p.available)
    avail_excess = float(np.max(devices[finite] - p.available[finite], initial=-np.inf))
    objective = objective_value(p, replicas, routing)
    error = abs(objective - result.facts.objective) / max(1.0, abs(objective))
    return MixCheck(routed, routing_error, stray, integrality, load, excess, devices,
                    avail_excess, objective, error if math.isfinite(error) else math.inf)
