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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .arrays import ArrayLike, BoolArray, FloatArray, arr
from .inference import Replica, SpecDecode, draft_cost, micro_batch, step_time
from .special import gammaincc, gammaln, ndtri
from .transformer import StepShape

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
_FIXED_POINT_ITERATIONS = 60
# The fixed point stops early once no candidate's step length or batch moves by more than this
# relative amount in one iteration.
_SETTLED = 1e-10
# Strata of the own prompt's length that TTFT percentiles mix when prompts vary.
_PROMPT_STRATA = 8


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution: mean and coefficient of variation (0 = fixed), lognormal
    when it varies, or an empirical histogram (`values` with cumulative probabilities `cdf`),
    whose quantiles are its own."""

    mean: FloatArray
    cv: FloatArray
    values: FloatArray | None = None
    """Sorted token lengths of an empirical histogram (None: fixed or lognormal)."""
    cdf: FloatArray | None = None
    """Cumulative probability at each of `values` (the last is 1)."""

    @classmethod
    def fixed(cls, tokens: ArrayLike) -> Lengths:
        return cls(arr(tokens), np.zeros_like(arr(tokens)))

    @classmethod
    def lognormal(cls, mean: ArrayLike, std: ArrayLike) -> Lengths:
        return cls(arr(mean), arr(std) / arr(mean))

    @classmethod
    def empirical(cls, values: ArrayLike, weights: ArrayLike) -> Lengths:
        """A histogram: token lengths (>= 1) and their relative frequencies (> 0)."""
        v, w = np.ravel(arr(values)), np.ravel(arr(weights))
        if v.size == 0 or v.shape != w.shape:
            raise ValueError("a histogram needs as many weights as values, at least one")
        if not (np.all(np.isfinite(v)) and np.all(v >= 1) and np.all(np.isfinite(w))
                and np.all(w > 0)):
            raise ValueError("histogram values must be >= 1 tokens and weights positive")
        order = np.argsort(v, kind="stable")
        v, p = v[order], w[order] / np.sum(w)
        mean = float(np.sum(p * v))
        cv = math.sqrt(max(float(np.sum(p * v * v)) / mean**2 - 1.0, 0.0))
        cdf = np.cumsum(p)
        cdf[-1] = 1.0
        return cls(arr(mean), arr(cv), v, arr(cdf))

    @property
    def probabilities(self) -> FloatArray | None:
        """The histogram's probability per value (None unless empirical)."""
        return None if self.cdf is None else arr(np.diff(self.cdf, prepend=0.0))

    def quantile(self, q: float) -> FloatArray:
        """The q-quantile: the histogram's own (the smallest value whose cumulative
        probability reaches q); else lognormal with this mean and cv (the mean when cv is 0)."""
        if self.values is not None and self.cdf is not None:
            k = min(int(np.searchsorted(self.cdf, q - 1e-12)), self.values.size - 1)
            return arr(np.full(np.shape(self.mean), self.values[k]))
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
class RequestClass:
    """One kind of request in a mixed stream: its share of the requests, its lengths and its
    own latency objectives."""

    name: str
    share: float
    input_len: Lengths
    output_len: Lengths
    slo: Slo | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"class {self.name!r}: share must be in (0, 1], got {self.share}")


def _mixture(parts: list[tuple[float, Lengths]]) -> Lengths:
    """The lengths of a stream mixed from parts (weight, lengths): a histogram when every part
    is fixed or a histogram; else the mixture's mean and coefficient of variation,
    E[X^2] = sum w (m^2 (1 + cv^2))."""
    if len(parts) == 1:
        return parts[0][1]
    tables = [_table(p) for _, p in parts]
    if all(t is not None for t in tables):
        values = np.concatenate([t[0] for t in tables if t is not None])
        weights = np.concatenate([w * t[1] for (w, _), t in zip(parts, tables, strict=True)
                                  if t is not None])
        return Lengths.empirical(values, weights)
    total = sum(w for w, _ in parts)
    mean = sum((w * p.mean for w, p in parts), start=arr(0.0)) / total
    second = sum((w * p.mean**2 * (1.0 + p.cv**2) for w, p in parts), start=arr(0.0)) / total
    return Lengths(arr(mean), arr(np.sqrt(np.maximum(second / mean**2 - 1.0, 0.0))))


def _table(lengths: Lengths) -> tuple[FloatArray, FloatArray] | None:
    """(values, probabilities) of a fixed or histogram length that is one scalar; else None."""
    if np.ndim(lengths.mean) != 0:
        return None
    probabilities = lengths.probabilities
    if lengths.values is not None and probabilities is not None:
        return lengths.values, probabilities
    if float(lengths.cv) == 0.0:
        return arr([float(lengths.mean)]), arr([1.0])
    return None


