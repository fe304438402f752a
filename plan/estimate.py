"""`fleetplan estimate`: one configuration, resolved from catalog ids, priced by the models."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet, Efficiency
from ..hardware.engine import EngineProfile
from ..hardware.errors import SpecError
from ..hardware.llm import ModelArch
from ..hardware.precision import PRECISIONS
from ..hardware.specs import Accelerator, HostMemoryTier
from ..models.device import Device
from ..models.disaggregation import KvLink, serve_disaggregated
from ..models.inference import (
    IDLE_POWER_FRACTION,
    Estimate,
    Replica,
    SpecDecode,
    StepTime,
    build_replica,
    max_throughput,
    static,
)
from ..models.queueing import (
    Lengths,
    LoadResult,
    Percentiles,
    RequestClass,
    Slo,
    Workload,
    goodput,
    mixed_workload,
    serve,
    serve_classes,
)
from ..models.simulate import (
    ReplicaConfig,
    Requests,
    gamma_arrivals,
    poisson_arrivals,
    simulate,
)
from ..models.step_table import StepTable
from .files import model_of
from .trace import Trace


@dataclass(frozen=True)
class EstimateRequest:
    """What the user asked for, before resolution (ids and plain numbers)."""

    model: str
    accelerator: str
    input_len: int
    output_len: int
    count: int | None = None
    tp: int = 1
    pp: int = 1
    ep: int = 1
    precision: str = "bf16"
    kv_precision: str | None = None
    batch: int | None = None
    scenario: str = "static"
    engine: str = "trtllm"
    prefill_chunk: int | None = None
    kv_offload: str | None = None
    draft_len: int = 0
    acceptance: float = 0.0
    draft_model: str | None = None
    rate_rps: float | None = None
    arrival: str = "poisson"
    arrival_cv: float = 1.0
    input_dist: str | None = None
    output_dist: str | None = None
    prefix_hit: float = 0.0
    disaggregate: str | None = None
    """"P:D": serve the rate with P prefill and D decode replicas instead of colocated ones."""
    attention_dp: int | None = None
    """Attention data-parallel groups inside the tensor group (None: the engine's default);
    with `disaggregate`, the decode replicas' (a prefill replica runs one prompt at a time,
    with attention over its whole group)."""
    classes: tuple[str, ...] = ()
    """Request classes sharing the replica, each "name=N share=S input=DIST output=DIST
    [ttft_p99=S ...]"; they replace the single input/output distribution under load."""
    prefill_tp: int | None = None
    """With `disaggregate`: the prefill replicas' TP (None: `tp`); so `prefill_pp`,
    `prefill_ep`."""
    prefill_pp: int | None = None
    prefill_ep: int | None = None
    kv_link: str = "scale-out"
    """With `disaggregate`: "scale-out" (the KV caches over the NICs) or "scale-up" (the unit
    lies in one scale-up domain, as `fleetplan plan` places a unit that fits in one)."""


CLASS_SLO_KEYS = tuple(f"{m}_{p}" for m in ("ttft", "tpot", "e2e") for p in ("p50", "p90", "p99"))
_CLASS_KEYS = ("name", "share", "input", "output", *CLASS_SLO_KEYS)


def parse_class(text: str) -> RequestClass:
    """One --class: space-separated key=value pairs; lengths as 'fixed:N', 'lognormal:M:S' or
    a plain number of tokens; objectives in seconds."""
    values: dict[str, str] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep or key not in _CLASS_KEYS:
            raise SpecError(f"expected key=value with a key from {', '.join(_CLASS_KEYS)}; "
                            f"got {part!r}", field="class")
        if key in values:
            raise SpecError(f"{key} given twice in {text!r}", field="class")
        values[key] = value
    missing = [k for k in ("name", "share", "input", "output") if k not in values]
    if missing:
        raise SpecError(f"{text!r} lacks {', '.join(missing)}", field="class")

    def number(key: str) -> float:
        try:
            value = float(values[key])
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise SpecError(f"{key} must be a positive number, got {values[key]!r}",
                            field="class")
        return value

    def lengths(key: str) -> Lengths:
        raw = values[key]
        return parse_lengths(f"fixed:{raw}" if raw.replace(".", "", 1).isdigit() else raw,
                             1, "class")

    share = number("share")
    if share > 1:
        raise SpecError(f"share must be within (0, 1], got {share:g}", field="class")
    slo = Slo(**{f"{k}_s": number(k) for k in CLASS_SLO_KEYS if k in values})
    return RequestClass(values["name"], share, lengths("input"), lengths("output"),
                        slo if slo.items() else None)


