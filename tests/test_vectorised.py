"""One call over a grid of candidates gives exactly what one call per candidate gives."""

from __future__ import annotations

import numpy as np
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
