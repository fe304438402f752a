"""`options.attention_dp`: attention data parallelism as an axis of the plan's search. An MLA
model keeps one latent KV head, which tensor parallelism replicates on every rank; attention
data-parallel groups each hold their own sequences' cache instead, so the same replica holds
several times the sequences."""

from __future__ import annotations

from typing import Any

import pytest
from fleetplan.hardware import Catalog
from fleetplan.hardware.errors import SpecError
from fleetplan.hardware.yamlio import load_yaml_text
from fleetplan.models.device import Device
from fleetplan.plan import api
from fleetplan.plan.report import allocation_rows
from fleetplan.plan.spec import parse_spec
from fleetplan.solvers.search import Family, SearchSpace, grid

SPEC = """\
workloads:
  - name: chat
    model: deepseek-v3
    rate_rps: {rate}
    input_len: {{dist: lognormal, mean: 2000, std: 1000}}
    output_len: {{dist: lognormal, mean: 500, std: 250}}
    slo: {{ttft_p99_s: 3.0, tpot_p99_s: 0.1}}
pool:
  - {{accelerator: h200}}
objective: cost
options:
  precisions: [fp8]
  tp: [8]
  pp: [1, 2]
{options}"""


def _spec(rate: float, options: str) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml_text(SPEC.format(rate=rate, options=options), "<test>")
    return data


def test_grid_takes_the_groups_that_divide_each_tp_width(catalog: Catalog) -> None:
    """DeepSeek-V3 has 128 attention heads. TP 4 takes attention_dp 1 and 2 (8 does not
    divide 4); TP 8 takes 1, 2 and 8: 5 (tp, attention_dp) pairs, x 2 EP widths (1 and the
    whole group, the MoE default) x 1 precision x 1 PP x 1 limit x 1 chunk = 10 rows."""
    acc = catalog.accelerator("h200")
    engine = catalog.engine("trtllm")
    device = Device(acc, catalog.calibration.for_device(acc.id, engine.id), engine)
    family = Family("deepseek-v3@h200", catalog.model("deepseek-v3"), device, 4.5,
                    float("inf"), 8)
    space = SearchSpace(("fp8",), (4, 8), (1,), None, (256,), (8192,), attention_dp=(1, 2, 8))
    g = grid(family, space)
    pairs = sorted({(int(t), int(a)) for t, a in zip(g["tp"], g["attn_dp"], strict=True)})
    assert pairs == [(4, 1), (4, 2), (8, 1), (8, 2), (8, 8)]
    assert g["tp"].size == 10
    # Without the option: the engine's choice, one group for TensorRT-LLM.
    plain = grid(family, SearchSpace(("fp8",), (4, 8), (1,), None, (256,), (8192,)))
    assert set(plain["attn_dp"].tolist()) == {1}


def test_bad_attention_dp_names_the_field() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_spec(10, "  attention_dp: [0, 8]"), "spec.yaml")
    assert err.value.field is not None and err.value.field.startswith("options.attention_dp")


def test_attention_groups_halve_the_fleet_where_the_cache_binds(catalog: Catalog) -> None:
    """At 14 req/s one TP 8 replica with one attention group carries about 11.5 req/s within
    the SLO (its cache holds 1.6 M tokens, replicated on every rank), so the plan needs 16
    H200s (2 replicas, or one of PP 2) at 4.5 USD/h each: 72 USD/h. With 8 attention groups the
    same 8 GPUs hold 11 M tokens and carry about 14.4 req/s: one replica, 36 USD/h. Searching
    both never costs more than searching one group alone."""
    alone_result = api.plan(_spec(14, "  attention_dp: [1]"), catalog=catalog)
    both_result = api.plan(_spec(14, "  attention_dp: [1, 8]"), catalog=catalog)
    alone, both = alone_result.to_dict(), both_result.to_dict()
    assert alone["status"] == both["status"] == "optimal"
    assert alone["accelerators"] == 16 and alone["cost_usd_h"] == pytest.approx(72.0)
    assert both["accelerators"] == 8 and both["cost_usd_h"] == pytest.approx(36.0)
    (alloc,) = both["allocations"]
    assert (alloc["tp"], alloc["pp"], alloc["attention_dp"]) == (8, 1, 8)
    assert {a["attention_dp"] for a in alone["allocations"]} == {1}
    # The re-check priced the replica with its attention groups: `estimate --attention-dp 8`
    # at the route's rate gives the same p99s.
    (route,) = alloc["routes"]
    est = api.estimate("deepseek-v3", "h200", input_len=2000, output_len=500,
                       input_dist="lognormal:2000:1000", output_dist="lognormal:500:250",
                       tp=8, pp=1, ep=alloc["ep"], precision="fp8",
                       max_batch=alloc["max_batch"], prefill_chunk=alloc["prefill_chunk"],
                       rate_rps=route["rate_rps"], attention_dp=8, catalog=catalog).report
    assert est["latency"]["ttft_s"]["p99"] == pytest.approx(route["ttft_p99_s"], rel=1e-9)
    assert est["latency"]["tpot_s"]["p99"] == pytest.approx(route["tpot_p99_s"], rel=1e-9)
    # The table shows the column only where a plan uses more than one group.
    head, rows = allocation_rows(both_result.report)
    assert rows[0][head.index("attention dp")] == "8"
    assert "attention dp" not in allocation_rows(alone_result.report)[0]


def test_a_unit_decodes_in_attention_groups_and_prefills_without(catalog: Catalog) -> None:
    """Disaggregated, with 8 attention groups listed: the decode replica runs them (its batch
    is many sequences, each in one group), the prefill replica attends over its whole TP 8
    group (a prompt at a time lies in one group); the report says so per pool, and `estimate
    --attention-dp 8 --disaggregate 1:1` prices the unit as the plan's re-check did."""
    report = api.plan(_spec(14, "  attention_dp: [8]\n  disaggregation: on"),
                      catalog=catalog).to_dict()
    assert report["status"] == "optimal"
    (alloc,) = report["allocations"]
    pools = alloc["disaggregated"]
    assert (pools["prefill"]["attention_dp"], pools["decode"]["attention_dp"]) == (1, 8)
    assert alloc["attention_dp"] == 8
    (route,) = alloc["routes"]
    prefill, decode = pools["prefill"], pools["decode"]
    est = api.estimate("deepseek-v3", "h200", input_len=2000, output_len=500,
                       input_dist="lognormal:2000:1000", output_dist="lognormal:500:250",
                       tp=decode["tp"], pp=decode["pp"], ep=decode["ep"], precision="fp8",
                       max_batch=alloc["max_batch"], prefill_chunk=alloc["prefill_chunk"],
                       rate_rps=route["rate_rps"], attention_dp=8,
                       disaggregate=f"{prefill['per_unit']}:{decode['per_unit']}",
                       prefill_tp=prefill["tp"], prefill_pp=prefill["pp"],
                       prefill_ep=prefill["ep"], catalog=catalog).report["disaggregated"]
    assert est["kv_link_bandwidth_bytes_s"] == pools["kv_link_bandwidth_bytes_s"]
    assert est["latency"]["ttft_s"]["p99"] == pytest.approx(route["ttft_p99_s"], rel=1e-9)
    assert est["latency"]["tpot_s"]["p99"] == pytest.approx(route["tpot_p99_s"], rel=1e-9)
