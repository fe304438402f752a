"""Serving under load: latency distributions, stability and goodput from queueing models.

A replica runs continuous batching with chunked prefill. Under a request stream of rate
`rate_rps` the model finds the steady state as a fixed point: with `b` sequences decoding and
prompts arriving at `rate_rps`, one step takes `tau(b, prefill tokens per step)`; each request
decodes for `(output - 1) / tokens_per_step` steps, so by Little's law
`b = rate * decode_steps * tau`. Then:

* TPOT is the step time (per emitted token), with a tail from the variation of step time
  (prompt chunks landing in some steps, the batch breathing) averaged over the request's steps;
* TTFT is the wait for the running step to end, the queueing for the prefill token budget
  (G/G/1, Kingman's approximation, exponential tail) and for a batch slot (Erlang C over
  `max_batch` slots), plus the prompt's own chunks;
* end-to-end latency adds the decode of the output.

Everything is vectorised over candidates (arrays broadcast); a candidate past its capacity is
marked unstable with its capacity, not an exception. The discrete-event simulation in
`fleetplan.models.simulate` checks these approximations in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaincc, gammaln
from scipy.stats import norm

from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .inference import Replica, SpecDecode, step_time
from .transformer import StepShape

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
_FIXED_POINT_ITERATIONS = 60


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution: mean and coefficient of variation (0 = fixed), lognormal
    when it varies."""

    mean: FloatArray
    cv: FloatArray

    @classmethod
    def fixed(cls, tokens: ArrayLike) -> Lengths:
        return cls(arr(tokens), np.zeros_like(arr(tokens)))

    @classmethod
    def lognormal(cls, mean: ArrayLike, std: ArrayLike) -> Lengths:
        return cls(arr(mean), arr(std) / arr(mean))

    def quantile(self, q: float) -> FloatArray:
        """Lognormal quantile with this mean and cv (the mean itself when cv is 0)."""
        sigma2 = np.log1p(self.cv**2)
        mu = np.log(np.maximum(self.mean, 1e-9)) - sigma2 / 2.0
        return np.where(self.cv > 0, np.exp(mu + np.sqrt(sigma2) * norm.ppf(q)), self.mean)


@dataclass(frozen=True)
class Workload:
    """Requests per second (Poisson when `arrival_cv` is 1; Gamma inter-arrivals otherwise),
    their prompt and output lengths, and the fraction of prompt tokens a prefix cache saves."""

    rate_rps: FloatArray
    input_len: Lengths
    output_len: Lengths
    arrival_cv: float = 1.0
    prefix_hit: float = 0.0

    def at_rate(self, rate_rps: ArrayLike) -> Workload:
        return Workload(arr(rate_rps), self.input_len, self.output_len, self.arrival_cv,
                        self.prefix_hit)


