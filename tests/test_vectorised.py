"""One call over a grid of candidates gives exactly what one call per candidate gives."""

from __future__ import annotations

import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.models.device import Device
from fleetplan.models.inference import build_replica, max_throughput, static


def test_grid_equals_scalar_calls(catalog: Catalog) -> None:
    device = Device(catalog.accelerator("h200"), catalog.calibration.for_device("h200"),
                    catalog.engine("trtllm"))
    arch = catalog.model("mixtral-8x7b")
    tp, precision, batch, ilen = np.meshgrid([1, 2, 4, 8], ["bf16", "fp8"], [1, 16, 256],
                                             [128, 4096], indexing="ij")
    tp, precision, batch, ilen = (a.ravel() for a in (tp, precision, batch, ilen))
    grid = build_replica(arch, device, tp=tp, weight_precision=precision.astype(object))
    stat = static(grid, batch=batch, input_len=ilen, output_len=256)
    maxt = max_throughput(grid, input_len=ilen, output_len=256)
    assert stat.tpot_s.shape == (tp.size,)
    for i in range(tp.size):
        one = build_replica(arch, device, tp=int(tp[i]), weight_precision=str(precision[i]))
        s = static(one, batch=int(batch[i]), input_len=int(ilen[i]), output_len=256)
        m = max_throughput(one, input_len=int(ilen[i]), output_len=256)
        assert float(s.tpot_s) == stat.tpot_s[i]
        assert float(s.ttft_s) == stat.ttft_s[i]
        assert bool(s.feasible) == stat.feasible[i]
        assert float(m.output_tok_s_total) == maxt.output_tok_s_total[i]
        assert str(m.limit) == maxt.limit[i]


def test_serving_grid_equals_scalar_calls(catalog: Catalog) -> None:
    from fleetplan.models.queueing import Lengths, Workload, serve

    host = catalog.memory_tier("host-ddr5")
    device = Device(catalog.accelerator("h100-sxm"), catalog.calibration.for_device("h100-sxm"),
                    catalog.engine("trtllm"), host)
    arch = catalog.model("llama-3.1-70b")
    tp, pp, rate = (a.ravel() for a in np.meshgrid([4, 8], [1, 2], [0.5, 4.0, 40.0],
                                                     indexing="ij"))
    load = Workload(rate.astype(float), Lengths.lognormal(1024, 512), Lengths.fixed(256))
    grid_rep = build_replica(arch, device, tp=tp, pp=pp, weight_precision="fp8",
                             kv_offload=True)
    grid = serve(grid_rep, load)
    maxt = max_throughput(grid_rep, input_len=1024, output_len=256)
    for k in range(tp.size):
        one = build_replica(arch, device, tp=int(tp[k]), pp=int(pp[k]), weight_precision="fp8",
                            kv_offload=True)
        res = serve(one, Workload(np.asarray(float(rate[k])), Lengths.lognormal(1024, 512),
                                  Lengths.fixed(256)))
        assert float(res.ttft.p99) == pytest.approx(grid.ttft.p99[k], rel=1e-9)
        assert float(res.tpot.p50) == pytest.approx(grid.tpot.p50[k], rel=1e-9)
        assert bool(res.stable) == grid.stable[k]
        m = max_throughput(one, input_len=1024, output_len=256)
        assert float(m.output_tok_s_total) == pytest.approx(maxt.output_tok_s_total[k],
                                                            rel=1e-9)
