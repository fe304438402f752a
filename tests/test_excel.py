"""The spreadsheet functions as plain Python: a header row and data rows, every error one
cell of text, and a key/value range that plans like the YAML file it restates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fleetplan.plan import api
from fleetplan.plan.excel import (
    CATALOG_COLUMNS,
    ERROR_PREFIX,
    FLEETPLAN_CATALOG,
    FLEETPLAN_ESTIMATE,
    FLEETPLAN_GOODPUT,
    FLEETPLAN_PLAN,
    plan_result,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "chat-70b-mixed-pool.yaml"

# examples/chat-70b-mixed-pool.yaml as a finance user would type it: numbers arrive from
# cells as floats, a header row, a blank line, and the order of keys does not matter.
CHAT_RANGE: list[list[Any]] = [
    ["key", "value"],
    ["workloads.0.name", "chat"],
    ["workloads.0.model", "llama-3.1-70b"],
    ["workloads.0.rate_rps", 20.0],
    ["workloads.0.input_len.dist", "lognormal"],
    ["workloads.0.input_len.mean", 1024.0],
    ["workloads.0.input_len.std", 512.0],
    ["workloads.0.output_len.dist", "lognormal"],
    ["workloads.0.output_len.mean", 256.0],
    ["workloads.0.output_len.std", 128.0],
    ["workloads.0.slo.ttft_p99_s", 1.0],
    ["workloads.0.slo.tpot_p99_s", 0.05],
    [None, None],
    ["pool.1.accelerator", "mi300x"],
    ["pool.1.price_usd_h", 3.5],
    ["pool.0.accelerator", "h100-sxm"],
    ["pool.0.max_count", 64.0],
    ["objective", "cost"],
]

# A measured-capacity spec (no model search: plans in milliseconds) with one option as a
# comma-separated list.
MEASURED_RANGE: list[list[Any]] = [
    ["workloads.0.name", "chat"], ["workloads.0.rate_rps", 40.0],
    ["workloads.0.input_len", 256.0], ["workloads.0.output_len", 128.0],
    ["capacities.0.accelerator", "a10g"], ["capacities.0.input_len", 256.0],
    ["capacities.0.output_len", 128.0], ["capacities.0.max_rps", 2.1],
    ["pool.0.accelerator", "a10g"], ["pool.0.price_usd_h", 1.01],
    ["options.precisions", "bf16, fp8"],
]


def _is_table(table: list[list[Any]]) -> bool:
    width = len(table[0])
    return (len(table) >= 2 and width >= 2 and all(isinstance(h, str) for h in table[0])
            and all(len(row) == width for row in table))


def _error(table: list[list[Any]]) -> str:
    assert len(table) == 1 and len(table[0]) == 1, table
    text = table[0][0]
    assert isinstance(text, str) and text.startswith(ERROR_PREFIX)
    return text


def _metric(table: list[list[Any]], name: str) -> Any:
    return next(row[1] for row in table if row[0] == name)


def test_estimate_table() -> None:
    # Cells send floats; blanks are None.
    table = FLEETPLAN_ESTIMATE("llama-3.1-8b", "h100-sxm", 512.0, 128.0, 8.0, None, 1.0)
    assert _is_table(table) and table[0] == ["metric", "value", "unit"]
    reference = api.estimate("llama-3.1-8b", "h100-sxm", input_len=512, output_len=128,
                             batch=8)
    assert _metric(table, "ttft_s") == reference.ttft_s
    assert _metric(table, "feasible") is True
    loaded = FLEETPLAN_ESTIMATE("llama-3.1-8b", "h100-sxm", "512", 128.0, None, 5.0)
    assert _is_table(loaded) and _metric(loaded, "latency.ttft_s.p99") > 0


def test_goodput_table() -> None:
    table = FLEETPLAN_GOODPUT("llama-3.1-8b", "h100-sxm", 512.0, 128.0, 1.0, 0.05)
    assert _is_table(table)
    assert _metric(table, "goodput_rps") > 0
    assert _metric(table, "slo.tpot_p99_s") == 0.05


@pytest.mark.parametrize("section", sorted(CATALOG_COLUMNS))
def test_catalog_table(section: str) -> None:
    table = FLEETPLAN_CATALOG(section)
    assert _is_table(table) and table[0][0] == "id"
    ids = [row[0] for row in table[1:]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, str) for i in ids)
    assert FLEETPLAN_CATALOG() == FLEETPLAN_CATALOG("accelerators")


def test_plan_views_from_a_path() -> None:
    summary = FLEETPLAN_PLAN(str(EXAMPLE))
    assert _is_table(summary) and _metric(summary, "status") == "optimal"
    allocations = FLEETPLAN_PLAN([[str(EXAMPLE)]], "allocations")
    assert _is_table(allocations) and allocations[-1][0] == "total"
    assert allocations[-1][1] == _metric(summary, "accelerators")
    assert sum(row[1] for row in allocations[1:-1]) == allocations[-1][1]
    workloads = FLEETPLAN_PLAN(str(EXAMPLE), "workloads")
    assert _is_table(workloads) and workloads[1][0] == "chat"


def test_key_value_range_plans_like_the_yaml_file() -> None:
    assert plan_result(CHAT_RANGE).to_dict() == api.plan(EXAMPLE).to_dict()
    for view in ("summary", "allocations", "workloads"):
        assert FLEETPLAN_PLAN(CHAT_RANGE, view) == FLEETPLAN_PLAN(str(EXAMPLE), view)


def test_comma_list_and_restricted_pool() -> None:
    report = plan_result(MEASURED_RANGE).to_dict()
    assert report["inputs"]["options"]["precisions"] == ["bf16", "fp8"]
    assert report["inputs"]["workloads"][0]["input_len"] == 256
    assert FLEETPLAN_PLAN(MEASURED_RANGE, "allocations", " a10g ,")[1][0] == "a10g"
    # The table has no capacity of an A100 for this bucket: alone, it serves none of it.
    assert "0.0% of the demand" in _error(FLEETPLAN_PLAN(MEASURED_RANGE, None,
                                                         "a100-sxm-80gb"))


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: FLEETPLAN_ESTIMATE("llama-3.1-8b", "h100", 512.0, 128.0, 8.0), "h100-sxm"),
    (lambda: FLEETPLAN_ESTIMATE("llama-3.1-8b", "h100-sxm", 512.5, 128.0, 8.0),
     "whole number"),
    (lambda: FLEETPLAN_ESTIMATE("llama-3.1-8b", "h100-sxm", None, 128.0, 8.0), "input_len"),
    (lambda: FLEETPLAN_ESTIMATE("llama-3.1-8b", "h100-sxm", 512.0, "many", 8.0),
     "output_len"),
    (lambda: FLEETPLAN_ESTIMATE(7.0, "h100-sxm", 512.0, 128.0, 8.0), "expected text"),
    (lambda: FLEETPLAN_GOODPUT("llama-3.1-8b", "h100-sxm", 512.0, 128.0), "SLO"),
    (lambda: FLEETPLAN_CATALOG("gpus"), "section"),
    (lambda: FLEETPLAN_PLAN(str(REPO / "no-such-spec.yaml")), "cannot read"),
    (lambda: FLEETPLAN_PLAN(str(EXAMPLE), "costs"), "view"),
    (lambda: FLEETPLAN_PLAN([["workloads.0.rate_rps", -1.0], ["pool.0.accelerator", "a10g"]]),
     "spec range"),
    (lambda: FLEETPLAN_PLAN([["workloads.1.name", "x"], ["pool.0.accelerator", "a10g"]]),
     "workloads.0"),
    (lambda: FLEETPLAN_PLAN([["workloads.0", "x"], ["workloads.0.name", "y"]]), "workloads.0"),
    (lambda: FLEETPLAN_PLAN([[4.0, 1.0], ["pool.0.accelerator", "a10g"]]), "row 1"),
])
def test_errors_are_one_cell_of_text(call: Any, needle: str) -> None:
    assert needle in _error(call())


def test_infeasible_plan_is_one_cell_of_text() -> None:
    scarce = [*MEASURED_RANGE, ["pool.0.max_count", 2.0]]
    text = _error(FLEETPLAN_PLAN(scarce))
    assert "infeasible" in text and "of the demand" in text


def test_module_imports_without_xlwings() -> None:
    code = ("import sys; sys.modules['xlwings'] = None\n"
            "from fleetplan.plan import excel\n"
            "assert excel.xw is None\n"
            "assert not hasattr(excel.FLEETPLAN_CATALOG, '__xlfunc__')\n"
            "print(excel.FLEETPLAN_CATALOG('engines')[0][0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "id"


def test_plan_solves_again_when_its_calibration_file_changes(tmp_path: Path) -> None:
    # Views of one spec share a solved plan; editing a file the spec reads (here its
    # calibration) must not leave the sheet showing the plan of the old file.
    calib = tmp_path / "calib.yaml"
    spec = tmp_path / "spec.yaml"
    assert "options:" not in EXAMPLE.read_text()
    spec.write_text(EXAMPLE.read_text() + "\noptions: {calibration: calib.yaml}\n")
    calib.write_text("source: first\ndefault: {memory: 0.8}\n")
    first = plan_result(str(spec)).to_dict()
    calib.write_text("source: second fit\ndefault: {memory: 0.4}\n")
    second = plan_result(str(spec)).to_dict()
    assert first["assumptions"]["calibration_source"] == "first"
    assert second["assumptions"]["calibration_source"] == "second fit"
