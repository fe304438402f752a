"""Roofline time of an operator: the slower of its compute and its memory traffic, with the
achievable fractions of peak that the calibration sets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hardware.efficiency import Efficiency
from .arrays import ArrayLike, FloatArray, arr
from .transformer import Op


@dataclass(frozen=True)
class OpTime:
    """Seconds: the operator's time and the two limits it is the larger of."""

    time: FloatArray
    compute: FloatArray
    memory: FloatArray

    @property
    def compute_bound(self) -> FloatArray:
        return np.asarray(self.compute >= self.memory, dtype=np.float64)


def compute_efficiency(rows: ArrayLike, eff: Efficiency) -> FloatArray:
    """Fraction of peak a GEMM with `rows` rows reaches: eff.compute for large GEMMs, half
    of it at `gemm_rows_half` rows (few rows leave most of the tensor-core tiles idle)."""
    m = np.maximum(arr(rows), 1.0)
    return eff.compute * m / (m + eff.gemm_rows_half)


def gemm_time(flops: ArrayLike, bytes_moved: ArrayLike, rows: ArrayLike, peak_flops: ArrayLike,
              bandwidth_bytes_s: ArrayLike, eff: Efficiency) -> OpTime:
    """One GEMM-like operator on one memory tier."""
    compute = arr(flops) / (arr(peak_flops) * compute_efficiency(rows, eff))
    memory = arr(bytes_moved) / (arr(bandwidth_bytes_s) * eff.memory)
    return OpTime(np.maximum(compute, memory), compute, memory)


def op_time(op: Op, peak_flops: ArrayLike, eff: Efficiency, weight_s_per_byte: ArrayLike,
            kv_s_per_byte: ArrayLike, act_s_per_byte: ArrayLike) -> OpTime:
    """An operator whose bytes live on different tiers (seconds per byte already include the
    memory efficiency)."""
    compute = op.flops / (arr(peak_flops) * compute_efficiency(op.rows, eff))
    memory = (op.weight_bytes * arr(weight_s_per_byte) + op.kv_bytes * arr(kv_s_per_byte)
              + op.act_bytes * arr(act_s_per_byte))
    if op.grouped:
        compute, memory = compute / eff.moe, memory / eff.moe
    return OpTime(np.maximum(compute, memory), compute, memory)
