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
from scipy.special import gammaincc, gammaln, ndtri

from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .inference import Replica, SpecDecode, draft_cost, micro_batch, step_time
from .transformer import StepShape

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
_FIXED_POINT_ITERATIONS = 60
# The fixed point stops early once no candidate's step length or batch moves by more than this
# relative amount in one iteration.
_SETTLED = 1e-10


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
        return np.where(self.cv > 0, np.exp(mu + np.sqrt(sigma2) * ndtri(q)), self.mean)


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


def erlang_c(servers: FloatArray, offered: FloatArray) -> FloatArray:
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


def poisson_ppf(q: float, mean: FloatArray) -> FloatArray:
    """Smallest k with P(X <= k) >= q for X ~ Poisson(mean), by integer bisection on the CDF
    (scipy.stats' ppf, without importing scipy.stats: it costs half a second at start-up)."""
    m = arr(mean)
    lo = np.full(m.shape, -1.0)
    hi = np.ceil(m + 12.0 * np.sqrt(m) + 30.0)
    while np.any(hi - lo > 1):
        mid = np.floor((lo + hi) / 2.0)
        below = _poisson_cdf(mid, m) < q
        lo = np.where(below & (hi - lo > 1), mid, lo)
        hi = np.where(~below & (hi - lo > 1), mid, hi)
    return arr(hi)


def _decode_steps(output: Lengths, spec: SpecDecode | None) -> FloatArray:
    per_step = 1.0 if spec is None else spec.expected_tokens
    return np.maximum(output.mean - 1.0, 0.0) / per_step


def _step(rep: Replica, b: FloatArray, prefill_per_step: FloatArray, starts_per_step: FloatArray,
          ctx: FloatArray, spec: SpecDecode | None) -> FloatArray:
    k = 0 if spec is None else spec.draft_len
    shape = StepShape.of(decode_seqs=micro_batch(b, rep.par.pp), decode_ctx=ctx,
                         decode_tokens_per_seq=1.0 + k,
                         prefill_tokens=prefill_per_step / rep.par.pp,
                         prefill_ctx=0.0, prefill_seqs=starts_per_step / rep.par.pp)
    t = step_time(rep, shape).time
    if spec is not None and spec.draft_len:
        t = t + np.where(b > 0, draft_cost(rep, spec, micro_batch(b, rep.par.pp), ctx)[0], 0.0)
    return t


# Prompt chunks one step may carry, enumerated for the Poisson mixture of step contents.
_MAX_CHUNKS = 12


@dataclass(frozen=True)
class _StepMix:
    """Steps carry k = 0, 1, ... prompt chunks (Poisson): their probabilities and lengths."""

    prob: FloatArray      # shape (K, ...)
    length: FloatArray    # shape (K, ...), seconds

    @property
    def mean(self) -> FloatArray:
        return arr(np.sum(self.prob * self.length, axis=0))

    @property
    def second_moment(self) -> FloatArray:
        return arr(np.sum(self.prob * self.length**2, axis=0))


def _count_pmf(mean: FloatArray, kmax: int, arrival_cv: float = 1.0) -> FloatArray:
    """Distribution of arrivals in a window with `mean` expected: Poisson for Poisson
    arrivals; for burstier renewal arrivals (cv > 1) a negative binomial with the renewal
    count's variance, mean * cv^2. Axis 0 enumerates 0..kmax; the tail folds into kmax."""
    k = np.arange(kmax + 1).reshape((-1,) + (1,) * np.ndim(mean))
    m = np.maximum(mean, 1e-300)
    if arrival_cv <= 1.0:
        log_pmf = k * np.log(m) - m - gammaln(k + 1.0)
    else:
        r = m / (arrival_cv**2 - 1.0)
        p = 1.0 / arrival_cv**2
        log_pmf = (gammaln(k + r) - gammaln(r) - gammaln(k + 1.0) + r * np.log(p)
                   + k * np.log1p(-p))
    pmf = np.exp(log_pmf)
    pmf[-1] = np.maximum(1.0 - pmf[:-1].sum(axis=0), 0.0)
    return arr(pmf)


