"""`options.disaggregation` in `fleetplan plan`: the spec's switch and pool ratios, units of a
prefill and a decode pool as mix candidates, their capacity, re-check, placement and report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.hardware.errors import SpecError
from fleetplan.hardware.yamlio import load_yaml_text
from fleetplan.models.device import Device
from fleetplan.models.disaggregation import (
    KvLink,
    decode_step,
    goodput_disaggregated,
    serve_disaggregated,
)
from fleetplan.models.inference import Replica, build_replica
from fleetplan.models.queueing import Lengths, Slo, Workload, serve
from fleetplan.plan import api
from fleetplan.plan.cli import app
from fleetplan.plan.planner import resolve_plan, run_plan
from fleetplan.plan.report import allocation_rows, report_schema
from fleetplan.plan.spec import parse_spec
from fleetplan.solvers.disaggregated import SCALE_OUT, SCALE_UP, kv_links
from fleetplan.solvers.fleet import FleetPlan
from fleetplan.solvers.mix import check_mix
from fleetplan.solvers.search import Family
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "disaggregated-long-prompt.yaml"

SPEC = """\
workloads:
  - name: w
    model: llama-3.1-8b
    rate_rps: 20
    input_len: 4000
    output_len: 200
    slo: {{ttft_p99_s: 1.0, tpot_p99_s: 0.02}}
pool:
  - {{accelerator: h100-sxm}}
