"""Discrete-event simulation of LLM serving replicas with continuous batching.

The reference the analytical queueing model is tested against, and `fleetplan simulate`.
Times are seconds, lengths are tokens. Everything is seeded: the same inputs and seed give
identical results.

Scheduling semantics (one engine per replica, vLLM-style continuous batching):

- Routing. Each request goes to a replica when it arrives: `round_robin` (arrival order modulo
  the replica count) or `jsq` (the replica with the fewest outstanding, i.e. queued or running,
  requests; ties to the lowest index). Every replica has its own FIFO queue.
- Steps. A replica runs engine steps back to back while it has running or queued requests and is
  idle otherwise; an idle replica wakes at the next arrival routed to it. At one instant, step
  ends are handled before arrivals and arrivals before step starts, so a request arriving as a
  step ends can join the next step, and JSQ sees the requests that step finished as gone.
- Decode. In a step every running sequence whose prefill is complete decodes one token; with
  speculative decoding (`draft_len > 0`) it emits 1 + the number of drafts accepted in order,
  each with probability `acceptance`, up to the first rejection (a truncated geometric), capped
  at its remaining output. Decoding sequences are never paused or preempted.
- Prefill (chunked). The rest of the step's token budget, `token_budget - decode_seqs *
  (1 + draft_len)` (a speculative sequence verifies 1 + draft_len tokens), goes to prompt chunks
  in FCFS order: first sequences already part-way through their prompts, then new requests
  admitted from the head of the queue while fewer than `max_batch` sequences run, the KV cache
  has room and budget is left. Admission is strict FCFS: a head that does not fit blocks those
  behind it.
- KV cache. With `reserve_kv_for_output` admission reserves input_len + output_len tokens, held
  until the request finishes, so the cache never overflows. Otherwise admission needs room for
  the prompt next to the current contexts (prompt + generated tokens) of the running requests;
  generation then grows the cache, possibly past capacity, which the simulation allows (no
  preemption or swapping is modelled), so prompt-only runs are optimistic under KV pressure.
- Tokens. A request whose prefill completes in a step emits its first token at the end of that
  step (`first_token_s`); its other output_len - 1 tokens come from later decode steps, and it
  finishes at the end of the step that emits its last token.
- Step time. `config.step_cost(prefill_tokens, decode_seqs, context_tokens)` where
  `context_tokens` sums the contexts (prompt + tokens generated so far) of the decoding
  sequences before the step; under speculation the caller's cost function accounts for drafts.
- Statistics. The first `warmup_fraction` of requests (by arrival) are simulated but left out of
  the results. Utilisation and mean batch are time averages per replica over the window from the
  first kept arrival to the last arrival (to the last finish when that window is empty), so the
  final drain does not dilute them.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

from .arrays import FloatArray

IntArray = npt.NDArray[np.int64]

ROUTINGS = ("round_robin", "jsq")

# Event kinds, in the order events at one instant are handled: a step's end first (it frees
# batch slots and KV, which admission and JSQ must see), then arrivals, then step starts (so a
# request arriving as a step ends joins the very next step).
_END, _ARRIVAL, _START = 0, 1, 2


class StepCost(Protocol):
    """Prices one engine step."""

    def __call__(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """Seconds for one engine step that processes `prefill_tokens` prompt tokens and one
        decode token for each of `decode_seqs` running sequences whose contexts sum to
        `context_tokens`."""
        ...


@dataclass(frozen=True)
class ReplicaConfig:
    """One serving replica's engine: step prices, batch limits, KV cache, speculation."""

    step_cost: StepCost
    max_batch: int
    """Most sequences running (decoding or prefilling) at once."""
    token_budget: int
    """Tokens per step: decode tokens plus prefill chunk tokens (chunked prefill)."""
    kv_capacity_tokens: float
    """KV cache capacity of the replica, tokens (math.inf for unlimited)."""
    reserve_kv_for_output: bool
    """Admission reserves input + output tokens of KV (True) or the prompt only (False)."""
    draft_len: int = 0
    """Speculative decoding: drafted tokens per step (0 = off)."""
    acceptance: float = 0.0
    """Probability that each drafted token is accepted."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {self.token_budget}")
        if not self.kv_capacity_tokens > 0:
            raise ValueError(f"kv_capacity_tokens must be > 0, got {self.kv_capacity_tokens}")
        if self.draft_len < 0:
            raise ValueError(f"draft_len must be >= 0, got {self.draft_len}")
        if not 0.0 <= self.acceptance <= 1.0:
            raise ValueError(f"acceptance must be in [0, 1], got {self.acceptance}")


@dataclass(frozen=True)
class Requests:
    """A request trace: arrival times (s) and prompt and output lengths (tokens)."""

    arrival_s: FloatArray
    """Non-decreasing arrival times, s."""
    input_len: IntArray
    """Prompt tokens, >= 1."""
    output_len: IntArray
    """Generated tokens, >= 1."""
    cls: IntArray | None = None
    """Optional class id per request (carried through to the result)."""


@dataclass(frozen=True)
class SimResult:
    """Per-request times (s) of the kept (post-warmup) requests, and run statistics."""

    arrival_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray
    ttft_s: FloatArray
    """Time to first token: first_token - arrival, s."""
    tpot_s: FloatArray
    """Time per output token: (finish - first_token) / (output_len - 1), s; NaN for one token."""
    e2e_s: FloatArray
    """End to end: finish - arrival, s."""
    replica: IntArray
    """Replica index each request ran on."""
    steps: int
    """Engine steps simulated, all replicas and all requests (warmup included)."""
    mean_batch: float
    """Time average of running sequences per replica (idle time counts as 0)."""
    utilization: float
    """Fraction of time replicas were busy stepping."""
    cls: IntArray | None = None
    """Class id per kept request, when the trace had one."""

    def percentiles(self, where: npt.NDArray[np.bool_] | None = None) \
            -> dict[str, dict[str, float]]:
        """{"ttft_s": {"mean", "p50", "p90", "p99"}, "tpot_s": {...}, "e2e_s": {...}}, s, of
        the kept requests (those `where` marks, when given); NaNs ignored (NaN where nothing
        is left)."""
        out: dict[str, dict[str, float]] = {}
        for name, values in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s),
                             ("e2e_s", self.e2e_s)):
            v = values if where is None else values[where]
            v = v[~np.isnan(v)]
            if v.size == 0:
                out[name] = {"mean": math.nan, "p50": math.nan, "p90": math.nan, "p99": math.nan}
                continue
            p50, p90, p99 = np.percentile(v, [50.0, 90.0, 99.0])
            out[name] = {"mean": float(v.mean()), "p50": float(p50), "p90": float(p90),
                         "p99": float(p99)}
        return out


def poisson_arrivals(rate_rps: float, n: int, rng: np.random.Generator) -> FloatArray:
    """`n` arrival times (s) of a Poisson process of `rate_rps` requests per second."""
    return gamma_arrivals(rate_rps, 1.0, n, rng)


def gamma_arrivals(rate_rps: float, cv: float, n: int, rng: np.random.Generator) -> FloatArray:
    """`n` arrival times (s) whose gaps are Gamma with mean 1/rate_rps and coefficient of
    variation `cv` (1 is Poisson, 0 evenly spaced, above 1 burstier)."""
    if not rate_rps > 0:
        raise ValueError(f"rate_rps must be > 0, got {rate_rps}")
    if not cv >= 0:
        raise ValueError(f"cv must be >= 0, got {cv}")
    if cv == 0:
        gaps = np.full(n, 1.0 / rate_rps)
    elif cv == 1.0:
        gaps = rng.exponential(1.0 / rate_rps, n)
    else:
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), n)
    return np.cumsum(gaps, dtype=np.float64)


class _Replica:
    """Mutable state of one replica's engine."""

    __slots__ = ("busy", "ctx_sum", "dec_left", "dec_req", "finish_heap", "kv_used", "n_dec",
                 "outstanding", "plan_dec", "plan_prefill", "prefilling", "queue", "running",
                 "step_index")

    def __init__(self) -> None:
        self.queue: deque[int] = deque()  # routed here, not yet admitted
        self.prefilling: list[int] = []  # admitted, prompt not complete, in admission order
        self.running = 0  # admitted and unfinished: what max_batch limits
        self.outstanding = 0  # routed and unfinished: what JSQ compares
        self.kv_used = 0.0
        self.n_dec = 0  # sequences decoding
        self.ctx_sum = 0  # sum of their contexts (prompt + generated)
        # Without speculation every decoding sequence gains one token per step, so its last
        # step is known when it starts decoding: a heap of (step index, request) replaces a
        # per-step pass over the batch.
        self.finish_heap: list[tuple[int, int]] = []
        # With speculation, the decoding requests and their remaining tokens, in order.
        self.dec_req: list[int] = []
        self.dec_left: list[int] = []
        self.step_index = 0  # index of the step running or next to run
        self.busy = False  # a step is running or about to start
        self.plan_prefill: list[tuple[int, int]] = []  # (request, chunk) of the running step
        self.plan_dec = 0  # sequences decoding in the running step