def request_classes(req: EstimateRequest) -> tuple[RequestClass, ...]:
    """The request's classes, checked: unique names, shares summing to one."""
    classes = tuple(parse_class(text) for text in req.classes)
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise SpecError(f"class names repeat: {', '.join(names)}", field="class")
    total = sum(c.share for c in classes)
    if classes and abs(total - 1.0) > 1e-6:
        raise SpecError(f"class shares sum to {total:g}, not 1", field="class")
    return classes


def parse_pools(text: str) -> tuple[int, int]:
    parts = text.split(":")
    if len(parts) == 2 and all(p.isdigit() and int(p) >= 1 for p in parts):
        return int(parts[0]), int(parts[1])
    raise SpecError(f"expected 'P:D' with whole numbers >= 1, e.g. 1:2; got {text!r}",
                    field="disaggregate")


def _histogram(body: str, field: str) -> Lengths:
    """"128=0.5,1024=0.3,4096=0.2": token lengths and their relative frequencies."""
    values, weights = [], []
    for item in body.split(","):
        length, sep, weight = item.partition("=")
        try:
            values.append(float(length))
            weights.append(float(weight) if sep else math.nan)
        except ValueError:
            values.append(math.nan)
    try:
        return Lengths.empirical(values, weights)
    except ValueError as err:
        raise SpecError(f"expected 'hist:LEN=WEIGHT,...' ({err}); got {body!r}",
                        field=field) from None


def parse_lengths(text: str | None, fixed: int, field: str) -> Lengths:
    """`None` -> the fixed length; "lognormal:MEAN:STD", "fixed:N" or "hist:LEN=W,..."
    otherwise."""
    if text is None:
        return Lengths.fixed(fixed)
    if text.startswith("hist:"):
        return _histogram(text[len("hist:"):], field)
    parts = text.split(":")
    try:
        if parts[0] == "fixed" and len(parts) == 2:
            value = float(parts[1])
            if math.isfinite(value) and value >= 1:
                return Lengths.fixed(value)
        elif parts[0] == "lognormal" and len(parts) == 3:
            mean, std = float(parts[1]), float(parts[2])
            if math.isfinite(mean) and math.isfinite(std) and mean >= 1 and std >= 0:
                return Lengths.lognormal(mean, std)
    except ValueError:
        pass
    raise SpecError(f"expected 'fixed:N', 'lognormal:MEAN:STD' with MEAN >= 1 or "
                    f"'hist:LEN=WEIGHT,...', got {text!r}", field=field)


def workload_of(req: EstimateRequest, rate: float) -> Workload:
    """The request stream of `req` at `rate` requests/s: its classes mixed when it has any."""
    if req.classes:
        return mixed_workload(rate, request_classes(req),
                              arrival_cv=req.arrival_cv if req.arrival == "gamma" else 1.0,
                              prefix_hit=req.prefix_hit)
    return Workload(np.asarray(rate, dtype=float),
                    parse_lengths(req.input_dist, req.input_len, "input_dist"),
                    parse_lengths(req.output_dist, req.output_len, "output_dist"),
                    req.arrival_cv if req.arrival == "gamma" else 1.0, req.prefix_hit)


