"""The plan report: a typed model (its JSON Schema ships with the package), built from a
`FleetPlan`, rendered as JSON, a terminal table or markdown."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..models.inference import IDLE_POWER_FRACTION
from ..solvers.fleet import Choice, FleetPlan, HourPlan
from ..solvers.milp import SolveStatus
from ..solvers.mix import MixResult
from ..solvers.search import GOODPUT_ITERATIONS, pareto
from .planner import PlanInputs, hourly_rates
from .spec import HOURS_PER_DAY

# 1.1: the `autoscaling` section (null without a rate profile); 1.0 reports still validate.
# 1.2: `allocations[].disaggregated` and `search[].disaggregated`, present only for plans that
# consider prefill/decode disaggregation; 1.0 and 1.1 reports still validate.
# 1.3: `autoscaling.hours[].nodes`, each hour's replicas placed onto nodes; earlier reports
# still validate.
# 1.4: a disaggregated allocation's pools may differ in parallelism: its `disaggregated`
# pools carry each one's tp, pp and ep, and the allocation's own are its decode pool's (its
# `count` stays every accelerator of both pools); `attention_dp` (attention data-parallel
# groups, now a search axis) on allocations, pools and Pareto points. 1.0-1.3 reports still
# validate.
SCHEMA_VERSION = "1.4"
SECONDS_PER_HOUR = 3600.0
# A re-checked latency or load this far past its bound is a finding, not rounding.
RECHECK_TOLERANCE = 1e-6
AUTOSCALING_ASSUMPTION = (
    "each hour runs the cheapest fleet (in the plan's objective) that serves that hour's "
    "rates: workloads with a rate profile at their hour-h rate, flat-rate workloads at their "
    "rate; chosen among the peak plan's candidate configurations with the same capacities, "
    "availability limits, routing and headroom; each hour's rate holds for the whole hour; "
    "the fleet is resized at hour boundaries, instantly, with no warm-up, drain or start-up "
    "cost; the static fleet is the peak plan (every workload at its own busiest hour at "
    "once) run all day")
TOKENS_PER_MILLION = 1e6
DISAGGREGATION = (
    "a disaggregated unit is P prefill and D decode replicas of one accelerator type and one "
    "weight format, each pool with its own parallelism (options.pd_parallelism: independent) "
    "or one for both (shared); attention data parallelism only in the decode pool: prompts "
    "queue for the prefill pool (M/G/c) and run alone at the unit's prefill chunk, with "
    "attention over a replica's whole tensor group, each chunk through a replica's pipeline "
    "stages one after another while the stages hold one prompt each (a prompt takes its time "
    "through every stage, and a replica finishes one every that time over its stages); the "
    "KV cache then crosses to the decode pool, which runs decode-only steps up to its batch "
    "limit; the KV link is the scale-up link when the unit fits in one scale-up domain (it is "
    "then placed in one), else the NICs, each accelerator of the smaller replica carrying its "
    "own shard; the transfer adds to end-to-end latency, not to TTFT or TPOT; a unit's "
    "goodput is the highest rate over both pools that meets the SLO, and the ratios searched "
    "are options.pd_ratios")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Route(_Out):
    workload: str
    bucket: str
    share: float = Field(description="fraction of the bucket's requests sent here")
    rate_rps: float = Field(description="requests/s of the bucket per replica (per unit of a "
                            "disaggregated allocation)")
    ttft_p99_s: float | None
    tpot_p99_s: float | None
    e2e_p99_s: float | None
    slo_ratio: float | None = Field(description="worst latency / objective (<= 1 meets it)")
    slo_term: str


def _absent(value: object) -> bool:
    return value is None


class PoolOut(_Out):
    replicas: int = Field(description="replicas of this pool over all units")
    per_unit: int = Field(description="replicas of this pool in one unit")
    tp: int
    pp: int
    ep: int
    attention_dp: int = Field(default=1, description="attention data-parallel groups inside "
                              "the tensor group (1: attention over the whole group)")
    precision: str
    max_batch: int | None = Field(description="batch limit (decode pool)")
    prefill_chunk: int | None = Field(description="tokens per prefill step (prefill pool)")


class Disaggregated(_Out):
    units: int = Field(description="units of one prefill pool and one decode pool; each "
                       "request is prefilled and decoded in one unit")
    prefill: PoolOut
    decode: PoolOut
    kv_link: Literal["scale-up", "scale-out"] = Field(
        description="scale-up: each unit lies in one scale-up domain and ships KV caches over "
        "its link; scale-out: over the NICs")
    kv_link_bandwidth_bytes_s: float = Field(description="bytes/s one way that carry one "
                                             "prompt's KV cache (all of a replica's lanes)")


class Allocation(_Out):
    accelerator: str
    count: int = Field(description="accelerators")
    replicas: int = Field(description="replicas (of both pools, for a disaggregated "
                          "allocation)")
    tp: int = Field(description="tensor-parallel width of a replica (a disaggregated "
                    "allocation's decode replicas; `disaggregated` has each pool's)")
    pp: int = Field(description="pipeline stages of a replica (as tp)")
    ep: int = Field(description="expert-parallel width of a replica (as tp)")
    attention_dp: int = Field(default=1, description="attention data-parallel groups inside "
                              "the tensor group (1: attention over the whole group)")
    precision: str
    max_batch: int | None
    prefill_chunk: int | None
    cost_usd_h: float
    load_fraction: float = Field(description="planned load over the replicas' capacity")
    routes: list[Route]
    disaggregated: Disaggregated | None = Field(
        default=None, exclude_if=_absent, description="prefill and decode pools; absent for "
        "co-located replicas")


class Nodes(_Out):
    accelerator: str
    nodes: int
    lower_bound: int
    accelerators_per_node: int
    scale_up_domain: int
    idle_accelerators: int
    status: str
    solver: str
    feasible: bool
    reason: str


class Predicted(_Out):
    ttft_p99_s: float | None
    tpot_p99_s: float | None
    e2e_p99_s: float | None
    slo_ratio: float | None = Field(description="worst over the workload's routes")
    of: Literal["worst route"] = "worst route"


class WorkloadOut(_Out):
    name: str
    model: str | None
    rate_rps: float = Field(description="the rate planned for (the peak of a profile)")
    slo: dict[str, float]
    predicted: Predicted | None
    served_fraction: float


class ParetoPoint(_Out):
    family: str
    precision: str
    tp: int
    pp: int
    ep: int
    attention_dp: int = 1
    max_batch: int
    cost_usd_per_million_output_tokens: float
    ttft_p99_s: float
    goodput_rps: float


class UnitSearch(_Out):
    pd_ratios: list[str] = Field(description="prefill:decode replicas per unit searched")
    units_screened: int = Field(description="(prefill configuration, decode configuration, "
                                "ratio, bucket) combinations ranked")
    units_evaluated: int = Field(description="(unit, bucket) pairs priced by the serving "
                                 "model")


class FamilyOut(_Out):
    family: str
    grid: int
    fitting: int
    pairs_screened: int
    pairs_evaluated: int
    pareto: list[ParetoPoint] = Field(description="co-located candidates")
    disaggregated: UnitSearch | None = Field(
        default=None, exclude_if=_absent, description="the disaggregated units searched; "
        "absent when disaggregation is off")


class Closest(_Out):
    served_fraction: float
    reasons: list[str]
    blocking: list[str]
    unservable: list[str]
    best_alone: dict[str, dict[str, float | str]] = Field(
        description="per unservable bucket: the best latency/objective ratio one request "
        "alone reaches on any candidate, and the objective")


class Solver(_Out):
    status: str
    objective: float | None
    bound: float | None
    gap: float | None
    solver: str
    binding: list[str] = Field(description="availability limits that bind (how full each "
                               "candidate's replicas are is its allocation's load_fraction)")
    time_s: float | None = Field(default=None, description="only with --timings (reports are "
                                 "otherwise byte-identical run to run)")


class AutoscaleHour(_Out):
    hour: int = Field(ge=0, lt=HOURS_PER_DAY, description="hour of the day, 0-23")
    rates_rps: dict[str, float] = Field(description="requests/s of each workload this hour")
    status: Literal["optimal", "feasible", "infeasible"]
    cost_usd_h: float | None = Field(description="null where no plan exists or a type in use "
                                     "has no price")
    accelerators: dict[str, int] = Field(description="accelerators by type (types in use)")
    nodes: dict[str, int] | None = Field(
        default=None, description="nodes by type the hour's replicas are placed on (types in "
        "use); absent before schema 1.3")


class Autoscaling(_Out):
    assumption: str
    hours: list[AutoscaleHour] = Field(description="one per hour of the day, 0-23")
    autoscaled_cost_usd_day: float | None = Field(
        description="sum of the hourly costs, USD/day (null when an hour has none)")
    static_cost_usd_day: float | None = Field(
        description="the peak-sized plan's cost x 24, USD/day (null when it has none)")
    saving_usd_day: float | None
    saving_fraction: float | None = Field(
        description="1 - autoscaled / static (0 when nothing is saved)")


class Report(_Out):
    schema_version: str
    status: Literal["optimal", "feasible", "infeasible"]
    objective: str
    cost_usd_h: float | None = Field(description="null where a type in use has no price")
    cost_usd_per_million_output_tokens: float | None
    power_w: float | None
    accelerators: int
    allocations: list[Allocation]
    nodes: list[Nodes]
    workloads: list[WorkloadOut]
    solver: Solver
    closest: Closest | None
    autoscaling: Autoscaling | None = Field(
        default=None, description="the fleet resized every hour; null unless a workload gives "
        "rate_profile_rps")
    search: list[FamilyOut]
    inputs: dict[str, Any]
    assumptions: dict[str, Any]
    warnings: list[str]


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def build_report(inputs: PlanInputs, plan: FleetPlan, *, timings: bool = False) -> Report:
    spec = inputs.loaded.spec
    mix = plan.mix
    feasible = mix.feasible
    status = str(mix.facts.status) if feasible else "infeasible"
    warnings: list[str] = []
    allocations = []
    for c, ch in enumerate(plan.choices):
        n = int(mix.replicas[c])
        if n == 0:
            continue
        routes = [Route(workload=plan.buckets[s.bucket_index].workload, bucket=s.bucket,
                        share=s.fraction, rate_rps=s.rate_per_replica_rps,
                        ttft_p99_s=_num(s.ttft_p99_s), tpot_p99_s=_num(s.tpot_p99_s),
                        e2e_p99_s=_num(s.e2e_p99_s), slo_ratio=_num(s.slo_ratio),
                        slo_term=s.slo_term)
                  for s in plan.served if s.choice == c]
        measured = ch.precision == "measured"
        pools = _pools(ch, n)
        allocations.append(Allocation(
            accelerator=plan.groups[ch.group].accelerator, count=n * ch.devices,
            replicas=n * (ch.n_prefill + ch.n_decode) if pools else n,
            tp=ch.tp, pp=ch.pp, ep=ch.ep, attention_dp=ch.attn_dp, precision=ch.precision,
            max_batch=None if measured else ch.max_batch,
            prefill_chunk=None if measured else ch.prefill_chunk,
            cost_usd_h=n * ch.cost_usd_h, load_fraction=float(mix.utilization[c]) *
            (1.0 - spec.options.headroom), routes=routes, disaggregated=pools))
        for r in routes:
            if r.slo_ratio is not None and r.slo_ratio > 1.0 + 1e-6:
                warnings.append(f"{ch.name}: the re-check puts {r.bucket} at "
                                f"{r.slo_ratio:.3f}x its {r.slo_term} objective")
    nodes = []
    for g, placement in enumerate(plan.placements):
        if placement is None:
            continue
        group = plan.groups[g]
        nodes.append(Nodes(accelerator=group.accelerator, nodes=placement.nodes,
                           lower_bound=placement.lower_bound,
                           accelerators_per_node=group.accelerators_per_node,
                           scale_up_domain=group.scale_up_domain,
                           idle_accelerators=placement.idle_accelerators,
                           status=str(placement.facts.status), solver=placement.facts.solver,
                           feasible=placement.feasible, reason=placement.reason))
        if not placement.feasible:
            warnings.append(f"{group.accelerator}: replicas cannot be placed: "
                            f"{placement.reason}")
    workloads = []
    for w in spec.workloads:
        mine = [s for s in plan.served if plan.buckets[s.bucket_index].workload == w.name]
        demand = sum(b.demand_rps for b in plan.buckets if b.workload == w.name)
        served = 1.0 if feasible else _served_share(plan, w.name, demand)
        predicted = None
        if mine and all(math.isfinite(s.ttft_p99_s) for s in mine):
            predicted = Predicted(
                ttft_p99_s=_num(max(s.ttft_p99_s for s in mine)),
                tpot_p99_s=_num(max(s.tpot_p99_s for s in mine)),
                e2e_p99_s=_num(max(s.e2e_p99_s for s in mine)),
                slo_ratio=_num(max(s.slo_ratio for s in mine)))
        workloads.append(WorkloadOut(
            name=w.name, model=w.model, rate_rps=w.peak_rate_rps,
            slo={k: v for k, v in w.slo.model_dump().items() if v is not None},
            predicted=predicted, served_fraction=served))
    out_tok_s = sum(b.demand_rps * float(b.load.output_len.mean) for b in plan.buckets)
    cost = _cost_usd_h(plan, mix)
    per_mtok = cost / (out_tok_s * SECONDS_PER_HOUR / TOKENS_PER_MILLION) if out_tok_s else \
        math.nan
    closest = None
    if not feasible and mix.closest is not None:
        cl = mix.closest
        best: dict[str, tuple[float, str, str]] = {}
        for cands in plan.candidates:
            for name, (ratio, term) in cands.floor.items():
                if name in cl.unservable and (name not in best or ratio < best[name][0]):
                    best[name] = (ratio, term, cands.family.key)
        closest = Closest(served_fraction=cl.served_fraction, reasons=list(cl.reasons),
                          blocking=list(cl.blocking), unservable=list(cl.unservable),
                          best_alone={k: {"ratio": _num(v[0]) or -1.0, "objective": v[1],
                                          "family": v[2]} for k, v in sorted(best.items())})
    facts = mix.facts
    solver = Solver(status=str(facts.status), objective=_num(facts.objective),
                    bound=_num(facts.bound), gap=_num(facts.gap), solver=facts.solver,
                    binding=[b for b in mix.binding if not b.startswith("capacity[")],
                    time_s=facts.time_s if timings else None)
    search = [_family_out(plan, k) for k in range(len(plan.candidates))]
    devices = int(np.sum(mix.devices_by_group)) if feasible else 0
    if facts.status is SolveStatus.FEASIBLE:
        warnings.append(f"the solver stopped at its time limit: the plan is feasible, within "
                        f"{facts.gap:.2%} of optimal")
    warnings.extend(_hour_warnings(plan))
    return Report(
        schema_version=SCHEMA_VERSION, status=status,  # type: ignore[arg-type]
        objective=spec.objective, cost_usd_h=_num(cost) if feasible else 0.0,
        cost_usd_per_million_output_tokens=_num(per_mtok),
        power_w=_num(mix.power_w) if feasible and spec.capacities is None else None,
        accelerators=devices, allocations=allocations, nodes=nodes, workloads=workloads,
        solver=solver, closest=closest, autoscaling=_autoscaling(inputs, plan), search=search,
        inputs=_inputs(inputs), assumptions=_assumptions(inputs), warnings=warnings)


def _inputs(inputs: PlanInputs) -> dict[str, Any]:
    """The spec as resolved. Without disaggregation its options are left out: they change
    nothing, and such a plan reports what it did before the options existed."""
    data: dict[str, Any] = inputs.loaded.spec.model_dump(mode="json")
    if inputs.loaded.spec.options.disaggregation == "off":
        for key in ("disaggregation", "pd_ratios", "pd_parallelism"):
            data["options"].pop(key, None)
    return data


def _pools(ch: Choice, units: int) -> Disaggregated | None:
    """The two pools of `units` units of a disaggregated candidate; None for co-located
    replicas."""
    if ch.kv_link is None:
        return None
    def pool(per_unit: int, par: tuple[int, int, int, int], max_batch: int | None,
             chunk: int | None) -> PoolOut:
        tp, pp, ep, adp = par
        return PoolOut(replicas=units * per_unit, per_unit=per_unit, tp=tp, pp=pp, ep=ep,
                       attention_dp=adp, precision=ch.precision, max_batch=max_batch,
                       prefill_chunk=chunk)

    # A prefill replica runs one prompt at a time, with attention over its whole group.
    return Disaggregated(
        units=units,
        prefill=pool(ch.n_prefill, (*ch.prefill_tp_pp_ep, 1), None, ch.prefill_chunk),
        decode=pool(ch.n_decode, (ch.tp, ch.pp, ch.ep, ch.attn_dp), ch.max_batch, None),
        kv_link=ch.kv_path,  # type: ignore[arg-type]
        kv_link_bandwidth_bytes_s=float(np.asarray(ch.kv_link.bandwidth_bytes_s)))


def _cost_usd_h(plan: FleetPlan, mix: MixResult) -> float:
    """The fleet's USD/h under `mix`; nan without a plan or where a type in use has no price."""
    priced = all(math.isfinite(plan.groups[ch.group].price_usd_h)
                 for c, ch in enumerate(plan.choices) if mix.replicas[c] > 0)
    return mix.cost_usd_h if mix.feasible and priced else math.nan


