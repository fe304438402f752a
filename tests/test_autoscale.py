"""Autoscaling under a daily rate profile: each hour re-solves the mix over the peak plan's
candidates. Hand-solved hours on a measured capacity table, the daily totals, flat-rate
workloads, headroom and availability limits, the re-check's warnings, the report schema and
determinism."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.plan import api
from fleetplan.plan.cli import app
from fleetplan.plan.planner import resolve_plan, run_plan
from fleetplan.plan.report import Report, build_report, report_schema, summary_lines
from fleetplan.solvers.fleet import plan_hours
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent

# One bucket, two accelerator types, measured capacities (requests/s per accelerator at the
# SLO) and prices: A10G 2 req/s for 1 USD/h (0.50 USD per req/s), A100 9 req/s for 4 USD/h
# (0.44 USD per req/s). Bulk goes to A100s, A10Gs fill the rest in steps of 2 req/s.
#
# Hour rates: 0-5 idle, 6-7 3 req/s, 8-11 10, 12-17 20 (the peak), 18-21 9, 22-23 3.
PROFILE = [0.0] * 6 + [3.0] * 2 + [10.0] * 4 + [20.0] * 6 + [9.0] * 4 + [3.0] * 2
# The cheapest fleet for each rate, min 1 n_a10g + 4 n_a100 s.t. 2 n_a10g + 9 n_a100 >= rate:
#  0 req/s: nothing                                 0 USD/h
#  3 req/s: 2 A10G (4 req/s) = 2; 1 A100 = 4         2 USD/h
#  9 req/s: 1 A100 = 4; 5 A10G = 5                   4 USD/h
# 10 req/s: 1 A100 + 1 A10G (11) = 5; 5 A10G = 5; 2 A100 = 8            5 USD/h
# 20 req/s: 2 A100 + 1 A10G (20) = 9; 1 A100 + 6 A10G = 10; 10 A10G = 10; 3 A100 = 12
#                                                   9 USD/h
HAND_COST = {0.0: 0.0, 3.0: 2.0, 9.0: 4.0, 10.0: 5.0, 20.0: 9.0}
# Daily: 6 x 0 + 4 x 2 + 4 x 5 + 6 x 9 + 4 x 4 = 98 USD/day; the peak fleet all day is
# 9 x 24 = 216 USD/day; saving 118 USD/day = 118 / 216 of it.
HAND_DAY = 98.0
HAND_STATIC = 216.0


def _spec(profile: list[float], *, headroom: float = 0.0, a100_max: int | None = None,
          batch_rps: float | None = None) -> dict[str, Any]:
    """The measured-capacity spec; `batch_rps` adds a flat-rate workload with its own bucket
    that only A100s serve (2 req/s each)."""
    workloads: list[dict[str, Any]] = [
        {"name": "chat", "rate_profile_rps": profile, "input_len": 256, "output_len": 128}]
    capacities: list[dict[str, Any]] = [
        {"accelerator": "a10g", "input_len": 256, "output_len": 128, "max_rps": 2.0},
        {"accelerator": "a100-sxm-80gb", "input_len": 256, "output_len": 128, "max_rps": 9.0}]
    if batch_rps is not None:
        workloads.append({"name": "batch", "rate_rps": batch_rps, "input_len": 2048,
                          "output_len": 512})
        capacities.append({"accelerator": "a100-sxm-80gb", "input_len": 2048,
                           "output_len": 512, "max_rps": 2.0})
    a100: dict[str, Any] = {"accelerator": "a100-sxm-80gb", "price_usd_h": 4.0}
    if a100_max is not None:
        a100["max_count"] = a100_max
    return {"workloads": workloads, "capacities": capacities,
            "pool": [{"accelerator": "a10g", "price_usd_h": 1.0}, a100],
            "objective": "cost", "options": {"headroom": headroom}}


def _report(spec: dict[str, Any], catalog: Catalog) -> Report:
    return api.plan(spec, catalog=catalog).report


def _hour_costs(report: Report) -> list[float | None]:
    assert report.autoscaling is not None
    return [h.cost_usd_h for h in report.autoscaling.hours]


def test_hourly_costs_are_the_hand_optimum(catalog: Catalog) -> None:
    report = _report(_spec(PROFILE), catalog)
    auto = report.autoscaling
    assert auto is not None
    assert report.cost_usd_h == pytest.approx(9.0)
    assert [h.hour for h in auto.hours] == list(range(24))
    assert all(h.status == "optimal" for h in auto.hours)
    assert _hour_costs(report) == pytest.approx([HAND_COST[r] for r in PROFILE])
    assert [h.rates_rps for h in auto.hours] == [{"chat": r} for r in PROFILE]
    assert auto.autoscaled_cost_usd_day == pytest.approx(HAND_DAY)
    assert auto.static_cost_usd_day == pytest.approx(HAND_STATIC)
    assert auto.saving_usd_day == pytest.approx(HAND_STATIC - HAND_DAY)
    assert auto.saving_fraction == pytest.approx(118.0 / 216.0)
    # The unique optima: 2 A10G at 3 req/s, 1 A100 at 9, 2 A100 + 1 A10G at the peak.
    assert auto.hours[6].accelerators == {"a10g": 2}
    assert auto.hours[18].accelerators == {"a100-sxm-80gb": 1}
    assert auto.hours[12].accelerators == {"a10g": 1, "a100-sxm-80gb": 2}
    assert "no warm-up" in auto.assumption and "hour boundaries" in auto.assumption
    assert not report.warnings


def test_each_hour_is_placed_onto_nodes(catalog: Catalog) -> None:
    """Each hour's replicas go onto nodes of the pool's shapes: one A10G per node and eight
    A100s per node put the 3 req/s hours' 2 A10G on 2 nodes, the 9 req/s hours' A100 on 1 and
    the peak's 1 A10G + 2 A100 on 1 node of each type; an idle hour uses none."""
    spec = _spec(PROFILE)
    spec["pool"][0]["accelerators_per_node"] = 1
    spec["pool"][1]["accelerators_per_node"] = 8
    report = _report(spec, catalog)
    auto = report.autoscaling
    assert auto is not None
    assert auto.hours[0].nodes == {}
    assert auto.hours[6].nodes == {"a10g": 2}
    assert auto.hours[18].nodes == {"a100-sxm-80gb": 1}
    assert auto.hours[12].nodes == {"a10g": 1, "a100-sxm-80gb": 1}
    assert {n.accelerator: n.nodes for n in report.nodes} == auto.hours[12].nodes
    assert "autoscaled nodes by hour: 0h 0, 1h 0, 2h 0, 3h 0, 4h 0, 5h 0, 6h 2, 7h 2, 8h " \
        in "\n".join(summary_lines(report))


