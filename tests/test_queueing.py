"""The analytical serving model: limits, monotonicity, goodput."""

from __future__ import annotations

import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.models.device import Device
from fleetplan.models.inference import Replica, build_replica, max_throughput
from fleetplan.models.queueing import Lengths, Slo, Workload, closed_loop, goodput, serve


def _replica(catalog: Catalog, model: str = "llama-3.1-8b", acc: str = "h100-sxm",
             tp: int = 1, precision: str = "fp8") -> Replica:
    device = Device(catalog.accelerator(acc), catalog.calibration.for_device(acc),
                    catalog.engine("trtllm"))
    return build_replica(catalog.model(model), device, tp=tp, weight_precision=precision)


def _load(rate: float | np.ndarray, i: int = 1024, o: int = 256, cv: float = 1.0) -> Workload:
    return Workload(np.asarray(rate, dtype=float), Lengths.fixed(i), Lengths.fixed(o), cv)


def test_latency_grows_with_load_and_past_capacity_is_unstable(catalog: Catalog) -> None:
    rep = _replica(catalog)
    cap = float(serve(rep, _load(1e-6)).capacity_rps)
    rates = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 1.2]) * cap
    res = serve(rep, _load(rates))
    assert list(res.stable) == [True] * 5 + [False]
    for p in (res.ttft.mean, res.ttft.p99, res.tpot.mean, res.e2e.p99):
        assert np.all(np.diff(p[:5]) >= 0)
    assert np.isinf(res.ttft.p99[-1])
    assert np.all(res.ttft.p50[:5] <= res.ttft.p90[:5])
    assert np.all(res.ttft.p90[:5] <= res.ttft.p99[:5])


def test_capacity_matches_the_max_throughput_scenario(catalog: Catalog) -> None:
    # Both are the same steady state with every slot busy: requests/s x output tokens should
    # agree with max_throughput's output tokens/s when the same batch limit binds.
    rep = _replica(catalog)
    cap = float(serve(rep, _load(1e-6, 128, 1024)).capacity_rps)
    tok = float(max_throughput(rep, input_len=128, output_len=1024).output_tok_s_total)
    assert cap * 1024 == pytest.approx(tok, rel=0.1)


def test_bursty_arrivals_wait_longer(catalog: Catalog) -> None:
    rep = _replica(catalog)
    cap = float(serve(rep, _load(1e-6)).capacity_rps)
    smooth = serve(rep, _load(0.8 * cap, cv=1.0))
    bursty = serve(rep, _load(0.8 * cap, cv=3.0))
    assert float(bursty.ttft.p99) > float(smooth.ttft.p99)


def test_prefix_cache_hits_shorten_ttft(catalog: Catalog) -> None:
    rep = _replica(catalog)
    base = _load(5.0, 4096, 128)
    cached = Workload(base.rate_rps, base.input_len, base.output_len, 1.0, prefix_hit=0.5)
    assert float(serve(rep, cached).ttft.mean) < float(serve(rep, base).ttft.mean)


def test_goodput_respects_slo_and_capacity(catalog: Catalog) -> None:
    rep = _replica(catalog, "llama-3.1-70b", tp=4)
    load = Workload(np.asarray(1.0), Lengths.lognormal(1024, 512), Lengths.lognormal(256, 128))
    loose, _, _ = goodput(rep, load, Slo(ttft_p99_s=5.0, tpot_p99_s=0.2))
    tight, binding, at = goodput(rep, load, Slo(ttft_p99_s=0.5, tpot_p99_s=0.03))
    cap = float(serve(rep, load.at_rate(1e-6)).capacity_rps)
    assert 0 < float(tight) < float(loose) <= cap
    assert str(binding) in ("ttft_p99", "tpot_p99")
    # At the goodput the binding objective is met, just.
    assert float(at.tpot.p99) <= 0.03 * 1.001 and float(at.ttft.p99) <= 0.5 * 1.001


def test_impossible_slo_has_zero_goodput(catalog: Catalog) -> None:
    rep = _replica(catalog)
    rate, binding, _ = goodput(rep, _load(1.0), Slo(ttft_p99_s=1e-4))
    assert float(rate) == 0.0 and str(binding) == "ttft_p99"


