"""Prefill/decode disaggregation: a prefill pool and a decode pool joined by a KV transfer.

Prompts queue for `n_prefill` prefill replicas (M/G/c on whole prompts, Erlang C with the
Allen-Cunneen correction); the prefill replica emits the first token, then ships the prompt's KV
cache over the link between the pools; `n_decode` decode replicas run decode-only steps, so no
prompt chunk ever lands in a decode step (the interference that chunked prefill only bounds).
The ratio of the pools is the knob: too few prefill replicas and TTFT queues, too few decode
replicas and the batch (and TPOT) grows.

`serve_disaggregated` prices a request rate; `goodput_disaggregated` finds the highest rate the
two pools carry within a latency objective, vectorised over candidates like
`queueing.goodput`. What does not depend on the rate (the prefill service time, the KV transfer,
the decode slots and the pools' capacities) is evaluated once (`Pools`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .inference import Replica, micro_batch, step_time
from .queueing import (
    QUANTILES,
    LoadResult,
    Percentiles,
    Slo,
    Workload,
    erlang_c,
    quantile_name,
    slo_slack,
)
from .special import ndtri
from .transformer import StepShape

# The decode batch is the root of b = rate x steps x tau(b) (Little's law), bracketed by 0 and
# the slots; regula falsi (Illinois) runs until the bracket is this narrow relative to the
# slots, or for at most this many steps.
_ROOT_TOLERANCE = 1e-12
_ROOT_STEPS = 60
# `goodput_disaggregated` tries 2**_GRID_DEPTH - 1 rates per pass (a pass does the work of this
# many bisection steps; the answer is the one bisection would give on a monotone objective).
_GRID_DEPTH = 4


@dataclass(frozen=True)
class KvLink:
    """The path KV caches take from a prefill to a decode replica: bytes/s one way (over all
    the lanes that carry one cache at once), seconds. Fields broadcast against candidates."""

    bandwidth_bytes_s: float | FloatArray
    latency_s: float | FloatArray
    efficiency: float = 0.8


@dataclass(frozen=True)
class Pools:
    """Two pools serving one request shape: what does not depend on the rate, evaluated once
    (`of`), and the latencies at a rate (`at`)."""

    prefill: Replica
    decode: Replica
    load: Workload
    n_p: FloatArray
    n_d: FloatArray
    s_p: FloatArray
    """Time between prompts a prefill replica finishes when busy (s): its prompt latency over
    its pipeline depth, as it keeps one prompt in each stage."""
    t_p: FloatArray
    """Time one prompt takes through a prefill replica (s): its chunks one after another,
    each through every pipeline stage."""
    t_at: FloatArray
    """(percentiles, ...): `t_p` of the prompt at each of `QUANTILES` (s)."""
    budget: FloatArray
    chunks: FloatArray
    i: FloatArray
    """Prompt tokens to compute (after the prefix cache)."""
    transfer: FloatArray
    """KV transfer of one prompt (s)."""
    steps: FloatArray
    """Decode steps of a mean request (the first token comes from prefill)."""
    ctx: FloatArray
    slots: FloatArray
    cap_p: FloatArray
    cap_d: FloatArray
    """Requests/s the prefill and the decode pool sustain."""
    fits: BoolArray
    capacity: FloatArray

    @classmethod
    def of(cls, prefill: Replica, decode: Replica, load: Workload, *, n_prefill: ArrayLike,
           n_decode: ArrayLike, link: KvLink, max_batch: ArrayLike | None,
           token_budget: ArrayLike | None) -> Pools:
        n_p, n_d = arr(n_prefill), arr(n_decode)
        i = np.maximum(load.input_len.mean * (1.0 - load.prefix_hit), 1.0)
        o = load.output_len
        ctx = load.input_len.mean + o.mean / 2.0
        engine = prefill.device.engine

        # Prefill pool: each prompt runs alone, chunked to the token budget. A pipeline of pp
        # stages passes a chunk through them one after another (engines pipeline requests,
        # not the tokens of one prompt), and holds one prompt per stage while prompts queue:
        # a prompt takes t_p, and one finishes every t_p / pp.
        budget = arr(engine.max_tokens_per_step if token_budget is None else token_budget)
        chunks = np.ceil(i / budget)
        t_p = prompt_time(prefill, i, budget)
        t_at = np.stack(np.broadcast_arrays(*(prompt_time(
            prefill, np.maximum(load.input_len.quantile(q) * (1.0 - load.prefix_hit), 1.0),
            budget) for q in QUANTILES.values())))
        s_p = t_p / prefill.par.pp

        # KV transfer: the whole prompt's cache, each KV value once (heads replicated across
        # TP ranks are sent to each rank from its peer, not across the link).
        kv_bytes = load.input_len.mean * decode.arch.kv_values_per_token * decode.fmt.kv_bytes
        transfer = arr(link.latency_s + kv_bytes / (arr(link.bandwidth_bytes_s)
                                                    * link.efficiency))

        # Decode pool: decode-only steps, as many sequences as the batch limit and the KV cache
        # allow.
        steps = np.maximum(o.mean - 1.0, 0.0)
        kv_per_seq = load.input_len.mean + o.mean
        # The batch limit holds per micro-batch, pp of them in flight (see `queueing._Server`).
        limit = arr(decode.device.engine.max_batch if max_batch is None else max_batch) \
            * decode.par.pp
        slots = np.maximum(np.minimum(limit, np.floor(decode.memory.kv_capacity_tokens
                                                      / kv_per_seq)), 1.0)
        cap_p = n_p / s_p
        cap_d = slots / (np.maximum(steps, 1.0) * decode_step(decode, slots, ctx)) * n_d
        fits = np.asarray(prefill.memory.fits & decode.memory.fits, dtype=bool)
        capacity = np.where(fits, np.minimum(cap_p, cap_d), 0.0)
        return cls(prefill, decode, load, n_p, n_d, s_p, t_p, arr(t_at), budget, chunks, i,
                   transfer, steps,
                   ctx, slots, cap_p, cap_d, fits, capacity)

    def tau(self, b: FloatArray) -> FloatArray:
        """Time of one decode-only step with `b` sequences (s)."""
        return decode_step(self.decode, b, self.ctx)

    def at(self, rate_rps: ArrayLike) -> LoadResult:
        """Latencies at `rate_rps` over both pools (broadcasts against the candidates)."""
        load = self.load
        lam = np.maximum(arr(rate_rps), 1e-12)
        n_p, n_d, s_p = self.n_p, self.n_d, self.s_p
        o = load.output_len
        offered_p = lam * s_p
        p_wait = erlang_c(n_p, np.minimum(offered_p, n_p * (1 - 1e-9)))
        variability = (load.arrival_cv**2 + load.input_len.cv**2) / 2.0
        wait_mean = p_wait * s_p / np.maximum(n_p - offered_p, 1e-9) * variability
        stable = np.asarray((lam < self.capacity) & (offered_p < n_p) & self.fits, dtype=bool)

        # The decode batch: the root of b = rate x steps x tau(b) below the slots.
        steps, slots = self.steps, self.slots
        lam_eff = np.minimum(lam / n_d, self.cap_d / n_d * (1 - 1e-6))
        b = _batch(lambda x: lam_eff * steps * self.tau(np.maximum(x, 1.0)), slots,
                   np.broadcast_shapes(lam_eff.shape, slots.shape, steps.shape))
        seen = np.minimum(b + 1.0, slots)
        tpot_mean = self.tau(seen)
        db = np.maximum(np.sqrt(b), 1.0)
        low = np.maximum(seen - db, 1.0)
        slope = (self.tau(seen + db) - self.tau(low)) / (seen + db - low)
        drift = np.abs(slope) * np.sqrt((2.0 / 3.0) * b)
        tpot = Percentiles(tpot_mean, *(tpot_mean + ndtri(q) * drift
                                        for q in QUANTILES.values()))
        def ttft_q(k: int, q: float) -> FloatArray:
            cond = wait_mean / np.clip(p_wait, 1e-12, 1.0)
            w = np.where(q <= 1.0 - p_wait, 0.0,
                         cond * np.log(np.clip(p_wait, 1e-12, 1.0) / max(1.0 - q, 1e-12)))
            # The wait's percentile plus the prompt's own at that percentile (both tails
            # stacked: a bound on the sum's percentile).
            return arr(w + self.t_at[k])

        ttft = Percentiles(wait_mean + self.t_p,
                           *(ttft_q(k, q) for k, q in enumerate(QUANTILES.values())))
        transfer = self.transfer

        def e2e_q(q: float) -> FloatArray:
            return arr(ttft.at(quantile_name(q)) + transfer
                       + np.maximum(o.quantile(q) - 1.0, 0.0) * tpot_mean)

        e2e = Percentiles(ttft.mean + transfer + steps * tpot_mean,
                          *(e2e_q(q) for q in QUANTILES.values()))
        unstable: BoolArray = ~stable

        def mask(p: Percentiles) -> Percentiles:
            return Percentiles(*(np.where(unstable, np.inf, v)
                                 for v in (p.mean, p.p50, p.p90, p.p99)))

        capacity = self.capacity
        return LoadResult(mask(ttft), mask(tpot), mask(e2e), b, tpot_mean,
                          lam / np.maximum(capacity, 1e-300), capacity, stable,
                          np.minimum(lam, capacity) * o.mean,
                          np.where(unstable, np.inf, wait_mean))


def prompt_time(prefill: Replica, tokens: ArrayLike, budget: ArrayLike) -> FloatArray:
    """Seconds a prompt of `tokens` tokens to compute takes through `prefill` alone: full
    chunks of `budget` tokens, then what is left of it, each chunk through every pipeline
    stage in turn, attending at the prompt's mean context."""
    n, b = arr(tokens), arr(budget)
    full = np.floor(n / b)
    rest = n - full * b

    def step(chunk: FloatArray) -> FloatArray:
        return step_time(prefill, StepShape.of(prefill_tokens=chunk, prefill_ctx=n / 2.0,
                                               prefill_seqs=1.0)).time

    return arr(np.where(full > 0, full * step(b), 0.0)
               + np.where(rest > 0, step(np.maximum(rest, 1.0)), 0.0))