def _hour_out(inputs: PlanInputs, plan: FleetPlan, hour: HourPlan) -> AutoscaleHour:
    mix = hour.mix
    used = {plan.groups[g].accelerator: int(n) for g, n in enumerate(mix.devices_by_group)
            if n > 0}
    nodes = {plan.groups[g].accelerator: placed.nodes
             for g, placed in enumerate(hour.placements) if placed is not None}
    return AutoscaleHour(
        hour=hour.hour,
        rates_rps={w.name: hourly_rates(w)[hour.hour] for w in inputs.loaded.spec.workloads},
        status=str(mix.facts.status) if mix.feasible else "infeasible",  # type: ignore[arg-type]
        cost_usd_h=_num(_cost_usd_h(plan, mix)), accelerators=used, nodes=nodes)


def _autoscaling(inputs: PlanInputs, plan: FleetPlan) -> Autoscaling | None:
    """Each hour's fleet and the daily cost of resizing hourly against the peak-sized fleet
    run all day (USD/day); None without a rate profile."""
    if not plan.hours:
        return None
    hours = [_hour_out(inputs, plan, h) for h in plan.hours]
    costs = [h.cost_usd_h for h in hours]
    priced = [c for c in costs if c is not None]
    autoscaled = math.fsum(priced) if len(priced) == len(costs) else None
    peak = _num(_cost_usd_h(plan, plan.mix))
    static = None if peak is None else peak * HOURS_PER_DAY
    saving = None if autoscaled is None or static is None else static - autoscaled
    fraction = None if saving is None or static is None or static <= 0 else saving / static
    return Autoscaling(assumption=AUTOSCALING_ASSUMPTION, hours=hours,
                       autoscaled_cost_usd_day=autoscaled, static_cost_usd_day=static,
                       saving_usd_day=saving, saving_fraction=fraction)