def _check(req: EstimateRequest) -> None:
    for name in ("input_len", "output_len", "tp", "pp", "ep"):
        if getattr(req, name) < 1:
            raise SpecError(f"must be >= 1, got {getattr(req, name)}", field=name)
    for name in ("precision", "kv_precision"):
        value = getattr(req, name)
        if value is not None and value not in PRECISIONS:
            raise SpecError(f"unknown precision {value!r}; one of {', '.join(PRECISIONS)}",
                            field=name)
    if req.attention_dp is not None and (req.attention_dp < 1 or req.tp % req.attention_dp):
        raise SpecError(f"must be a whole number >= 1 dividing tp ({req.tp}), got "
                        f"{req.attention_dp}", field="attention_dp")
    if req.tp % req.ep:
        raise SpecError(f"ep ({req.ep}) must divide tp ({req.tp}): experts are spread over "
                        "the tensor-parallel group", field="ep")
    if req.count is not None and req.count != req.tp * req.pp:
        raise SpecError(f"count {req.count} must equal tp x pp = {req.tp * req.pp} for one "
                        "replica", field="count")
    if req.scenario == "static" and req.batch is None and req.rate_rps is None:
        raise SpecError("the static scenario needs --batch", field="batch")
    if req.batch is not None and req.batch < 1:
        raise SpecError(f"must be >= 1, got {req.batch}", field="batch")
    if not 0.0 <= req.acceptance <= 1.0:
        raise SpecError(f"must be within 0..1, got {req.acceptance}", field="acceptance")
    if req.rate_rps is not None and not (math.isfinite(req.rate_rps) and req.rate_rps > 0):
        raise SpecError(f"must be a positive number, got {req.rate_rps}", field="rate")
    if req.prefill_chunk is not None and req.prefill_chunk < 1:
        raise SpecError(f"must be >= 1, got {req.prefill_chunk}", field="prefill_chunk")
    if req.draft_len < 0:
        raise SpecError(f"must be >= 0, got {req.draft_len}", field="draft_len")
    if req.disaggregate is not None and req.rate_rps is None:
        raise SpecError("needs --rate: the pools serve a request stream", field="disaggregate")
    if req.kv_link not in ("scale-out", "scale-up"):
        raise SpecError(f"must be scale-out or scale-up, got {req.kv_link!r}", field="kv_link")
    if req.kv_link != "scale-out" and req.disaggregate is None:
        raise SpecError("needs --disaggregate: it is the link between the pools",
                        field="kv_link")
    for name in ("prefill_tp", "prefill_pp", "prefill_ep"):
        value = getattr(req, name)
        if value is None:
            continue
        if req.disaggregate is None:
            raise SpecError("needs --disaggregate: it sets the prefill pool's replicas",
                            field=name)
        if value < 1:
            raise SpecError(f"must be >= 1, got {value}", field=name)
    if req.arrival not in ("poisson", "gamma"):
        raise SpecError(f"must be poisson or gamma, got {req.arrival!r}", field="arrival")
    if req.arrival_cv <= 0:
        raise SpecError(f"must be positive, got {req.arrival_cv}", field="cv")
    if not 0.0 <= req.prefix_hit < 1.0:
        raise SpecError(f"must be within 0..1, got {req.prefix_hit}", field="prefix_hit")


def _check_fit(req: EstimateRequest, arch: ModelArch, acc: Accelerator) -> None:
    """Parallelism and formats the model and the chip can actually run."""
    att = arch.attention
    # With attention data parallelism the heads split over each group of tp / attention_dp.
    group = req.tp // (req.attention_dp or 1)
    field = "tp" if group == req.tp else "attention_dp"
    what = f"tp {req.tp}" if group == req.tp else \
        f"the attention group (tp / attention_dp = {group})"
    if att.num_heads % group:
        raise SpecError(f"{what} does not divide the {att.num_heads} attention heads of "
                        f"{arch.id}", field=field)
    kv = att.num_kv_heads
    if att.kind == "gqa" and kv % group and group % kv:
        raise SpecError(f"{what} and the {kv} KV heads of {arch.id} must divide one "
                        "another (KV heads are split, or replicated past them)", field=field)
    if req.pp > arch.layers:
        raise SpecError(f"pp {req.pp} exceeds the {arch.layers} layers of {arch.id}", field="pp")
    if req.ep > 1:
        if arch.moe is None:
            raise SpecError(f"{arch.id} has no experts to spread (ep must be 1)", field="ep")
        if arch.moe.num_experts % req.ep:
            raise SpecError(f"ep {req.ep} does not divide the {arch.moe.num_experts} experts "
                            f"of {arch.id}", field="ep")
    for name in ("precision", "kv_precision"):
        value = getattr(req, name)
        if value is not None and name == "precision" and not acc.runs(value):
            raise SpecError(f"{acc.id} has no rate for {value} or a wider format it widens to; "
                            f"it runs {', '.join(sorted(acc.peak_flops))}", field=name)