def mixed_workload(rate_rps: ArrayLike, classes: Iterable[RequestClass], *,
                   arrival_cv: float = 1.0, prefix_hit: float = 0.0) -> Workload:
    """The stream a replica sees when `classes` (shares normalised to one) arrive together at
    `rate_rps` requests/s: one arrival process whose lengths are the classes' mixture."""
    cs = list(classes)
    if not cs:
        raise ValueError("a mixed workload needs at least one class")
    return Workload(arr(rate_rps), _mixture([(c.share, c.input_len) for c in cs]),
                    _mixture([(c.share, c.output_len) for c in cs]), arrival_cv, prefix_hit)


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


def poisson_ppf(q: ArrayLike, mean: ArrayLike) -> FloatArray:
    """Smallest k with P(X <= k) >= q for X ~ Poisson(mean) (q and mean broadcast), by integer
    bisection on the CDF (scipy.stats' ppf, without importing scipy.stats: it costs half a
    second at start-up)."""
    prob = arr(q)
    m = np.broadcast_to(arr(mean), np.broadcast_shapes(np.shape(mean), prob.shape))
    lo = np.full(m.shape, -1.0)
    hi = np.ceil(m + 12.0 * np.sqrt(m) + 30.0)
    while np.any(hi - lo > 1):
        mid = np.floor((lo + hi) / 2.0)
        below = _poisson_cdf(mid, m) < prob
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


_Steps = tuple[FloatArray, FloatArray, FloatArray]
"""Steps as `_step` takes them: (sequences decoding, prompt tokens, prompts started)."""


def _steps(rep: Replica, groups: list[_Steps], ctx: FloatArray, spec: SpecDecode | None) \
        -> list[FloatArray]:
    """Step lengths (s) of several groups of steps in one `_step` evaluation: the model's
    fixed cost per call, which rules at the small arrays of a search, is paid once. Each
    group's arrays broadcast to one leading axis that enumerates its steps, in front of the
    candidates' axes; each group's lengths come back with that axis first."""
    shapes = [np.broadcast_shapes(*(np.shape(x) for x in g)) for g in groups]
    tail = np.broadcast_shapes(*(s[1:] for s in shapes))
    b, tokens, starts = (np.concatenate([np.broadcast_to(x, (s[0], *tail))
                                         for x, s in zip(column, shapes, strict=True)])
                         for column in zip(*groups, strict=True))
    length = _step(rep, b, tokens, starts, ctx, spec)
    return np.split(length, np.cumsum([s[0] for s in shapes])[:-1])


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


def _mix_steps(b: FloatArray, chunks_per_step: FloatArray, chunk: FloatArray,
               free: FloatArray, arrival_cv: float = 1.0) -> tuple[FloatArray, _Steps]:
    """The steps of a mixture (see `_step_mix`): the probability that a step carries k = 0,
    1, ... prompt chunks, and what such a step carries (k along axis 0)."""
    prob = _count_pmf(chunks_per_step, _MAX_CHUNKS, arrival_cv)
    k = np.arange(_MAX_CHUNKS + 1).reshape((-1,) + (1,) * max(np.ndim(b), np.ndim(chunk)))
    tokens = np.minimum(k * chunk, free)
    return prob, (b, tokens, np.minimum(k, tokens / np.maximum(chunk, 1.0)))


def _mix_of(prob: FloatArray, length: FloatArray) -> _StepMix:
    """The mixture of the steps `_mix_steps` describes, given their lengths (s)."""
    return _StepMix(prob, np.broadcast_to(length, np.broadcast(prob, length).shape))


def _own_free(free: FloatArray, micro: FloatArray) -> FloatArray:
    """Prompt tokens one prompt may put in a step whose micro-batches have `free` tokens of
    budget left between them: its own micro-batch's share (at least one)."""
    return arr(np.maximum(free / micro, 1.0))


def _step_mix(rep: Replica, b: FloatArray, chunks_per_step: FloatArray, chunk: FloatArray,
              free: FloatArray, ctx: FloatArray, spec: SpecDecode | None,
              arrival_cv: float = 1.0) -> _StepMix:
    """The mixture of step lengths when prompt chunks of `chunk` tokens arrive Poisson with
    `chunks_per_step` per step, at most `free` prompt tokens riding in one step. A roofline
    is convex in the tokens it carries, so the mean step is the mixture's mean, not the step
    at the mean load (which would let small prompt loads ride free under the memory roof)."""
    prob, steps = _mix_steps(b, chunks_per_step, chunk, free, arrival_cv)
    return _mix_of(prob, _step(rep, *steps, ctx, spec))


def _mixture_quantile(q: float, weights: FloatArray, shift: FloatArray, width: FloatArray,
                      cap: FloatArray) -> FloatArray:
    """One quantile of a mixture of uniforms (see `_mixture_quantiles`)."""
    return _mixture_quantiles((q,), weights, shift, width, cap)[0]