def test_an_idle_hour_costs_nothing(catalog: Catalog) -> None:
    auto = _report(_spec(PROFILE), catalog).autoscaling
    assert auto is not None
    for h in auto.hours[:6]:
        assert h.cost_usd_h == 0.0
        assert h.accelerators == {}
        assert h.status == "optimal"


def test_flat_rate_workloads_run_every_hour(catalog: Catalog) -> None:
    """A flat 2 req/s batch workload fills one A100 (2 / 2 of its capacity) every hour, so
    each hour costs the chat optimum + 4 USD/h and the idle hours cost 4."""
    report = _report(_spec(PROFILE, batch_rps=2.0), catalog)
    auto = report.autoscaling
    assert auto is not None
    assert _hour_costs(report) == pytest.approx([HAND_COST[r] + 4.0 for r in PROFILE])
    assert all(h.rates_rps["batch"] == 2.0 for h in auto.hours)
    assert auto.hours[0].accelerators == {"a100-sxm-80gb": 1}
    assert auto.autoscaled_cost_usd_day == pytest.approx(HAND_DAY + 24 * 4.0)
    assert auto.static_cost_usd_day == pytest.approx(HAND_STATIC + 24 * 4.0)


@pytest.mark.parametrize(("options", "expected"), [
    # Headroom 10%: 1.8 and 8.1 req/s per accelerator. 9 req/s: 1 A100 (8.1) falls short,
    # 1 A100 + 1 A10G (9.9) = 5 = 5 A10G (9.0); 20 req/s: 2 A100 + 3 A10G (21.6) = 11,
    # 3 A100 (24.3) = 12, 1 A100 + 7 A10G (20.7) = 11; 3 req/s: 2 A10G (3.6) = 2;
    # 10 req/s: 1 A100 + 2 A10G (11.7) = 6 = 6 A10G (10.8).
    ({"headroom": 0.1}, {0.0: 0.0, 3.0: 2.0, 9.0: 5.0, 10.0: 6.0, 20.0: 11.0}),
    # At most one A100: 20 req/s needs 1 A100 + 6 A10G (21) = 10; the rest as without limit.
    ({"a100_max": 1}, {0.0: 0.0, 3.0: 2.0, 9.0: 4.0, 10.0: 5.0, 20.0: 10.0}),
])
def test_headroom_and_limits_apply_every_hour(catalog: Catalog, options: dict[str, Any],
                                              expected: dict[float, float]) -> None:
    report = _report(_spec(PROFILE, **options), catalog)
    assert _hour_costs(report) == pytest.approx([expected[r] for r in PROFILE])
    assert report.cost_usd_h == pytest.approx(expected[20.0])


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.0, 7.0, 9.5, 14.0, 20.0]),
                min_size=24, max_size=24).filter(lambda p: max(p) > 0))
