"""Quantity parsing: decimal and binary prefixes are never confused; bad units are refused."""

from __future__ import annotations

import pytest
from fleetplan.hardware.units import GB, GiB, UnitError, parse_quantity


def test_prefixes() -> None:
    assert parse_quantity("80 GiB", "bytes") == 80 * 2**30
    assert parse_quantity("80 GB", "bytes") == 80e9
    assert parse_quantity("3.35 TB/s", "bandwidth") == 3.35e12
    assert parse_quantity("400 Gb/s", "bandwidth") == 50e9  # bits, not bytes
    assert parse_quantity("989.4 TFLOPS", "flops") == pytest.approx(989.4e12)
    assert parse_quantity("14 pJ", "energy") == pytest.approx(14e-12)
    assert GiB / GB == pytest.approx(1.073741824)


@pytest.mark.parametrize(("text", "dimension"), [("80", "bytes"), ("80 GB/s", "bytes"),
                                                 ("fast", "bandwidth"), ("-1 W", "power"),
                                                 ("1 TFLOPs", "flops")])
def test_refused(text: str, dimension: str) -> None:
    with pytest.raises(UnitError):
        parse_quantity(text, dimension)
