"""Reads a request trace: a CSV with `arrival_s`, `input_len`, `output_len` per request."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hardware.errors import SpecError
from ..models.arrays import FloatArray

TRACE_COLUMNS = ("arrival_s", "input_len", "output_len")


@dataclass(frozen=True)
class Trace:
    """Requests in arrival order: times in seconds, lengths in tokens."""

    arrival_s: FloatArray
    input_len: np.ndarray
    output_len: np.ndarray

    @property
    def rate_rps(self) -> float:
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return (len(self.arrival_s) - 1) / span if span > 0 else float("inf")

    @property
    def arrival_cv(self) -> float:
        gaps = np.diff(self.arrival_s)
        mean = float(np.mean(gaps)) if gaps.size else 0.0
        return float(np.std(gaps) / mean) if mean > 0 else 1.0


def read_trace(path: Path) -> Trace:
    """Parse and check a trace; every problem names the file, line and column."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            missing = [c for c in TRACE_COLUMNS if c not in header]
            if missing:
                raise SpecError(f"missing column(s) {', '.join(missing)}", file=str(path),
                                line=1)
            times: list[float] = []
            ins: list[int] = []
            outs: list[int] = []
            for row in reader:
                line = reader.line_num
                values = []
                for col in TRACE_COLUMNS:
                    raw = (row.get(col) or "").strip()
                    try:
                        value = float(raw)
                    except ValueError:
                        raise SpecError(f"expected a number, got {raw!r}", file=str(path),
                                        line=line, field=col) from None
                    is_time = col == "arrival_s"
                    if not math.isfinite(value) or value < 0 or \
                            (not is_time and (value < 1 or not value.is_integer())):
                        wanted = "a time >= 0" if is_time else "an integer >= 1"
                        raise SpecError(f"expected {wanted}, got {raw!r}", file=str(path),
                                        line=line, field=col)
                    values.append(value)
                if times and values[0] < times[-1]:
                    raise SpecError("arrivals must not go back in time", file=str(path),
                                    line=line, field="arrival_s")
                times.append(values[0])
                ins.append(int(values[1]))
                outs.append(int(values[2]))
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror}", file=str(path)) from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise SpecError(f"not a readable CSV file: {err}", file=str(path)) from None
    if len(times) < 2:
        raise SpecError("needs at least two requests", file=str(path))
    return Trace(np.asarray(times), np.asarray(ins, dtype=np.int64),
                 np.asarray(outs, dtype=np.int64))