def _hour_findings(plan: FleetPlan, hour: HourPlan) -> list[str]:
    """What the re-check of one hour's plan found wrong (empty when it holds). An hour that
    runs the peak plan itself is reported with the peak plan."""
    mix = hour.mix
    if mix is plan.mix:
        return []
    if not mix.feasible:
        return ["no plan serves this hour's rates within the pool"]
    out = []
    check = hour.check
    if check is not None and not check.ok():
        out.append(f"the plan re-derived from its routing breaks a constraint (routing error "
                   f"{check.routing_error:.2g}, load over capacity {check.capacity_excess:.2g} "
                   f"replicas, over availability {check.availability_excess:.2g} devices)")
    for g, placed in enumerate(hour.placements):
        if placed is not None and not placed.feasible:
            out.append(f"{plan.groups[g].accelerator}: replicas cannot be placed: "
                       f"{placed.reason}")
    limit = 1.0 - plan.problem.headroom + RECHECK_TOLERANCE
    for s in hour.served:
        name = plan.choices[s.choice].name
        if s.load_fraction > limit:
            out.append(f"{name}: {s.bucket} loads its replicas to {s.load_fraction:.3f} of "
                       f"capacity")
        if math.isfinite(s.slo_ratio) and s.slo_ratio > 1.0 + RECHECK_TOLERANCE:
            out.append(f"{name}: the re-check puts {s.bucket} at {s.slo_ratio:.3f}x its "
                       f"{s.slo_term} objective")
    # Less demand never needs a worse optimum: the peak plan serves it too.
    peak = plan.mix.facts.objective
    if plan.mix.feasible and mix.facts.objective > peak + RECHECK_TOLERANCE * max(1.0, peak):
        out.append(f"its {plan.problem.objective} objective {mix.facts.objective:.6g} exceeds "
                   f"the peak plan's {peak:.6g} (solver {mix.facts.status})")
    return out