class _Sim:
    """The event loop shared by `simulate` and `closed_loop`."""

    def __init__(self, config: ReplicaConfig, replicas: int, routing: str, seed: int,
                 inp: list[int], out: list[int], arrival: list[float]) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.cfg = config
        self.jsq = routing == "jsq"
        self.rng = np.random.default_rng(seed)
        self.reps = [_Replica() for _ in range(replicas)]
        self.inp = inp
        self.out = out
        n = len(inp)
        self.arrival = arrival
        self.first = [math.nan] * n
        self.finish = [math.nan] * n
        self.replica_of = [-1] * n
        self.prompt_left = list(inp)
        self.heap: list[tuple[float, int, int, int]] = []
        self.counter = 0  # tie-break: FIFO among events of one kind at one instant
        self.arrived = 0
        self.steps = 0
        self.step_t0: list[float] = []
        self.step_t1: list[float] = []
        self.step_batch: list[int] = []
        self.on_finish: Callable[[float], None] | None = None

    def push(self, t: float, kind: int, payload: int) -> None:
        heapq.heappush(self.heap, (t, kind, self.counter, payload))
        self.counter += 1

    def run(self) -> None:
        heap = self.heap
        while heap:
            t, kind, _, payload = heapq.heappop(heap)
            if kind == _END:
                self.end(t, payload)
            elif kind == _ARRIVAL:
                self.arrive(t, payload)
            else:
                self.start(t, payload)

    def arrive(self, t: float, req: int) -> None:
        reps = self.reps
        if self.jsq:
            counts = [rep.outstanding for rep in reps]
            r = counts.index(min(counts))
        else:
            r = self.arrived % len(reps)
        self.arrived += 1
        rep = reps[r]
        self.replica_of[req] = r
        rep.outstanding += 1
        rep.queue.append(req)
        if not rep.busy:
            rep.busy = True
            self.push(t, _START, r)

    def start(self, t: float, r: int) -> None:
        cfg = self.cfg
        rep = self.reps[r]
        n_dec = rep.n_dec
        budget = cfg.token_budget - n_dec * (1 + cfg.draft_len)
        plan: list[tuple[int, int]] = []
        prefill = 0
        left = self.prompt_left
        for req in rep.prefilling:
            if budget <= 0:
                break
            c = min(left[req], budget)
            plan.append((req, c))
            budget -= c
            prefill += c
        queue = rep.queue
        while budget > 0 and queue and rep.running < cfg.max_batch:
            req = queue[0]
            need = self.inp[req] + self.out[req] if cfg.reserve_kv_for_output else self.inp[req]
            if rep.kv_used + need > cfg.kv_capacity_tokens:
                break
            queue.popleft()
            rep.running += 1
            rep.kv_used += need
            rep.prefilling.append(req)
            c = min(left[req], budget)
            plan.append((req, c))
            budget -= c
            prefill += c
        if prefill == 0 and n_dec == 0:
            rep.busy = False
            return
        dur = float(cfg.step_cost(prefill, n_dec, rep.ctx_sum))
        if not (dur >= 0.0 and math.isfinite(dur)):
            raise ValueError(f"step_cost({prefill}, {n_dec}, {rep.ctx_sum}) returned {dur}")
        rep.plan_prefill = plan
        rep.plan_dec = n_dec
        self.steps += 1
        self.step_t0.append(t)
        self.step_t1.append(t + dur)
        self.step_batch.append(rep.running)
        self.push(t + dur, _END, r)

    def draws(self, n: int) -> list[int]:
        """Tokens each of `n` speculating sequences emits this step (before the output cap)."""
        cfg = self.cfg
        if cfg.acceptance >= 1.0:
            return [cfg.draft_len + 1] * n
        if cfg.acceptance <= 0.0:
            return [1] * n
        # Drafts accepted before the first rejection: geometric failures, truncated at draft_len.
        accepted = np.minimum(self.rng.geometric(1.0 - cfg.acceptance, n) - 1, cfg.draft_len)
        return cast(list[int], (accepted + 1).tolist())

    def end(self, t: float, r: int) -> None:
        cfg = self.cfg
        rep = self.reps[r]
        k = rep.step_index
        rep.step_index += 1
        inp, out = self.inp, self.out
        finished: list[int] = []
        n_dec = rep.plan_dec
        if n_dec:
            if cfg.draft_len == 0:
                gained = n_dec
                fh = rep.finish_heap
                while fh and fh[0][0] == k:
                    finished.append(heapq.heappop(fh)[1])
            else:
                gained = 0
                keep_req: list[int] = []
                keep_left: list[int] = []
                for req, remaining, drawn in zip(rep.dec_req, rep.dec_left,
                                                 self.draws(n_dec), strict=True):
                    g = min(drawn, remaining)
                    gained += g
                    if g == remaining:
                        finished.append(req)
                    else:
                        keep_req.append(req)
                        keep_left.append(remaining - g)
                rep.dec_req, rep.dec_left = keep_req, keep_left
            rep.ctx_sum += gained
            if not cfg.reserve_kv_for_output:
                rep.kv_used += gained
            rep.n_dec -= len(finished)
            for req in finished:
                rep.ctx_sum -= inp[req] + out[req]
        left = self.prompt_left
        prompt_done = False
        for req, c in rep.plan_prefill:
            left[req] -= c
            if left[req]:
                continue
            prompt_done = True
            self.first[req] = t
            if not cfg.reserve_kv_for_output:
                rep.kv_used += 1
            o = out[req]
            if o == 1:
                finished.append(req)
                continue
            rep.n_dec += 1
            rep.ctx_sum += inp[req] + 1
            if cfg.draft_len == 0:
                heapq.heappush(rep.finish_heap, (k + o - 1, req))
            else:
                rep.dec_req.append(req)
                rep.dec_left.append(o - 1)
        if prompt_done:
            rep.prefilling = [req for req in rep.prefilling if left[req]]
        for req in finished:
            self.finish[req] = t
            rep.running -= 1
            rep.outstanding -= 1
            # Prompt-only accounting grew to the full context too, so both modes free the same.
            rep.kv_used -= inp[req] + out[req]
        if self.on_finish is not None:
            for _ in finished:
                self.on_finish(t)
        if rep.running or rep.queue:
            heap = self.heap
            if heap and heap[0][0] <= t:
                self.push(t, _START, r)  # other events at this instant go first
            else:
                self.start(t, r)
        else:
            rep.busy = False

    def result(self, n_warm: int, cls: IntArray | None) -> SimResult:
        arrival = np.asarray(self.arrival, dtype=np.float64)[n_warm:]
        first = np.asarray(self.first, dtype=np.float64)[n_warm:]
        finish = np.asarray(self.finish, dtype=np.float64)[n_warm:]
        out = np.asarray(self.out, dtype=np.int64)[n_warm:]
        multi = out > 1
        tpot = np.full(out.shape, np.nan)
        tpot[multi] = (finish[multi] - first[multi]) / (out[multi] - 1)
        w0 = float(arrival[0]) if arrival.size else 0.0
        w1 = float(arrival[-1]) if arrival.size else 0.0
        if w1 <= w0:
            w1 = float(np.max(self.finish)) if self.finish else w0
        t0 = np.asarray(self.step_t0, dtype=np.float64)
        t1 = np.asarray(self.step_t1, dtype=np.float64)
        overlap = np.clip(np.minimum(t1, w1) - np.maximum(t0, w0), 0.0, None)
        span = len(self.reps) * (w1 - w0)
        if span > 0:
            utilization = float(overlap.sum() / span)
            mean_batch = float(overlap @ np.asarray(self.step_batch, dtype=np.float64) / span)
        else:
            utilization = mean_batch = math.nan
        return SimResult(
            arrival_s=arrival, first_token_s=first, finish_s=finish, ttft_s=first - arrival,
            tpot_s=tpot, e2e_s=finish - arrival,
            replica=np.asarray(self.replica_of, dtype=np.int64)[n_warm:], steps=self.steps,
            mean_batch=mean_batch, utilization=utilization,
            cls=None if cls is None else np.asarray(cls, dtype=np.int64)[n_warm:])