@dataclass(frozen=True)
class Percentiles:
    """Mean and percentiles of one latency, in seconds (arrays over candidates)."""

    mean: FloatArray
    p50: FloatArray
    p90: FloatArray
    p99: FloatArray

    def as_dict(self) -> dict[str, FloatArray]:
        return {"mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99}

    def at(self, name: str) -> FloatArray:
        value: FloatArray = getattr(self, name)
        return value


@dataclass(frozen=True)
class LoadResult:
    """A replica under a request stream, in steady state (arrays over candidates)."""

    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles
    batch: FloatArray
    """Mean sequences decoding at once."""
    step_s: FloatArray
    utilization: FloatArray
    """Offered load over capacity (>= 1 means unstable)."""
    capacity_rps: FloatArray
    """Highest request rate the replica sustains (the stability limit)."""
    stable: BoolArray
    output_tok_s: FloatArray
    queue_wait_s: FloatArray
    """Mean time a request waits before its prefill starts (slot and prefill budget)."""


def _erlang_c(servers: FloatArray, offered: FloatArray) -> FloatArray:
    """Probability of waiting in M/M/c with `servers` slots (floored to whole slots) and
    `offered` erlangs, through Erlang B from the Poisson pmf over cdf (stable for c in the
    thousands)."""
    c = np.maximum(np.floor(servers), 1.0)
    a = np.minimum(offered, c * (1 - 1e-12))
    rho = a / c
    # Erlang B by the log of the Poisson pmf and cdf ratio, then Erlang C from it.
    log_pmf = c * np.log(np.maximum(a, 1e-300)) - a - gammaln(c + 1.0)
    cdf = _poisson_cdf(c, a)
    erlang_b = np.exp(log_pmf) / np.maximum(cdf, 1e-300)
    return arr(np.clip(erlang_b / (1.0 - rho + rho * erlang_b), 0.0, 1.0))


def _poisson_cdf(k: FloatArray, mean: FloatArray) -> FloatArray:
    """P(X <= k) for X ~ Poisson(mean): the regularised upper incomplete gamma Q(k+1, mean)."""
    return np.asarray(gammaincc(k + 1.0, np.maximum(mean, 1e-300)), dtype=np.float64)


def _decode_steps(output: Lengths, spec: SpecDecode | None) -> FloatArray:
    per_step = 1.0 if spec is None else spec.expected_tokens
    return np.maximum(output.mean - 1.0, 0.0) / per_step


def _step(rep: Replica, b: FloatArray, prefill_per_step: FloatArray, starts_per_step: FloatArray,
          ctx: FloatArray, spec: SpecDecode | None) -> FloatArray:
    k = 0 if spec is None else spec.draft_len
    shape = StepShape.of(decode_seqs=b / rep.par.pp, decode_ctx=ctx,
                         decode_tokens_per_seq=1.0 + k,
                         prefill_tokens=prefill_per_step / rep.par.pp,
                         prefill_ctx=0.0, prefill_seqs=starts_per_step / rep.par.pp)
    t = step_time(rep, shape).time
    if spec is not None and spec.draft_len:
        plain = step_time(rep, StepShape.of(decode_seqs=b / rep.par.pp, decode_ctx=ctx)).time
        t = t + spec.draft_cost_fraction * spec.draft_len * plain
    return t


def serve(rep: Replica, load: Workload, *, max_batch: ArrayLike | None = None,
          token_budget: ArrayLike | None = None, spec: SpecDecode | None = None) -> LoadResult:
    """Latency percentiles, batch and stability of `rep` under `load`."""
    engine = rep.device.engine
    lam = np.maximum(load.rate_rps, 1e-12)
    i_mean = load.input_len.mean * (1.0 - load.prefix_hit)
    o = load.output_len
    budget = arr(engine.max_tokens_per_step if token_budget is None else token_budget)
    kv_per_seq = load.input_len.mean + (o.mean if engine.reserve_kv_for_output
                                        else o.mean / 2.0)
    slots = np.minimum(arr(engine.max_batch if max_batch is None else max_batch),
                       np.floor(rep.memory.kv_capacity_tokens / kv_per_seq))
    slots = np.maximum(slots, 1.0)
    steps = _decode_steps(o, spec)
    ctx = load.input_len.mean + o.mean / 2.0

    # Capacity: every slot busy. Then prompts arrive at slots / decode_steps per step, so a
    # step carries slots * input / decode_steps prompt tokens whatever its length; the token
    # budget caps the batch at budget / (1 + input / decode_steps).
    n_steps = np.maximum(steps, 1.0)
    full = np.minimum(slots, np.maximum(np.floor(budget / (1.0 + i_mean / n_steps)), 1.0))
    prompts_full = full / n_steps
    t_full = _step(rep, full, np.minimum(prompts_full * i_mean, budget), prompts_full, ctx, spec)
    capacity = full / (n_steps * t_full)
    util = lam / capacity
    stable = util < 1.0
    lam_eff = np.minimum(lam, capacity * (1.0 - 1e-6))

    # Fixed point for the mean batch and step time below capacity.
    b = np.minimum(lam_eff * steps * 1e-2, slots)
    tau = _step(rep, b, lam_eff * 1e-2 * i_mean, lam_eff * 1e-2, ctx, spec)
    for _ in range(_FIXED_POINT_ITERATIONS):
        b_new = np.minimum(lam_eff * steps * tau, slots)
        b = 0.5 * b + 0.5 * b_new
        tau = _step(rep, b, np.minimum(lam_eff * tau * i_mean, budget), lam_eff * tau, ctx, spec)

    # ---- TPOT: the mean step per emitted token; its tail from step-to-step variation.
    per_token = 1.0 if spec is None else spec.expected_tokens
    tpot_mean = tau / per_token
    base = _step(rep, b, arr(0.0), arr(0.0), ctx, spec)
    # A prompt chunk of up to the free budget lands in a step with probability ~ prompts per
    # step; the extra time is what the prefill tokens add to the step.
    chunk = np.minimum(i_mean, np.maximum(budget - b, 1.0))
    with_chunk = _step(rep, b, chunk, arr(1.0), ctx, spec)
    extra = np.maximum(with_chunk - base, 0.0)
    p_chunk = np.clip(lam_eff * tau * i_mean / chunk, 0.0, 1.0)
    step_var = p_chunk * (1.0 - p_chunk) * extra**2
    tpot_sd = np.sqrt(step_var / n_steps) / per_token
    tpot = Percentiles(tpot_mean, *(tpot_mean + norm.ppf(q) * tpot_sd
                                    for q in QUANTILES.values()))

    # ---- TTFT: residual step + waiting for the prefill budget and a slot + own chunks, each
    # chunk riding in a step that also decodes the running batch.
    free = np.maximum(budget - b, 1.0)
    service_p = np.ceil(np.maximum(i_mean, 1.0) / free) * with_chunk
    rho_p = np.clip(lam_eff * i_mean * tau / free, 0.0, 0.999999)
    cv_s = load.input_len.cv
    wait_p = rho_p / (1.0 - rho_p) * (load.arrival_cv**2 + cv_s**2) / 2.0 * \
        (i_mean * tau / free)
    # A slot is held from admission through prefill and decode. Waiting for one: Erlang C,
    # scaled by (ca^2 + cs^2) / 2 for general arrivals and holding times (Allen-Cunneen), so
    # that one slot and fixed lengths give Pollaczek-Khinchine exactly.
    hold = (steps + np.ceil(np.maximum(i_mean, 1.0) / free)) * tau
    offered = lam_eff * hold
    p_slot = _erlang_c(slots, offered)
    variability = (load.arrival_cv**2 + load.output_len.cv**2) / 2.0
    wait_s = p_slot * hold / np.maximum(slots - offered, 1e-9) * variability
    wait_mean = wait_p + wait_s
    p_wait = np.clip(np.maximum(rho_p, p_slot), 1e-12, 1.0)
    residual = tau / 2.0
    ttft_mean = residual + wait_mean + service_p

    def ttft_q(q: float) -> FloatArray:
        # Waiting: an atom at 0 of mass 1 - p_wait, then an exponential tail with the
        # conditional mean; prompt length quantile for the service part.
        cond = wait_mean / p_wait
        w = np.where(q <= 1.0 - p_wait, 0.0, cond * np.log(p_wait / np.maximum(1.0 - q, 1e-12)))
        svc = np.ceil(np.maximum(load.input_len.quantile(q) * (1.0 - load.prefix_hit), 1.0)
                      / free) * with_chunk
        return residual * (2.0 * q) + np.maximum(w + service_p, svc + wait_mean * 0.0)

    ttft = Percentiles(ttft_mean, *(ttft_q(q) for q in QUANTILES.values()))

    # ---- End to end: TTFT plus decoding the output at the TPOT of the batch.
    e2e_mean = ttft_mean + steps * tau

    def e2e_q(q: float) -> FloatArray:
        out_q = np.maximum(o.quantile(q) - 1.0, 0.0) / per_token
        return ttft.at(_name(q)) + out_q * tau

    e2e = Percentiles(e2e_mean, *(e2e_q(q) for q in QUANTILES.values()))
    unstable = ~stable
    inf = np.inf

    def mask(p: Percentiles) -> Percentiles:
        return Percentiles(*(np.where(unstable, inf, v) for v in
                             (p.mean, p.p50, p.p90, p.p99)))

    out_tok = lam_eff * o.mean
    return LoadResult(mask(ttft), mask(tpot), mask(e2e), b, tau, util, capacity,
                      np.asarray(stable, dtype=bool), out_tok,
                      np.where(unstable, inf, wait_mean))


def _name(q: float) -> str:
    return next(k for k, v in QUANTILES.items() if v == q)


@dataclass(frozen=True)
class Slo:
    """Latency objectives in seconds; None leaves a percentile unconstrained."""

    ttft_p99_s: float | None = None
    tpot_p99_s: float | None = None
    ttft_p90_s: float | None = None
    tpot_p90_s: float | None = None
    ttft_p50_s: float | None = None
    tpot_p50_s: float | None = None
    e2e_p99_s: float | None = None

    def items(self) -> list[tuple[str, str, float]]:
        """(metric, percentile, bound) of each set objective."""
        out = []
        for name in ("ttft_p99_s", "tpot_p99_s", "ttft_p90_s", "tpot_p90_s", "ttft_p50_s",
                     "tpot_p50_s", "e2e_p99_s"):
            bound = getattr(self, name)
            if bound is not None:
                metric, pct, _ = name.split("_")
                out.append((metric, pct, float(bound)))
        return out


def slo_slack(result: LoadResult, slo: Slo) -> tuple[FloatArray, np.ndarray]:
    """Worst ratio of latency to its bound (<= 1 meets the SLO) and which objective it is."""
    ratios = []
    names = []
    for metric, pct, bound in slo.items():
        ratios.append(getattr(result, metric).at(pct) / bound)
        names.append(f"{metric}_{pct}")
    if not ratios:
        return np.where(result.stable, 0.0, np.inf), np.full(result.stable.shape, "none",
                                                             dtype=object)
    stack = np.stack(np.broadcast_arrays(*ratios))
    worst = np.argmax(stack, axis=0)
    labels: np.ndarray = np.asarray(names, dtype=object)[worst]
    return np.max(stack, axis=0), labels


def goodput(rep: Replica, load: Workload, slo: Slo, *, max_batch: ArrayLike | None = None,
            token_budget: ArrayLike | None = None, spec: SpecDecode | None = None,
            iterations: int = 30) -> tuple[FloatArray, np.ndarray, LoadResult]:
    """Highest request rate per replica that meets `slo` (0 where even a trickle misses it),
    what binds at that rate ("capacity" or the SLO term), and the result there. Bisection on
    the rate, vectorised over candidates."""
    probe = serve(rep, load.at_rate(1e-6), max_batch=max_batch, token_budget=token_budget,
                  spec=spec)
    hi = probe.capacity_rps * (1.0 - 1e-6)
    lo = np.zeros_like(hi)
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        res = serve(rep, load.at_rate(np.maximum(mid, 1e-9)), max_batch=max_batch,
                    token_budget=token_budget, spec=spec)
        ok = (slo_slack(res, slo)[0] <= 1.0) & res.stable
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    final = serve(rep, load.at_rate(np.maximum(lo, 1e-9)), max_batch=max_batch,
                  token_budget=token_budget, spec=spec)
    _slack, term = slo_slack(serve(rep, load.at_rate(np.maximum(hi, 1e-9)), max_batch=max_batch,
                                  token_budget=token_budget, spec=spec), slo)
    near_cap = lo >= probe.capacity_rps * 0.98
    binding = np.where(near_cap, "capacity", term).astype(object)
    trickle_fails = slo_slack(probe, slo)[0] > 1.0
    rate = np.where(trickle_fails, 0.0, lo)
    binding = np.where(trickle_fails, term, binding)
    return rate, binding, final


def closed_loop(rep: Replica, *, concurrency: ArrayLike, input_len: ArrayLike,
                output_len: ArrayLike, token_budget: ArrayLike | None = None,
                spec: SpecDecode | None = None) -> LoadResult:
    """`concurrency` clients each keep one request in flight (fixed lengths): the batch is the
    concurrency (capped by slots), requests never queue for a slot, and the rate is what the
    cycle time allows. Percentiles equal the mean (every request sees the same steady state)."""
    engine = rep.device.engine
    n = arr(concurrency)
    i, o = arr(input_len), arr(output_len)
    budget = arr(engine.max_tokens_per_step if token_budget is None else token_budget)
    per_token = 1.0 if spec is None else spec.expected_tokens
    steps = np.maximum(o - 1.0, 0.0) / per_token
    ctx = i + o / 2.0
    chunks = np.ceil(i / np.maximum(budget - n, 1.0))
    # Of each request's steps + chunks steps, `chunks` carry its prompt: prompt tokens per step
    # are n * i / (steps + chunks) on average.
    cycle_steps = steps + chunks
    tau = _step(rep, n * steps / cycle_steps, n * i / cycle_steps, n / cycle_steps, ctx, spec)
    ttft = tau / 2.0 + chunks * tau
    e2e = ttft + steps * tau
    rate = n / e2e
    same = Percentiles(ttft, ttft, ttft, ttft)
    tp = tau / per_token
    slots = np.floor(rep.memory.kv_capacity_tokens / (i + o))
    stable = np.asarray(n <= np.minimum(slots, engine.max_batch), dtype=bool)
    return LoadResult(same, Percentiles(tp, tp, tp, tp), Percentiles(e2e, e2e, e2e, e2e),
                      n * steps / cycle_steps, tau, np.where(stable, 0.0, np.inf), rate,
                      stable, rate * o, np.zeros_like(tau))