def _hour_warnings(plan: FleetPlan) -> list[str]:
    """Findings of the hourly re-checks, one warning per finding with the hours it holds
    for."""
    hours: dict[str, list[int]] = {}
    for hour in plan.hours:
        for finding in _hour_findings(plan, hour):
            hours.setdefault(finding, []).append(hour.hour)
    return [f"autoscaling hour{'s' if len(hs) > 1 else ''} "
            f"{', '.join(str(h) for h in hs)}: {finding}" for finding, hs in hours.items()]


def _served_share(plan: FleetPlan, workload: str, demand: float) -> float:
    cl = plan.mix.closest
    if cl is None or demand <= 0:
        return 0.0
    got = sum(float(cl.served[k]) * b.demand_rps for k, b in enumerate(plan.buckets)
              if b.workload == workload)
    return got / demand


def _family_out(plan: FleetPlan, k: int) -> FamilyOut:
    c = plan.candidates[k]
    points: list[ParetoPoint] = []
    if len(c):
        demand = np.array([plan.buckets[i].demand_rps for i in range(len(plan.buckets))
                           if plan.buckets[i].name in c.floor])
        share = demand / demand.sum() if demand.sum() > 0 else np.full(demand.size,
                                                                       1 / demand.size)
        out_tok = np.array([float(plan.buckets[i].load.output_len.mean)
                            for i in range(len(plan.buckets))
                            if plan.buckets[i].name in c.floor])
        with np.errstate(divide="ignore", invalid="ignore"):
            # Requests/s of the workload mix one replica carries, when each bucket takes its
            # share of the replica's time.
            mixed = 1.0 / np.sum(share / c.goodput_rps, axis=1)
            tok_h = mixed * float(np.sum(share * out_tok)) * SECONDS_PER_HOUR
            per_mtok = c.cost_usd_h / (tok_h / TOKENS_PER_MILLION)
            ttft = np.nanmax(c.ttft_p99_s, axis=1)
        front = pareto(np.where(mixed > 0, per_mtok, np.inf), ttft)
        for j in np.flatnonzero(front):
            points.append(ParetoPoint(
                family=c.family.key, precision=str(c.precision[j]), tp=int(c.tp[j]),
                pp=int(c.pp[j]), ep=int(c.ep[j]), attention_dp=int(c.attn_dp[j]),
                max_batch=int(c.max_batch[j]),
                cost_usd_per_million_output_tokens=float(per_mtok[j]),
                ttft_p99_s=float(ttft[j]), goodput_rps=float(mixed[j])))
    units = next((u for u in plan.units if u.family.key == c.family.key), None)
    searched = None if units is None else UnitSearch(
        pd_ratios=[f"{p}:{d}" for p, d in units.ratios],
        units_screened=units.pairs_screened, units_evaluated=units.pairs_evaluated)
    return FamilyOut(family=c.family.key, grid=c.grid_size, fitting=c.fitting,
                     pairs_screened=c.pairs_screened, pairs_evaluated=c.pairs_evaluated,
                     pareto=points, disaggregated=searched)


