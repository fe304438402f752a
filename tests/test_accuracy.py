"""Accuracy against public measurements, with shipped defaults; a drift past the recorded
figures fails. (Issue target: median <= 12%, p90 <= 30% on static and max_throughput rows.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from fleetplan.hardware import Catalog
from fleetplan.hardware.efficiency import CalibrationSet, parse_calibration
from fleetplan.plan.measurements import read_inference
from fleetplan.plan.validate import validate_inference
from fleetplan.solvers.calibration import fit, median_ape

# Recorded with `fleetplan validate catalog/calibration/inference.csv` (see README): 9.7%
# median and 28.0% p90. The bounds below leave a small margin for numerical noise only.
MEDIAN_APE_MAX = 0.100
P90_APE_MAX = 0.288
COVERAGE_MIN = 0.95


@pytest.fixture(scope="module")
def report(catalog: Catalog, inference_csv: Path) -> dict[str, object]:
    return validate_inference(read_inference(inference_csv), catalog, catalog.calibration)


def test_static_and_max_throughput_coverage(report: dict[str, object]) -> None:
    coverage = report["coverage"]
    assert isinstance(coverage, dict)
    for scenario in ("static", "max_throughput"):
        assert coverage[scenario]["fraction"] >= COVERAGE_MIN, coverage[scenario]


def test_error_within_recorded_bounds(report: dict[str, object]) -> None:
    rows = [r for r in report["rows"]  # type: ignore[attr-defined]
            if r["scenario"] in ("static", "max_throughput")]
    ape = np.array([r["ape"] for r in rows])
    assert float(np.median(ape)) <= MEDIAN_APE_MAX
    assert float(np.percentile(ape, 90)) <= P90_APE_MAX


# Online rows (TensorRT-LLM 0.14 behind Triton, Poisson arrivals; out of the fit): recorded 14.1%
# median APE on mean TTFT and 8.0% on mean ITL (the target is 25% and 15%).
ONLINE_TTFT_MEDIAN_MAX = 0.148
ONLINE_ITL_MEDIAN_MAX = 0.087


def test_online_error_within_recorded_bounds(report: dict[str, object]) -> None:
    rows = [r for r in report["rows"]  # type: ignore[attr-defined]
            if r["scenario"] == "online"]
    assert len(rows) >= 60
    ttft = [r["ape"] for r in rows if r["metric"] == "ttft_s"]
    itl = [r["ape"] for r in rows if r["metric"] == "itl_s"]
    assert float(np.median(ttft)) <= ONLINE_TTFT_MEDIAN_MAX
    assert float(np.median(itl)) <= ONLINE_ITL_MEDIAN_MAX


def test_skipped_rows_say_why(report: dict[str, object]) -> None:
    skipped = report["skipped"]
    assert isinstance(skipped, list)
    assert all(s["reason"] for s in skipped)


def test_fit_recovers_from_bad_parameters(catalog: Catalog, inference_csv: Path) -> None:
    rows = [m for m in read_inference(inference_csv) if m.accelerator == "l40s"]
    bad = parse_calibration({"default": {"compute": 0.25, "memory": 0.35}}, "test")
    bad = CalibrationSet(bad.default, {}, {}, "deliberately wrong")
    start = median_ape(rows, catalog, bad)
    result = fit(rows, catalog, bad)
    assert start > 0.3
    assert result.after["l40s"] < 0.2 < start
    fitted = result.calibration.per_accelerator["l40s"]
    assert 0.3 < fitted.memory <= 1.0 and 0.2 < fitted.compute <= 1.0


def test_calibration_file_round_trips(catalog: Catalog, tmp_path: Path) -> None:
    text = yaml.safe_dump(catalog.calibration.to_mapping(), sort_keys=True)
    again = parse_calibration(yaml.safe_load(text), "round-trip")
    for acc, eff in catalog.calibration.per_accelerator.items():
        assert again.for_device(acc) == eff
    assert again.default == catalog.calibration.default


def test_shipped_defaults_are_reproducible(catalog: Catalog, inference_csv: Path) -> None:
    # The README's command, `fleetplan calibrate catalog/calibration/inference.csv -o
    # catalog/calibration/default.yaml`, must give back the shipped parameters: the fit starts
    # from the physical priors, uses the static and max_throughput rows, and online rows (in
    # the same file) neither crash it nor move it.
    from fleetplan.hardware.efficiency import Efficiency

    rows = read_inference(inference_csv)
    assert any(m.scenario == "online" for m in rows)
    report = fit(rows, catalog, CalibrationSet(Efficiency(), {}, {}, "physical defaults"))
    shipped = catalog.calibration
    for acc, eff in report.calibration.per_accelerator.items():
        for name, value in eff.as_dict().items():
            assert value == pytest.approx(getattr(shipped.for_device(acc), name), rel=1e-6), \
                (acc, name)