def _phase(step: StepTime) -> dict[str, Any]:
    return {"bound": str(step.bound()), "time_s": float(step.time),
            "compute_s": float(step.compute), "memory_s": float(step.memory),
            "network_s": float(step.network), "overhead_s": float(step.overhead)}


@dataclass(frozen=True)
class Resolved:
    """A request resolved against the catalog: the replica and what it runs on."""

    replica: Replica
    spec: SpecDecode | None
    engine: EngineProfile
    efficiency: Efficiency
    host: HostMemoryTier | None
    prefill: Replica | None = None
    """With `disaggregate`: the prefill pool's replica (`replica` is the decode pool's)."""


def resolve(req: EstimateRequest, catalog: Catalog, calibration: CalibrationSet) -> Resolved:
    """Check the request and build its replica."""
    _check(req)
    arch = model_of(catalog, req.model)
    acc = catalog.accelerator(req.accelerator)
    _check_fit(req, arch, acc)
    engine = catalog.engine(req.engine)
    host = catalog.memory_tier(req.kv_offload) if req.kv_offload else None
    eff = calibration.for_device(acc.id, req.engine)
    device = Device(acc, eff, engine, host)
    budget = engine.max_tokens_per_step if req.prefill_chunk is None else req.prefill_chunk
    rep = build_replica(arch, device, tp=req.tp, pp=req.pp, ep=req.ep,
                        weight_precision=req.precision, kv_precision=req.kv_precision,
                        kv_offload=host is not None, tokens_per_step=budget,
                        attn_dp=req.attention_dp)
    spec = None
    if req.draft_len:
        draft = None
        if req.draft_model:
            draft_arch = model_of(catalog, req.draft_model)
            draft = build_replica(draft_arch, device, tp=min(req.tp, draft_arch.attention
                                                              .num_heads), pp=1,
                                  weight_precision=req.precision)
            rep = with_draft(rep, draft)
        # Drafting heads inside the target (MTP, EAGLE, Medusa) cost about a twentieth of a
        # target step per drafted token (one small layer against the whole model).
        spec = SpecDecode(req.draft_len, req.acceptance, draft, 0.0 if draft else 0.05)
    prefill = None
    if req.disaggregate is not None:
        ptp, ppp, pep = prefill_parallel(req)
        # One prompt at a time lies in one attention group: the prefill replica attends over
        # its whole tensor group, and drafts nothing.
        own = replace(req, tp=ptp, pp=ppp, ep=pep, attention_dp=None)
        try:
            _check_fit(own, arch, acc)
        except SpecError as err:
            raise SpecError(err.message, field=f"prefill_{err.field}") from None
        prefill = build_replica(arch, device, tp=ptp, pp=ppp, ep=pep,
                                weight_precision=req.precision, kv_precision=req.kv_precision,
                                kv_offload=host is not None, tokens_per_step=budget,
                                attn_dp=1)
    return Resolved(rep, spec, engine, eff, host, prefill)


def prefill_parallel(req: EstimateRequest) -> tuple[int, int, int]:
    """The prefill pool's (tp, pp, ep) of a disaggregated request: its own where given, else
    the replica's."""
    return (req.tp if req.prefill_tp is None else req.prefill_tp,
            req.pp if req.prefill_pp is None else req.prefill_pp,
            req.ep if req.prefill_ep is None else req.prefill_ep)


def _percentiles(p: Percentiles) -> dict[str, float]:
    return {k: float(v) for k, v in p.as_dict().items()}


def class_report(classes: tuple[RequestClass, ...], results: tuple[LoadResult, ...]) \
        -> dict[str, Any]:
    """Per class: its share, latency percentiles, objectives and whether they hold."""
    out: dict[str, Any] = {}
    for c, res in zip(classes, results, strict=True):
        items = c.slo.items() if c.slo else []
        met = all(float(getattr(res, m).at(p)) <= b for m, p, b in items) and bool(res.stable)
        out[c.name] = {"share": c.share,
                       "latency": {"ttft_s": _percentiles(res.ttft),
                                   "tpot_s": _percentiles(res.tpot),
                                   "e2e_s": _percentiles(res.e2e)},
                       "output_tok_s": float(res.output_tok_s),
                       "slo": {f"{m}_{p}_s": b for m, p, b in items},
                       "meets_slo": met if items else None}
    return out