def _assumptions(inputs: PlanInputs) -> dict[str, Any]:
    spec = inputs.loaded.spec
    if spec.capacities is not None:
        return {"capacity_model": "measured: requests/s per accelerator per bucket at the SLO, "
                "additive over the buckets a replica carries (Mélange)",
                "headroom": spec.options.headroom}
    return {
        "capacity_model": "goodput: the highest request rate per replica whose predicted "
                          "latency percentiles meet the bucket's SLO (fleetplan's serving "
                          "model); load shares of buckets on one replica add up (Mélange)",
        "candidate_selection": f"a roofline screen ranks the whole grid by cost per "
                               f"request/s; the {spec.options.shortlist} best per bucket and "
                               f"accelerator type, and the best of each replica size, get the "
                               f"full serving model; the mix ILP chooses among those",
        "goodput_resolution": f"capacity / 2**{GOODPUT_ITERATIONS}",
        "arrivals": "each replica sees the workload's arrival process (random splitting "
                    "keeps Poisson streams Poisson)",
        "rate_profile": "the fleet is sized for the busiest hour; the autoscaling section "
                        "prices one resized every hour",
        "calibration_source": inputs.calibration.source,
        "engine": spec.options.engine,
        "idle_power_fraction_of_tdp": IDLE_POWER_FRACTION,
        "headroom": spec.options.headroom,
    } | ({} if spec.options.disaggregation == "off" else {"disaggregation": DISAGGREGATION})


