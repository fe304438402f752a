"""Prefill/decode disaggregation: the trade-off the pool ratio controls."""

from __future__ import annotations

import numpy as np
from fleetplan.hardware import Catalog
from fleetplan.models.device import Device
from fleetplan.models.disaggregation import KvLink, serve_disaggregated
from fleetplan.models.inference import Replica, build_replica
from fleetplan.models.queueing import Lengths, Workload, serve

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