def load_report(res: LoadResult) -> dict[str, Any]:
    """The `latency` part of a report for a replica under load (JSON null where a figure is
    undefined, e.g. utilization of a replica with no capacity)."""
    util = float(res.utilization)
    return {
        "latency": {"ttft_s": _percentiles(res.ttft), "tpot_s": _percentiles(res.tpot),
                    "e2e_s": _percentiles(res.e2e)},
        "utilization": util if math.isfinite(util) and util < 1e12 else None,
        "stable": bool(res.stable),
        "capacity_rps": float(res.capacity_rps), "mean_batch": float(res.batch),
        "step_s": float(res.step_s), "queue_wait_s": float(res.queue_wait_s),
    }


def with_draft(target: Replica, draft: Replica) -> Replica:
    """The target replica sharing its devices with a draft model: the draft's weights leave
    less room for KV, and every sequence keeps a KV cache in both models."""
    mem = target.memory
    room = np.maximum(mem.kv_capacity_bytes - draft.memory.weights_bytes, 0.0)
    per_token = mem.kv_bytes_per_token + draft.memory.kv_bytes_per_token
    plan = replace(mem, kv_capacity_bytes=room, kv_bytes_per_token=per_token,
                   fits=np.asarray(mem.fits & (room > per_token), dtype=bool))
    return replace(target, memory=plan)


