"""Reads measurement CSV files (the format of shared/calibration/README.md) into typed records;
every problem is a SpecError naming the file, line and column."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..hardware.errors import SpecError
from ..models.measurements import INFERENCE_METRICS, SCENARIOS, InferenceMeasurement

INFERENCE_COLUMNS = ("id", "model", "accelerator", "num_accelerators", "precision", "tp", "pp",
                     "ep", "scenario", "input_len", "output_len", "batch_size", "request_rate",
                     "concurrency", "metric", "value", "engine")
TRAINING_MARKERS = ("layers", "global_batch", "micro_batch")


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [(reader.line_num, dict(row)) for row in reader]
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror}", file=str(path)) from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise SpecError(f"not a readable CSV file: {err}", file=str(path)) from None
    return header, rows


def kind_of(path: Path) -> str:
    """'inference' or 'training', from the header."""
    header, _ = _read_rows(path)
    if all(col in header for col in TRAINING_MARKERS):
        return "training"
    return "inference"


def read_inference(path: Path) -> list[InferenceMeasurement]:
    header, rows = _read_rows(path)
    missing = [c for c in INFERENCE_COLUMNS if c not in header]
    if missing:
        raise SpecError(f"missing column(s) {', '.join(missing)}", file=str(path), line=1)
    out = []
    for line, row in rows:
        def text(col: str, row: dict[str, str] = row) -> str:
            return (row.get(col) or "").strip()

        def integer(col: str, default: int | None = None, *, line: int = line,
                    text: object = text) -> int | None:
            raw = text(col)  # type: ignore[operator]
            if raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SpecError(f"expected an integer, got {raw!r}", file=str(path), line=line,
                                field=col) from None
            if not value.is_integer() or value < 0:
                raise SpecError(f"expected a non-negative integer, got {raw!r}", file=str(path),
                                line=line, field=col)
            return int(value)

        def number(col: str, *, line: int = line, text: object = text) -> float | None:
            raw = text(col)  # type: ignore[operator]
            if raw == "":
                return None
            try:
                value = float(raw)
            except ValueError:
                raise SpecError(f"expected a number, got {raw!r}", file=str(path), line=line,
                                field=col) from None
            if not math.isfinite(value) or value < 0:
                raise SpecError(f"expected a finite non-negative number, got {raw!r}",
                                file=str(path), line=line, field=col)
            return value

        scenario = text("scenario")
        if scenario not in SCENARIOS:
            raise SpecError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}",
                            file=str(path), line=line, field="scenario")
        metric = text("metric")
        if metric not in INFERENCE_METRICS:
            raise SpecError(f"unknown metric {metric!r}", file=str(path), line=line,
                            field="metric")
        value = number("value")
        if value is None:
            raise SpecError("is required", file=str(path), line=line, field="value")
        tp = integer("tp", 1) or 1
        pp = integer("pp", 1) or 1
        out.append(InferenceMeasurement(
            id=text("id") or f"line-{line}", model=text("model"),
            accelerator=text("accelerator"),
            num_accelerators=integer("num_accelerators", tp * pp) or tp * pp,
            precision=text("precision"), tp=tp, pp=pp, ep=integer("ep", 1) or 1,
            scenario=scenario, input_len=integer("input_len"), output_len=integer("output_len"),
            batch_size=integer("batch_size"), request_rate=number("request_rate"),
            concurrency=integer("concurrency"), metric=metric, value=value,
            engine=text("engine"), line=line))
    return out
