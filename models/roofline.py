"""Roofline time of an operator from its compute and its memory traffic, with the achievable
fractions of peak that the calibration sets.

A streaming kernel (attention over the KV cache, element-wise work) takes the slower of the
two: its loads and math pipeline. A GEMM against weights does not reach that roofline near the
ridge point: its tiles load the weights, then multiply, and with as much of either to do
neither hides the other (the pipeline's depth and registers limit the overlap), so it falls
short of the roofline there and approaches it only where one term dominates. The model blends
the two terms with an exponent, t = (c^k + m^k)^(1/k): k = 1 adds them (half the roofline's
rate at the ridge, exact at both ends), a large k is the plain roofline. The math counted is
that of the GEMM's real rows; the idle rows of a padded tile (few-row GEMMs) only stretch the
math pipeline, so the time is never less than that padded math alone.

k = 1 is what the public measurements choose. Refitted with it, the offline errors on the
calibration rows go from 10.4% median / 31.6% p90 (plain roofline) to 9.7% / 28.0%, and the
online mean TTFT and ITL medians from 17.6% / 12.9% to 14.1% / 8.0% (without the padding rule,
k = 2 and 1.5 gave p90s of 30.2% and 28.4%). The fitted streaming efficiencies become physical:
0.71-0.76 of peak memory bandwidth on B200 and GB200 and 0.82-0.88 elsewhere, where the plain
roofline needed 0.54 on B200. Attention stays on the roofline: adding its terms too fitted
worse.
"""

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


GEMM_BLEND = 1.0
"""Exponent k that blends a GEMM's compute and weight-streaming times (module docstring)."""


def blend(compute: FloatArray, memory: FloatArray, padded: FloatArray,
          k: float = GEMM_BLEND) -> FloatArray:
    """(c^k + m^k)^(1/k) of the math on the GEMM's real rows and its loads, but never less
    than the math of its padded tiles (`padded`, s): a GEMM with few rows fills a tile with
    idle rows, which stretch the math pipeline without adding loads to wait for."""
    hi = np.maximum(compute, memory)
    lo = np.minimum(compute, memory)
    mixed = hi + lo if k == 1.0 else hi * (1.0 + (lo / np.maximum(hi, 1e-300)) ** k) ** (1.0 / k)
    return arr(np.maximum(mixed, padded))


def gemm_time(flops: ArrayLike, bytes_moved: ArrayLike, rows: ArrayLike, peak_flops: ArrayLike,
              bandwidth_bytes_s: ArrayLike, eff: Efficiency) -> OpTime:
    """One GEMM against weights on one memory tier."""
    compute = arr(flops) / (arr(peak_flops) * compute_efficiency(rows, eff))
    memory = arr(bytes_moved) / (arr(bandwidth_bytes_s) * eff.memory)
    real = arr(flops) / (arr(peak_flops) * eff.compute)
    return OpTime(blend(real, memory, compute), compute, memory)


def op_time(op: Op, peak_flops: ArrayLike, eff: Efficiency, weight_s_per_byte: ArrayLike,
            kv_s_per_byte: ArrayLike, act_s_per_byte: ArrayLike, *,
            streamed: bool = True) -> OpTime:
    """An operator whose bytes live on different tiers (seconds per byte already include the
    memory efficiency): blended where it is a GEMM against weights streamed into a compute
    pipeline, the roofline otherwise (compute-in-memory arrays, `streamed` False, multiply
    where the weights are read)."""
    peak = arr(peak_flops)
    return op_time_at(op, peak, peak * eff.compute, eff, arr(weight_s_per_byte),
                      arr(kv_s_per_byte), arr(act_s_per_byte), streamed=streamed)


def op_time_at(op: Op, peak: FloatArray, real_peak: FloatArray, eff: Efficiency,
               weight_s_per_byte: FloatArray, kv_s_per_byte: FloatArray,
               act_s_per_byte: FloatArray, *, streamed: bool = True) -> OpTime:
    """`op_time` with its inputs already float64 arrays and `real_peak` (peak * eff.compute)
    worked out, for callers that price many operators on one replica."""
    compute = op.flops / (peak * compute_efficiency(op.rows, eff))
    memory = (op.weight_bytes * weight_s_per_byte + op.kv_bytes * kv_s_per_byte
              + op.act_bytes * act_s_per_byte)
    if op.grouped:
        compute, memory = compute / eff.moe, memory / eff.moe
    if not (op.weight_format_math and streamed):
        return OpTime(arr(np.maximum(compute, memory)), compute, memory)
    # The math on the real rows only enters the blend (the roofline above does without it).
    real = op.flops / real_peak
    if op.grouped:
        real = real / eff.moe
    return OpTime(arr(blend(real, memory, compute)), compute, memory)