def _mixture_quantiles(qs: Iterable[float], weights: FloatArray, shift: FloatArray,
                       width: FloatArray, cap: FloatArray) -> list[FloatArray]:
    """Quantiles `qs` of a mixture of uniforms U(shift, shift + width) (axis 0 enumerates the
    components), at most `cap`. The mixture's CDF is piecewise linear between the components'
    ends: sort the ends, accumulate the density, and interpolate inside the segment where the
    CDF crosses each q (exact, and one sort for all of them instead of a bisection over every
    component)."""
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
    top = np.max(x, axis=0)
    limit = np.maximum(cap, lo + 1e-12)
    out = []
    for q in qs:
        k = np.clip(np.sum(cdf < q, axis=0) - 1, 0, x.shape[0] - 1)[np.newaxis]
        x_k = np.take_along_axis(x, k, axis=0)[0]
        x_next = np.take_along_axis(x, np.minimum(k + 1, x.shape[0] - 1), axis=0)[0]
        cdf_k = np.take_along_axis(cdf, k, axis=0)[0]
        slope_k = np.take_along_axis(slope, k, axis=0)[0]
        inside = x_k + (q - cdf_k) / np.where(slope_k > 0, slope_k, np.inf)
        value = np.where(slope_k > 0, np.minimum(inside, x_next), x_next)
        value = np.minimum(value, top)
        out.append(arr(np.maximum(np.minimum(value, limit), lo)))
    return out


def serve(rep: Replica, load: Workload, *, max_batch: ArrayLike | None = None,
          token_budget: ArrayLike | None = None, spec: SpecDecode | None = None) -> LoadResult:
    """Latency percentiles, batch and stability of `rep` under `load`."""
    return _serve_at(_Server.of(rep, load, max_batch, token_budget, spec), arr(load.rate_rps))


def serve_classes(rep: Replica, load: Workload, classes: Iterable[RequestClass], *,
                  max_batch: ArrayLike | None = None, token_budget: ArrayLike | None = None,
                  spec: SpecDecode | None = None) -> tuple[LoadResult, ...]:
    """Per class, the latencies of its requests when the classes share `rep` as the stream
    `load` (see `mixed_workload`): one steady state, each class's own prompts and outputs."""
    server = _Server.of(rep, load, max_batch, token_budget, spec)
    rate = arr(load.rate_rps)
    tau = _Settling(server, server.lam_eff(rate)).tau()
    return tuple(_result(server, rate, tau, part=c) for c in classes)


def _serve_at(server: _Server, rate_rps: FloatArray) -> LoadResult:
    """`serve` at `rate_rps` requests/s."""
    return _result(server, rate_rps, _Settling(server, server.lam_eff(rate_rps)).tau())


class _Settling:
    """The fixed point for the mean step length, iterated on many rates at once, one round at
    a time as far as the sets of rates asked for need.

    tau = F(tau), where F is `_Server.step_mean`. F is increasing with slope below 1 under
    capacity, so plain iteration converges monotonically (slowly near capacity, where the
    slope nears 1); Steffensen's extrapolation from two iterations jumps most of the way each
    round. A set of rates iterated on its own stops at the first round where all of them
    have settled, with that round's second iterate (after the last round, its extrapolation);
    `tau` reads that off for any set. The arithmetic is element by element, so one iteration
    serves several sets (a bisection's possible rates) with the numbers each would get alone
    (to the last bit, except that numpy sums a lone candidate's step mixture in another order
    than a wider array's).
    """

    def __init__(self, server: _Server, lam_eff: FloatArray) -> None:
        self._server = server
        self._lam_eff = lam_eff
        init = arr(np.full(np.shape(lam_eff * server.slots * server.budget), 1e-2))
        self._tau, _mix = server.step_mean(lam_eff, init)
        self._x2: list[FloatArray] = []
        self._settled: list[BoolArray] = []

    def _round(self) -> None:
        tau = self._tau
        x1, _mix = self._server.step_mean(self._lam_eff, tau)
        x2, _mix = self._server.step_mean(self._lam_eff, x1)
        d1, d2 = x1 - tau, x2 - x1
        self._x2.append(x2)
        self._settled.append(np.asarray(np.abs(d2) <= _SETTLED * x2, dtype=bool))
        ratio = np.divide(d2, d1, out=np.zeros_like(d2), where=d1 != 0)
        jump = x2 + d2 * ratio / np.where((ratio > 0) & (ratio < 1), 1.0 - ratio, 1.0)
        ok = (ratio > 0) & (ratio < 1) & np.isfinite(jump) & (jump > 0)
        self._tau = arr(np.where(ok, jump, x2))

    def tau(self, members: BoolArray | None = None) -> FloatArray:
        """Step lengths (s) where the set `members` (a mask; None: every rate) stops, for
        every rate."""
        seen = 0
        while True:
            for x2, settled in zip(self._x2[seen:], self._settled[seen:], strict=True):
                if np.all(settled if members is None
                          else settled[np.broadcast_to(members, settled.shape)]):
                    return x2
            seen = len(self._x2)
            if seen == _FIXED_POINT_ITERATIONS:
                return self._tau
            self._round()