def summary_lines(report: Report) -> list[str]:
    """The headline of a plan, one fact per line (terminal and markdown)."""
    lines = [f"status: {report.status} (objective {report.objective}; solver "
             f"{report.solver.status}, gap {_pct(report.solver.gap)})"]
    if report.status != "infeasible":
        lines.append(f"cost: {_fmt(report.cost_usd_h, '.2f')} USD/h, "
                     f"{_fmt(report.cost_usd_per_million_output_tokens, '.3f')} USD per "
                     f"million output tokens; {report.accelerators} accelerators; power "
                     f"{_fmt(report.power_w, '.0f')} W")
    if report.closest is not None:
        lines.append(f"closest achievable: {report.closest.served_fraction:.1%} of the demand")
        lines.extend(f"  - {r}" for r in report.closest.reasons)
        for bucket, best in report.closest.best_alone.items():
            lines.append(f"  - {bucket}: best {best['objective']} alone is "
                         f"{float(best['ratio']):.2f}x its objective (on {best['family']})")
    if report.autoscaling is not None:
        lines.extend(autoscaling_lines(report.autoscaling))
    if report.solver.binding:
        lines.append("binding: " + ", ".join(report.solver.binding))
    lines.extend(f"warning: {w}" for w in report.warnings)
    return lines


