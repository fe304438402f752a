"""Typed measurement records (the calibration CSV format) and the model's prediction of each.

Parsing the CSV text is the application's job (`fleetplan.plan.measurements`); here a record is
data, and `predict_inference` says what fleetplan predicts for it, or why it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hardware.catalog import Catalog, UnknownIdError
from ..hardware.efficiency import CalibrationSet
from ..hardware.precision import PRECISIONS
from .arrays import arr
from .device import Device
from .inference import Replica, build_replica, max_throughput, static
from .queueing import Lengths, Workload, closed_loop, serve

INFERENCE_METRICS = ("output_tok_s_per_gpu", "output_tok_s_total", "ttft_s", "tpot_s", "itl_s",
                     "ttft_p50_s", "tpot_p50_s", "itl_p50_s", "e2e_p50_s", "ttft_p99_s",
                     "tpot_p99_s")
SCENARIOS = ("static", "max_throughput", "online")


@dataclass(frozen=True)
class InferenceMeasurement:
    """One row of an inference measurement file (SI units)."""

    id: str
    model: str
    accelerator: str
    num_accelerators: int
    precision: str
    tp: int
    pp: int
    ep: int
    scenario: str
    input_len: int | None
    output_len: int | None
    batch_size: int | None
    request_rate: float | None
    concurrency: int | None
    metric: str
    value: float
    engine: str
    line: int = 0


@dataclass(frozen=True)
class Prediction:
    """A predicted value, or the reason there is none."""

    value: float | None
    reason: str = ""
    bound: str = ""


def predict_inference(m: InferenceMeasurement, catalog: Catalog,
                      calibration: CalibrationSet) -> Prediction:
    """What fleetplan predicts for one measurement row."""
    if m.input_len is None or m.output_len is None:
        return Prediction(None, "dataset length distribution, no fixed input/output length")
    if m.precision not in PRECISIONS:
        return Prediction(None, f"unknown precision {m.precision!r}")
    try:
        arch = catalog.model(m.model)
        acc = catalog.accelerator(m.accelerator)
        engine = catalog.engine(m.engine or "trtllm")
    except UnknownIdError as err:
        return Prediction(None, err.message)
    if m.tp * m.pp != m.num_accelerators:
        return Prediction(None, f"tp x pp = {m.tp * m.pp} differs from num_accelerators "
                                f"{m.num_accelerators} (data-parallel replicas not modelled)")
    device = Device(acc, calibration.for_device(acc.id, m.engine), engine)
    rep = build_replica(arch, device, tp=m.tp, pp=m.pp, ep=m.ep, weight_precision=m.precision)
    if not bool(rep.memory.fits):
        return Prediction(None, "weights do not fit in device memory at this parallelism")
    if m.scenario == "online":
        return _predict_online(m, rep)
    if m.scenario == "static":
        if m.batch_size is None:
            return Prediction(None, "static scenario without batch_size")
        est = static(rep, batch=m.batch_size, input_len=m.input_len, output_len=m.output_len)
    else:
        est = max_throughput(rep, input_len=m.input_len, output_len=m.output_len)
    metric = m.metric
    values = {
        "output_tok_s_per_gpu": est.output_tok_s_per_accelerator,
        "output_tok_s_total": est.output_tok_s_total,
        "ttft_s": est.ttft_s, "ttft_p50_s": est.ttft_s,
        "tpot_s": est.tpot_s, "itl_s": est.tpot_s, "tpot_p50_s": est.tpot_s,
        "itl_p50_s": est.tpot_s,
    }
    if metric not in values:
        return Prediction(None, f"metric {metric!r} needs the queueing model")
    phase = est.prefill if metric.startswith("ttft") else est.decode
    return Prediction(float(values[metric]), "", str(phase.bound()))


def _predict_online(m: InferenceMeasurement, rep: Replica) -> Prediction:
    """Poisson arrivals at `request_rate`, or a closed loop of `concurrency` clients."""
    assert m.input_len is not None and m.output_len is not None  # checked by the caller
    if m.request_rate is not None and m.request_rate > 0:
        load = Workload(arr(m.request_rate), Lengths.fixed(m.input_len),
                        Lengths.fixed(m.output_len))
        res = serve(rep, load)
        if not bool(res.stable):
            # Past capacity a finite benchmark still finishes; it reports what the replica
            # sustained, while latencies grow with the length of the run.
            if m.metric == "output_tok_s_total":
                return Prediction(float(res.capacity_rps) * m.output_len, "", "capacity")
            return Prediction(None, f"offered {m.request_rate} req/s exceeds the predicted "
                                    f"capacity {float(res.capacity_rps):.3g} req/s")
    elif m.concurrency is not None and m.concurrency > 0:
        res = closed_loop(rep, concurrency=m.concurrency, input_len=m.input_len,
                          output_len=m.output_len)
    else:
        return Prediction(None, "online row without request_rate or concurrency")
    metric = m.metric
    pct = "mean"
    for name in ("p50", "p90", "p99"):
        if f"_{name}_" in metric:
            pct = name
    base = metric.split("_")[0]
    if base == "output":
        return Prediction(float(res.output_tok_s), "", "")
    if base in ("itl", "tpot"):
        return Prediction(float(res.tpot.at(pct)), "", "")
    if base == "ttft":
        return Prediction(float(res.ttft.at(pct)), "", "")
    if base == "e2e":
        return Prediction(float(res.e2e.at(pct)), "", "")
    return Prediction(None, f"metric {metric!r} is not predicted for online rows")


TRAINING_METRICS = ("model_tflops_per_gpu", "mfu", "tokens_per_s_per_gpu", "step_time_s")


@dataclass(frozen=True)
class CustomArch:
    """A GPT-style architecture given in a measurement row's columns (model `gpt-custom`)."""

    layers: int
    hidden: int
    heads: int | None
    kv_heads: int | None
    ffn_hidden: int
    vocab: int
    gated_mlp: bool


@dataclass(frozen=True)
class TrainingMeasurement:
    """One row of a training measurement file. None where the row leaves a knob unstated;
    `fsdp` is the FSDP degree (0 or None: not used)."""

    id: str
    model: str
    custom: CustomArch | None
    accelerator: str
    num_accelerators: int
    precision: str
    tp: int | None
    pp: int | None
    dp: int | None
    cp: int | None
    ep: int | None
    vp: int | None
    fsdp: int | None
    global_batch: int
    micro_batch: int | None
    seq_len: int
    metric: str
    value: float
    engine: str
    line: int = 0
