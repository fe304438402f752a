"""Fits the training fractions (GEMM efficiency, expert-GEMM efficiency, communication
overlap) to training measurements: robust least squares on log(predicted / measured).

Three numbers shared by every accelerator, so that hardware without training measurements
gets the same physics. Each row's layout is searched once at the starting parameters, the
fractions are fitted on those layouts, then the layouts are searched again and the fit
repeated, since a layout that is fastest under one set of fractions may not be under another.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet, TrainingEfficiency
from ..models.measurements import TrainingMeasurement
from ..models.training import TrainLayout, TrainSetup, training_step
from .training import describe_layout
from .training_measurements import fastest_for_row, metric_value, row_setup

FITTED = ("gemm", "moe", "overlap")
_LOWER = np.array([0.2, 0.1, 0.0])
_UPPER = np.array([1.0, 1.0, 1.0])
# Log errors beyond about 15% count linearly (soft-L1): one benchmark with a recipe the model
# cannot represent must not drag the fractions every other row depends on.
ROBUST_SCALE = 0.15
ROUNDS = 2


@dataclass(frozen=True)
class TrainingFit:
    training: TrainingEfficiency
    median_ape_before: float
    median_ape_after: float
    rows_used: int
    seconds: float


@dataclass(frozen=True)
class _Case:
    row: TrainingMeasurement
    setup: TrainSetup
    layout: TrainLayout


def _cases(rows: Sequence[TrainingMeasurement], catalog: Catalog,
           calibration: CalibrationSet) -> list[_Case]:
    cases = []
    for m in rows:
        setup = row_setup(m, catalog, calibration)
        if isinstance(setup, str):
            continue
        best, _ = fastest_for_row(setup, m)
        if best.index is None:
            continue
        i = best.index
        one = TrainLayout(*(np.asarray(v) for v in describe_layout(best.layout, i).values()))
        cases.append(_Case(m, setup, one))
    return cases


def _log_errors(cases: Sequence[_Case], training: TrainingEfficiency) -> np.ndarray:
    out = []
    for c in cases:
        step = training_step(replace(c.setup, training=training), c.layout)
        value = metric_value(step, 0, c.row.metric)
        out.append(math.log(value / c.row.value))
    return np.asarray(out)


def _median_ape(errors: np.ndarray) -> float:
    return float(np.median(np.abs(np.exp(errors) - 1.0))) if errors.size else float("nan")


def fit_training(rows: Sequence[TrainingMeasurement], catalog: Catalog,
                 base: CalibrationSet) -> TrainingFit:
    """The training fractions that best predict `rows`, starting from `base.training`."""
    started = time.perf_counter()
    current = base.training
    cases = _cases(rows, catalog, base)
    before = _median_ape(_log_errors(cases, current))
    for _ in range(ROUNDS):
        x0 = np.clip([getattr(current, n) for n in FITTED], _LOWER + 1e-6, _UPPER - 1e-6)

        def residuals(x: np.ndarray, cs: list[_Case] = cases) -> np.ndarray:
            return _log_errors(cs, TrainingEfficiency(**dict(zip(FITTED, x, strict=True))))

        result = least_squares(residuals, x0, bounds=(_LOWER, _UPPER), loss="soft_l1",
                               f_scale=ROBUST_SCALE, diff_step=1e-3)
        current = TrainingEfficiency(**dict(zip(FITTED, map(float, result.x), strict=True)))
        cases = _cases(rows, catalog, replace(base, training=current))
    after = _median_ape(_log_errors(cases, current))
    return TrainingFit(current, before, after, len(cases), time.perf_counter() - started)


def cross_validate_training(rows: Sequence[TrainingMeasurement], catalog: Catalog,
                            base: CalibrationSet) -> dict[str, dict[str, float]]:
    """Leave each accelerator out of the fit in turn and predict its rows: what hardware
    without training measurements should expect. Median and p90 APE per held-out type."""
    out: dict[str, dict[str, float]] = {}
    for acc in sorted({m.accelerator for m in rows}):
        kept = [m for m in rows if m.accelerator != acc]
        held = [m for m in rows if m.accelerator == acc]
        fit = fit_training(kept, catalog, base)
        errors = _log_errors(_cases(held, catalog, replace(base, training=fit.training)),
                             fit.training)
        apes = np.abs(np.exp(errors) - 1.0)
        out[acc] = {"rows": float(len(held)), "median_ape": float(np.median(apes)),
                    "p90_ape": float(np.percentile(apes, 90))}
    return out
