"""The analytical serving model against a discrete-event simulation of the same replica.

Both use the same step-time oracle (the roofline, tabulated), the same engine limits and the
same Poisson arrivals; the simulation runs continuous batching step by step. The sweep covers
10% to 90% of the analytical capacity on three model/accelerator pairs.

Where the approximation is known to be weaker, it is tested at its own, stated tolerance:

* p50 TTFT and TPOT: within 15% up to 70% load, 25% at 90%; 40% at 90% for a prefill-heavy
  replica (prompt/output >= 8) whose token budget bounds its batch: there the batch is steep
  in the load, and the analytical fixed point lands a few percent of capacity above the
  simulated one (the p99s, which both queues reach, stay within their tolerance).
* p99 with a light prefill share (prompt/output <= 4): within 20% at every load.
* p99 with a heavy prefill share (prompt/output >= 8): bursts of long prompts queue for
  prefill compute as a bulk-service queue, which the exponential-tail approximation
  under-states: within 35% for a dense model, 55% for an MoE model, up to 70% load.
* A prefill-heavy MoE replica saturates in simulation before 90% of the analytical capacity
  (the analytical capacity is about 10% high there), so that point is not compared.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.models.device import Device
from fleetplan.models.inference import build_replica
from fleetplan.models.queueing import Lengths, Workload, serve
from fleetplan.models.simulate import ReplicaConfig, Requests, poisson_arrivals, simulate
from fleetplan.models.step_table import StepTable

# (model, accelerator, tp, precision, input, output, p99 tolerance, highest load compared)
CASES = [("llama-3.1-8b", "h100-sxm", 1, "fp8", 1024, 128, 0.35, 0.9),
         ("qwen3-4b", "l40s", 1, "fp8", 512, 256, 0.20, 0.9),
         ("mixtral-8x7b", "h200", 2, "fp8", 2048, 128, 0.55, 0.7)]
LOADS = (0.1, 0.3, 0.5, 0.7, 0.9)
REQUESTS = 3000


def _compare(catalog: Catalog, model: str, acc: str, tp: int, precision: str, i: int,
             o: int, *_: float) -> list[tuple[float, str, float, float]]:
    device = Device(catalog.accelerator(acc), catalog.calibration.for_device(acc),
                    catalog.engine("trtllm"))
    rep = build_replica(catalog.model(model), device, tp=tp, weight_precision=precision)
    engine = device.engine
    load = Workload(np.asarray(1.0), Lengths.fixed(i), Lengths.fixed(o))
    cap = float(serve(rep, load.at_rate(1e-6)).capacity_rps)
    kv_tokens = float(rep.memory.kv_capacity_tokens)
    slots = min(engine.max_batch, math.floor(kv_tokens / (i + o)))
    table = StepTable.build(rep, max_seqs=slots, max_prefill=engine.max_tokens_per_step,
                            max_ctx=i + o)
    config = ReplicaConfig(table, slots, engine.max_tokens_per_step, kv_tokens,
                           engine.reserve_kv_for_output)
    out = []
    for k, frac in enumerate(LOADS):
        rate = frac * cap
        rng = np.random.default_rng(100 + k)
        reqs = Requests(poisson_arrivals(rate, REQUESTS, rng), np.full(REQUESTS, i),
                        np.full(REQUESTS, o))
        sim = simulate(reqs, config, seed=k).percentiles()
        ana = serve(rep, load.at_rate(rate))
        for metric in ("ttft_s", "tpot_s"):
            for q in ("p50", "p99"):
                got = float(getattr(ana, metric.split("_")[0]).at(q))
                out.append((frac, f"{metric} {q}", got, sim[metric][q]))
    return out


@pytest.mark.parametrize(("model", "acc", "tp", "precision", "i", "o", "p99_tol", "top"),
                         CASES)
def test_analytical_matches_simulation(catalog: Catalog, model: str, acc: str, tp: int,
                                       precision: str, i: int, o: int, p99_tol: float,
                                       top: float) -> None:
    rows = _compare(catalog, model, acc, tp, precision, i, o)
    for frac, name, ana, sim in rows:
        if frac > top:
            continue
        near_capacity = 0.25 if i / o < 8 else 0.40
        tol = (0.15 if frac <= 0.7 else near_capacity) if name.endswith("p50") else p99_tol
        assert ana == pytest.approx(sim, rel=tol), (model, acc, frac, name, ana, sim)