def autoscaling_lines(auto: Autoscaling) -> list[str]:
    """The autoscaling section in four lines: daily costs, then USD/h, accelerators and nodes
    by hour of the day ("-" for an hour without a priced plan)."""
    saving = (f" (saving {_fmt(auto.saving_usd_day, '.2f')} USD/day, "
              f"{_pct(auto.saving_fraction)})")
    return [
        f"autoscaling: {_fmt(auto.autoscaled_cost_usd_day, '.2f')} USD/day resized hourly vs "
        f"{_fmt(auto.static_cost_usd_day, '.2f')} USD/day sized for the peak{saving}",
        "autoscaled USD/h by hour: " + ", ".join(f"{h.hour}h {_fmt(h.cost_usd_h, '.2f')}"
                                        for h in auto.hours),
        "autoscaled accelerators by hour: " + ", ".join(
            f"{h.hour}h {sum(h.accelerators.values()) if h.status != 'infeasible' else '-'}"
            for h in auto.hours),
        "autoscaled nodes by hour: " + ", ".join(
            f"{h.hour}h "
            f"{sum(h.nodes.values()) if h.nodes is not None and h.status != 'infeasible' else '-'}"
            for h in auto.hours),
    ]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def allocation_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    # Attention data parallelism gets a column where a plan uses it.
    adp = any(a.attention_dp != 1 for a in report.allocations)
    headers = ["accelerator", "count", "replicas", "tp", "pp", "ep",
               *(["attention dp"] if adp else []), "precision", "max batch", "USD/h", "load",
               "routes"]
    rows = [[a.accelerator, str(a.count), _replicas(a), *_parallelism(a),
             *([str(a.attention_dp)] if adp else []), a.precision, _fmt(a.max_batch, "d"),
             f"{a.cost_usd_h:.2f}", f"{a.load_fraction:.0%}",
             "; ".join(f"{r.bucket} {r.share:.0%}" for r in a.routes)]
            for a in report.allocations]
    return headers, rows