options:
  precisions: [fp8]
  pp: [1]
{options}"""


def _spec(options: str = "") -> dict[str, Any]:
    data: dict[str, Any] = load_yaml_text(SPEC.format(options=options), "<test>")
    return data


def _plan(spec: dict[str, Any] | Path, catalog: Catalog) -> dict[str, Any]:
    report: dict[str, Any] = api.plan(spec, catalog=catalog).to_dict()
    return report


def _fleet(spec: dict[str, Any] | Path, catalog: Catalog) -> FleetPlan:
    loaded = api.load_spec(spec)
    return run_plan(resolve_plan(loaded, catalog), catalog)


# ----------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(("options", "says"), [
    ("  pd_ratios: ['0:1']", "each pool has 1 to 8 replicas"),
    ("  pd_ratios: ['1:9']", "each pool has 1 to 8 replicas"),
    ("  pd_ratios: ['1:2', [1, 2]]", "given twice"),
    ("  pd_ratios: ['one:two']", "is not 'P:D' or [P, D]"),
    ("  pd_ratios: [[1, 2, 3]]", "is not 'P:D' or [P, D]"),
    ("  pd_ratios: [1.5]", "is not 'P:D' or [P, D]"),
    ("  pd_ratios: []", "at least 1 item"),
    ("  disaggregation: sometimes", "'off', 'on' or 'auto'"),
])
def test_bad_disaggregation_options_name_the_field_and_line(options: str, says: str) -> None:
    text = SPEC.format(options=options)
    with pytest.raises(SpecError) as err:
        parse_spec(load_yaml_text(text, "spec.yaml"), "spec.yaml")
    key = options.strip().split(":")[0]
    assert err.value.field == f"options.{key}"
    assert err.value.line == 13                   # the option's own line
    assert says in err.value.message


def test_bad_ratio_is_a_located_cli_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(options="  disaggregation: auto\n  pd_ratios: ['2:0']"))
    # The console entry point, where user errors become exit 2.
    code = "from fleetplan.plan.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "plan", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert f"{path}:14" in result.stderr and "options.pd_ratios" in result.stderr


def test_ratio_forms_and_yaml_switch_words() -> None:
    # YAML 1.1 reads a bare off/on as false/true; they mean the words.
    off = parse_spec(_spec("  disaggregation: off"), "s").spec.options
    on = parse_spec(_spec("  disaggregation: on"), "s").spec.options
    assert (off.disaggregation, on.disaggregation) == ("off", "on")
    opts = parse_spec(_spec("  pd_ratios: [' 3 : 1', [1, 2]]"), "s").spec.options
    assert opts.pd_pairs == ((3, 1), (1, 2))
    assert parse_spec(_spec(), "s").spec.options.disaggregation == "off"


def test_spec_schema_describes_the_options(runner: CliRunner) -> None:
    schema = json.loads(runner.invoke(app, ["schema", "spec"]).stdout)
    props = schema["$defs"]["Options"]["properties"]
    assert props["disaggregation"]["default"] == "off"
    assert "pd_ratios" in props
    for text in ("  disaggregation: auto\n  pd_ratios: ['1:2', [2, 3]]",
                 "  disaggregation: off"):
        jsonschema.validate(_spec(text), schema)


# ----------------------------------------------------------------------------- off is today


def test_off_is_the_plan_without_the_option(catalog: Catalog) -> None:
    """An explicit `off`, whatever the ratios, reports byte for byte what a spec without the
    options does: no unit searched, no disaggregated field, the options left out of inputs."""
    plain = api.plan(_spec(), catalog=catalog).to_json()
    off = api.plan(_spec("  disaggregation: off\n  pd_ratios: ['1:1']"),
                   catalog=catalog).to_json()
    assert off == plain
    assert '"disaggregated"' not in plain and "pd_ratios" not in plain


def test_off_candidates_are_the_colocated_part_of_auto(catalog: Catalog) -> None:
    off = _fleet(_spec(), catalog)
    auto = _fleet(_spec("  disaggregation: auto"), catalog)
    on = _fleet(_spec("  disaggregation: on"), catalog)
    assert off.units == () and not any(c.disaggregated for c in off.choices)
    colocated = [c for c in auto.choices if not c.disaggregated]
    assert colocated == list(off.choices)
    assert np.array_equal(auto.capacity_rps[:len(colocated)], off.capacity_rps)
    assert any(c.disaggregated for c in auto.choices)
    assert on.choices and all(c.disaggregated for c in on.choices)


# ----------------------------------------------------------------------------- capacity


def _rep(catalog: Catalog) -> Replica:
    device = Device(catalog.accelerator("h100-sxm"),
                    catalog.calibration.for_device("h100-sxm", "trtllm"),
                    catalog.engine("trtllm"))
    return build_replica(catalog.model("llama-3.1-8b"), device, tp=1, weight_precision="fp8")


def test_unit_capacity_is_the_smaller_pool(catalog: Catalog) -> None:
    """Llama 3.1 8B in fp8 on one H100, 2048-token prompts, 128 output tokens, at most 64
    sequences per decode replica.

    Decode replica: 64 slots (the KV cache holds ~1M tokens, far more than 64 x 2176), 127
    decode steps per request (the first token comes from prefill), each step tau(64) at the
    mean context 2048 + 128 / 2 = 2112: 64 / (127 tau) requests/s.
    Prefill replica: one prompt at a time, at least 2 x 8.03e9 x 2048 = 3.29e13 FLOP at the
    fp8 dense peak of 1.979e15 FLOP/s: >= 16.6 ms, so at most 60 requests/s.
    A unit of P prefill and D decode replicas carries min(P x prefill, D x decode)."""
    rep = _rep(catalog)
    load = Workload(np.asarray(1.0), Lengths.fixed(2048), Lengths.fixed(128))
    link = KvLink(450e9, 1e-6)

    def capacity(n_p: int, n_d: int) -> float:
        return float(serve_disaggregated(rep, rep, load, n_prefill=n_p, n_decode=n_d,
                                         link=link, max_batch=64).capacity_rps)

    tau = float(decode_step(rep, 64.0, 2112.0))
    decode_one = 64.0 / (127.0 * tau)
    # Eight prefill replicas never bind one decode replica, and the other way round.
    assert capacity(8, 1) == pytest.approx(decode_one, rel=1e-12)
    prefill_one = capacity(1, 8)
    assert 0 < prefill_one < 1.0 / 16.6e-3
    for n_p, n_d in ((1, 1), (2, 3), (1, 4), (4, 1), (3, 2)):
        bound = min(n_p * prefill_one, n_d * decode_one)
        assert capacity(n_p, n_d) == pytest.approx(bound, rel=1e-12)
        # With no latency objective the goodput is that capacity, to the bisection's
        # resolution (2**-12 of it); with one it is no more.
        free, bind, _ = goodput_disaggregated(rep, rep, load, Slo(), n_prefill=n_p,
                                              n_decode=n_d, link=link, max_batch=64)
        assert bound * (1 - 2**-12 - 1e-6) <= float(free) <= bound
        assert str(bind) == "capacity"
        tight, _, at = goodput_disaggregated(rep, rep, load, Slo(ttft_p99_s=0.1),
                                             n_prefill=n_p, n_decode=n_d, link=link,
                                             max_batch=64)
        assert float(tight) <= float(free)
        assert float(at.ttft.p99) <= 0.1


def test_kv_path_follows_the_scale_up_domain(catalog: Catalog) -> None:
    # H100: NVLink 450 GB/s per direction per GPU inside 8-GPU domains, one 400 Gb/s
    # (50 GB/s) NIC per GPU outside. A 2:1 unit of TP-2 replicas is 6 GPUs: NVLink, each of the
    # 2 ranks sending its shard, 2 x 450 GB/s. A 3:2 unit of TP-2 replicas is 10 GPUs: NICs,
    # 2 x 50 GB/s.
    rep = _rep(catalog)
    family = Family("f", rep.arch, rep.device, 1.0, math.inf, 8)
    path, bw, _lat = kv_links(family, np.array([6, 10]), np.array([2, 2]))
    assert list(path) == [SCALE_UP, SCALE_OUT]
    assert bw.tolist() == [900e9, 100e9]


# ----------------------------------------------------------------------------- plans


@pytest.mark.parametrize("spec", [
    pytest.param(EXAMPLE, id="example"),
    pytest.param(_spec(), id="8b-short-prompts"),
    pytest.param({**_spec(), "workloads": [{
        "name": "w", "model": "llama-3.1-8b", "rate_rps": 40, "input_len": 8000,
        "output_len": 300, "slo": {"ttft_p99_s": 1.0, "tpot_p99_s": 0.015}}]},
        id="8b-long-prompts"),
])
def test_auto_never_costs_more_than_off_or_on(spec: Path | dict[str, Any],
                                              catalog: Catalog) -> None:
    """auto's candidates are off's and on's together, so its optimum is no dearer than
    either (to the ILP's proven gap, 1e-4 at most)."""
    base = load_yaml_text(spec.read_text(), str(spec)) if isinstance(spec, Path) else spec
    costs = {}
    for mode in ("off", "on", "auto"):
        data = {**base, "options": {**base.get("options", {}), "disaggregation": mode}}
        report = _plan(data, catalog)
        assert report["status"] == "optimal"
        costs[mode] = report["cost_usd_h"]
    assert costs["auto"] <= min(costs["off"], costs["on"]) * (1 + 1e-4)


def _unit(report: dict[str, Any]) -> dict[str, Any]:
    """The report's one disaggregated allocation."""
    units: list[dict[str, Any]] = [a for a in report["allocations"] if a.get("disaggregated")]
    (alloc,) = units
    return alloc


def test_example_picks_disaggregation(catalog: Catalog) -> None:
    """8k-token prompts on 70B with a 15 ms TPOT objective: a co-located replica's decode steps
    carry 8192-token prompt chunks. The plan is one unit whose pools are split differently:
    2 prefill replicas of TP 4 x PP 4 (a prompt's time is the TP 4 replica's, and the four
    stages hold four prompts at once) and 3 decode replicas of TP 4 (each decode step streams
    the weights; small replicas keep the batch, and so the TPOT, in check): 2 x 16 + 3 x 4 =
    44 H100s, where the co-located plan needs 72 and units of one parallelism for both pools
    48."""
    report = _plan(EXAMPLE, catalog)
    base = load_yaml_text(EXAMPLE.read_text(), str(EXAMPLE))
    off = _plan({**base, "options": {"disaggregation": "off"}}, catalog)
    shared = _plan({**base, "options": {**base["options"], "pd_parallelism": "shared"}},
                   catalog)
    assert report["accelerators"] < shared["accelerators"] < off["accelerators"]
    assert report["cost_usd_h"] < shared["cost_usd_h"] < off["cost_usd_h"]
    alloc = _unit(report)
    pools = alloc["disaggregated"]
    prefill, decode = pools["prefill"], pools["decode"]
    assert (pools["units"], prefill["per_unit"], decode["per_unit"]) == (1, 2, 3)
    assert (prefill["tp"], prefill["pp"], decode["tp"], decode["pp"]) == (4, 4, 4, 1)
    # The allocation's own parallelism is its decode pool's; its count is both pools'.
    assert (alloc["tp"], alloc["pp"]) == (decode["tp"], decode["pp"])
    assert alloc["count"] == 2 * 4 * 4 + 3 * 4 * 1 == 44
    # 44 accelerators: more than an 8-GPU node, so the KV caches go over the NICs, each of the
    # 4 accelerators of the smaller replica (a decode replica) over its own 50 GB/s.
    assert pools["kv_link"] == "scale-out"
    assert pools["kv_link_bandwidth_bytes_s"] == 4 * 50e9
    jsonschema.validate(report, report_schema())
    assert report["schema_version"] == "1.4"
    assert "disaggregation" in report["assumptions"]
    assert report["search"][0]["disaggregated"]["units_evaluated"] > 0


@pytest.mark.parametrize("mode", ["on", "auto"])
@pytest.mark.parametrize("which", ["example", "8b"])
def test_independent_pools_never_cost_more_than_shared(which: str, mode: str,
                                                       catalog: Catalog) -> None:
    """Units whose pools share one parallelism are among those whose pools may differ (the
    shortlists keep what the shared search would), so letting them differ cannot raise the
    optimum (to the ILP's proven gap)."""
    base = load_yaml_text(EXAMPLE.read_text(), str(EXAMPLE)) if which == "example" \
        else _spec()
    costs = {}
    for par in ("shared", "independent"):
        data = {**base, "options": {**base.get("options", {}), "disaggregation": mode,
                                    "pd_parallelism": par}}
        report = _plan(data, catalog)
        assert report["status"] == "optimal"
        costs[par] = report["cost_usd_h"]
        if par == "shared":
            for a in report["allocations"]:
                d = a.get("disaggregated")
                if d:
                    assert [d["prefill"][k] for k in ("tp", "pp", "ep")] == \
                        [d["decode"][k] for k in ("tp", "pp", "ep")]
    assert costs["independent"] <= costs["shared"] * (1 + 1e-4)


def test_recheck_prices_units_through_both_pools(catalog: Catalog) -> None:
    """The re-check of a disaggregated allocation, re-derived from the report: the route's
    p99s are those of the two pools, each of its own parallelism, at the unit's rate, not of
    co-located replicas, and they meet the SLO; the mix's own residuals hold."""
    plan = _fleet(EXAMPLE, catalog)
    check = check_mix(plan.problem, plan.mix)
    assert check.ok()
    report = _plan(EXAMPLE, catalog)
    alloc = _unit(report)
    (route,) = alloc["routes"]
    pools = alloc["disaggregated"]
    assert route["slo_ratio"] <= 1.0 + 1e-6 and alloc["load_fraction"] <= 1.0 + 1e-9
    device = Device(catalog.accelerator("h100-sxm"),
                    catalog.calibration.for_device("h100-sxm", "trtllm"),
                    catalog.engine("trtllm"))

    def replica(pool: dict[str, Any]) -> Replica:
        return build_replica(catalog.model("llama-3.1-70b"), device, tp=pool["tp"],
                             pp=pool["pp"], ep=pool["ep"], weight_precision=alloc["precision"],
                             tokens_per_step=alloc["prefill_chunk"])

    prefill, decode = replica(pools["prefill"]), replica(pools["decode"])
    load = Workload(np.asarray(route["rate_rps"]), Lengths.lognormal(8000, 4000),
                    Lengths.lognormal(400, 200))
    link = KvLink(pools["kv_link_bandwidth_bytes_s"], 1e-6,
                  device.fabric.efficiency)
    both = serve_disaggregated(prefill, decode, load, n_prefill=pools["prefill"]["per_unit"],
                               n_decode=pools["decode"]["per_unit"], link=link,
                               max_batch=alloc["max_batch"],
                               token_budget=alloc["prefill_chunk"])
    assert route["ttft_p99_s"] == pytest.approx(float(both.ttft.p99), rel=1e-9)
    assert route["tpot_p99_s"] == pytest.approx(float(both.tpot.p99), rel=1e-9)
    # The unit's 44 accelerators as co-located replicas of its decode configuration instead
    # (11 of TP 4, an eleventh of the rate each) miss the TPOT objective: their decode steps
    # carry 8192-token prompt chunks.
    colocated = serve(decode, load.at_rate(route["rate_rps"] / 11),
                      max_batch=alloc["max_batch"], token_budget=alloc["prefill_chunk"])
    assert alloc["count"] == 11 * 4 and float(colocated.tpot.p99) > 0.015


def test_units_in_one_domain_are_placed_in_one(catalog: Catalog) -> None:
    """A 3-GPU unit (2 prefill + 1 decode replica of TP 1) ships KV over NVLink, so it lies in
    one node; a unit over the NICs is placed pool by pool."""
    plan = _fleet(_spec("  disaggregation: on"), catalog)
    used = [c for c, ch in enumerate(plan.choices) if plan.mix.replicas[c] > 0]
    assert used
    for c in used:
        ch = plan.choices[c]
        assert ch.kv_path == SCALE_UP and ch.devices <= 8
        placement = plan.placements[ch.group]
        assert placement is not None and placement.feasible
        for node in placement.node_contents:
            for name, accelerators in node:
                if name == ch.name:
                    assert accelerators % ch.devices == 0
    wide = _fleet(EXAMPLE, catalog)
    (unit,) = [ch for c, ch in enumerate(wide.choices)
               if ch.disaggregated and wide.mix.replicas[c] > 0]
    (placement,) = [p for p in wide.placements if p is not None]
    held: dict[str, int] = {}
    for node in placement.node_contents:
        for name, accelerators in node:
            if name.startswith(f"{unit.name}/"):
                pool = name.rsplit("/", 1)[1]
                held[pool] = held.get(pool, 0) + accelerators
    # 2 prefill replicas of TP 4 x PP 4 and 3 decode replicas of TP 4, placed pool by pool:
    # 44 GPUs on 6 nodes of 8 (5 hold 40).
    assert held == {"prefill": 32, "decode": 12}
    assert placement.nodes == 6


def test_table_shows_the_pools(catalog: Catalog) -> None:
    report = api.plan(EXAMPLE, catalog=catalog).report
    _head, rows = allocation_rows(report)
    (row,) = [r for r in rows if "P+" in r[2]]
    assert row[2:5] == ["5 = 1x(2P+3D)", "4", "4P/1D"]
    assert row[5] == "1"                          # both pools' ep, shown once


def test_hourly_plans_recheck_units(catalog: Catalog) -> None:
    """Under a rate profile each hour's mix may use units too; every routed unit is priced
    again through both pools at the hour's load and meets the SLO."""
    spec = _spec("  disaggregation: on")
    spec["workloads"][0].pop("rate_rps")
    spec["workloads"][0]["rate_profile_rps"] = [5.0] * 12 + [20.0] * 12
    plan = _fleet(spec, catalog)
    assert len(plan.hours) == 24
    for hour in plan.hours:
        assert hour.check is not None and hour.check.ok()
        assert hour.served
        for s in hour.served:
            assert plan.choices[s.choice].disaggregated
            assert math.isfinite(s.slo_ratio) and s.slo_ratio <= 1.0 + 1e-6


def test_measured_capacities_have_no_pools(catalog: Catalog) -> None:
    path = REPO / "examples" / "melange-capacity-table.yaml"
    data = load_yaml_text(path.read_text(), str(path))
    data["options"] = {**data.get("options", {}), "disaggregation": "auto"}
    with pytest.raises(SpecError) as err:
        api.plan(data, catalog=catalog)
    assert err.value.field == "options.disaggregation"


def test_estimate_reproduces_a_planned_unit(catalog: Catalog) -> None:
    """`estimate --disaggregate P:D --prefill-tp/--prefill-pp` prices the example's unit as the
    plan's re-check did: same pools, same link (4 NIC lanes, as a decode replica has 4
    accelerators), same rate, same p99s."""
    report = _plan(EXAMPLE, catalog)
    alloc = _unit(report)
    (route,) = alloc["routes"]
    pools = alloc["disaggregated"]
    prefill, decode = pools["prefill"], pools["decode"]
    est = api.estimate("llama-3.1-70b", "h100-sxm", input_len=8000, output_len=400,
                       input_dist="lognormal:8000:4000", output_dist="lognormal:400:200",
                       tp=decode["tp"], pp=decode["pp"], ep=decode["ep"],
                       precision=alloc["precision"], max_batch=alloc["max_batch"],
                       prefill_chunk=alloc["prefill_chunk"], rate_rps=route["rate_rps"],
                       disaggregate=f"{prefill['per_unit']}:{decode['per_unit']}",
                       prefill_tp=prefill["tp"], prefill_pp=prefill["pp"],
                       prefill_ep=prefill["ep"], catalog=catalog).report
    dis = est["disaggregated"]
    assert (dis["prefill_tp"], dis["prefill_pp"]) == (prefill["tp"], prefill["pp"])
    assert dis["kv_link_bandwidth_bytes_s"] == pools["kv_link_bandwidth_bytes_s"]
    assert dis["latency"]["ttft_s"]["p99"] == pytest.approx(route["ttft_p99_s"], rel=1e-9)
    assert dis["latency"]["tpot_s"]["p99"] == pytest.approx(route["tpot_p99_s"], rel=1e-9)


@pytest.mark.parametrize(("args", "field", "says"), [
    (["--prefill-tp", "2"], "prefill_tp", "needs --disaggregate"),
    (["--disaggregate", "1:1", "--prefill-tp", "3"], "prefill_tp", "does not divide"),
    (["--disaggregate", "1:1", "--prefill-pp", "0"], "prefill_pp", "must be >= 1"),
    # The decode replicas' attention groups do not bind the prefill replicas, which attend
    # over their whole tensor group: TP 3 is checked against the 32 heads on its own.
    (["--tp", "8", "--attention-dp", "2", "--disaggregate", "1:1", "--prefill-tp", "3"],
     "prefill_tp", "does not divide the 32 attention heads"),
    (["--kv-link", "scale-up"], "kv_link", "needs --disaggregate"),
    (["--disaggregate", "1:1", "--kv-link", "nvlink"], "kv_link", "scale-out or scale-up"),
])
def test_bad_prefill_parallelism_is_a_located_error(args: list[str], field: str,
                                                    says: str) -> None:
    code = "from fleetplan.plan.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "estimate", "--model", "llama-3.1-8b", "--accelerator",
         "h100-sxm", "--input-len", "1000", "--output-len", "100", "--rate", "1", *args],
        capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert field in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr


