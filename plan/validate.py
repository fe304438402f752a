"""`fleetplan validate`: predict every measurement row and summarise the error."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet
from ..models.measurements import InferenceMeasurement, TrainingMeasurement, predict_inference
from ..solvers.training_measurements import predict_training

GROUPS = ("scenario", "engine", "accelerator", "metric")


def _stats(apes: Sequence[float]) -> dict[str, float | int]:
    a = np.asarray(apes, dtype=float)
    return {"n": int(a.size), "median_ape": float(np.median(a)),
            "p90_ape": float(np.percentile(a, 90)), "mean_ape": float(np.mean(a))}


def _summary(predicted: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Error statistics overall and per value of each grouping key."""
    summary: dict[str, Any] = {}
    if predicted:
        summary["overall"] = _stats([r["ape"] for r in predicted])
        for key in keys:
            groups: dict[str, list[float]] = defaultdict(list)
            for r in predicted:
                groups[str(r[key])].append(r["ape"])
            summary[f"by_{key}"] = {k: _stats(v) for k, v in sorted(groups.items())}
    return summary


def validate_inference(rows: Sequence[InferenceMeasurement], catalog: Catalog,
                       calibration: CalibrationSet) -> dict[str, Any]:
    predicted: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for m in rows:
        p = predict_inference(m, catalog, calibration)
        if p.value is None:
            skipped.append({"id": m.id, "line": m.line, "scenario": m.scenario,
                            "metric": m.metric, "reason": p.reason})
            continue
        predicted.append({"id": m.id, "metric": m.metric, "measured": m.value,
                          "predicted": p.value, "ape": abs(p.value / m.value - 1.0),
                          "signed_error": p.value / m.value - 1.0, "bound": p.bound,
                          "scenario": m.scenario, "engine": m.engine,
                          "accelerator": m.accelerator, "model": m.model})
    summary = _summary(predicted, GROUPS)
    scenarios = sorted({m.scenario for m in rows})
    coverage = {}
    for s in scenarios:
        total = sum(1 for m in rows if m.scenario == s)
        done = sum(1 for r in predicted if r["scenario"] == s)
        coverage[s] = {"rows": total, "predicted": done, "fraction": done / total}
    return {"kind": "inference", "rows": predicted, "skipped": skipped, "summary": summary,
            "coverage": coverage, "calibration_source": calibration.source}


def summary_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["group", "n", "median APE", "p90 APE"]
    body = []
    summary = report["summary"]
    if "overall" in summary:
        o = summary["overall"]
        body.append(["overall", str(o["n"]), f"{o['median_ape']:.1%}", f"{o['p90_ape']:.1%}"])
    for key in TRAINING_GROUPS if report.get("kind") == "training" else GROUPS:
        for name, s in summary.get(f"by_{key}", {}).items():
            body.append([f"{key}={name}", str(s["n"]), f"{s['median_ape']:.1%}",
                         f"{s['p90_ape']:.1%}"])
    body.append(["skipped", str(len(report["skipped"])), "", ""])
    return head, body


TRAINING_GROUPS = ("engine", "accelerator", "metric", "precision")


def validate_training(rows: Sequence[TrainingMeasurement], catalog: Catalog,
                      calibration: CalibrationSet) -> dict[str, Any]:
    """Predict every training row; the layout each prediction used (with the knobs the row
    left unstated and the search chose) is reported beside it."""
    predicted: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    unfit: list[str] = []
    for m in rows:
        p = predict_training(m, catalog, calibration)
        if p.value is None:
            skipped.append({"id": m.id, "line": m.line, "metric": m.metric, "reason": p.reason})
            if p.fits is False:
                unfit.append(m.id)
            continue
        predicted.append({"id": m.id, "metric": m.metric, "measured": m.value,
                          "predicted": p.value, "ape": abs(p.value / m.value - 1.0),
                          "signed_error": p.value / m.value - 1.0, "bound": p.bound,
                          "engine": m.engine, "accelerator": m.accelerator,
                          "precision": m.precision, "model": m.model, "layout": p.layout,
                          "searched": list(p.searched)})
    summary = _summary(predicted, TRAINING_GROUPS)
    return {"kind": "training", "rows": predicted, "skipped": skipped, "summary": summary,
            "fit_check": {"rows": len(rows), "fit": len(rows) - len(unfit),
                          "do_not_fit": unfit},
            "calibration_source": calibration.source,
            "training_calibration": calibration.training.as_dict()}
