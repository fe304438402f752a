"""Units: the one place where decimal and binary prefixes are named, and where quantity strings
from the catalog ("3.35 TB/s", "80 GiB", "700 W") become SI floats."""

from __future__ import annotations

import math
import re
from typing import Final

KB: Final = 1e3
MB: Final = 1e6
GB: Final = 1e9
TB: Final = 1e12
KiB: Final = 2.0**10
MiB: Final = 2.0**20
GiB: Final = 2.0**30
TiB: Final = 2.0**40

TERA: Final = 1e12
GIGA: Final = 1e9

# Each dimension maps a unit spelling to its factor to the SI base unit of that dimension:
# bytes, FLOP/s (operations per second count as FLOP/s), bytes/s, W, s, J.
_UNITS: Final[dict[str, dict[str, float]]] = {
    "bytes": {
        "B": 1.0, "KB": KB, "MB": MB, "GB": GB, "TB": TB,
        "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
    },
    "flops": {
        "FLOPS": 1.0, "GFLOPS": 1e9, "TFLOPS": 1e12, "PFLOPS": 1e15,
        "OPS": 1.0, "GOPS": 1e9, "TOPS": 1e12, "POPS": 1e15,
    },
    "bandwidth": {
        "B/s": 1.0, "KB/s": KB, "MB/s": MB, "GB/s": GB, "TB/s": TB,
        "KiB/s": KiB, "MiB/s": MiB, "GiB/s": GiB,
        "Mb/s": 1e6 / 8, "Gb/s": 1e9 / 8, "Tb/s": 1e12 / 8,
    },
    "power": {"W": 1.0, "mW": 1e-3, "kW": 1e3},
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "energy": {"J": 1.0, "mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9, "pJ": 1e-12, "fJ": 1e-15},
    "frequency": {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9},
}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z/]+)\s*$")


class UnitError(ValueError):
    """A quantity string that does not parse, or whose unit is not of the expected dimension."""


def dimensions() -> tuple[str, ...]:
    """Names of the dimensions `parse_quantity` understands."""
    return tuple(_UNITS)


def units_of(dimension: str) -> tuple[str, ...]:
    """Unit spellings accepted for one dimension."""
    return tuple(_UNITS[dimension])


def parse_quantity(text: object, dimension: str) -> float:
    """Parse "3.35 TB/s" into 3.35e12 (bytes/s). Raises UnitError on anything else.

    Bare numbers are refused: a catalog number without a unit is the GB/GiB confusion waiting
    to happen.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        raise UnitError(f"expected a quantity like '1.5 {units_of(dimension)[0]}', got {text!r}")
    match = _QUANTITY.match(text)
    if match is None:
        raise UnitError(f"expected '<number> <unit>', got {text!r}")
    number, unit = match.groups()
    factors = _UNITS[dimension]
    if unit not in factors:
        raise UnitError(f"unit {unit!r} is not a {dimension} unit (one of {', '.join(factors)})")
    value = float(number) * factors[unit]
    if not math.isfinite(value) or value < 0:
        raise UnitError(f"must be a finite, non-negative quantity, got {text!r}")
    return value