def decode_step(decode: Replica, b: ArrayLike, ctx: ArrayLike) -> FloatArray:
    """Time of one decode-only step of `b` sequences at context `ctx` on `decode` (s)."""
    return step_time(decode, StepShape.of(decode_seqs=micro_batch(b, decode.par.pp),
                                          decode_ctx=ctx)).time


def _batch(load_of: Callable[[FloatArray], FloatArray], slots: FloatArray,
           shape: tuple[int, ...]) -> FloatArray:
    """The root in [0, slots] of load_of(b) = b (arrays of `shape`), where load_of(0) >= 0
    and load_of(slots) < slots (the rate is kept below the pool's capacity): regula falsi with
    the Illinois correction, elementwise, until every bracket is narrow or the residual
    vanishes."""
    lo = np.zeros(shape)
    hi = np.broadcast_to(slots, lo.shape).astype(float)
    f_lo = np.broadcast_to(load_of(lo), lo.shape) - lo
    f_hi = np.broadcast_to(load_of(hi), lo.shape) - hi
    # The side kept last time: -1 low, +1 high, 0 none yet (Illinois halves the value at the
    # end that stays twice in a row).
    kept = np.zeros(lo.shape)
    root = np.where(f_lo <= 0.0, lo, hi)
    done = f_lo <= 0.0
    for _ in range(_ROOT_STEPS):
        if np.all(done | (hi - lo <= _ROOT_TOLERANCE * np.maximum(hi, 1.0))):
            break
        denom = f_lo - f_hi
        x = np.where(denom > 0, lo + f_lo * (hi - lo) / np.where(denom > 0, denom, 1.0),
                     (lo + hi) / 2.0)
        x = np.clip(x, lo, hi)
        f_x = load_of(x) - x
        up = f_x > 0.0            # the root lies above x
        lo, hi = np.where(up, x, lo), np.where(up, hi, x)
        f_lo = np.where(up, f_x, np.where(kept < 0, f_lo / 2.0, f_lo))
        f_hi = np.where(up, np.where(kept > 0, f_hi / 2.0, f_hi), f_x)
        kept = np.where(up, 1.0, -1.0)
        root = np.where(done, root, x)
        done = done | (np.abs(f_x) <= _ROOT_TOLERANCE * np.maximum(x, 1.0))
    return arr(np.where(done, root, (lo + hi) / 2.0))


