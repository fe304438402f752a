"""`fleetplan estimate`: one configuration, resolved from catalog ids, priced by the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet
from ..hardware.errors import SpecError
from ..hardware.precision import PRECISIONS
from ..models.device import Device
from ..models.inference import (
    IDLE_POWER_FRACTION,
    Estimate,
    SpecDecode,
    StepTime,
    build_replica,
    max_throughput,
    static,
)


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


def _check(req: EstimateRequest) -> None:
    for name in ("input_len", "output_len", "tp", "pp", "ep"):
        if getattr(req, name) < 1:
            raise SpecError(f"must be >= 1, got {getattr(req, name)}", field=name)
    for name in ("precision", "kv_precision"):
        value = getattr(req, name)
        if value is not None and value not in PRECISIONS:
            raise SpecError(f"unknown precision {value!r}; one of {', '.join(PRECISIONS)}",
                            field=name)
    if req.tp % req.ep:
        raise SpecError(f"ep ({req.ep}) must divide tp ({req.tp}): experts are spread over "
                        "the tensor-parallel group", field="ep")
    if req.count is not None and req.count != req.tp * req.pp:
        raise SpecError(f"count {req.count} must equal tp x pp = {req.tp * req.pp} for one "
                        "replica", field="count")
    if req.scenario == "static" and req.batch is None:
        raise SpecError("the static scenario needs --batch", field="batch")
    if req.batch is not None and req.batch < 1:
        raise SpecError(f"must be >= 1, got {req.batch}", field="batch")
    if not 0.0 <= req.acceptance <= 1.0:
        raise SpecError(f"must be within 0..1, got {req.acceptance}", field="acceptance")


def _phase(step: StepTime) -> dict[str, Any]:
    return {"bound": str(step.bound()), "time_s": float(step.time),
            "compute_s": float(step.compute), "memory_s": float(step.memory),
            "network_s": float(step.network), "overhead_s": float(step.overhead)}


def run_estimate(req: EstimateRequest, catalog: Catalog, calibration: CalibrationSet) \
        -> dict[str, Any]:
    """Resolve ids, evaluate the scenario, and return the JSON-ready report."""
    _check(req)
    arch = catalog.model(req.model)
    acc = catalog.accelerator(req.accelerator)
    engine = catalog.engine(req.engine)
    host = catalog.memory_tier(req.kv_offload) if req.kv_offload else None
    eff = calibration.for_device(acc.id, req.engine)
    device = Device(acc, eff, engine, host)
    budget = req.prefill_chunk or engine.max_tokens_per_step
    rep = build_replica(arch, device, tp=req.tp, pp=req.pp, ep=req.ep,
                        weight_precision=req.precision, kv_precision=req.kv_precision,
                        kv_offload=host is not None, tokens_per_step=budget)
    spec = None
    if req.draft_len:
        draft = None
        if req.draft_model:
            draft = build_replica(catalog.model(req.draft_model), device, tp=req.tp,
                                  pp=req.pp, weight_precision=req.precision)
        spec = SpecDecode(req.draft_len, req.acceptance, draft,
                          0.0 if draft else 0.05)
    est: Estimate
    if req.scenario == "static":
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
    return {
        "inputs": {
            "model": arch.id, "accelerator": acc.id, "count": req.tp * req.pp, "tp": req.tp,
            "pp": req.pp, "ep": req.ep, "precision": req.precision,
            "kv_precision": req.kv_precision or "auto", "scenario": req.scenario,
            "batch": req.batch, "input_len": req.input_len, "output_len": req.output_len,
            "engine": engine.id, "prefill_chunk": budget, "kv_offload": req.kv_offload,
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
