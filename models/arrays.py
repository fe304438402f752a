"""Shared array conventions: every model input broadcasts; outputs are float64 arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ArrayLike = Any  # a scalar or anything numpy broadcasts


def arr(value: ArrayLike) -> FloatArray:
    """As a float64 array (no copy when already one)."""
    return np.asarray(value, dtype=np.float64)
