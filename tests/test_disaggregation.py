"""Prefill/decode disaggregation: the trade-off the pool ratio controls."""

from __future__ import annotations

import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.models.device import Device
from fleetplan.models.disaggregation import KvLink, Pools, prompt_time, serve_disaggregated
from fleetplan.models.inference import Replica, build_replica, step_time
from fleetplan.models.queueing import Lengths, Workload, serve
from fleetplan.models.transformer import StepShape

LINK = KvLink(bandwidth_bytes_s=50e9, latency_s=5e-6)


def _rep(catalog: Catalog) -> Replica:
    device = Device(catalog.accelerator("h100-sxm"), catalog.calibration.for_device("h100-sxm"),
                    catalog.engine("trtllm"))
    return build_replica(catalog.model("llama-3.1-70b"), device, tp=4, weight_precision="fp8")


def test_decode_pool_is_free_of_prompt_interference(catalog: Catalog) -> None:
    # Long prompts land in colocated decode steps and stretch them; a decode pool never sees
    # them, so at the same per-replica decode load its TPOT is lower.
    rep = _rep(catalog)
    load = Workload(np.asarray(4.0), Lengths.fixed(4096), Lengths.fixed(256))
    colocated = serve(rep, load.at_rate(4.0 / 3.0))
    pools = serve_disaggregated(rep, rep, load, n_prefill=1, n_decode=2, link=LINK)
    assert float(pools.tpot.p99) < float(colocated.tpot.p99)


def test_pool_ratio_trades_ttft_against_capacity(catalog: Catalog) -> None:
    rep = _rep(catalog)
    load = Workload(np.asarray(4.0), Lengths.fixed(4096), Lengths.fixed(256))
    ratios = serve_disaggregated(rep, rep, load, n_prefill=np.array([1, 2, 3]),
                                 n_decode=np.array([2, 2, 2]), link=LINK)
    assert np.all(np.diff(ratios.ttft.p99) < 0)           # more prefill replicas, less queueing
    assert np.all(np.diff(ratios.capacity_rps) >= 0)
    starved = serve_disaggregated(rep, rep, load.at_rate(20.0), n_prefill=1, n_decode=2,
                                  link=LINK)
    assert not bool(starved.stable) and np.isinf(float(starved.ttft.p99))


def test_kv_transfer_is_charged_to_end_to_end(catalog: Catalog) -> None:
    rep = _rep(catalog)
    load = Workload(np.asarray(1.0), Lengths.fixed(8192), Lengths.fixed(64))
    fast = serve_disaggregated(rep, rep, load, n_prefill=1, n_decode=1, link=LINK)
    slow = serve_disaggregated(rep, rep, load, n_prefill=1, n_decode=1,
                               link=KvLink(bandwidth_bytes_s=1e9, latency_s=5e-6))
    # 8192 tokens x 80 layers x 2 x 8 KV heads x 128 x 1 byte (fp8) = 1.34 GB: 1.7 s at 1 GB/s
    # and 80% efficiency, 33 ms at 50 GB/s.
    gap = float(slow.e2e.mean) - float(fast.e2e.mean)
    assert 1.5 < gap < 1.8
    assert float(slow.ttft.mean) == float(fast.ttft.mean)


def test_a_pipelined_prefill_replica_holds_a_prompt_per_stage(catalog: Catalog) -> None:
    """A prefill replica of PP 2 passes a prompt's chunk through both stages one after the
    other (an engine pipelines requests, not the tokens of one prompt): the prompt takes the
    step of the whole chunk through every stage, but with prompts queued each stage holds one,
    so the replica finishes one every half of that. At a trickle the TTFT is the whole
    prompt's time; the pool's capacity is twice its reciprocal."""
    device = Device(catalog.accelerator("h100-sxm"), catalog.calibration.for_device("h100-sxm"),
                    catalog.engine("trtllm"))
    rep = build_replica(catalog.model("llama-3.1-70b"), device, tp=4, pp=2,
                        weight_precision="fp8", tokens_per_step=8192)
    load = Workload(np.asarray(1e-3), Lengths.fixed(4096), Lengths.fixed(64))
    pools = Pools.of(rep, rep, load, n_prefill=1, n_decode=4, link=LINK, max_batch=64,
                     token_budget=8192)
    whole = float(step_time(rep, StepShape.of(prefill_tokens=4096.0, prefill_ctx=2048.0,
                                              prefill_seqs=1.0)).time)
    assert float(pools.t_p) == pytest.approx(whole, rel=1e-12)
    assert float(pools.s_p) == pytest.approx(whole / 2, rel=1e-12)
    assert float(pools.cap_p) == pytest.approx(2 / whole, rel=1e-12)
    trickle = serve_disaggregated(rep, rep, load, n_prefill=1, n_decode=4, link=LINK,
                                  max_batch=64, token_budget=8192)
    # Plus the M/D/1 wait (Pollaczek-Khinchine; fixed prompts) of a server that takes a
    # prompt every whole / 2: rho s / (1 - rho) / 2 with rho = 1e-3 x s, some 4 us.
    s = whole / 2
    rho = 1e-3 * s
    assert float(trickle.ttft.mean) == pytest.approx(whole + rho * s / (1 - rho) / 2,
                                                     rel=1e-9)


def test_a_long_prompt_takes_its_full_chunks_then_the_rest(catalog: Catalog) -> None:
    """20,480 tokens at 8,192 per step: two full chunks and one of 4,096 (not three full ones,
    nor the 8,192-token step scaled by the length), all attending at the prompt's mean context
    of 10,240 tokens."""
    rep = _rep(catalog)

    def step(tokens: float) -> float:
        return float(step_time(rep, StepShape.of(prefill_tokens=tokens, prefill_ctx=10240.0,
                                                 prefill_seqs=1.0)).time)

    assert float(prompt_time(rep, 20480.0, 8192.0)) == pytest.approx(
        2 * step(8192.0) + step(4096.0), rel=1e-12)
    # A prompt of exactly two chunks has no third step.
    assert float(prompt_time(rep, 16384.0, 8192.0)) == pytest.approx(
        2 * float(step_time(rep, StepShape.of(prefill_tokens=8192.0, prefill_ctx=8192.0,
                                              prefill_seqs=1.0)).time), rel=1e-12)
