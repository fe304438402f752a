"""`fleetplan plan`: a validated spec resolved against the catalog and handed to the solvers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet
from ..hardware.errors import SpecError
from ..hardware.llm import ModelArch
from ..hardware.specs import Accelerator, Node
from ..models.arrays import FloatArray
from ..models.device import Device
from ..models.queueing import Lengths, Slo, Workload
from ..solvers.fleet import FleetPlan, Group, plan_fleet, plan_hours, plan_measured
from ..solvers.search import BucketLoad, Family, SearchSpace
from .files import is_model_file, load_calibration, model_of
from .spec import HOURS_PER_DAY, LengthDist, LoadedSpec, WorkloadSpec


@dataclass(frozen=True)
class PlanInputs:
    """A spec resolved: what the solvers get, and what the report restates."""

    loaded: LoadedSpec
    groups: list[Group]
    buckets: list[BucketLoad]
    bucket_model: list[str]
    models: dict[str, ModelArch]
    calibration: CalibrationSet
    hourly_demand_rps: FloatArray | None = None
    """(24, buckets) request rate of each bucket in each hour of the day, requests/s, when a
    workload gives a rate profile (flat-rate workloads at their rate every hour); else None."""


def _lengths(value: int | LengthDist) -> Lengths:
    if isinstance(value, int):
        return Lengths.fixed(float(value))
    if value.dist == "fixed":
        return Lengths.fixed(value.mean)
    return Lengths.lognormal(value.mean, value.std)


def _slo(w: WorkloadSpec) -> Slo:
    return Slo(**w.slo.model_dump())


def _buckets(w: WorkloadSpec) -> list[tuple[str, Lengths, Lengths, float]]:
    """(name, input, output, share) of each bucket of a workload: its buckets, or one bucket
    carrying the whole length distribution."""
    if w.buckets is None:
        if w.input_len is None or w.output_len is None:
            raise ValueError("a validated workload has lengths or buckets")
        return [(w.name, _lengths(w.input_len), _lengths(w.output_len), 1.0)]
    return [(f"{w.name}/{b.input_len}x{b.output_len}", Lengths.fixed(float(b.input_len)),
             Lengths.fixed(float(b.output_len)), b.share) for b in w.buckets]


def hourly_rates(w: WorkloadSpec) -> list[float]:
    """A workload's request rate in each hour of the day, requests/s: its profile, or its
    flat rate every hour."""
    if w.rate_profile_rps is not None:
        return list(w.rate_profile_rps)
    return [w.peak_rate_rps] * HOURS_PER_DAY


def _accelerator(catalog: Catalog, loaded: LoadedSpec, k: int) -> Accelerator:
    name = loaded.spec.pool[k].accelerator
    try:
        return catalog.accelerator(name)
    except SpecError as err:
        raise loaded.error(("pool", k, "accelerator"), err.message) from None


def resolve_plan(loaded: LoadedSpec, catalog: Catalog) -> PlanInputs:
    """Catalog ids, prices, node shapes and calibration of a spec; errors point at the spec."""
    spec = loaded.spec
    opts = spec.options
    try:
        catalog.engine(opts.engine)
    except SpecError as err:
        raise loaded.error(("options", "engine"), err.message) from None
    if opts.disaggregation != "off" and spec.capacities is not None:
        raise loaded.error(("options", "disaggregation"), "disaggregation needs the "
                           "performance model; a measured capacity table has no pools")
    if spec.objective == "energy" and spec.capacities is not None:
        raise loaded.error(("objective",), "the energy objective needs the performance model; "
                           "a measured capacity table carries no power")
    calibration = catalog.calibration
    if opts.calibration is not None:
        calibration = load_calibration(catalog, loaded.folder / Path(opts.calibration))
    groups = []
    for k, entry in enumerate(spec.pool):
        acc = _accelerator(catalog, loaded, k)
        node = Node.default_for(acc)
        per_node = entry.accelerators_per_node or node.accelerators_per_node
        domain = entry.scale_up_domain or max(node.scale_up_domain, per_node)
        if domain > per_node and domain % per_node:
            raise loaded.error(("pool", k, "scale_up_domain"),
                               f"a scale-up domain of {domain} is not a whole number of "
                               f"{per_node}-accelerator nodes")
        price = entry.price_usd_h or (acc.price.usd_per_hour if acc.price else math.nan)
        if math.isnan(price) and spec.objective == "cost":
            raise loaded.error(("pool", k, "accelerator"),
                               f"the catalog has no price for {acc.id}; give price_usd_h")
        if spec.objective == "energy" and acc.tdp_w is None and acc.energy is None:
            raise loaded.error(("pool", k, "accelerator"),
                               f"{acc.id} publishes no power figure, so energy cannot be "
                               "the objective with it in the pool")
        groups.append(Group(acc.id, math.inf if entry.max_count is None else
                            float(entry.max_count), per_node, domain, price))
    models: dict[str, ModelArch] = {}
    buckets, bucket_model = [], []
    hourly: list[list[float]] = []
    for k, w in enumerate(spec.workloads):
        model_id = ""
        if w.model is not None:
            try:
                # A model file is found relative to the spec, as a reader of the spec expects.
                arch = model_of(catalog, str(loaded.folder / w.model)
                                if is_model_file(catalog, w.model) else w.model)
            except SpecError as err:
                raise loaded.error(("workloads", k, "model"), err.message) from None
            models[arch.id] = arch
            model_id = arch.id
        for name, inp, out, share in _buckets(w):
            load = Workload(np.asarray(1.0), inp, out, w.arrival_cv, w.prefix_hit)
            buckets.append(BucketLoad(name, w.name, load, _slo(w), w.peak_rate_rps * share))
            bucket_model.append(model_id)
            # rate * share, as the peak demand above: the busiest hour matches it exactly.
            hourly.append([rate * share for rate in hourly_rates(w)])
    profiled = any(w.rate_profile_rps is not None for w in spec.workloads)
    hourly_demand = np.array(hourly, dtype=float).T if profiled else None
    return PlanInputs(loaded, groups, buckets, bucket_model, models, calibration,
                      hourly_demand)


def _space(loaded: LoadedSpec) -> SearchSpace:
    o = loaded.spec.options
    return SearchSpace(tuple(o.precisions), tuple(sorted(set(o.tp))), tuple(sorted(set(o.pp))),
                       None if o.ep is None else tuple(sorted(set(o.ep))),
                       tuple(sorted(set(o.max_batch))),
                       None if o.prefill_chunk is None else tuple(sorted(set(o.prefill_chunk))),
                       o.allow_cross_node_tp, o.shortlist, o.disaggregation, o.pd_pairs,
                       o.pd_parallelism,
                       None if o.attention_dp is None else tuple(sorted(set(o.attention_dp))))


def _measured_capacity(inputs: PlanInputs) -> np.ndarray:
    """(groups, buckets) requests/s per accelerator from the spec's table; 0 where the table
    has no row (that type is not used for that bucket)."""
    loaded = inputs.loaded
    spec = loaded.spec
    cap = np.zeros((len(inputs.groups), len(inputs.buckets)))
    group_of = {g.accelerator: k for k, g in enumerate(inputs.groups)}
    shapes = [(b.workload, round(float(b.load.input_len.mean)),
               round(float(b.load.output_len.mean))) for b in inputs.buckets]
    for r, row in enumerate(spec.capacities or []):
        if row.accelerator not in group_of:
            raise loaded.error(("capacities", r, "accelerator"),
                               f"{row.accelerator!r} is not in the pool")
        hits = [k for k, (w, i, o) in enumerate(shapes)
                if i == row.input_len and o == row.output_len
                and (row.workload is None or row.workload == w)]
        if not hits:
            raise loaded.error(("capacities", r, "input_len"),
                               f"no workload bucket has input_len {row.input_len} and "
                               f"output_len {row.output_len}")
        for k in hits:
            if cap[group_of[row.accelerator], k] > 0:
                raise loaded.error(("capacities", r), "a second capacity for the same "
                                   "accelerator and bucket")
            cap[group_of[row.accelerator], k] = row.max_rps
    return cap


def run_plan(inputs: PlanInputs, catalog: Catalog,
             progress: Callable[[str, int, int], None] | None = None) -> FleetPlan:
    """Search, solve, re-check and place; with a rate profile, also the fleet of each hour
    (`FleetPlan.hours`)."""
    plan = _peak_plan(inputs, catalog, progress)
    if inputs.hourly_demand_rps is None:
        return plan
    return replace(plan, hours=plan_hours(plan, inputs.hourly_demand_rps))


def _peak_plan(inputs: PlanInputs, catalog: Catalog,
               progress: Callable[[str, int, int], None] | None) -> FleetPlan:
    """The plan for every workload at its peak rate."""
    spec = inputs.loaded.spec
    opts = spec.options
    if spec.capacities is not None:
        return plan_measured(inputs.groups, inputs.buckets, _measured_capacity(inputs),
                             routing=opts.routing, headroom=opts.headroom,
                             time_limit_s=opts.time_limit_s)
    engine = catalog.engine(opts.engine)
    families, family_group = [], []
    for model_id, arch in sorted(inputs.models.items()):
        for g, group in enumerate(inputs.groups):
            acc = catalog.accelerator(group.accelerator)
            device = Device(acc, inputs.calibration.for_device(acc.id, engine.id), engine)
            families.append(Family(f"{model_id}@{acc.id}", arch, device, group.price_usd_h
                                   if math.isfinite(group.price_usd_h) else 0.0,
                                   group.available, group.scale_up_domain))
            family_group.append(g)
    return plan_fleet(families, family_group, inputs.groups, inputs.buckets,
                      inputs.bucket_model, _space(inputs.loaded), objective=spec.objective,
                      routing=opts.routing, headroom=opts.headroom,
                      time_limit_s=opts.time_limit_s, progress=progress)