def run_estimate(req: EstimateRequest, catalog: Catalog, calibration: CalibrationSet) \
        -> dict[str, Any]:
    """Resolve ids, evaluate the scenario, and return the JSON-ready report."""
    r = resolve(req, catalog, calibration)
    rep, spec, engine, eff, host = r.replica, r.spec, r.engine, r.efficiency, r.host
    arch, acc = rep.arch, rep.device.accelerator
    budget = engine.max_tokens_per_step if req.prefill_chunk is None else req.prefill_chunk
    est: Estimate
    if req.scenario == "static" and req.batch is not None:
        est = static(rep, batch=req.batch, input_len=req.input_len, output_len=req.output_len,
                     spec=spec)
    else:
        est = max_throughput(rep, input_len=req.input_len, output_len=req.output_len,
                             max_batch=req.batch, prefill_chunk=req.prefill_chunk, spec=spec)
    mem = rep.memory
    kv_used = float(est.kv_tokens_needed * mem.kv_bytes_per_token)
    warnings: list[str] = []
    if not bool(mem.fits):
        warnings.append("weights and workspace do not fit in device memory; raise tp or pp, "
                        "or use a narrower precision")
    elif not bool(est.feasible):
        warnings.append("the KV cache cannot hold the requested batch at this context")
    if host is not None and kv_used > float(mem.kv_capacity_bytes):
        warnings.append(f"KV cache spills {kv_used - float(mem.kv_capacity_bytes):.3g} bytes "
                        f"per device to {host.id}; reads over the host link are charged")
    report: dict[str, Any] = {
        "inputs": {
            "model": arch.id, "accelerator": acc.id, "count": req.tp * req.pp, "tp": req.tp,
            "pp": req.pp, "ep": req.ep, "precision": req.precision,
            "kv_precision": req.kv_precision or "auto",
            "scenario": "static" if req.scenario == "static" and req.batch is not None
            else "max_throughput",
            "batch": req.batch, "input_len": req.input_len, "output_len": req.output_len,
            "engine": engine.id, "prefill_chunk": budget, "kv_offload": req.kv_offload,
            **({} if float(rep.par.attn_dp) == 1.0 else
               {"attention_dp": int(float(rep.par.attn_dp))}),
            "speculative": None if spec is None else {
                "draft_len": spec.draft_len, "acceptance": spec.acceptance,
                "draft_model": req.draft_model, "expected_tokens_per_step":
                    spec.expected_tokens},
        },
        "feasible": bool(est.feasible),
        "ttft_s": float(est.ttft_s), "tpot_s": float(est.tpot_s),
        "output_tok_s_total": float(est.output_tok_s_total),
        "output_tok_s_per_accelerator": float(est.output_tok_s_per_accelerator),
        "batch": float(est.batch), "batch_limit": str(est.limit),
        "energy_j_per_token": float(est.energy_j_per_token),
        "bound": {"prefill": str(est.prefill.bound()), "decode": str(est.decode.bound())},
        "phases": {"prefill": _phase(est.prefill), "decode": _phase(est.decode)},
        "memory": {
            "capacity_bytes": mem.capacity_bytes,
            "weights_bytes": float(mem.weights_bytes),
            "activation_bytes": float(mem.activation_bytes),
            "runtime_reserve_bytes": mem.runtime_reserve_bytes,
            "kv_cache_capacity_bytes": float(mem.kv_capacity_bytes),
            "kv_cache_used_bytes": kv_used,
            "kv_bytes_per_token": float(mem.kv_bytes_per_token),
            "kv_capacity_tokens": float(mem.kv_capacity_tokens),
            "per": "accelerator",
        },
        "assumptions": {
            "efficiency": eff.as_dict(), "calibration_source": calibration.source,
            "engine_source": engine.source,
            "idle_power_fraction_of_tdp": IDLE_POWER_FRACTION,
            "compute_precision": acc.compute_precision(req.precision),
            "peak_flops_dense": float(np.asarray(rep.peak_flops)),
        },
        "warnings": warnings,
    }
    if req.rate_rps is not None:
        load = serve(rep, workload_of(req, req.rate_rps), max_batch=req.batch,
                     token_budget=req.prefill_chunk, spec=spec)
        report.update(load_report(load))
        if req.classes:
            classes = request_classes(req)
            report["latency_by_class"] = class_report(classes, serve_classes(
                rep, workload_of(req, req.rate_rps), classes, max_batch=req.batch,
                token_budget=req.prefill_chunk, spec=spec))
            report["inputs"]["classes"] = list(req.classes)
        report["inputs"].update({"rate_rps": req.rate_rps, "arrival": req.arrival,
                                 "arrival_cv": req.arrival_cv if req.arrival == "gamma"
                                 else 1.0, "input_dist": req.input_dist,
                                 "output_dist": req.output_dist, "prefix_hit": req.prefix_hit})
        if not bool(load.stable):
            warnings.append(f"offered {req.rate_rps:g} req/s exceeds the capacity of "
                            f"{float(load.capacity_rps):.3g} req/s per replica")
        if req.disaggregate:
            n_p, n_d = parse_pools(req.disaggregate)
            prefill = rep if r.prefill is None else r.prefill
            ptp, ppp, pep = prefill_parallel(req)
            # Each accelerator of the smaller replica carries its own shard of the cache, over
            # its NIC or its scale-up link, as `fleetplan plan` prices a unit.
            fabric = rep.device.fabric
            lanes = min(ptp * ppp, req.tp * req.pp)
            up = req.kv_link == "scale-up"
            link = KvLink((fabric.up_bw_bytes_s if up else fabric.out_bw_bytes_s) * lanes,
                          fabric.up_latency_s if up else fabric.out_latency_s,
                          fabric.efficiency)
            dis = serve_disaggregated(prefill, rep, workload_of(req, req.rate_rps),
                                      n_prefill=n_p, n_decode=n_d, link=link,
                                      max_batch=req.batch, token_budget=req.prefill_chunk)
            report["disaggregated"] = {"prefill_replicas": n_p, "decode_replicas": n_d,
                                       "prefill_tp": ptp, "prefill_pp": ppp,
                                       "prefill_ep": pep, "kv_link": req.kv_link,
                                       "kv_link_bandwidth_bytes_s": link.bandwidth_bytes_s,
                                       **load_report(dis)}
            if not bool(prefill.memory.fits):
                warnings.append(f"the prefill replicas' weights and workspace (tp {ptp}, pp "
                                f"{ppp}) do not fit in device memory")
            if not bool(dis.stable):
                warnings.append(f"the {n_p}:{n_d} pools sustain {float(dis.capacity_rps):.3g} "
                                f"req/s, less than the offered {req.rate_rps:g}")
    return report


