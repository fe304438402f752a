"""The serving simulation against hand-computed timelines and exact queueing theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fleetplan.models.simulate import (
    ReplicaConfig,
    Requests,
    SimResult,
    closed_loop,
    gamma_arrivals,
    poisson_arrivals,
    simulate,
)

TAU = 0.01  # s, the step time of the hand-computed cases


class Recorder:
    """A constant step cost that records every call (prefill, decode seqs, context)."""

    def __init__(self, seconds: float = TAU) -> None:
        self.seconds = seconds
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        self.calls.append((prefill_tokens, decode_seqs, context_tokens))
        return self.seconds


def config(cost: Recorder | None = None, *, max_batch: int = 64, token_budget: int = 8192,
           kv: float = math.inf, reserve: bool = True, draft_len: int = 0,
           acceptance: float = 0.0) -> ReplicaConfig:
    return ReplicaConfig(step_cost=cost if cost is not None else Recorder(),
                         max_batch=max_batch, token_budget=token_budget,
                         kv_capacity_tokens=kv, reserve_kv_for_output=reserve,
                         draft_len=draft_len, acceptance=acceptance)


def trace(arrival: list[float] | np.ndarray, inp: int | list[int] | np.ndarray,
          out: int | list[int] | np.ndarray) -> Requests:
    a = np.asarray(arrival, dtype=np.float64)
    return Requests(a, np.broadcast_to(np.asarray(inp, dtype=np.int64), a.shape).copy(),
                    np.broadcast_to(np.asarray(out, dtype=np.int64), a.shape).copy())


def run(requests: Requests, cfg: ReplicaConfig, *, replicas: int = 1,
        routing: str = "round_robin") -> SimResult:
    return simulate(requests, cfg, replicas=replicas, routing=routing, warmup_fraction=0.0)


# 1. One request -------------------------------------------------------------------------------

def test_single_request_timeline() -> None:
    cost = Recorder()
    r = run(trace([0.0], 100, 5), config(cost))
    # Step 1 prefills all 100 prompt tokens and emits token 1 at 10 ms; steps 2-5 decode
    # tokens 2-5, the last ending at 5 * 10 ms = 50 ms; TPOT = (50 - 10) / (5 - 1) = 10 ms.
    assert r.ttft_s[0] == pytest.approx(0.010)
    assert r.finish_s[0] == pytest.approx(0.050)
    assert r.tpot_s[0] == pytest.approx(0.010)
    assert r.e2e_s[0] == pytest.approx(0.050)
    assert r.steps == 5
    # Decode contexts are prompt + tokens so far before the step: 101, 102, 103, 104.
    assert cost.calls == [(100, 0, 0), (0, 1, 101), (0, 1, 102), (0, 1, 103), (0, 1, 104)]
    assert r.utilization == pytest.approx(1.0)
    assert r.mean_batch == pytest.approx(1.0)


def test_one_token_request_has_nan_tpot_and_percentiles_skip_it() -> None:
    r = run(trace([0.0, 1.0], 10, [1, 3]), config())
    # Output 1: done at the end of its prefill step; output 3: two decode steps after it.
    assert r.finish_s[0] == pytest.approx(0.010)
    assert math.isnan(r.tpot_s[0])
    assert r.tpot_s[1] == pytest.approx(0.010)
    p = r.percentiles()
    assert p["tpot_s"]["mean"] == pytest.approx(0.010)
    assert p["e2e_s"]["p50"] == pytest.approx(0.020)  # median of 10 ms and 30 ms
    assert set(p) == {"ttft_s", "tpot_s", "e2e_s"}
    assert set(p["ttft_s"]) == {"mean", "p50", "p90", "p99"}


# 2-3. Queueing theory -------------------------------------------------------------------------

@pytest.mark.parametrize(("rho", "n"), [(0.3, 80_000), (0.6, 80_000), (0.8, 120_000)])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho: float, n: int) -> None:
    # One sequence at a time, a 10-token prompt in one step and 4 output tokens: every request
    # holds the replica for exactly 4 steps of 2 ms, S = 8 ms, so the replica is an M/D/1 queue.
    # Its wait is TTFT less the one prefill step; P-K: W = rho * S / (2 * (1 - rho)).
    # Over 24 seeds the ratio W_sim / W_PK had a standard deviation of 1.0 %, 1.4 % and 2.1 %
    # at these sizes (rho = 0.3, 0.6, 0.8), so 5 % is 2.4 or more of them; one step more or less
    # of service (S = 3 or 5 steps) would move W by 25 %.
    tau, s = 0.002, 0.008
    arrival = poisson_arrivals(rho / s, n, np.random.default_rng(7))
    r = simulate(trace(arrival, 10, 4), config(Recorder(tau), max_batch=1))
    wait = float(np.mean(r.ttft_s - tau))
    assert wait == pytest.approx(rho * s / (2 * (1 - rho)), rel=0.05)
    assert r.utilization == pytest.approx(rho, rel=0.03)


def test_mm1_sojourn_quantiles_match_exponential() -> None:
    # Output lengths geometric with mean 50 make the service time (output_len steps of 2 ms)
    # nearly exponential (CV^2 = 1 - 1/50): mu = 1 / (50 * 2 ms) = 10/s; at rho = 0.5,
    # lambda = 5/s, and an M/M/1 sojourn time is Exp(mu - lambda): p50 = ln 2 / 5 s,
    # p90 = ln 10 / 5 s.
    tau, m, rho, n = 0.002, 50, 0.5, 20_000
    rng = np.random.default_rng(3)
    out = rng.geometric(1.0 / m, n)
    mu = 1.0 / (m * tau)
    lam = rho * mu
    r = simulate(trace(poisson_arrivals(lam, n, rng), 10, out), config(Recorder(tau), max_batch=1))
    assert np.percentile(r.e2e_s, 50) == pytest.approx(math.log(2) / (mu - lam), rel=0.10)
    assert np.percentile(r.e2e_s, 90) == pytest.approx(math.log(10) / (mu - lam), rel=0.10)


# 4. Determinism -------------------------------------------------------------------------------

def test_same_seed_same_result_other_seed_differs() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    req = trace(poisson_arrivals(50.0, n, rng), rng.integers(10, 500, n), rng.integers(2, 200, n))
    cfg = config(max_batch=16, token_budget=512, draft_len=4, acceptance=0.6)
    a, b = (simulate(req, cfg, replicas=2, routing="jsq", seed=1) for _ in range(2))
    c = simulate(req, cfg, replicas=2, routing="jsq", seed=2)
    for name in ("first_token_s", "finish_s", "replica"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.steps == b.steps
    assert not np.array_equal(a.finish_s, c.finish_s)

    ins, outs = np.array([100, 800, 2000]), np.array([20, 200, 50])
    x, y = (closed_loop(8, ins, outs, config(max_batch=4), requests=500, seed=5) for _ in range(2))
    z = closed_loop(8, ins, outs, config(max_batch=4), requests=500, seed=6)
    np.testing.assert_array_equal(x.e2e_s, y.e2e_s)
    assert not np.array_equal(x.e2e_s, z.e2e_s)


# 5. KV admission ------------------------------------------------------------------------------

def test_kv_capacity_limits_running_requests() -> None:
    # Each request reserves 100 + 10 = 110 KV tokens; 320 holds two. Three arrive at once:
    # the first two prefill together in step 1 and finish at step 10 (100 ms); the third is
    # admitted at the next step and gets its first token at 110 ms.
    cost = Recorder()
    r = run(trace([0.0, 0.0, 0.0], 100, 10), config(cost, kv=320.0))
    assert r.first_token_s == pytest.approx([0.010, 0.010, 0.110])
    assert r.first_token_s[2] > r.finish_s[:2].min()
    assert max(decode for _, decode, _ in cost.calls) <= 2
    # Reserving the prompt only (100 each), all three fit: one prefill step of 300 tokens.
    r = run(trace([0.0, 0.0, 0.0], 100, 10), config(kv=320.0, reserve=False))
    assert r.first_token_s == pytest.approx([0.010, 0.010, 0.010])


def test_kv_blocks_fcfs_and_max_batch_limits() -> None:
    cost = Recorder()
    r = run(trace(np.zeros(5), 10, 3), config(cost, max_batch=2))
    # Two at a time, 3 steps each: first tokens at 10, 10, 40, 40, 70 ms.
    assert r.first_token_s == pytest.approx([0.01, 0.01, 0.04, 0.04, 0.07])
    assert all(prefill + decode <= 20 for prefill, decode, _ in cost.calls)


# 6. Routing -----------------------------------------------------------------------------------

def test_round_robin_alternates() -> None:
    r = run(trace(np.arange(20) * 0.001, 10, 50), config(), replicas=2)
    np.testing.assert_array_equal(r.replica, np.arange(20) % 2)


def test_jsq_constructed_case() -> None:
    # Request 0 (t = 0, 1000 tokens) goes to replica 0 (tie -> lowest index); request 1
    # (t = 1 ms, 2 tokens) to the empty replica 1, where it finishes at 21 ms; request 2
    # (t = 1 s) sees 1 outstanding on replica 0 and 0 on replica 1 -> replica 1, where round
    # robin would send it to replica 0.
    req = trace([0.0, 0.001, 1.0], 10, [1000, 2, 5])
    np.testing.assert_array_equal(run(req, config(), replicas=2, routing="jsq").replica, [0, 1, 1])
    np.testing.assert_array_equal(run(req, config(), replicas=2).replica, [0, 1, 0])


def test_jsq_never_picks_a_longer_queue() -> None:
    rng = np.random.default_rng(11)
    n, k = 400, 3
    req = trace(poisson_arrivals(30.0, n, rng), rng.integers(10, 300, n), rng.integers(1, 100, n))
    r = run(req, config(Recorder(0.005), max_batch=4, token_budget=256), replicas=k,
            routing="jsq")
    for i in range(n):
        # Outstanding at request i's arrival: routed earlier, not finished by then (a finish at
        # the same instant is handled first).
        live = (np.arange(n) < i) & (r.finish_s > r.arrival_s[i])
        counts = np.bincount(r.replica[live], minlength=k)
        assert counts[r.replica[i]] == counts.min()
        assert r.replica[i] == int(np.argmin(counts))


# 7. Speculative decoding ----------------------------------------------------------------------

def test_speculation_with_full_acceptance_emits_four_tokens_per_step() -> None:
    # Output 13: the prefill step emits token 1; 12 more at 4 per step take 3 steps, so the
    # request finishes after 4 steps (40 ms) instead of 13 (130 ms). Output 14: 4 + 4 + 4 + 1
    # after the first, 5 steps.
    spec = config(draft_len=3, acceptance=1.0)
    assert run(trace([0.0], 100, 13), spec).finish_s[0] == pytest.approx(0.040)
    assert run(trace([0.0], 100, 14), spec).finish_s[0] == pytest.approx(0.050)
    assert run(trace([0.0], 100, 13), config()).finish_s[0] == pytest.approx(0.130)


def test_speculation_with_zero_acceptance_equals_plain_decoding() -> None:
    # One token per step either way; the two code paths (per-step list vs. finish heap) must
    # agree on a busy multi-replica workload.
    rng = np.random.default_rng(5)
    n = 1500
    req = trace(poisson_arrivals(80.0, n, rng), rng.integers(10, 400, n), rng.integers(1, 150, n))
    cost = Recorder(0.004)
    plain = run(req, config(cost, max_batch=8, kv=3000.0, reserve=False), replicas=3,
                routing="jsq")
    spec = run(req, config(cost, max_batch=8, kv=3000.0, reserve=False, draft_len=2),
               replicas=3, routing="jsq")
    np.testing.assert_array_equal(plain.finish_s, spec.finish_s)
    np.testing.assert_array_equal(plain.first_token_s, spec.first_token_s)


def test_speculation_mean_tokens_per_step() -> None:
    # Tokens per step 1 + min(Geometric failures, d): mean (1 - a^(d+1)) / (1 - a); with
    # a = 0.7, d = 4 that is 2.773, so 20 000 decode tokens take about 7 212 steps.
    a, d, out = 0.7, 4, 20_001
    r = run(trace([0.0], 10, out), config(draft_len=d, acceptance=a))
    expected_steps = 1 + (out - 1) * (1 - a) / (1 - a ** (d + 1))
    assert r.steps == pytest.approx(expected_steps, rel=0.03)


# 8. Chunked prefill ---------------------------------------------------------------------------

def test_chunked_prefill_takes_ceil_steps() -> None:
    cost = Recorder()
    r = run(trace([0.0], 1000, 3), config(cost, token_budget=256))
    # ceil(1000 / 256) = 4 prefill steps (256, 256, 256, 232); the first token ends step 4.
    assert r.ttft_s[0] == pytest.approx(0.040)
    assert [p for p, _, _ in cost.calls[:4]] == [256, 256, 256, 232]
    assert r.finish_s[0] == pytest.approx(0.060)


def test_decoding_sequences_shrink_the_prefill_budget() -> None:
    # Request A decodes throughout; request B (1021 prompt tokens, arriving at 5 ms) starts at
    # the 10 ms step with 256 - 1 = 255 tokens per step: ceil(1021 / 255) = 5 steps (it would
    # be 4 alone), so its first token is at 10 + 5 * 10 = 60 ms.
    cost = Recorder()
    r = run(trace([0.0, 0.005], [10, 1021], [100, 2]), config(cost, token_budget=256))
    assert r.first_token_s[1] == pytest.approx(0.060)
    assert [c for c in cost.calls[1:6]] == [(255, 1, 11), (255, 1, 12), (255, 1, 13),
                                            (255, 1, 14), (1, 1, 15)]


# Closed loop, warmup, arrivals, validation ----------------------------------------------------

def test_closed_loop_batch_cycles() -> None:
    # 4 clients, batch 4: each wave prefills together (one step) and decodes 9 more steps, so
    # every request takes exactly 100 ms and waves start every 100 ms.
    r = closed_loop(4, np.array([10]), np.array([10]), config(max_batch=4), requests=40,
                    warmup_fraction=0.0)
    assert r.e2e_s == pytest.approx(np.full(40, 0.1))
    assert r.arrival_s == pytest.approx(np.repeat(np.arange(10) * 0.1, 4))


def test_closed_loop_queues_beyond_the_batch() -> None:
    # 3 clients, one sequence at a time, 50 ms per request: the first three wait 50, 100 and
    # 150 ms; every later one joins behind the other two clients' requests: 150 ms.
    r = closed_loop(3, np.array([10]), np.array([5]), config(max_batch=1), requests=30,
                    warmup_fraction=0.0)
    assert r.e2e_s[:3] == pytest.approx([0.05, 0.10, 0.15])
    assert r.e2e_s[3:] == pytest.approx(np.full(27, 0.15))


def test_warmup_drops_the_first_requests() -> None:
    req = trace(np.arange(100) * 0.1, 10, 3)
    r = simulate(req, config(), warmup_fraction=0.1)
    assert r.arrival_s.size == 90
    np.testing.assert_array_equal(r.arrival_s, req.arrival_s[10:])


def test_class_ids_carry_through() -> None:
    req = Requests(np.arange(10, dtype=np.float64) / 10, np.full(10, 10), np.full(10, 3),
                   np.arange(10) % 3)
    r = simulate(req, config(), warmup_fraction=0.2)
    assert r.cls is not None
    np.testing.assert_array_equal(r.cls, np.arange(2, 10) % 3)


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0])
def test_gamma_arrivals_mean_and_cv(cv: float) -> None:
    gaps = np.diff(gamma_arrivals(4.0, cv, 200_001, np.random.default_rng(1)))
    assert gaps.mean() == pytest.approx(0.25, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.03)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="KV"):
        run(trace([0.0], 100, 50), config(kv=120.0))
    with pytest.raises(ValueError, match="routing"):
        run(trace([0.0], 10, 5), config(), routing="random")
    with pytest.raises(ValueError, match="non-decreasing"):
        run(trace([1.0, 0.0], 10, 5), config())
    with pytest.raises(ValueError):
        config(max_batch=0)