def test_autoscaling_never_costs_more_than_the_peak_fleet(profile: list[float]) -> None:
    from fleetplan.hardware import load_catalog

    report = _report(_spec(profile), load_catalog())
    auto = report.autoscaling
    assert auto is not None and report.cost_usd_h is not None
    assert auto.saving_usd_day is not None and auto.saving_fraction is not None
    assert auto.saving_usd_day >= -1e-9
    assert 0.0 <= auto.saving_fraction + 1e-12 <= 1.0 + 1e-12
    for h, rate in zip(auto.hours, profile, strict=True):
        assert h.cost_usd_h is not None
        assert h.cost_usd_h <= report.cost_usd_h + 1e-9
        # Enough capacity for the hour's rate: 2 req/s per A10G, 9 per A100.
        assert 2.0 * h.accelerators.get("a10g", 0) + \
            9.0 * h.accelerators.get("a100-sxm-80gb", 0) >= rate - 1e-9
    # The busiest hour runs the peak plan itself.
    busiest = auto.hours[int(np.argmax(profile))]
    assert busiest.cost_usd_h == report.cost_usd_h


def test_no_profile_no_section(catalog: Catalog) -> None:
    spec = _spec(PROFILE)
    del spec["workloads"][0]["rate_profile_rps"]
    spec["workloads"][0]["rate_rps"] = 20.0
    report = _report(spec, catalog)
    assert report.autoscaling is None
    assert not any(line.startswith("autoscal") for line in summary_lines(report))


def test_report_with_autoscaling_matches_the_schema(catalog: Catalog) -> None:
    data = api.plan(_spec(PROFILE), catalog=catalog).to_dict()
    jsonschema.validate(data, report_schema())
    assert data["schema_version"] == "1.4"
    assert len(data["autoscaling"]["hours"]) == 24


def test_output_is_deterministic(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(_spec(PROFILE, batch_rps=2.0)))
    runner = CliRunner()
    for fmt in ("json", "markdown", "table"):
        first = runner.invoke(app, ["plan", str(path), "--format", fmt])
        second = runner.invoke(app, ["plan", str(path), "--format", fmt])
        assert first.exit_code == 0, first.output
        assert first.stdout == second.stdout, fmt
    data = json.loads(runner.invoke(app, ["plan", str(path), "--format", "json"]).stdout)
    assert data["autoscaling"]["autoscaled_cost_usd_day"] == pytest.approx(HAND_DAY + 96.0)
    markdown = runner.invoke(app, ["plan", str(path), "--format", "markdown"]).stdout
    assert "- autoscaling: 194.00 USD/day resized hourly vs 312.00 USD/day" in markdown
    assert "autoscaled USD/h by hour: 0h 4.00, 1h 4.00" in markdown
    assert "autoscaled accelerators by hour: 0h 1," in markdown


def test_recheck_failures_become_warnings(catalog: Catalog) -> None:
    """An hourly plan whose re-check finds a replica past its capacity is reported, with the
    hours it holds for; the peak plan's own hours are not repeated."""
    inputs = resolve_plan(api.load_spec(_spec(PROFILE)), catalog)
    plan = run_plan(inputs, catalog)
    assert build_report(inputs, plan).warnings == []
    hours = list(plan.hours)
    for k in (6, 7):
        bad = [replace(s, load_fraction=1.2) for s in hours[k].served]
        hours[k] = replace(hours[k], served=tuple(bad))
    hours[12] = replace(hours[12], served=tuple(replace(s, load_fraction=1.5)
                                                for s in hours[12].served))
    warnings = build_report(inputs, replace(plan, hours=tuple(hours))).warnings
    assert warnings == ["autoscaling hours 6, 7: a10g: chat loads its replicas to 1.200 of "
                        "capacity"]


def test_model_plan_hours_are_rechecked(catalog: Catalog) -> None:
    """The multi-model example (a profiled MoE workload beside two flat ones): every hour's
    plan carries its load, meets the SLOs in the serving model's re-check, and costs no more
    than the peak plan."""
    inputs = resolve_plan(api.load_spec(REPO / "examples" / "multi-model-fleet.yaml"),
                          catalog)
    plan = run_plan(inputs, catalog)
    assert len(plan.hours) == 24
    for hour in plan.hours:
        assert hour.mix.feasible
        assert hour.check is not None and hour.check.ok()
        assert hour.mix.cost_usd_h <= plan.mix.cost_usd_h + 1e-9
        routed = {s.bucket for s in hour.served}
        assert routed == {b.name for b, d in zip(plan.buckets, hour.demand_rps, strict=True)
                          if d > 0}
        for s in hour.served:
            assert s.slo_ratio <= 1.0 + 1e-6, (hour.hour, s)
            assert s.load_fraction <= 1.0 + 1e-9
    report = build_report(inputs, plan)
    assert not any(w.startswith("autoscaling") for w in report.warnings)
    assert report.autoscaling is not None
    assert report.autoscaling.saving_fraction is not None
    assert report.autoscaling.saving_fraction >= 0.0


def test_plan_hours_checks_the_demand_shape(catalog: Catalog) -> None:
    inputs = resolve_plan(api.load_spec(_spec(PROFILE)), catalog)
    plan = run_plan(inputs, catalog)
    with pytest.raises(ValueError, match="hourly_demand_rps"):
        plan_hours(plan, np.zeros((24, 3)))
