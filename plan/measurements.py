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


class _Row:
    """One CSV row with typed, located reads."""

    def __init__(self, path: Path, line: int, row: dict[str, str]) -> None:
        self.path, self.line, self.row = path, line, row

    def error(self, col: str, message: str) -> SpecError:
        return SpecError(message, file=str(self.path), line=self.line, field=col)

    def text(self, col: str) -> str:
        return (self.row.get(col) or "").strip()

    def number(self, col: str) -> float | None:
        """A finite non-negative number, or None when the cell is empty."""
        raw = self.text(col)
        if raw == "":
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.error(col, f"expected a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise self.error(col, f"expected a finite non-negative number, got {raw!r}")
        return value

    def integer(self, col: str) -> int | None:
        value = self.number(col)
        if value is not None and not value.is_integer():
            raise self.error(col, f"expected an integer, got {self.text(col)!r}")
        return None if value is None else int(value)


def read_inference(path: Path) -> list[InferenceMeasurement]:
    header, rows = _read_rows(path)
    missing = [c for c in INFERENCE_COLUMNS if c not in header]
    if missing:
        raise SpecError(f"missing column(s) {', '.join(missing)}", file=str(path), line=1)
    out = []
    for line, raw in rows:
        row = _Row(path, line, raw)
        scenario = row.text("scenario")
        if scenario not in SCENARIOS:
            raise row.error("scenario", f"must be one of {', '.join(SCENARIOS)}, "
                                        f"got {scenario!r}")
        metric = row.text("metric")
        if metric not in INFERENCE_METRICS:
            raise row.error("metric", f"unknown metric {metric!r}")
        value = row.number("value")
        if value is None:
            raise row.error("value", "is required")
        tp = row.integer("tp") or 1
        pp = row.integer("pp") or 1
        out.append(InferenceMeasurement(
            id=row.text("id") or f"line-{line}", model=row.text("model"),
            accelerator=row.text("accelerator"),
            num_accelerators=row.integer("num_accelerators") or tp * pp,
            precision=row.text("precision"), tp=tp, pp=pp, ep=row.integer("ep") or 1,
            scenario=scenario, input_len=row.integer("input_len"),
            output_len=row.integer("output_len"), batch_size=row.integer("batch_size"),
            request_rate=row.number("request_rate"), concurrency=row.integer("concurrency"),
            metric=metric, value=value, engine=row.text("engine"), line=line))
    return out