def run_goodput(req: EstimateRequest, slo: Slo, catalog: Catalog,
                calibration: CalibrationSet) -> dict[str, Any]:
    """The highest request rate per replica that meets `slo`, and what binds there."""
    r = resolve(req, catalog, calibration)
    classes = request_classes(req)
    rate, binding, at = goodput(r.replica, workload_of(req, 1.0), slo, max_batch=req.batch,
                                token_budget=req.prefill_chunk, spec=r.spec, classes=classes)
    by_class = {} if not classes else {"latency_by_class": class_report(classes, serve_classes(
        r.replica, workload_of(req, float(rate) or 1e-6), classes, max_batch=req.batch,
        token_budget=req.prefill_chunk, spec=r.spec))}
    return {**by_class, "goodput_rps": float(rate), "binding": str(binding),
            "capacity_rps": float(at.capacity_rps),
            "slo": {f"{m}_{p}_s": b for m, p, b in slo.items()},
            "at_goodput": load_report(at),
            "inputs": {"model": r.replica.arch.id, "accelerator": req.accelerator,
                       "tp": req.tp, "pp": req.pp, "ep": req.ep, "precision": req.precision,
                       "input_len": req.input_len, "output_len": req.output_len,
                       "input_dist": req.input_dist, "output_dist": req.output_dist,
                       "arrival": req.arrival, "engine": r.engine.id},
            "assumptions": {"efficiency": r.efficiency.as_dict()}}


def run_sweep(req: EstimateRequest, fractions: list[float], catalog: Catalog,
              calibration: CalibrationSet) -> dict[str, Any]:
    """Latency percentiles at fractions of capacity (one vectorised evaluation)."""
    r = resolve(req, catalog, calibration)
    probe = serve(r.replica, workload_of(req, 1e-6), max_batch=req.batch,
                  token_budget=req.prefill_chunk, spec=r.spec)
    cap = float(probe.capacity_rps)
    rates = np.asarray(fractions) * cap
    res = serve(r.replica, workload_of(req, 1.0).at_rate(rates), max_batch=req.batch,
                token_budget=req.prefill_chunk, spec=r.spec)
    rows = []
    for k, frac in enumerate(fractions):
        rows.append({"load_fraction": frac, "rate_rps": float(rates[k]),
                     "ttft_s": {n: float(v[k]) for n, v in res.ttft.as_dict().items()},
                     "tpot_s": {n: float(v[k]) for n, v in res.tpot.as_dict().items()},
                     "e2e_s": {n: float(v[k]) for n, v in res.e2e.as_dict().items()},
                     "mean_batch": float(res.batch[k]), "stable": bool(res.stable[k])})
    return {"capacity_rps": cap, "points": rows,
            "inputs": {"model": r.replica.arch.id, "accelerator": req.accelerator,
                       "tp": req.tp, "precision": req.precision, "engine": r.engine.id}}


def trace_request(req: EstimateRequest, trace: Trace) -> EstimateRequest:
    """The request with rate, burstiness and length distributions taken from a trace."""
    def dist(values: np.ndarray) -> str:
        mean, std = float(np.mean(values)), float(np.std(values))
        return f"lognormal:{mean:.6g}:{std:.6g}" if std > 0 else f"fixed:{mean:.6g}"

    cv = trace.arrival_cv
    return replace(req, rate_rps=trace.rate_rps, arrival="poisson" if abs(cv - 1) < 0.05
                   else "gamma", arrival_cv=cv, input_len=round(float(np.mean(trace.input_len))),
                   output_len=round(float(np.mean(trace.output_len))),
                   input_dist=dist(trace.input_len), output_dist=dist(trace.output_len))