def _step_mix(rep: Replica, b: FloatArray, chunks_per_step: FloatArray, chunk: FloatArray,
              free: FloatArray, ctx: FloatArray, spec: SpecDecode | None,
              arrival_cv: float = 1.0) -> _StepMix:
    """The mixture of step lengths when prompt chunks of `chunk` tokens arrive Poisson with
    `chunks_per_step` per step, at most `free` prompt tokens riding in one step. A roofline
    is convex in the tokens it carries, so the mean step is the mixture's mean, not the step
    at the mean load (which would let small prompt loads ride free under the memory roof)."""
    prob = _count_pmf(chunks_per_step, _MAX_CHUNKS, arrival_cv)
    k = np.arange(_MAX_CHUNKS + 1).reshape((-1,) + (1,) * max(np.ndim(b), np.ndim(chunk)))
    tokens = np.minimum(k * chunk, free)
    length = _step(rep, b, tokens, np.minimum(k, tokens / np.maximum(chunk, 1.0)), ctx, spec)
    return _StepMix(prob, np.broadcast_to(length, np.broadcast(prob, length).shape))


def _mixture_quantile(q: float, weights: FloatArray, shift: FloatArray, width: FloatArray,
                      cap: FloatArray) -> FloatArray:
    """Quantile of a mixture of uniforms U(shift, shift + width) (axis 0 enumerates the
    components), at most `cap`. The mixture's CDF is piecewise linear between the components'
    ends: sort the ends, accumulate the density, and interpolate inside the segment where the
    CDF crosses `q` (exact, and one sort instead of a bisection over every component)."""
    lo = np.min(shift, axis=0)
    w = np.maximum(width, 1e-15)
    ends = np.concatenate([shift, shift + w])
    density = weights / w
    change = np.concatenate([density, -density])
    order = np.argsort(ends, axis=0, kind="stable")
    x = np.take_along_axis(ends, order, axis=0)
    slope = np.cumsum(np.take_along_axis(change, order, axis=0), axis=0)
    # CDF at each sorted end: the density integrated over the segments before it.
    cdf = np.concatenate([np.zeros_like(x[:1]),
                          np.cumsum(slope[:-1] * np.diff(x, axis=0), axis=0)])
    k = np.clip(np.sum(cdf < q, axis=0) - 1, 0, x.shape[0] - 1)[np.newaxis]
    x_k = np.take_along_axis(x, k, axis=0)[0]
    x_next = np.take_along_axis(x, np.minimum(k + 1, x.shape[0] - 1), axis=0)[0]
    cdf_k = np.take_along_axis(cdf, k, axis=0)[0]
    slope_k = np.take_along_axis(slope, k, axis=0)[0]
    inside = x_k + (q - cdf_k) / np.where(slope_k > 0, slope_k, np.inf)
    value = np.where(slope_k > 0, np.minimum(inside, x_next), x_next)
    value = np.minimum(value, np.max(x, axis=0))
    return arr(np.maximum(np.minimum(value, np.maximum(cap, lo + 1e-12)), lo))