def _check_lengths(config: ReplicaConfig, input_len: IntArray, output_len: IntArray) -> None:
    if input_len.shape != output_len.shape or input_len.ndim != 1:
        raise ValueError("input_len and output_len must be 1-D arrays of one length")
    if input_len.size and (input_len.min() < 1 or output_len.min() < 1):
        raise ValueError("input_len and output_len must be >= 1")
    need = input_len + output_len if config.reserve_kv_for_output else input_len
    if need.size and need.max() > config.kv_capacity_tokens:
        # Such a request could never be admitted and would block its queue for ever.
        raise ValueError(f"a request needs {int(need.max())} KV tokens, more than the "
                         f"replica's {config.kv_capacity_tokens}")


def _warm_count(n: int, warmup_fraction: float) -> int:
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    return math.floor(warmup_fraction * n)


def simulate(requests: Requests, config: ReplicaConfig, *, replicas: int = 1,
             routing: str = "round_robin", seed: int = 0,
             warmup_fraction: float = 0.1) -> SimResult:
    """Serve an open-loop trace on `replicas` replicas.

    routing: "round_robin" or "jsq" (join the replica with the fewest outstanding requests,
    ties to the lowest index). warmup_fraction: the first fraction of requests (by arrival) are
    simulated but excluded from the result's arrays and statistics (steady state). The seed
    drives speculative-decoding acceptance only; the trace itself is given.
    """
    arrival = np.asarray(requests.arrival_s, dtype=np.float64)
    input_len = np.asarray(requests.input_len, dtype=np.int64)
    output_len = np.asarray(requests.output_len, dtype=np.int64)
    _check_lengths(config, input_len, output_len)
    if arrival.shape != input_len.shape:
        raise ValueError("arrival_s must have one entry per request")
    if arrival.size == 0:
        raise ValueError("no requests to simulate")
    if not np.all(np.isfinite(arrival)) or np.any(np.diff(arrival) < 0):
        raise ValueError("arrival_s must be finite and non-decreasing")
    n_warm = _warm_count(arrival.size, warmup_fraction)
    sim = _Sim(config, replicas, routing, seed, input_len.tolist(), output_len.tolist(),
               arrival.tolist())
    # Arrivals enter the heap in trace order, so simultaneous ones keep it.
    sim.heap = [(t, _ARRIVAL, i, i) for i, t in enumerate(sim.arrival)]
    sim.counter = len(sim.heap)
    sim.run()
    return sim.result(n_warm, requests.cls)