@dataclass(frozen=True)
class _Server:
    """A replica under a request stream whose rate is still open: what `serve` derives from
    the lengths alone (slots, decode steps, capacity), arrays over candidates."""

    rep: Replica
    load: Workload
    spec: SpecDecode | None
    i_mean: FloatArray
    """Prompt tokens to prefill per request (the prefix cache's hits taken off)."""
    budget: FloatArray
    """Prompt plus decode tokens one step carries over all its micro-batches: the engine's
    per-micro-batch budget times the pipeline depth."""
    slots: FloatArray
    """Sequences running at most: the batch limit per micro-batch times the pipeline depth,
    or what the KV cache holds."""
    micro: FloatArray
    """Micro-batches per step (the pipeline depth): a prompt rides in one of them, so its
    chunk is at most the step's free budget over `micro`."""
    steps: FloatArray
    """Decode steps of a mean request."""
    n_steps: FloatArray
    ctx: FloatArray
    per_token: float
    capacity: FloatArray
    """Highest request rate the replica sustains (requests/s)."""

    @classmethod
    def of(cls, rep: Replica, load: Workload, max_batch: ArrayLike | None,
           token_budget: ArrayLike | None, spec: SpecDecode | None) -> _Server:
        engine = rep.device.engine
        i_mean = np.maximum(load.input_len.mean * (1.0 - load.prefix_hit), 1.0)
        o = load.output_len
        # A pipeline of depth pp keeps pp micro-batches in flight, each with the engine's batch
        # limit and token budget (TensorRT-LLM's micro-batches; `max_throughput` alike).
        micro = np.asarray(rep.par.pp, dtype=float)
        budget = arr(engine.max_tokens_per_step if token_budget is None else token_budget) \
            * micro
        kv_per_seq = load.input_len.mean + (o.mean if engine.reserve_kv_for_output
                                            else o.mean / 2.0)
        slots = np.minimum(arr(engine.max_batch if max_batch is None else max_batch) * micro,
                           np.floor(rep.memory.kv_capacity_tokens / kv_per_seq))
        slots = np.maximum(slots, 1.0)
        steps = _decode_steps(o, spec)
        n_steps = np.maximum(steps, 1.0)
        ctx = load.input_len.mean + o.mean / 2.0
        per_token = 1.0 if spec is None else spec.expected_tokens

        # Capacity: every slot busy. Prompts then arrive at slots / decode_steps per step, so
        # a step carries slots * input / decode_steps prompt tokens on average whatever its
        # length; the token budget caps the batch at budget / (1 + input / decode_steps).
        full = np.minimum(slots, np.maximum(np.floor(budget / (1.0 + i_mean / n_steps)), 1.0))
        free_full = np.maximum(budget - full, 1.0)
        own_full = _own_free(free_full, micro)
        chunk_full = np.minimum(i_mean, own_full)
        chunks_full = (full / n_steps) * np.ceil(i_mean / own_full)
        t_full = _step_mix(rep, full, chunks_full, chunk_full, free_full, ctx, spec).mean
        # A replica whose weights do not fit serves nothing.
        capacity = np.where(rep.memory.fits, full / (n_steps * t_full), 0.0)
        return cls(rep, load, spec, i_mean, budget, slots, micro, steps, n_steps, ctx,
                   per_token, capacity)

    def lam_eff(self, rate_rps: FloatArray) -> FloatArray:
        """The arrival rate the steady state is solved at: past capacity, just under it."""
        lam = np.maximum(rate_rps, 1e-12)
        return arr(np.maximum(np.minimum(lam, self.capacity * (1.0 - 1e-6)), 1e-12))

    def step_mean(self, lam_eff: FloatArray, tau: FloatArray) -> tuple[FloatArray, _StepMix]:
        """The mean step length (s) a running request sees when the steps it sees have mean
        length `tau`, and the mixture of step lengths.

        A request decodes `steps` steps, each as long as a step of itself and the others
        (Palm: it sees the mean batch b of the others plus one), so Little's law reads
        b = min(lam * steps * tau, slots) with `tau` that step. The time-average step of b
        sequences would undercount where steps grow fast with the batch (an MoE's experts at
        low load: 2.2 ms for one sequence, 3.5 for two)."""
        b = np.minimum(lam_eff * self.steps * tau, self.slots)
        free = np.maximum(self.budget - b, 1.0)
        n_chunks = np.ceil(self.i_mean / _own_free(free, self.micro))
        mix = _step_mix(self.rep, np.minimum(b + 1.0, self.slots), lam_eff * tau * n_chunks,
                        self.i_mean / n_chunks, free, self.ctx, self.spec,
                        self.load.arrival_cv)
        return mix.mean, mix