def serve(rep: Replica, load: Workload, *, max_batch: ArrayLike | None = None,
          token_budget: ArrayLike | None = None, spec: SpecDecode | None = None) -> LoadResult:
    """Latency percentiles, batch and stability of `rep` under `load`."""
    engine = rep.device.engine
    lam = np.maximum(load.rate_rps, 1e-12)
    i_mean = np.maximum(load.input_len.mean * (1.0 - load.prefix_hit), 1.0)
    o = load.output_len
    budget = arr(engine.max_tokens_per_step if token_budget is None else token_budget)
    kv_per_seq = load.input_len.mean + (o.mean if engine.reserve_kv_for_output
                                        else o.mean / 2.0)
    slots = np.minimum(arr(engine.max_batch if max_batch is None else max_batch),
                       np.floor(rep.memory.kv_capacity_tokens / kv_per_seq))
    slots = np.maximum(slots, 1.0)
    steps = _decode_steps(o, spec)
    n_steps = np.maximum(steps, 1.0)
    ctx = load.input_len.mean + o.mean / 2.0
    per_token = 1.0 if spec is None else spec.expected_tokens

    # Capacity: every slot busy. Prompts then arrive at slots / decode_steps per step, so a
    # step carries slots * input / decode_steps prompt tokens on average whatever its length;
    # the token budget caps the batch at budget / (1 + input / decode_steps).
    full = np.minimum(slots, np.maximum(np.floor(budget / (1.0 + i_mean / n_steps)), 1.0))
    free_full = np.maximum(budget - full, 1.0)
    chunk_full = np.minimum(i_mean, free_full)
    chunks_full = (full / n_steps) * np.ceil(i_mean / free_full)
    t_full = _step_mix(rep, full, chunks_full, chunk_full, free_full, ctx, spec).mean
    # A replica whose weights do not fit serves nothing.
    capacity = np.where(rep.memory.fits, full / (n_steps * t_full), 0.0)
    util = lam / np.maximum(capacity, 1e-300)
    stable = util < 1.0
    lam_eff = np.maximum(np.minimum(lam, capacity * (1.0 - 1e-6)), 1e-12)

    # Fixed point for the mean step length tau (the batch follows from it by Little's law,
    # b = min(lam * steps * tau, slots)): tau = F(tau), where F is the mean of the step-length
    # mixture at that batch. F is increasing with slope below 1 under capacity, so plain
    # iteration converges monotonically (slowly near capacity, where the slope nears 1);
    # Steffensen's extrapolation from two iterations jumps most of the way each round.
    def step_mean(tau: FloatArray) -> tuple[FloatArray, _StepMix]:
        b = np.minimum(lam_eff * steps * tau, slots)
        free = np.maximum(budget - b, 1.0)
        n_chunks = np.ceil(i_mean / free)
        mix = _step_mix(rep, b, lam_eff * tau * n_chunks, i_mean / n_chunks, free, ctx, spec,
                        load.arrival_cv)
        return mix.mean, mix

    tau, mix = step_mean(arr(np.full(np.shape(lam_eff * slots * budget), 1e-2)))
    for _ in range(_FIXED_POINT_ITERATIONS):
        x1, _mix = step_mean(tau)
        x2, mix = step_mean(x1)
        d1, d2 = x1 - tau, x2 - x1
        if np.all(np.abs(d2) <= _SETTLED * x2):
            tau = x2
            break
        ratio = np.divide(d2, d1, out=np.zeros_like(d2), where=d1 != 0)
        jump = x2 + d2 * ratio / np.where((ratio > 0) & (ratio < 1), 1.0 - ratio, 1.0)
        ok = (ratio > 0) & (ratio < 1) & np.isfinite(jump) & (jump > 0)
        tau = arr(np.where(ok, jump, x2))
    tau_final, mix = step_mean(tau)
    tau = arr(tau_final)
    b = np.minimum(lam_eff * steps * tau, slots)
    free = np.maximum(budget - b, 1.0)
    n_chunks = np.ceil(i_mean / free)
    chunk = i_mean / n_chunks

    # ---- TPOT. A running request sees itself plus the others, a Poisson number with the
    # mean batch (Palm's theorem for an M/G/inf system), not the time-average batch that
    # counts idle time. Per request it averages its decode steps: the prompt chunks it lives
    # through are Poisson with a small mean (a skewed count, so Poisson quantiles, not a normal
    # one), and the batch drifts over its lifetime (the time-average over one service time
    # keeps 2/3 of the variance), which moves every step's KV traffic.
    seen = b + 1.0
    own_mix = _step_mix(rep, np.minimum(seen, slots), lam_eff * tau * n_chunks, chunk, free,
                        ctx, spec, load.arrival_cv)
    plain = own_mix.length[0]
    one_chunk = own_mix.length[1]
    tpot_mean = own_mix.mean / per_token
    lifetime_chunks = lam_eff * n_chunks * n_steps * own_mix.mean
    db = np.maximum(np.sqrt(b), 1.0)
    slope = (_step(rep, seen + db, arr(0.0), arr(0.0), ctx, spec)
             - _step(rep, np.maximum(seen - db, 1.0), arr(0.0), arr(0.0), ctx, spec)) / \
        (seen + db - np.maximum(seen - db, 1.0))
    drift_sd = np.abs(slope) * np.sqrt((2.0 / 3.0) * b)
    bump = np.maximum(one_chunk - plain, 0.0) / n_steps

    def tpot_q(q: float) -> FloatArray:
        extra = (poisson_ppf(q, np.maximum(lifetime_chunks, 1e-12)) - lifetime_chunks) * bump
        return arr(tpot_mean + (extra + ndtri(q) * drift_sd) / per_token)

    tpot = Percentiles(tpot_mean, *(tpot_q(q) for q in QUANTILES.values()))

    # ---- TTFT. An arrival lands in a step chosen by length (k chunks with probability
    # p_k * len_k / mean) and waits out a uniform residual of it; its prompt then rides in the
    # next step(s) with the N other prompts that arrived in that step (N ~ Poisson(lam len_k)),
    # its chunks served after theirs at random order within the group. Queueing for a batch
    # slot (Erlang C, Allen-Cunneen) and for the prefill budget when prompts outgrow it
    # (Kingman) shift the whole distribution.
    landed = mix.prob * mix.length / np.maximum(mix.mean, 1e-15)          # (K, ...)
    n_max = 16
    others = _count_pmf(lam_eff * mix.length, n_max, load.arrival_cv)    # (N, K, ...)
    n = np.arange(n_max + 1).reshape((-1, 1) + (1,) * np.ndim(b))
    # Prompt tokens ahead of and including this one: half the others on average go first.
    ahead = (n / 2.0 + 1.0) * i_mean
    own_steps = np.ceil(ahead / free)
    group = np.minimum((n + 1.0) * i_mean, free)
    own = own_steps * _step(rep, b, group, np.minimum(n + 1.0, group / chunk), ctx, spec)
    weights = others * landed[np.newaxis]                                 # (N, K, ...)
    shift = np.broadcast_to(own, weights.shape)
    width = np.broadcast_to(mix.length[np.newaxis], weights.shape)

    hold = (steps + n_chunks) * tau
    offered = lam_eff * hold
    p_slot = erlang_c(slots, offered)
    variability = (load.arrival_cv**2 + load.output_len.cv**2) / 2.0
    wait_s = p_slot * hold / np.maximum(slots - offered, 1e-9) * variability
    # Prompts longer than half the free budget cannot share steps: then they queue for the
    # budget itself, an M/G/1 on prefill work (Kingman). Shorter prompts share the next step,
    # which the mixture above already prices.
    work = n_chunks * np.maximum(own_mix.length[1] - own_mix.length[0], 0.0)
    rho_p = np.clip(lam_eff * work, 0.0, 0.999999)
    cv_in = load.input_len.cv
    queues = i_mean * 2.0 > free
    wait_p = np.where(queues, rho_p / (1.0 - rho_p) * (load.arrival_cv**2 + cv_in**2) / 2.0
                      * work, 0.0)
    wait_mean = wait_s + wait_p
    p_wait = np.clip(np.maximum(p_slot, np.where(queues, rho_p, 0.0)), 1e-12, 1.0)
    base_mean = np.sum(weights * (shift + width / 2.0), axis=(0, 1))
    ttft_mean = base_mean + wait_mean
    cap_t = np.max(shift + width, axis=(0, 1))
    flat_w = weights.reshape((-1, *weights.shape[2:]))
    flat_s = shift.reshape((-1, *shift.shape[2:]))
    flat_v = width.reshape((-1, *width.shape[2:]))

    def ttft_q(q: float) -> FloatArray:
        body = _mixture_quantile(q, flat_w, flat_s, flat_v, cap_t)
        cond = wait_mean / p_wait
        w = np.where(q <= 1.0 - p_wait, 0.0,
                     cond * np.log(p_wait / np.maximum(1.0 - q, 1e-12)))
        longer = np.ceil(np.maximum(load.input_len.quantile(q) * (1.0 - load.prefix_hit), 1.0)
                         / free) * _step(rep, b, np.minimum(i_mean, free), arr(1.0), ctx, spec)
        return arr(np.maximum(body, longer) + w)

    ttft = Percentiles(ttft_mean, *(ttft_q(q) for q in QUANTILES.values()))

    # ---- End to end: TTFT plus decoding the output at the batch's step time.
    e2e_mean = ttft_mean + steps * tau

    def e2e_q(q: float) -> FloatArray:
        out_q = np.maximum(o.quantile(q) - 1.0, 0.0) / per_token
        return ttft.at(quantile_name(q)) + out_q * tau

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


def quantile_name(q: float) -> str:
    """"p50", "p90" or "p99" for 0.5, 0.9 or 0.99."""
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
    e2e_p50_s: float | None = None
    e2e_p90_s: float | None = None
    e2e_p99_s: float | None = None

    def items(self) -> list[tuple[str, str, float]]:
        """(metric, percentile, bound) of each set objective."""
        out = []
        for name in ("ttft_p99_s", "tpot_p99_s", "ttft_p90_s", "tpot_p90_s", "ttft_p50_s",
                     "tpot_p50_s", "e2e_p99_s", "e2e_p90_s", "e2e_p50_s"):
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
    binding = np.where(rep.memory.fits, binding, "memory").astype(object)
    rate = np.where(rep.memory.fits, rate, 0.0)
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