def closed_loop(concurrency: int, input_len: IntArray, output_len: IntArray,
                config: ReplicaConfig, *, requests: int, replicas: int = 1,
                routing: str = "round_robin", seed: int = 0,
                warmup_fraction: float = 0.1) -> SimResult:
    """`concurrency` clients each send a request at time 0, wait for it to finish and send the
    next at once, `requests` requests in all. Each request's (input, output) lengths are a pair
    of the given arrays drawn at random with the seed. The first `warmup_fraction` of requests
    (by send time) are left out of the result, as in `simulate`.
    """
    ins = np.asarray(input_len, dtype=np.int64)
    outs = np.asarray(output_len, dtype=np.int64)
    _check_lengths(config, ins, outs)
    if ins.size == 0:
        raise ValueError("input_len and output_len must not be empty")
    if concurrency < 1 or requests < 1:
        raise ValueError("concurrency and requests must be >= 1")
    n_warm = _warm_count(requests, warmup_fraction)
    # A stream of its own, so the lengths do not shift the acceptance draws of the engine.
    pick = np.random.default_rng([seed, 1]).integers(0, ins.size, size=requests)
    arrival = [math.nan] * requests
    sim = _Sim(config, replicas, routing, seed, ins[pick].tolist(), outs[pick].tolist(),
               arrival)
    issued = 0

    def send(t: float) -> None:
        nonlocal issued
        if issued < requests:
            arrival[issued] = t
            sim.push(t, _ARRIVAL, issued)
            issued += 1

    for _ in range(min(concurrency, requests)):
        send(0.0)
    sim.on_finish = send
    sim.run()
    return sim.result(n_warm, None)