def _result(server: _Server, rate_rps: FloatArray, tau: FloatArray,
            part: RequestClass | None = None) -> LoadResult:
    """Latencies, batch and stability at `rate_rps`, where the fixed point left the mean
    step at `tau` (s). With `part`, the latencies of that class's requests inside the stream:
    they share its steps, slots and queue, and differ by their own prompt and output lengths
    (and its output tokens/s is that class's)."""
    rep, load, spec = server.rep, server.load, server.spec
    i_mean, budget, slots, steps, n_steps, ctx, per_token, capacity = (
        server.i_mean, server.budget, server.slots, server.steps, server.n_steps, server.ctx,
        server.per_token, server.capacity)
    o = load.output_len if part is None else part.output_len
    part_in = load.input_len if part is None else part.input_len
    part_steps = steps if part is None else _decode_steps(o, spec)
    part_i = np.maximum(part_in.mean * (1.0 - load.prefix_hit), 1.0)
    lam = np.maximum(rate_rps, 1e-12)
    util = lam / np.maximum(capacity, 1e-300)
    stable = util < 1.0
    lam_eff = server.lam_eff(rate_rps)
    tau_final, mix = server.step_mean(lam_eff, tau)
    tau = arr(tau_final)
    b = np.minimum(lam_eff * steps * tau, slots)
    free = np.maximum(budget - b, 1.0)
    # What one prompt may take of a step: its micro-batch's share of the free budget.
    own_free = _own_free(free, server.micro)
    n_chunks = np.ceil(i_mean / own_free)
    chunk = i_mean / n_chunks

    # ---- TPOT. A running request sees itself plus the others, a Poisson number with the
    # mean batch (Palm's theorem for an M/G/inf system), not the time-average batch that
    # counts idle time. Per request it averages its decode steps: the prompt chunks it lives
    # through are Poisson with a small mean (a skewed count, so Poisson quantiles, not a normal
    # one), and the batch drifts over its lifetime (the time-average over one service time
    # keeps 2/3 of the variance), which moves every step's KV traffic.
    seen = b + 1.0
    db = np.maximum(np.sqrt(b), 1.0)
    own_prob, own_steps_mix = _mix_steps(np.minimum(seen, slots), lam_eff * tau * n_chunks,
                                         chunk, free, load.arrival_cv)
    # An arrival's own prompt rides with n = 0, 1, ... others (see TTFT below).
    n_max = 16
    n = np.arange(n_max + 1).reshape((-1,) + (1,) * np.ndim(b))
    group = np.minimum((n + 1.0) * i_mean if part is None else n * i_mean + part_i, free)
    # Every step the percentiles below price, in one evaluation of the step model.
    zero = arr(0.0)
    qs = tuple(QUANTILES.values())
    # The prompt at each percentile, alone in the steps that carry it: a long prompt's
    # chunks are long steps, which a mean-sized prompt would hide.
    prompt_q = np.stack(np.broadcast_arrays(own_free, *(
        np.maximum(part_in.quantile(q) * (1.0 - load.prefix_hit), 1.0) for q in qs))[1:])
    own_length, up, down, with_group, prompt_steps = _steps(rep, [
        own_steps_mix,
        ((seen + db)[np.newaxis], zero, zero),
        (np.maximum(seen - db, 1.0)[np.newaxis], zero, zero),
        (b, group, np.minimum(n + 1.0, group / chunk)),
        (b[np.newaxis], np.minimum(prompt_q, own_free), arr(1.0))], ctx, spec)
    own_mix = _mix_of(own_prob, own_length)
    plain = own_mix.length[0]
    one_chunk = own_mix.length[1]
    tpot_mean = own_mix.mean / per_token
    lifetime_chunks = lam_eff * n_chunks * np.maximum(part_steps, 1.0) * own_mix.mean
    slope = (up[0] - down[0]) / (seen + db - np.maximum(seen - db, 1.0))
    drift_sd = np.abs(slope) * np.sqrt((2.0 / 3.0) * b)
    bump = np.maximum(one_chunk - plain, 0.0) / n_steps
    # The chunks a request lives through vary in size as the prompts do (a prompt split into
    # several chunks less so): a compound Poisson sum, whose spread the count's alone would
    # understate by sqrt(1 + cv^2).
    spread = np.sqrt(1.0 + load.input_len.cv**2 / n_chunks)
    counts = poisson_ppf(np.reshape(qs, (-1,) + (1,) * np.ndim(lifetime_chunks)),
                         np.maximum(lifetime_chunks, 1e-12))

    def tpot_q(q: float, count: FloatArray) -> FloatArray:
        extra = (count - lifetime_chunks) * bump * spread
        return arr(tpot_mean + (extra + ndtri(q) * drift_sd) / per_token)

    tpot = Percentiles(tpot_mean, *(tpot_q(q, c) for q, c in zip(qs, counts, strict=True)))

    # ---- TTFT. An arrival lands in a step chosen by length (k chunks with probability
    # p_k * len_k / mean) and waits out a uniform residual of it; its prompt then rides in the
    # next step(s) with the N other prompts that arrived in that step (N ~ Poisson(lam len_k)),
    # its chunks served after theirs at random order within the group. Queueing for a batch
    # slot (Erlang C, Allen-Cunneen) and for the prefill budget when prompts outgrow it
    # (Kingman) shift the whole distribution.
    landed = mix.prob * mix.length / np.maximum(mix.mean, 1e-15)          # (K, ...)
    others = _count_pmf(lam_eff * mix.length, n_max, load.arrival_cv)    # (N, K, ...)
    # Prompt tokens ahead of and including this one: half the others on average go first.
    ahead = (n / 2.0 + 1.0) * i_mean if part is None else n / 2.0 * i_mean + part_i
    own_steps = np.maximum(np.ceil(ahead / free), np.ceil(
        (i_mean if part is None else part_i) / own_free))
    own = (own_steps * with_group)[:, np.newaxis]                         # (N, 1, ...)
    weights = others * landed[np.newaxis]                                 # (N, K, ...)
    shift = np.broadcast_to(own, weights.shape)
    width = np.broadcast_to(mix.length[np.newaxis], weights.shape)

    hold = (steps + n_chunks) * tau
    offered = lam_eff * hold
    p_slot = erlang_c(slots, offered)
    variability = (load.arrival_cv**2 + load.output_len.cv**2) / 2.0
    wait_s = p_slot * hold / np.maximum(slots - offered, 1e-9) * variability
    # Prompts longer than half the free budget cannot share steps: then they queue for the
    # budget itself, an M/G/1 on prefill work (Kingman). Shorter prompts of one length share
    # the next step, which the mixture above already prices.
    work = n_chunks * np.maximum(own_mix.length[1] - own_mix.length[0], 0.0)
    rho_p = np.clip(lam_eff * work, 0.0, 0.999999)
    cv_in = load.input_len.cv
    queues = i_mean * 2.0 > own_free
    # Prompts of varied length also queue for the budget when they are short on average: a
    # long one takes whole steps of it while the next ones wait (Pollaczek-Khinchine's
    # variability term, zero for prompts of one length).
    wait_p = rho_p / (1.0 - rho_p) * work * np.where(
        queues, (load.arrival_cv**2 + cv_in**2) / 2.0, cv_in**2 / 2.0)
    wait_mean = wait_s + wait_p
    p_wait = np.clip(np.maximum(p_slot, np.where(queues | (cv_in > 0), rho_p, 0.0)), 1e-12,
                     1.0)
    base_mean = np.sum(weights * (shift + width / 2.0), axis=(0, 1))
    ttft_mean = base_mean + wait_mean
    flat_w = weights.reshape((-1, *weights.shape[2:]))
    flat_s = shift.reshape((-1, *shift.shape[2:]))
    flat_v = width.reshape((-1, *width.shape[2:]))
    # A step grows with its prompt tokens at the one-chunk step's rate (s per token).
    token_s = np.maximum(one_chunk - plain, 0.0) / np.maximum(chunk, 1.0)
    if part_in.values is not None or np.any(np.asarray(part_in.cv) > 0):
        # Prompts of varied length: the percentiles mix strata of the own prompt's length
        # (a short prompt's first token comes sooner than the mean prompt's). Its prompt is
        # done after k = ceil(ahead / free) steps that carry the group's tokens, the last
        # one only what is left of them.
        probabilities = part_in.probabilities
        if part_in.values is not None and probabilities is not None \
                and part_in.values.size <= _PROMPT_STRATA:
            # A short histogram: its own values with their probabilities.
            strata = [(float(p), arr(v)) for v, p in zip(part_in.values, probabilities,
                                                          strict=True)]
        else:
            strata = [(1.0 / _PROMPT_STRATA, part_in.quantile((j + 0.5) / _PROMPT_STRATA))
                      for j in range(_PROMPT_STRATA)]
        ws, ss = [], []
        for share, tokens in strata:
            x = np.maximum(tokens * (1.0 - load.prefix_hit), 1.0)
            k = np.maximum(np.ceil((n / 2.0 * i_mean + x) / free), np.ceil(x / own_free))
            own_x = k * plain + np.minimum(k * free, n * i_mean + x) * token_s
            ws.append(flat_w * share)
            ss.append(np.broadcast_to(own_x[:, np.newaxis], weights.shape)
                      .reshape(flat_s.shape))
        flat_w, flat_s = np.concatenate(ws), np.concatenate(ss)
        flat_v = np.concatenate([flat_v] * len(strata))
    cap_t = np.max(flat_s + flat_v, axis=0)

    def ttft_q(q: float, body: FloatArray, k: int) -> FloatArray:
        cond = wait_mean / p_wait
        w = np.where(q <= 1.0 - p_wait, 0.0,
                     cond * np.log(p_wait / np.maximum(1.0 - q, 1e-12)))
        # The prompt alone: full steps, then one with what is left of it.
        full = np.ceil(prompt_q[k] / own_free) - 1.0
        longer = full * prompt_steps[k] + np.where(
            full > 0, plain + (prompt_q[k] - full * own_free) * token_s, prompt_steps[k])
        return arr(np.maximum(body, longer) + w)

    bodies = _mixture_quantiles(qs, flat_w, flat_s, flat_v, cap_t)
    ttft = Percentiles(ttft_mean, *(ttft_q(q, body, k)
                                    for k, (q, body) in enumerate(zip(qs, bodies, strict=True))))

    # ---- End to end: TTFT plus decoding the output at the batch's step time.
    e2e_mean = ttft_mean + part_steps * tau

    def e2e_q(q: float) -> FloatArray:
        out_q = np.maximum(o.quantile(q) - 1.0, 0.0) / per_token
        return ttft.at(quantile_name(q)) + out_q * tau

    e2e = Percentiles(e2e_mean, *(e2e_q(q) for q in QUANTILES.values()))
    unstable = ~stable
    inf = np.inf

    def mask(p: Percentiles) -> Percentiles:
        return Percentiles(*(np.where(unstable, inf, v) for v in
                             (p.mean, p.p50, p.p90, p.p99)))

    out_tok = lam_eff * o.mean * (1.0 if part is None else part.share)
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


