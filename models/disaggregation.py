"""Prefill/decode disaggregation: a prefill pool and a decode pool joined by a KV transfer.

Prompts queue for `n_prefill` prefill replicas (M/G/c on whole prompts, Erlang C with the
Allen-Cunneen correction); the prefill replica emits the first token, then ships the prompt's KV
cache over the link between the pools; `n_decode` decode replicas run decode-only steps, so no
prompt chunk ever lands in a decode step (the interference that chunked prefill only bounds).
The ratio of the pools is the knob: too few prefill replicas and TTFT queues, too few decode
replicas and the batch (and TPOT) grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .inference import Replica, micro_batch, step_time
from .queueing import QUANTILES, LoadResult, Percentiles, Workload, erlang_c, quantile_name
from .transformer import StepShape


@dataclass(frozen=True)
class KvLink:
    """The path KV caches take from a prefill to a decode replica: bytes/s one way, seconds."""

    bandwidth_bytes_s: float
    latency_s: float
    efficiency: float = 0.8


def serve_disaggregated(prefill: Replica, decode: Replica, load: Workload, *,
                        n_prefill: ArrayLike, n_decode: ArrayLike, link: KvLink,
                        max_batch: ArrayLike | None = None,
                        token_budget: int | None = None) -> LoadResult:
    """Latencies of `load` (the rate over both pools) served by the two pools."""
    lam = np.maximum(load.rate_rps, 1e-12)
    n_p, n_d = arr(n_prefill), arr(n_decode)
    i = np.maximum(load.input_len.mean * (1.0 - load.prefix_hit), 1.0)
    o = load.output_len
    ctx = load.input_len.mean + o.mean / 2.0
    engine = prefill.device.engine

    # Prefill pool: each prompt runs alone, chunked to the token budget.
    budget = float(engine.max_tokens_per_step) if token_budget is None else float(token_budget)
    chunks = np.ceil(i / budget)
    s_p = chunks * step_time(prefill, StepShape.of(prefill_tokens=np.minimum(i, budget) /
                                                   prefill.par.pp, prefill_ctx=i / 2.0,
                                                   prefill_seqs=1.0 / prefill.par.pp)).time
    offered_p = lam * s_p
    cap_p = n_p / s_p
    p_wait = erlang_c(n_p, np.minimum(offered_p, n_p * (1 - 1e-9)))
    variability = (load.arrival_cv**2 + load.input_len.cv**2) / 2.0
    wait_mean = p_wait * s_p / np.maximum(n_p - offered_p, 1e-9) * variability

    # KV transfer: the whole prompt's cache, once, over the link.
    # The whole prompt's cache, each KV value once (heads replicated across TP ranks are sent
    # to each rank from its peer, not across the link).
    kv_bytes = (load.input_len.mean * decode.arch.kv_values_per_token
                * decode.fmt.kv_bytes)
    transfer = link.latency_s + kv_bytes / (link.bandwidth_bytes_s * link.efficiency)

    # Decode pool: decode-only steps; the batch is a fixed point of Little's law.
    steps = np.maximum(o.mean - 1.0, 0.0)
    kv_per_seq = load.input_len.mean + o.mean
    slots = np.maximum(np.minimum(arr(decode.device.engine.max_batch if max_batch is None
                                      else max_batch),
                                  np.floor(decode.memory.kv_capacity_tokens / kv_per_seq)), 1.0)
    lam_d = lam / n_d

    def tau_at(b: FloatArray) -> FloatArray:
        return step_time(decode, StepShape.of(decode_seqs=micro_batch(b, decode.par.pp),
                                              decode_ctx=ctx)).time

    cap_d = slots / (np.maximum(steps, 1.0) * tau_at(slots)) * n_d
    fits = prefill.memory.fits & decode.memory.fits
    capacity = np.where(fits, np.minimum(cap_p, cap_d), 0.0)
    stable = np.asarray((lam < capacity) & (offered_p < n_p) & fits, dtype=bool)
    lam_eff = np.minimum(lam_d, cap_d / n_d * (1 - 1e-6))
    b = np.minimum(lam_eff * steps * 1e-2, slots)
    for _ in range(60):
        b = 0.5 * b + 0.5 * np.minimum(lam_eff * steps * tau_at(np.maximum(b, 1.0)), slots)
    seen = np.minimum(b + 1.0, slots)
    tpot_mean = tau_at(seen)
    db = np.maximum(np.sqrt(b), 1.0)
    slope = (tau_at(seen + db) - tau_at(np.maximum(seen - db, 1.0))) / \
        (seen + db - np.maximum(seen - db, 1.0))
    drift = np.abs(slope) * np.sqrt((2.0 / 3.0) * b)
    tpot = Percentiles(tpot_mean, *(tpot_mean + ndtri(q) * drift for q in QUANTILES.values()))

    def ttft_q(q: float) -> FloatArray:
        cond = wait_mean / np.clip(p_wait, 1e-12, 1.0)
        w = np.where(q <= 1.0 - p_wait, 0.0,
                     cond * np.log(np.clip(p_wait, 1e-12, 1.0) / max(1.0 - q, 1e-12)))
        prompt_q = np.maximum(load.input_len.quantile(q), 1.0)
        return arr(w + s_p * np.ceil(prompt_q / budget) / chunks * np.maximum(prompt_q / i, 1.0))

    ttft = Percentiles(wait_mean + s_p, *(ttft_q(q) for q in QUANTILES.values()))

    def e2e_q(q: float) -> FloatArray:
        return arr(ttft.at(quantile_name(q)) + transfer + np.maximum(o.quantile(q) - 1.0, 0.0)
                   * tpot_mean)

    e2e = Percentiles(ttft.mean + transfer + steps * tpot_mean,
                      *(e2e_q(q) for q in QUANTILES.values()))
    inf = np.inf
    unstable: BoolArray = ~stable

    def mask(p: Percentiles) -> Percentiles:
        return Percentiles(*(np.where(unstable, inf, v) for v in (p.mean, p.p50, p.p90, p.p99)))

    return LoadResult(mask(ttft), mask(tpot), mask(e2e), b, tpot_mean,
                      lam / np.maximum(capacity, 1e-300), capacity,
                      stable, np.minimum(lam, capacity) * o.mean,
                      np.where(unstable, inf, wait_mean))
