"""A fast step-cost oracle for simulation: the roofline step time tabulated once over a grid of
(running sequences, prompt tokens in the step, mean context) in one vectorised call, then read
by trilinear interpolation in log-spaced coordinates (a few microseconds a call)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from .arrays import FloatArray
from .inference import Replica, SpecDecode, draft_cost, step_time
from .transformer import StepShape


def _axis(top: float, points: int) -> FloatArray:
    """0, then log-spaced points up to `top`."""
    top = max(top, 2.0)
    return np.concatenate([[0.0], np.geomspace(1.0, top, points - 1)])


@dataclass(frozen=True)
class StepTable:
    """Step time (s) of one replica configuration as a function of the step's contents."""

    seqs: tuple[float, ...]
    prefill: tuple[float, ...]
    ctx: tuple[float, ...]
    table: FloatArray

    @classmethod
    def build(cls, rep: Replica, *, max_seqs: float, max_prefill: float, max_ctx: float,
              points: int = 14, spec: SpecDecode | None = None) -> StepTable:
        """Tabulate a scalar replica (one candidate) up to the given limits. With speculative
        decoding each running sequence verifies 1 + draft_len tokens a step, and the draft's
        own steps are added."""
        s_ax, p_ax = _axis(max_seqs, points), _axis(max_prefill, points)
        c_ax = _axis(max_ctx, points)[1:]
        s, p, c = np.meshgrid(s_ax, p_ax, c_ax, indexing="ij")
        pp = float(np.asarray(rep.par.pp).max())
        k = 0 if spec is None else spec.draft_len
        shape = StepShape.of(decode_seqs=s / pp, decode_ctx=c, prefill_tokens=p / pp,
                             prefill_ctx=np.minimum(c, p) / 2.0,
                             prefill_seqs=np.where(p > 0, 1.0, 0.0) / pp,
                             decode_tokens_per_seq=1.0 + k)
        times = np.broadcast_to(step_time(rep, shape).time, s.shape).copy()
        if spec is not None and k:
            times = times + np.where(s > 0, draft_cost(rep, spec, s / pp, c)[0], 0.0)
        return cls(tuple(s_ax), tuple(p_ax), tuple(c_ax), times)

    def __call__(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        ctx = context_tokens / decode_seqs if decode_seqs else self.ctx[0]
        i, fi = _locate(self.seqs, float(decode_seqs))
        j, fj = _locate(self.prefill, float(prefill_tokens))
        k, fk = _locate(self.ctx, ctx)
        t = self.table
        c00 = t[i, j, k] * (1 - fk) + t[i, j, k + 1] * fk
        c01 = t[i, j + 1, k] * (1 - fk) + t[i, j + 1, k + 1] * fk
        c10 = t[i + 1, j, k] * (1 - fk) + t[i + 1, j, k + 1] * fk
        c11 = t[i + 1, j + 1, k] * (1 - fk) + t[i + 1, j + 1, k + 1] * fk
        return float((c00 * (1 - fj) + c01 * fj) * (1 - fi) + (c10 * (1 - fj) + c11 * fj) * fi)


def _locate(axis: tuple[float, ...], x: float) -> tuple[int, float]:
    """Cell index and fraction along it; past the ends the nearest cell extrapolates linearly."""
    n = len(axis)
    i = min(max(bisect.bisect_right(axis, x) - 1, 0), n - 2)
    lo, hi = axis[i], axis[i + 1]
    return i, (x - lo) / (hi - lo)