def test_compare_plots_and_sheets_mark_the_pools(catalog: Catalog) -> None:
    """Every view of a plan says which allocation is a unit of two pools and how each is
    split: `compare SPEC --accelerators`'s rows, the Pareto plot's chosen candidates (a unit
    has no point on the co-located fronts, so it is listed beside them, never starred on the
    front point of its decode configuration) and the spreadsheet's allocations view."""
    from fleetplan.plan.compare import option_row
    from fleetplan.plan.excel import ALLOCATION_HEADER, FLEETPLAN_PLAN
    from fleetplan.plan.plots import pareto_data

    report = _plan(EXAMPLE, catalog)
    unit, colocated = _unit(report), [a for a in report["allocations"]
                                      if not a.get("disaggregated")]
    pools = "1x(2P tp4pp4 + 3D tp4pp1)"
    labels = {id(a): "tp{tp}pp{pp}".format(**a) for a in colocated} | {id(unit): pools}
    assert option_row(["h100-sxm"], report)["allocations"] == [
        f"{a['count']}x h100-sxm {labels[id(a)]} fp8" for a in report["allocations"]]
    data = pareto_data(report)
    assert f"h100-sxm {pools} fp8 b{unit['max_batch']}" in data.off_front
    assert len(data.chosen) + len(data.off_front) == len(report["allocations"])
    table = FLEETPLAN_PLAN(str(EXAMPLE), "allocations")
    column = ALLOCATION_HEADER.index("pools")
    assert table[0] == ALLOCATION_HEADER
    assert sorted(str(row[column]) for row in table[1:-1]) == sorted(
        pools if a is unit else "None" for a in report["allocations"])