# What one run of the fixed point costs besides its rates, in candidate-rates: the serving
# model's fixed cost per call, which rules at the small arrays of a search (a rough figure:
# it only sets how far `goodput` looks ahead, never its answer).
_RUN_OVERHEAD_RATES = 200.0


def _lookahead(candidates: int) -> int:
    """Bisection steps to iterate the fixed point for at once: a run for d steps takes the
    2**d - 1 rates they may visit per candidate; the depth with the least cost per step."""
    return min(range(1, 7),
               key=lambda d: (_RUN_OVERHEAD_RATES + candidates * (2**d - 1)) / d)


def _slack(server: _Server, rate_rps: FloatArray, tau: FloatArray, slo: Slo,
           classes: Sequence[RequestClass]) -> tuple[FloatArray, np.ndarray, LoadResult]:
    """Worst ratio of latency to bound over `slo` (on the whole stream) and each class's own
    objectives (on its requests), the term it comes from ("CLASS.ttft_p99" for a class's),
    and the whole stream's result."""
    res = _result(server, rate_rps, tau)
    worst, term = slo_slack(res, slo)
    for c in classes:
        if c.slo is None:
            continue
        value, name = slo_slack(_result(server, rate_rps, tau, part=c), c.slo)
        worse = value > worst
        named = np.char.add(f"{c.name}.", np.asarray(name).astype(str)).astype(object)
        term = np.where(worse, named, term).astype(object)
        worst = np.maximum(worst, value)
    return worst, term, res