def run_simulate(req: EstimateRequest, *, requests: int, seed: int, replicas: int,
                 routing: str, catalog: Catalog, calibration: CalibrationSet,
                 trace: Trace | None = None) -> dict[str, Any]:
    """A discrete-event simulation of `replicas` copies of the configuration behind `routing`,
    with the roofline step time tabulated once; the analytical answer rides along. With a
    trace, its requests are replayed as they are."""
    if trace is not None:
        req = trace_request(req, trace)
        requests = len(trace.arrival_s)
    if req.rate_rps is None:
        raise SpecError("simulate needs --rate (requests per second, all replicas) or --trace",
                        field="rate")
    if requests < 10:
        raise SpecError(f"must be >= 10, got {requests}", field="requests")
    if replicas < 1:
        raise SpecError(f"must be >= 1, got {replicas}", field="replicas")
    if seed < 0:
        raise SpecError(f"must be >= 0, got {seed}", field="seed")
    r = resolve(req, catalog, calibration)
    rep, engine = r.replica, r.engine
    if not bool(rep.memory.fits):
        raise SpecError(f"{rep.arch.id} does not fit on {req.tp * req.pp}x {req.accelerator} "
                        f"in {req.precision}; raise tp or pp or use a narrower precision",
                        field="model")
    load = workload_of(req, req.rate_rps / replicas)
    rng = np.random.default_rng(seed)
    if req.arrival == "gamma":
        arrivals = gamma_arrivals(req.rate_rps, req.arrival_cv, requests, rng)
    else:
        arrivals = poisson_arrivals(req.rate_rps, requests, rng)
    classes = request_classes(req)
    cls: np.ndarray | None = None
    if classes:
        shares = np.array([c.share for c in classes])
        cls = rng.choice(len(classes), size=requests, p=shares / shares.sum()).astype(np.int64)
        i_len = np.zeros(requests, dtype=np.int64)
        o_len = np.zeros(requests, dtype=np.int64)
        for j, c in enumerate(classes):
            mine = cls == j
            i_len[mine] = _draw(c.input_len, int(mine.sum()), rng)
            o_len[mine] = _draw(c.output_len, int(mine.sum()), rng)
    else:
        i_len = _draw(load.input_len, requests, rng)
        o_len = _draw(load.output_len, requests, rng)
    if trace is not None:
        arrivals = trace.arrival_s - trace.arrival_s[0]
        i_len, o_len = trace.input_len, trace.output_len
    kv_tokens = float(rep.memory.kv_capacity_tokens)
    budget = engine.max_tokens_per_step if req.prefill_chunk is None else req.prefill_chunk
    max_batch = req.batch or engine.max_batch
    spec = r.spec
    table = StepTable.build(rep, max_seqs=max_batch, max_prefill=budget,
                            max_ctx=float(np.max(i_len + o_len)), spec=spec)
    try:
        config = ReplicaConfig(table, max_batch, budget, kv_tokens,
                               engine.reserve_kv_for_output, spec.draft_len if spec else 0,
                               spec.acceptance if spec else 0.0)
        sim = simulate(Requests(arrivals, i_len, o_len, cls), config, replicas=replicas,
                       routing=routing, seed=seed)
    except ValueError as err:
        raise SpecError(str(err), field="requests") from None
    analytic = serve(rep, load, max_batch=req.batch, token_budget=req.prefill_chunk, spec=spec)
    by_class: dict[str, Any] = {}
    if classes and sim.cls is not None:
        per_class = serve_classes(rep, load, classes, max_batch=req.batch,
                                  token_budget=req.prefill_chunk, spec=spec)
        by_class = {"latency_by_class": {
            c.name: {"share": c.share, "requests": int(np.sum(sim.cls == j)),
                     "latency": sim.percentiles(sim.cls == j),
                     "analytic": class_report((c,), (per_class[j],))[c.name]["latency"]}
            for j, c in enumerate(classes)}}
    return {
        **by_class,
        "latency": sim.percentiles(),
        "analytic": load_report(analytic),
        "simulation": {"requests": requests, "seed": seed, "replicas": replicas,
                       "trace": trace is not None,
                       "routing": routing, "steps": sim.steps, "mean_batch": sim.mean_batch,
                       "utilization": sim.utilization,
                       "warmup_fraction_excluded": 0.1},
        "inputs": {"model": rep.arch.id, "accelerator": req.accelerator, "tp": req.tp,
                   "pp": req.pp, "precision": req.precision, "rate_rps": req.rate_rps,
                   "arrival": req.arrival, "input_dist": req.input_dist,
                   "output_dist": req.output_dist, "engine": engine.id},
    }


def _draw(lengths: Lengths, n: int, rng: np.random.Generator) -> np.ndarray:
    """Integer token lengths (>= 1) drawn from a fixed, lognormal or histogram distribution."""
    probabilities = lengths.probabilities
    if lengths.values is not None and probabilities is not None:
        drawn: np.ndarray = np.maximum(np.rint(rng.choice(lengths.values, size=n,
                                                          p=probabilities)), 1)
        return drawn.astype(np.int64)
    mean, cv = float(lengths.mean), float(lengths.cv)
    if cv <= 0:
        return np.full(n, max(round(mean), 1), dtype=np.int64)
    sigma = float(np.sqrt(np.log1p(cv**2)))
    mu = float(np.log(mean)) - sigma**2 / 2.0
    return np.maximum(np.rint(rng.lognormal(mu, sigma, n)), 1).astype(np.int64)