def _replicas(a: Allocation) -> str:
    """Replicas, and for a disaggregated allocation its units' pools ("6 = 2x(2P+1D)")."""
    d = a.disaggregated
    if d is None:
        return str(a.replicas)
    return f"{a.replicas} = {d.units}x({d.prefill.per_unit}P+{d.decode.per_unit}D)"


def _parallelism(a: Allocation) -> tuple[str, str, str]:
    """tp, pp and ep; a disaggregated allocation whose pools differ in one shows both
    ("2P/8D")."""
    d = a.disaggregated
    out = []
    for axis in ("tp", "pp", "ep"):
        own = getattr(a, axis)
        if d is None or getattr(d.prefill, axis) == getattr(d.decode, axis):
            out.append(str(own))
        else:
            out.append(f"{getattr(d.prefill, axis)}P/{getattr(d.decode, axis)}D")
    return out[0], out[1], out[2]


def workload_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    headers = ["workload", "rate req/s", "SLO", "p99 TTFT", "p99 TPOT", "p99 e2e",
               "latency/SLO", "served"]
    rows = []
    for w in report.workloads:
        p = w.predicted
        slo = ", ".join(f"{k.removesuffix('_s')} {v:g} s" for k, v in sorted(w.slo.items()))
        rows.append([w.name, f"{w.rate_rps:g}", slo or "-",
                     _fmt(p.ttft_p99_s if p else None, '.3g'),
                     _fmt(p.tpot_p99_s if p else None, '.3g'),
                     _fmt(p.e2e_p99_s if p else None, '.3g'),
                     _fmt(p.slo_ratio if p else None, '.2f'), f"{w.served_fraction:.0%}"])
    return headers, rows


def report_schema() -> dict[str, Any]:
    """The JSON Schema of a plan report."""
    schema = Report.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fleetplan plan report"
    return schema
