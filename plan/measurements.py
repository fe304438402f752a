"""Reads measurement CSV files (the format of shared/calibration/README.md) into typed records;
every problem is a SpecError naming the file, line and column."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..hardware.errors import SpecError
from ..models.measurements import (
    INFERENCE_METRICS,
    SCENARIOS,
    TRAINING_METRICS,
    CustomArch,
    InferenceMeasurement,
    TrainingMeasurement,
)

INFERENCE_COLUMNS = ("id", "model", "accelerator", "num_accelerators", "precision", "tp", "pp",
                     "ep", "scenario", "input_len", "output_len", "batch_size", "request_rate",
                     "concurrency", "metric", "value", "engine")
TRAINING_MARKERS = ("layers", "global_batch", "micro_batch")
TRAINING_COLUMNS = ("id", "model", "layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab",
                    "gated_mlp", "accelerator", "num_accelerators", "precision", "tp", "pp", "dp",
                    "cp", "ep", "vp", "fsdp", "global_batch", "micro_batch", "seq_len", "metric",
                    "value", "engine")


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


def _checked_rows(path: Path, columns: tuple[str, ...]) -> list[_Row]:
    """The file's rows, once its header has every column the format needs."""
    header, rows = _read_rows(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise SpecError(f"missing column(s) {', '.join(missing)}", file=str(path), line=1)
    return [_Row(path, line, raw) for line, raw in rows]


def read_inference(path: Path) -> list[InferenceMeasurement]:
    out = []
    for row in _checked_rows(path, INFERENCE_COLUMNS):
        line = row.line
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


def read_training(path: Path) -> list[TrainingMeasurement]:
    """Rows of a training measurement file (shared/calibration/README.md's format)."""
    out = []
    for row in _checked_rows(path, TRAINING_COLUMNS):
        line = row.line
        metric = row.text("metric")
        if metric not in TRAINING_METRICS:
            raise row.error("metric", f"unknown metric {metric!r}; one of "
                                      f"{', '.join(TRAINING_METRICS)}")
        value = row.number("value")
        if value is None or value <= 0:
            raise row.error("value", "a positive value is required")
        model = row.text("model")
        if not model:
            raise row.error("model", "is required")
        custom = _custom_arch(row) if model == "gpt-custom" else None
        required = {}
        for col in ("num_accelerators", "global_batch", "seq_len"):
            number = row.integer(col)
            if number is None or number < 1:
                raise row.error(col, "a positive integer is required")
            required[col] = number
        out.append(TrainingMeasurement(
            id=row.text("id") or f"line-{line}", model=model, custom=custom,
            accelerator=row.text("accelerator"), num_accelerators=required["num_accelerators"],
            precision=row.text("precision"), tp=_degree(row, "tp"), pp=_degree(row, "pp"),
            dp=_degree(row, "dp"), cp=_degree(row, "cp"), ep=_degree(row, "ep"),
            vp=_degree(row, "vp"), fsdp=row.integer("fsdp"),
            global_batch=required["global_batch"], micro_batch=_degree(row, "micro_batch"),
            seq_len=required["seq_len"], metric=metric, value=value, engine=row.text("engine"),
            line=line))
    return out


def _degree(row: _Row, col: str) -> int | None:
    value = row.integer(col)
    if value is not None and value < 1:
        raise row.error(col, f"must be >= 1, got {value}")
    return value


def _custom_arch(row: _Row) -> CustomArch:
    """The architecture columns of a `gpt-custom` row."""
    values = {}
    for col in ("layers", "hidden", "ffn_hidden", "vocab"):
        number = row.integer(col)
        if number is None or number < 1:
            raise row.error(col, "gpt-custom rows need a positive integer here")
        values[col] = number
    gated = row.text("gated_mlp").lower()
    if gated not in ("", "true", "false"):
        raise row.error("gated_mlp", f"expected true or false, got {gated!r}")
    return CustomArch(layers=values["layers"], hidden=values["hidden"],
                      heads=_degree(row, "heads"), kv_heads=_degree(row, "kv_heads"),
                      ffn_hidden=values["ffn_hidden"], vocab=values["vocab"],
                      gated_mlp=gated == "true")