def serve_disaggregated(prefill: Replica, decode: Replica, load: Workload, *,
                        n_prefill: ArrayLike, n_decode: ArrayLike, link: KvLink,
                        max_batch: ArrayLike | None = None,
                        token_budget: ArrayLike | None = None) -> LoadResult:
    """Latencies of `load` (the rate over both pools) served by the two pools."""
    pools = Pools.of(prefill, decode, load, n_prefill=n_prefill, n_decode=n_decode,
                      link=link, max_batch=max_batch, token_budget=token_budget)
    return pools.at(load.rate_rps)


def goodput_disaggregated(prefill: Replica, decode: Replica, load: Workload, slo: Slo, *,
                          n_prefill: ArrayLike, n_decode: ArrayLike, link: KvLink,
                          max_batch: ArrayLike | None = None,
                          token_budget: ArrayLike | None = None,
                          iterations: int = 12) -> tuple[FloatArray, np.ndarray, LoadResult]:
    """Highest request rate over both pools that meets `slo` (0 where even a trickle misses
    it), what binds there ("capacity", the SLO term, "memory") and the result at that rate;
    `load`'s rate is not used. The answer of `iterations` bisection steps on the rate between 0
    and the pools' capacity, found `_GRID_DEPTH` steps at a time: each pass prices the
    2**depth - 1 rates that split the bracket evenly in one vectorised run and keeps the
    interval where the objective starts to fail."""
    pools = Pools.of(prefill, decode, load, n_prefill=n_prefill, n_decode=n_decode,
                      link=link, max_batch=max_batch, token_budget=token_budget)
    hi = pools.capacity * (1.0 - 1e-6)
    lo = np.zeros_like(hi)
    done = 0
    while done < iterations:
        depth = min(_GRID_DEPTH, iterations - done)
        parts = 2**depth
        steps = np.arange(1, parts, dtype=float).reshape((-1,) + (1,) * hi.ndim) / parts
        rates = lo + (hi - lo) * steps                         # (parts - 1, *candidates)
        res = pools.at(np.maximum(rates, 1e-9))
        ok = (slo_slack(res, slo)[0] <= 1.0) & res.stable
        # Rates below the first failure pass (on a monotone objective, all of them do).
        passed = np.argmin(np.concatenate([ok, np.zeros((1, *hi.shape), dtype=bool)]), axis=0)
        below = np.take_along_axis(rates, np.maximum(passed - 1, 0)[np.newaxis], 0)[0]
        above = np.take_along_axis(rates, np.minimum(passed, parts - 2)[np.newaxis], 0)[0]
        lo, hi = np.where(passed > 0, below, lo), np.where(passed < parts - 1, above, hi)
        done += depth
    # The trickle, the answer and the rate just past it, in one run.
    ends = np.stack(np.broadcast_arrays(arr(1e-6), np.maximum(lo, 1e-9), np.maximum(hi, 1e-9)))
    at_ends = pools.at(ends)
    ratio, term = slo_slack(at_ends, slo)
    final = _row(at_ends, 1, ends.shape)
    binding = np.where(lo >= pools.capacity * 0.98, "capacity", term[2]).astype(object)
    trickle_fails = ratio[0] > 1.0
    rate = np.where(trickle_fails, 0.0, lo)
    binding = np.where(trickle_fails, term[0], binding)
    binding = np.where(pools.fits, binding, "memory").astype(object)
    return arr(np.where(pools.fits, rate, 0.0)), binding, final


def _row(result: LoadResult, k: int, shape: tuple[int, ...]) -> LoadResult:
    """Row k of a result computed over stacked rates of `shape` (the stack on axis 0)."""

    def at(value: FloatArray) -> FloatArray:
        return arr(np.broadcast_to(value, shape)[k])

    def pct(p: Percentiles) -> Percentiles:
        return Percentiles(at(p.mean), at(p.p50), at(p.p90), at(p.p99))

    return LoadResult(pct(result.ttft), pct(result.tpot), pct(result.e2e), at(result.batch),
                      at(result.step_s), at(result.utilization), at(result.capacity_rps),
                      np.broadcast_to(result.stable, shape)[k], at(result.output_tok_s),
                      at(result.queue_wait_s))