def test_closed_loop_throughput_rises_with_concurrency(catalog: Catalog) -> None:
    rep = _replica(catalog)
    res = closed_loop(rep, concurrency=np.array([1, 4, 16, 64]), input_len=512, output_len=256)
    assert np.all(np.diff(res.output_tok_s) > 0)
    assert np.all(np.diff(res.tpot.mean) >= 0)


def _one_slot_service(rep: Replica, i: int, o: int) -> float:
    """Service time of one request alone on the replica: one prefill step of the prompt, then
    o - 1 decode steps (computed from the step model directly, not from the queueing code)."""
    from fleetplan.models.inference import step_time
    from fleetplan.models.transformer import StepShape

    pre = float(step_time(rep, StepShape.of(prefill_tokens=i, prefill_ctx=i / 2,
                                            prefill_seqs=1)).time)
    dec = float(step_time(rep, StepShape.of(decode_seqs=1, decode_ctx=i + o / 2)).time)
    return pre + (o - 1) * dec


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_one_slot_fixed_lengths_is_md1(catalog: Catalog, rho: float) -> None:
    # max_batch 1 and fixed lengths: an M/D/1 queue with service S, so the mean wait is
    # Pollaczek-Khinchine, W = rho * S / (2 * (1 - rho)); e.g. rho = 0.6 -> W = 0.75 S.
    rep = _replica(catalog)
    s = _one_slot_service(rep, 256, 64)
    res = serve(rep, Workload(np.asarray(rho / s), Lengths.fixed(256), Lengths.fixed(64)),
                max_batch=1)
    assert float(res.queue_wait_s) == pytest.approx(rho * s / (2 * (1 - rho)), rel=0.05)
    assert float(res.capacity_rps) == pytest.approx(1.0 / s, rel=0.05)


def test_one_slot_exponential_like_service_is_mm1(catalog: Catalog) -> None:
    # Output lengths with a coefficient of variation of 1 make the service as variable as an
    # exponential one: the mean wait doubles to the M/M/1 value, W = rho * S / (1 - rho).
    rep = _replica(catalog)
    s = _one_slot_service(rep, 256, 64)
    rho = 0.5
    load = Workload(np.asarray(rho / s), Lengths.fixed(256), Lengths.lognormal(64, 64))
    res = serve(rep, load, max_batch=1)
    assert float(res.queue_wait_s) == pytest.approx(rho * s / (1 - rho), rel=0.08)


def test_mixture_quantile_equals_bisection_on_its_cdf() -> None:
    """The sort-based quantile of a mixture of uniforms agrees with bisection on the mixture's
    CDF, sum_i w_i clip((x - s_i) / v_i, 0, 1), including a cap below the quantile."""
    from fleetplan.models.queueing import _mixture_quantile

    rng = np.random.default_rng(7)
    for _ in range(50):
        m, n = int(rng.integers(1, 40)), int(rng.integers(1, 20))
        w = rng.random((m, n))
        w /= w.sum(axis=0)
        s = rng.random((m, n)) * 0.1
        v = rng.random((m, n)) * 0.01 + 1e-6
        cap = np.where(rng.random(n) < 0.3, rng.random(n) * 0.05, np.inf)
        for q in (0.5, 0.9, 0.99):
            lo, hi = s.min(axis=0), np.minimum((s + v).max(axis=0), np.maximum(cap, 0))
            hi = np.maximum(hi, lo)
            for _ in range(60):
                mid = (lo + hi) / 2
                below = np.sum(w * np.clip((mid - s) / v, 0, 1), axis=0) < q
                lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            assert np.allclose(_mixture_quantile(q, w, s, v, cap), (lo + hi) / 2,
                               rtol=1e-9, atol=1e-12)


def test_poisson_ppf_equals_scipy_stats() -> None:
    """fleetplan's Poisson quantile (no scipy.stats import at start-up) is scipy's."""
    from fleetplan.models.queueing import poisson_ppf
    from scipy.stats import poisson

    means = np.concatenate([np.logspace(-12, 3, 300), [0.5, 1.0, 2.0, 3.0, 10.0]])
    for q in (0.01, 0.5, 0.9, 0.99, 0.999):
        assert np.array_equal(poisson_ppf(q, means), poisson.ppf(q, means))