def test_prefill_replicas_attend_over_their_whole_group() -> None:
    """Decode replicas of TP 2 in 2 attention groups, prefill replicas of TP 1: a prompt alone
    lies in one group, so the prefill replica has no attention groups of its own (TP 1 could
    not hold 2); the command prices it."""
    code = "from fleetplan.plan.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "estimate", "--model", "llama-3.1-8b", "--accelerator",
         "h100-sxm", "--input-len", "1000", "--output-len", "100", "--rate", "1", "--tp", "2",
         "--attention-dp", "2", "--disaggregate", "1:1", "--prefill-tp", "1", "--format",
         "json"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    dis = json.loads(result.stdout)["disaggregated"]
    assert (dis["prefill_tp"], dis["stable"]) == (1, True)


def test_estimate_reproduces_a_unit_inside_one_domain(catalog: Catalog) -> None:
    """A 3-GPU unit of the 8B spec lies in one node and ships its KV caches over NVLink:
    `estimate --kv-link scale-up` gives the route's p99s, end to end (which carries the
    transfer) included; over the NICs the same unit's end to end is longer."""
    report = _plan(_spec("  disaggregation: on"), catalog)
    alloc = next(a for a in report["allocations"]
                 if (a.get("disaggregated") or {}).get("kv_link") == "scale-up")
    pools = alloc["disaggregated"]
    route = alloc["routes"][0]
    prefill, decode = pools["prefill"], pools["decode"]

    def at(kv_link: str) -> dict[str, Any]:
        out: dict[str, Any] = api.estimate(
            "llama-3.1-8b", "h100-sxm", input_len=4000, output_len=200, tp=decode["tp"],
            pp=decode["pp"], precision=alloc["precision"], max_batch=alloc["max_batch"],
            prefill_chunk=alloc["prefill_chunk"], rate_rps=route["rate_rps"],
            disaggregate=f"{prefill['per_unit']}:{decode['per_unit']}",
            prefill_tp=prefill["tp"], prefill_pp=prefill["pp"], kv_link=kv_link,
            catalog=catalog).report["disaggregated"]
        return out

    inside, across = at("scale-up"), at("scale-out")
    assert inside["kv_link_bandwidth_bytes_s"] == pools["kv_link_bandwidth_bytes_s"]
    for metric in ("ttft", "tpot", "e2e"):
        assert inside["latency"][f"{metric}_s"]["p99"] == pytest.approx(
            route[f"{metric}_p99_s"], rel=1e-9)
    assert across["latency"]["e2e_s"]["p99"] > inside["latency"]["e2e_s"]["p99"]
