"""Reports of `fleetplan train estimate` and `fleetplan train plan` (plain JSON-ready dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet
from ..hardware.errors import SpecError
from ..hardware.training_engine import RECOMPUTE
from ..models.training import (
    RECOMPUTE_CODES,
    TrainLayout,
    TrainSetup,
    training_setup,
    training_step,
)
from ..solvers.training import Option, TrainSpace, pick, plan_training
from .files import is_model_file, load_calibration, model_of
from .train_spec import LoadedTrainSpec

TRAIN_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class TrainRequest:
    """One training configuration as the CLI states it; dp None takes the remaining devices."""

    model: str
    accelerator: str
    count: int
    global_batch: int
    seq_len: int
    tp: int = 1
    pp: int = 1
    dp: int | None = None
    cp: int = 1
    ep: int = 1
    vp: int = 1
    micro_batch: int = 1
    precision: str = "bf16"
    recompute: str | None = None
    zero: int | None = None
    offload_optimizer: bool = False
    offload_activations: float = 0.0
    engine: str = "megatron"


def _setup(catalog: Catalog, calibration: CalibrationSet, model: str, accelerator: str,
           precision: str, engine: str) -> TrainSetup:
    acc = catalog.accelerator(accelerator)
    if not acc.runs(precision):
        raise SpecError(f"{acc.id} has no compute rate for {precision}", field="precision")
    return training_setup(catalog, calibration, model_of(catalog, model), acc.id, precision,
                          engine)


def estimate_training(req: TrainRequest, catalog: Catalog,
                      calibration: CalibrationSet) -> dict[str, Any]:
    """Step time, throughput, MFU and memory of one configuration."""
    setup = _setup(catalog, calibration, req.model, req.accelerator, req.precision, req.engine)
    split = req.tp * req.pp * req.cp
    dp = req.dp if req.dp is not None else req.count // split
    if dp < 1 or split * dp != req.count:
        raise SpecError(f"tp x pp x cp x dp = {split} x {dp} does not make --count "
                        f"{req.count}", field="dp")
    if req.global_batch % (dp * req.micro_batch):
        raise SpecError(f"--global-batch {req.global_batch} is not a multiple of dp x "
                        f"micro-batch = {dp * req.micro_batch}", field="global_batch")
    recompute = req.recompute or setup.engine.recompute
    if recompute not in RECOMPUTE:
        raise SpecError(f"recompute must be one of {', '.join(RECOMPUTE)}", field="recompute")
    zero = setup.engine.zero if req.zero is None else req.zero
    lay = TrainLayout.of(tp=req.tp, pp=req.pp, dp=dp, cp=req.cp, ep=req.ep, vp=req.vp,
                         micro_batch=req.micro_batch, global_batch=req.global_batch,
                         seq_len=req.seq_len, recompute=RECOMPUTE_CODES[recompute], zero=zero,
                         offload_optimizer=int(req.offload_optimizer),
                         offload_activations=req.offload_activations)
    step = training_step(setup, lay)
    parts = {k: pick(v, 0) for k, v in step.breakdown().items()}
    mem = {k: pick(v, 0) for k, v in step.memory.components().items()}
    mem["total"] = pick(step.memory.total, 0)
    mem["capacity"] = step.memory.capacity
    mem["optimizer_host"] = pick(step.memory.optimizer_host, 0)
    notes = []
    if not bool(pick(step.valid, 0)):
        notes.append("the layout is not a legal one for this model and batch (heads, layers, "
                     "experts, batch or sequence not divisible, or offload without a host link)")
    fits = bool(pick(step.memory.fits, 0))
    if not fits:
        notes.append(f"does not fit: {mem['total'] / 2**30:.1f} GiB needed, "
                     f"{mem['capacity'] / 2**30:.1f} GiB available per device")
    return {
        "schema_version": TRAIN_SCHEMA_VERSION,
        "model": setup.arch.id, "accelerator": setup.device.accelerator.id,
        "count": req.count, "precision": req.precision, "engine": setup.engine.id,
        "layout": {"tp": req.tp, "pp": req.pp, "dp": dp, "cp": req.cp, "ep": req.ep,
                   "vp": req.vp, "micro_batch": req.micro_batch,
                   "global_batch": req.global_batch, "seq_len": req.seq_len,
                   "microbatches": req.global_batch // (dp * req.micro_batch),
                   "recompute": recompute, "zero": zero,
                   "offload_optimizer": req.offload_optimizer,
                   "offload_activations": req.offload_activations},
        "step_time_s": pick(step.step_time_s, 0),
        "tokens_per_s_per_accelerator": pick(step.tokens_per_s_per_device, 0),
        "tokens_per_s": pick(step.tokens_per_s_per_device, 0) * req.count,
        "model_tflops_per_accelerator": pick(step.model_flops_per_s_per_device, 0) / 1e12,
        "model_flops_per_token": pick(step.model_flops_per_token, 0),
        "hardware_flops_per_token": pick(step.hardware_flops_per_token, 0),
        "peak_tflops": step.peak_flops / 1e12,
        "mfu": pick(step.mfu, 0),
        "flops_convention": {"attention": setup.engine.flops_attention,
                             "includes_recompute": setup.engine.flops_include_recompute},
        "memory": mem, "fits": fits and bool(pick(step.valid, 0)),
        "time_breakdown_s": parts,
        "bound": max(sorted(parts), key=lambda k: parts[k]),
        "calibration": {**calibration.training.as_dict(), "source": calibration.source},
        "notes": notes,
    }


def _option(o: Option) -> dict[str, Any]:
    out = asdict(o)
    layout: dict[str, Any] = dict(o.layout)
    layout["recompute"] = RECOMPUTE[int(layout["recompute"])]
    for key in ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch", "global_batch", "seq_len",
                "zero", "offload_optimizer"):
        layout[key] = int(layout[key])
    out["layout"] = layout
    out["time_days"] = o.time_s / 86400.0
    return out


def plan_training_report(loaded: LoadedTrainSpec, catalog: Catalog) -> dict[str, Any]:
    """Search every pool type, precision and count; choose; report the front."""
    spec = loaded.spec
    opts = spec.options
    calibration = catalog.calibration if opts.calibration is None else load_calibration(
        catalog, loaded.folder / opts.calibration)
    model = spec.model
    if is_model_file(catalog, model) and not Path(model).is_absolute():
        model = str(loaded.folder / model)
    setups: dict[tuple[str, str], TrainSetup] = {}
    counts: dict[str, list[int]] = {}
    prices: dict[str, float | None] = {}
    for entry in spec.pool:
        acc = catalog.accelerator(entry.accelerator)
        counts[acc.id] = entry.count_list()
        prices[acc.id] = entry.price_usd_h if entry.price_usd_h is not None else \
            acc.price_usd_h
        for precision in opts.precisions:
            if acc.runs(precision):
                setups[(acc.id, precision)] = _setup(catalog, calibration, model, acc.id,
                                                     precision, opts.engine)
    if not setups:
        raise SpecError("no pool accelerator runs any of the allowed precisions",
                        file=loaded.file, field="options.precisions")
    space = TrainSpace(tp=tuple(opts.tp), pp=tuple(opts.pp), cp=tuple(opts.cp),
                       ep=tuple(opts.ep), vp=tuple(opts.vp), micro_batch=tuple(opts.micro_batch),
                       recompute=tuple(opts.recompute), zero=tuple(opts.zero),
                       offload_activations=tuple(opts.offload_activations))
    result = plan_training(setups, counts, prices, tokens=spec.tokens, seq_len=spec.seq_len,
                           global_batch=spec.global_batches(), space=space,
                           deadline_s=spec.deadline_s, budget_usd=spec.budget_usd,
                           objective=spec.objective)
    return {
        "schema_version": TRAIN_SCHEMA_VERSION,
        "status": result.status,
        "objective": result.objective,
        "inputs": {"model": next(iter(setups.values())).arch.id, "tokens": spec.tokens,
                   "seq_len": spec.seq_len, "global_batch": spec.global_batches(),
                   "deadline_days": spec.deadline_days, "budget_usd": spec.budget_usd,
                   "engine": opts.engine, "precisions": opts.precisions,
                   "calibration": {**calibration.training.as_dict(),
                                   "source": calibration.source}},
        "chosen": _option(result.chosen) if result.chosen else None,
        "closest": _option(result.closest) if result.closest else None,
        "pareto": [_option(o) for o in result.pareto],
        "options": [_option(o) for o in result.options],
        "search": {"layouts_evaluated": result.layouts_evaluated,
                   "method": "exhaustive over the layout grid and the pool's counts: the "
                             "choice is optimal over that grid"},
        "notes": list(result.notes),
    }