def goodput(rep: Replica, load: Workload, slo: Slo, *, max_batch: ArrayLike | None = None,
            token_budget: ArrayLike | None = None, spec: SpecDecode | None = None,
            iterations: int = 30, classes: Sequence[RequestClass] = (),
            ) -> tuple[FloatArray, np.ndarray, LoadResult]:
    """Highest request rate per replica that meets `slo` (0 where even a trickle misses it),
    what binds at that rate ("capacity" or the SLO term), and the result there. Bisection on
    the rate, vectorised over candidates. With `classes` (the parts `load` mixes, see
    `mixed_workload`), each class's own objectives must hold for its requests too.

    Each step takes the rates and reaches the results of one `serve` call per step; the
    fixed point of the step length is iterated for the next few steps' possible rates at once
    (see `_Settling`, `_lookahead`), and each step reads its own off that run."""
    server = _Server.of(rep, load, max_batch, token_budget, spec)
    hi = server.capacity * (1.0 - 1e-6)
    lo = np.zeros_like(hi)
    done = 0
    # numpy sums a lone candidate's step mixtures pairwise but a wider array's in order: a
    # lone candidate keeps one rate per run, as `serve` has it, to keep its last bits.
    lone = np.size(hi) == 1
    lookahead = 1 if lone else _lookahead(int(np.size(hi)))
    while done < iterations:
        depth = min(lookahead, iterations - done)
        # The midpoints the next `depth` steps may visit, level by level; the children of the
        # node (a, b) at position p are (a, mid) at 2p (the SLO missed) and (mid, b) at 2p + 1.
        spans, mids = [(lo, hi)], []
        for _ in range(depth):
            level = [(a + b) / 2.0 for a, b in spans]
            mids.append(level)
            spans = [half for (a, b), m in zip(spans, level, strict=True)
                     for half in ((a, m), (m, b))]
        flat = [m for level in mids for m in level]
        rates = np.maximum(np.stack(np.broadcast_arrays(*flat)), 1e-9)
        settling = _Settling(server, server.lam_eff(rates))
        node = np.zeros(np.shape(hi), dtype=np.int64)
        first = 0
        for level in mids:
            index = first + node
            tau = _pick(settling.tau(_members(rates, index)), index)
            slack, _term, res = _slack(server, _pick(rates, index), tau, slo, classes)
            ok = (slack <= 1.0) & res.stable
            mid = _pick(np.stack(np.broadcast_arrays(*level)), node)
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
            first += len(level)
            node = 2 * node + ok
        done += depth
    # The trickle, the answer and the rate just past it: three sets of rates, one run.
    ends = (arr(1e-6), np.maximum(lo, 1e-9), np.maximum(hi, 1e-9))
    if lone:
        at = [_slack(server, rate, _Settling(server, server.lam_eff(rate)).tau(), slo, classes)
              for rate in ends]
        (probe_slack, _t, probe), (_s, _t, final), (_s, term, _past) = at
    else:
        stacked = np.stack(np.broadcast_arrays(*ends))
        settling = _Settling(server, server.lam_eff(stacked))
        taus = np.stack([settling.tau(_members(stacked, k))[k] for k in range(3)])
        slacks, terms, at_ends = _slack(server, stacked, taus, slo, classes)
        probe, final, _past = (_row(at_ends, k) for k in range(3))
        shape = np.shape(at_ends.step_s)
        probe_slack = np.broadcast_to(slacks, shape)[0]
        term = np.broadcast_to(terms, shape)[2]
    near_cap = lo >= probe.capacity_rps * 0.98
    binding = np.where(near_cap, "capacity", term).astype(object)
    trickle_fails = probe_slack > 1.0
    rate = np.where(trickle_fails, 0.0, lo)
    binding = np.where(trickle_fails, term, binding)
    binding = np.where(rep.memory.fits, binding, "memory").astype(object)
    rate = np.where(rep.memory.fits, rate, 0.0)
    return rate, binding, final


