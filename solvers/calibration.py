"""Fits efficiency parameters to measurements: least squares on log(predicted / measured).

Each accelerator gets its own four physical parameters (large-GEMM compute efficiency, streaming
memory efficiency, host time per running sequence, grouped expert-GEMM efficiency), pulled
weakly towards the prior so that thin data cannot drag them to unphysical values, under a robust
loss. The shared default for accelerators without data is the median of the fitted ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet, Efficiency
from ..models.measurements import InferenceMeasurement, predict_inference

FITTED = ("compute", "memory", "seq_overhead_s", "moe")
_BOUNDS = {"compute": (0.2, 1.0), "memory": (0.3, 1.0), "seq_overhead_s": (0.0, 200e-6),
           "moe": (0.3, 1.0)}
# Scale of each parameter for the optimiser and for the prior's width (one unit = one
# "reasonable deviation" from the default).
_SCALE = {"compute": 0.15, "memory": 0.10, "seq_overhead_s": 20e-6, "moe": 0.15}
PRIOR_WEIGHT = 0.05
# Log errors beyond about 20% count linearly, not quadratically (soft-L1 loss): a few rows the
# model cannot represent (a benchmark capped by its request count, say) must not drag the
# parameters every other row depends on.
ROBUST_SCALE = 0.2


@dataclass(frozen=True)
class FitReport:
    """What a calibration did: errors before and after, per accelerator and overall."""

    calibration: CalibrationSet
    before: dict[str, float]
    after: dict[str, float]
    rows_used: int
    seconds: float


# A row the candidate parameters cannot predict (say, a rate past the capacity they imply)
# counts as a 300% error, so the residual vector keeps its length and the fit moves away.
_UNPREDICTABLE_LOG_ERROR = math.log(4.0)
# Efficiencies are properties of the hardware and the engine, fitted where the engine runs at
# a known batch; online rows test the queueing model built on top and do not tune it.
FIT_SCENARIOS = ("static", "max_throughput")


def _log_errors(rows: Sequence[InferenceMeasurement], catalog: Catalog,
                calibration: CalibrationSet, *, fixed_length: bool = False) -> np.ndarray:
    out = []
    for m in rows:
        p = predict_inference(m, catalog, calibration)
        if p.value is not None and p.value > 0:
            out.append(math.log(p.value / m.value))
        elif fixed_length:
            out.append(_UNPREDICTABLE_LOG_ERROR)
    return np.asarray(out)


def median_ape(rows: Sequence[InferenceMeasurement], catalog: Catalog,
               calibration: CalibrationSet) -> float:
    errs = _log_errors(rows, catalog, calibration)
    return float(np.median(np.abs(np.expm1(errs)))) if errs.size else float("nan")


def fit(rows: Sequence[InferenceMeasurement], catalog: Catalog, base: CalibrationSet,
        progress: Callable[[str], None] | None = None) -> FitReport:
    """Fit per-accelerator parameters on `rows` (those the model can predict)."""
    start = time.perf_counter()
    usable = [m for m in rows if m.scenario in FIT_SCENARIOS
              and predict_inference(m, catalog, base).value is not None]
    by_acc: dict[str, list[InferenceMeasurement]] = {}
    for m in usable:
        by_acc.setdefault(m.accelerator, []).append(m)
    fitted: dict[str, Efficiency] = {}
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for acc, acc_rows in sorted(by_acc.items()):
        if progress:
            progress(f"fitting {acc} on {len(acc_rows)} rows")
        prior = base.for_device(acc)
        before[acc] = median_ape(acc_rows, catalog, base)
        x0 = np.array([getattr(prior, k) / _SCALE[k] for k in FITTED])
        lo = np.array([_BOUNDS[k][0] / _SCALE[k] for k in FITTED])
        hi = np.array([_BOUNDS[k][1] / _SCALE[k] for k in FITTED])

        def candidate(x: np.ndarray, acc: str = acc, prior: Efficiency = prior) \
                -> CalibrationSet:
            eff = prior.updated({k: float(v * _SCALE[k]) for k, v in zip(FITTED, x,
                                                                         strict=True)})
            return CalibrationSet(base.default, {**base.per_accelerator, acc: eff}, {},
                                  base.source)

        def residuals(x: np.ndarray, acc_rows: list[InferenceMeasurement] = acc_rows,
                      x0: np.ndarray = x0) -> np.ndarray:
            errs = _log_errors(acc_rows, catalog, candidate(x), fixed_length=True)
            return np.concatenate([errs, PRIOR_WEIGHT * math.sqrt(len(errs)) * (x - x0)])

        result = least_squares(residuals, np.clip(x0, lo, hi), bounds=(lo, hi),
                               diff_step=1e-3, x_scale=1.0, max_nfev=60, loss="soft_l1",
                               f_scale=ROBUST_SCALE)
        fitted[acc] = candidate(result.x).per_accelerator[acc]
        after[acc] = median_ape(acc_rows, catalog, candidate(result.x))
    if fitted:
        default = base.default.updated({
            k: float(np.median([getattr(e, k) for e in fitted.values()])) for k in FITTED})
    else:
        default = base.default
    calibration = CalibrationSet(default, dict(sorted(fitted.items())), {},
                                 f"fleetplan calibrate on {len(usable)} rows", base.training)
    before["all"] = median_ape(usable, catalog, base)
    after["all"] = median_ape(usable, catalog, calibration)
    return FitReport(calibration, before, after, len(usable), time.perf_counter() - start)


def cross_validate(rows: Sequence[InferenceMeasurement], catalog: Catalog, base: CalibrationSet,
                   progress: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Leave one accelerator out: fit on the others, predict the held-out one with the fitted
    default (what an accelerator without measurements gets). Per accelerator: the held-out
    median and p90 absolute percentage error, and the in-sample median for comparison."""
    rows = [m for m in rows if m.scenario in FIT_SCENARIOS]
    accelerators = sorted({m.accelerator for m in rows})
    out: dict[str, dict[str, float]] = {}
    full = fit(rows, catalog, base)
    for acc in accelerators:
        if progress:
            progress(f"holding out {acc}")
        train = [m for m in rows if m.accelerator != acc]
        test = [m for m in rows if m.accelerator == acc]
        held = fit(train, catalog, base).calibration
        errs = np.abs(np.expm1(_log_errors(test, catalog, held)))
        out[acc] = {"rows": float(errs.size),
                    "held_out_median_ape": float(np.median(errs)) if errs.size else math.nan,
                    "held_out_p90_ape": float(np.percentile(errs, 90)) if errs.size
                    else math.nan,
                    "in_sample_median_ape": full.after.get(acc, math.nan)}
    return out