def _members(stacked: FloatArray, index: ArrayLike) -> BoolArray:
    """Mask of the rows `index` (per candidate) of an array stacked along axis 0."""
    rows = np.arange(stacked.shape[0]).reshape((-1,) + (1,) * (stacked.ndim - 1))
    return np.broadcast_to(rows == index, stacked.shape)


def _row(result: LoadResult, k: int) -> LoadResult:
    """Row `k` of results stacked along axis 0 (arrays that do not vary along it, such as
    the capacity, broadcast)."""
    shape = np.shape(result.step_s)

    def at(value: FloatArray) -> FloatArray:
        return np.array(np.broadcast_to(value, shape)[k], dtype=np.float64)

    def pct(p: Percentiles) -> Percentiles:
        return Percentiles(at(p.mean), at(p.p50), at(p.p90), at(p.p99))

    return LoadResult(pct(result.ttft), pct(result.tpot), pct(result.e2e), at(result.batch),
                      at(result.step_s), at(result.utilization), at(result.capacity_rps),
                      np.array(np.broadcast_to(result.stable, shape)[k], dtype=bool),
                      at(result.output_tok_s),
                      at(result.queue_wait_s))


def _pick(stacked: FloatArray, index: np.ndarray) -> FloatArray:
    """Row `index` (per candidate) of an array stacked along axis 0."""
    return arr(np.take_along_axis(stacked, index[np.newaxis], axis=0)[0])


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
    pp = np.asarray(rep.par.pp, dtype=float)
    # Each of the pp micro-batches has the engine's budget and batch limit (see `_Server`).
    chunks = np.ceil(i / np.maximum(budget - n / pp, 1.0))
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
    stable = np.asarray(n <= np.minimum(slots, engine.max_batch * pp), dtype=bool)
    return LoadResult(same, Percentiles(tp, tp, tp, tp), Percentiles(e2e, e2e, e2e, e2e),
                      n * steps / cycle_steps, tau, np.where(stable, 0.0, np.inf), rate,
                      stable, rate * o, np.zeros_like(tau))
