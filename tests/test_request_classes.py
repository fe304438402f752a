"""Request classes sharing one replica, and prompt-length variability, against the simulation.

Classes share the replica's steps, slots and queue, so they see one steady state and differ by
their own prompts and outputs. Where the analytical answer is known to be weaker it is tested
at its stated tolerance: with variable prompt lengths the p99s are under-estimated at higher
load, the TPOT p99 most (requests with short outputs average their steps over few of them), so
the p50s are compared per class and the p99 TTFT for one widely spread prompt length.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.hardware.errors import SpecError
from fleetplan.models.device import Device
from fleetplan.models.inference import Replica, build_replica
from fleetplan.models.queueing import (
    Lengths,
    RequestClass,
    Slo,
    goodput,
    mixed_workload,
    serve,
    serve_classes,
)
from fleetplan.models.simulate import (
    ReplicaConfig,
    Requests,
    SimResult,
    poisson_arrivals,
    simulate,
)
from fleetplan.models.step_table import StepTable
from fleetplan.plan.cli import app
from fleetplan.plan.estimate import (
    EstimateRequest,
    request_classes,
    run_estimate,
    run_goodput,
    run_simulate,
)
from typer.testing import CliRunner

CHAT = RequestClass("chat", 0.8, Lengths.lognormal(512, 256), Lengths.lognormal(256, 128),
                    Slo(ttft_p99_s=0.5, tpot_p99_s=0.05))
RAG = RequestClass("rag", 0.2, Lengths.lognormal(6000, 1500), Lengths.fixed(128),
                   Slo(ttft_p99_s=3.0))
REQUESTS = 6000


def test_mixture_moments_by_hand() -> None:
    # Shares 0.8 / 0.2 of prompts with mean 512 (sd 256) and 6000 (sd 1500):
    #   mean   = 0.8 * 512 + 0.2 * 6000                              = 1609.6
    #   E[X^2] = 0.8 * (512^2 + 256^2) + 0.2 * (6000^2 + 1500^2)
    #          = 0.8 * 327,680 + 0.2 * 38,250,000                    = 7,912,144
    #   cv     = sqrt(7,912,144 / 1609.6^2 - 1) = sqrt(3.05393 - 1)  = 1.43315
    load = mixed_workload(10.0, [CHAT, RAG])
    assert float(load.input_len.mean) == pytest.approx(1609.6, rel=1e-12)
    assert float(load.input_len.cv) == pytest.approx(
        math.sqrt(7_912_144 / 1609.6**2 - 1.0), rel=1e-12)
    # Outputs: 0.8 * 256 + 0.2 * 128 = 230.4 tokens.
    assert float(load.output_len.mean) == pytest.approx(230.4, rel=1e-12)
    with pytest.raises(ValueError, match="share"):
        RequestClass("bad", 0.0, Lengths.fixed(1), Lengths.fixed(1))


def _replica(catalog: Catalog) -> Replica:
    acc = catalog.accelerator("h100-sxm")
    device = Device(acc, catalog.calibration.for_device(acc.id), catalog.engine("trtllm"))
    return build_replica(catalog.model("llama-3.1-8b"), device, weight_precision="fp8")


def test_classes_share_steps_and_differ_by_their_prompts(catalog: Catalog) -> None:
    rep = _replica(catalog)
    load = mixed_workload(8.0, [CHAT, RAG])
    chat, rag = serve_classes(rep, load, [CHAT, RAG])
    whole = serve(rep, load)
    # One steady state: the same batch and step, and TPOT within a few percent (a request's
    # lifetime sets how many prompt chunks it lives through).
    assert float(chat.batch) == float(rag.batch) == float(whole.batch)
    assert float(chat.tpot.mean) == pytest.approx(float(rag.tpot.mean), rel=1e-12)
    # 6000-token prompts take longer to prefill than 512-token ones; 128 outputs finish sooner.
    assert float(rag.ttft.p50) > 2.0 * float(chat.ttft.p50)
    assert float(rag.e2e.mean) < float(chat.e2e.mean)
    # Output tokens/s split by class: 0.8 * 8 * 256 and 0.2 * 8 * 128.
    assert float(chat.output_tok_s) == pytest.approx(8.0 * 0.8 * 256, rel=1e-9)
    assert float(rag.output_tok_s) == pytest.approx(8.0 * 0.2 * 128, rel=1e-9)


def test_goodput_holds_every_class_to_its_own_objectives(catalog: Catalog) -> None:
    rep = _replica(catalog)
    load = mixed_workload(1.0, [CHAT, RAG])
    free, _term, _res = goodput(rep, load, Slo())
    # The 99th-percentile RAG prompt (about 10,000 tokens) alone takes about 0.14 s to
    # prefill (a full 8192-token step and the rest); a 0.2 s bound leaves little room for
    # queueing, so it binds before capacity.
    tight = RequestClass("rag", 0.2, RAG.input_len, RAG.output_len, Slo(ttft_p99_s=0.2))
    rate, term, _res = goodput(rep, load, Slo(), classes=[CHAT, tight])
    assert 0.0 < float(rate) < float(free)
    assert str(term) == "rag.ttft_p99"
    rag = serve_classes(rep, load.at_rate(rate), [CHAT, tight])[1]
    assert float(rag.ttft.p99) <= 0.2 * (1 + 1e-6)


def _simulate(rep: Replica, classes: list[RequestClass], rate: float, seed: int) -> SimResult:
    engine = rep.device.engine
    rng = np.random.default_rng(seed)
    shares = np.array([c.share for c in classes])
    cls = rng.choice(len(classes), size=REQUESTS, p=shares / shares.sum())
    i_len = np.zeros(REQUESTS, dtype=np.int64)
    o_len = np.zeros(REQUESTS, dtype=np.int64)
    for j, c in enumerate(classes):
        for lengths, out in ((c.input_len, i_len), (c.output_len, o_len)):
            mean, cv = float(lengths.mean), float(lengths.cv)
            m = cls == j
            if lengths.values is not None:
                out[m] = rng.choice(lengths.values, size=int(m.sum()),
                                    p=lengths.probabilities)
                continue
            if cv == 0:
                out[m] = round(mean)
                continue
            sigma = math.sqrt(math.log1p(cv**2))
            draws = rng.lognormal(math.log(mean) - sigma**2 / 2.0, sigma, int(m.sum()))
            out[m] = np.maximum(np.rint(draws), 1)
    table = StepTable.build(rep, max_seqs=engine.max_batch,
                            max_prefill=engine.max_tokens_per_step,
                            max_ctx=float(np.max(i_len + o_len)))
    config = ReplicaConfig(table, engine.max_batch, engine.max_tokens_per_step,
                           float(rep.memory.kv_capacity_tokens), engine.reserve_kv_for_output)
    arrivals = poisson_arrivals(rate, REQUESTS, rng)
    return simulate(Requests(arrivals, i_len, o_len, cls.astype(np.int64)), config, seed=seed)


@pytest.mark.parametrize("load_fraction", [0.3, 0.6])
def test_class_p50s_match_the_simulation(catalog: Catalog, load_fraction: float) -> None:
    # Observed: within 11% (chat and rag, TTFT and TPOT p50) at 30% and 60% load.
    rep = _replica(catalog)
    classes = [CHAT, RAG]
    load = mixed_workload(1.0, classes)
    rate = load_fraction * float(serve(rep, load.at_rate(1e-6)).capacity_rps)
    sim = _simulate(rep, classes, rate, seed=int(load_fraction * 10))
    assert sim.cls is not None
    for j, res in enumerate(serve_classes(rep, load.at_rate(rate), classes)):
        mine = sim.cls == j
        for metric, values in (("ttft", sim.ttft_s[mine]), ("tpot", sim.tpot_s[mine])):
            simulated = float(np.nanpercentile(values, 50))
            assert float(getattr(res, metric).p50) == pytest.approx(simulated, rel=0.20), \
                (classes[j].name, metric)


# (load, tolerance on the TTFT p50, p90, p99, on the TPOT p50 and p99)
SPREAD_CASES = [(0.3, (0.10, 0.15, 0.15, 0.10, 0.30)), (0.6, (0.10, 0.15, 0.30, 0.10, 0.45)),
                (0.85, (0.25, 0.30, 0.40, 0.20, 0.55))]


@pytest.mark.parametrize(("load_fraction", "tolerance"), SPREAD_CASES)
def test_long_prompt_tail_matches_the_simulation(catalog: Catalog, load_fraction: float,
                                                 tolerance: tuple[float, ...]) -> None:
    # Prompts lognormal with cv 1.5. The TTFT percentiles mix strata of the own prompt's
    # length (a median prompt of about 900 tokens is done well before the mean one of 1600),
    # a long prompt's chunks are long steps, and while it holds the budget the prompts behind
    # it wait. Priced at the mean prompt without that wait, the analytical p50 came out 32%
    # over the simulation's and the p99 73-77% under. Now (three seeds pooled, 18,000
    # requests; one seed's p99 moves about 15% with this tail), at 30/60/85% load:
    # p50 -3/-7/-19%, p90 +7/-10/-25%, p99 -9/-27/-36%: bursts of long prompts still queue
    # longer than the M/G/1 term with an exponential tail says.
    # TPOT: p50 +2/-5/-14%, but the p99 stays under-estimated (-22/-38/-48%): requests with
    # short outputs average their step lengths over few steps, which the model's one lifetime
    # does not capture.
    rep = _replica(catalog)
    whole = RequestClass("all", 1.0, Lengths.lognormal(1600, 2400), Lengths.lognormal(230, 125))
    load = mixed_workload(1.0, [whole])
    rate = load_fraction * float(serve(rep, load.at_rate(1e-6)).capacity_rps)
    sims = [_simulate(rep, [whole], rate, seed=s) for s in range(3)]
    ttft = np.concatenate([sim.ttft_s for sim in sims])
    tpot = np.concatenate([sim.tpot_s for sim in sims])
    ana = serve(rep, load.at_rate(rate))
    checks = [(ana.ttft.p50, ttft, 50), (ana.ttft.p90, ttft, 90), (ana.ttft.p99, ttft, 99),
              (ana.tpot.p50, tpot, 50), (ana.tpot.p99, tpot, 99)]
    for k, ((value, simulated, pct), tol) in enumerate(zip(checks, tolerance, strict=True)):
        assert float(value) == pytest.approx(float(np.nanpercentile(simulated, pct)),
                                             rel=tol), k


def test_histogram_prompts_match_the_simulation(catalog: Catalog) -> None:
    # Half the prompts 128 tokens, 30% 1024, 20% 8192 (one full-budget step and a sliver):
    # the median request's TTFT is a short prefill, the p90 one of the long ones. Observed at
    # 40% load: p50 -1%, p90 -3%, p99 -12%; priced at the mean prompt (2010 tokens) instead,
    # the p50 came out 71% high and the p90 66% high.
    prompts = Lengths.empirical([128, 1024, 8192], [0.5, 0.3, 0.2])
    outputs = Lengths.empirical([64, 256, 1024], [0.5, 0.4, 0.1])
    assert prompts.quantile(0.5)[()] == 128 and prompts.quantile(0.81)[()] == 8192
    rep = _replica(catalog)
    whole = RequestClass("all", 1.0, prompts, outputs)
    load = mixed_workload(1.0, [whole])
    rate = 0.4 * float(serve(rep, load.at_rate(1e-6)).capacity_rps)
    ttft = np.concatenate([_simulate(rep, [whole], rate, seed=s).ttft_s for s in range(2)])
    ana = serve(rep, load.at_rate(rate)).ttft
    for (name, pct), tol in zip((("p50", 50), ("p90", 90), ("p99", 99)), (0.1, 0.15, 0.2),
                                strict=True):
        assert float(getattr(ana, name)) == pytest.approx(float(np.percentile(ttft, pct)),
                                                          rel=tol), name


CLASS_ARGS = ("name=chat share=0.8 input=lognormal:512:256 output=lognormal:256:128 "
              "ttft_p99=0.5 tpot_p99=0.05",
              "name=rag share=0.2 input=lognormal:6000:1500 output=128 ttft_p99=0.2")


def _request(**kw: Any) -> EstimateRequest:
    return EstimateRequest(model="llama-3.1-8b", accelerator="h100-sxm", input_len=1024,
                           output_len=256, precision="fp8", **kw)


def test_estimate_reports_each_class_against_its_objectives(catalog: Catalog) -> None:
    report = run_estimate(_request(rate_rps=10.0, classes=CLASS_ARGS), catalog,
                          catalog.calibration)
    chat, rag = report["latency_by_class"]["chat"], report["latency_by_class"]["rag"]
    assert chat["slo"] == {"ttft_p99_s": 0.5, "tpot_p99_s": 0.05} and chat["meets_slo"]
    # The RAG class's own p99 prompt needs about 0.14 s alone, 0.22 s with the queueing at
    # 10 req/s: its 0.2 s bound fails, which the report says per class while chat meets its
    # objectives.
    assert rag["latency"]["ttft_s"]["p99"] > 0.2 and rag["meets_slo"] is False
    # The whole stream's percentiles sit between the classes'.
    whole = report["latency"]["ttft_s"]["p50"]
    assert chat["latency"]["ttft_s"]["p50"] <= whole <= rag["latency"]["ttft_s"]["p50"]


def test_goodput_names_the_class_that_binds(catalog: Catalog) -> None:
    out = run_goodput(_request(classes=CLASS_ARGS, scenario="max_throughput"), Slo(), catalog,
                      catalog.calibration)
    assert out["binding"] == "rag.ttft_p99"
    at = out["latency_by_class"]["rag"]["latency"]["ttft_s"]["p99"]
    assert at == pytest.approx(0.2, rel=0.01)


def test_simulation_reports_each_class(catalog: Catalog) -> None:
    out = run_simulate(_request(rate_rps=8.0, classes=CLASS_ARGS), requests=2000, seed=4,
                       replicas=1, routing="round_robin", catalog=catalog,
                       calibration=catalog.calibration)
    by_class = out["latency_by_class"]
    assert by_class["chat"]["requests"] + by_class["rag"]["requests"] == 1800  # 10% warm-up
    assert by_class["rag"]["requests"] == pytest.approx(0.2 * 1800, abs=60)
    for row in by_class.values():
        assert row["latency"]["ttft_s"]["p50"] == pytest.approx(
            row["analytic"]["ttft_s"]["p50"], rel=0.25)


@pytest.mark.parametrize(("text", "needle"), [
    ("name=x share=2 input=1 output=1", "share must be within"),
    ("name=x input=1 output=1", "lacks share"),
    ("name=x share=1 input=lognormal:a output=1", "lognormal:MEAN:STD"),
    ("name=x share=1 input=1 output=1 ttft_p99=-1", "positive number"),
    ("bogus", "key=value"),
])
def test_bad_classes_name_the_field(text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle) as err:
        request_classes(_request(classes=(text,)))
    assert err.value.field == "class"


def test_class_shares_must_sum_to_one() -> None:
    with pytest.raises(SpecError, match=r"sum to 0\.9"):
        request_classes(_request(classes=("name=a share=0.5 input=1 output=1",
                                          "name=b share=0.4 input=1 output=1")))


def test_simulate_command_takes_classes(runner: CliRunner) -> None:
    base = ["simulate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--input-len",
            "1", "--output-len", "1", "--precision", "fp8", "--rate", "8", "--requests", "500"]
    classes = [arg for text in CLASS_ARGS for arg in ("--class", text)]
    result = runner.invoke(app, [*base, *classes, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert sorted(report["latency_by_class"]) == ["chat", "rag"]
    # A bad class is the user's mistake: one line naming the field, exit code 2.
    bad = subprocess.run([sys.executable, "-c", "from fleetplan.plan.cli import main; main()",
                          *base, "--class", "name=chat share=0.7 input=1 output=1"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "fleetplan: error: field 'class': class shares sum to 0.7, not 1"


def test_estimate_and_goodput_commands_take_classes(runner: CliRunner) -> None:
    base = ["--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--input-len", "1",
            "--output-len", "1", "--precision", "fp8"]
    classes = [arg for text in CLASS_ARGS for arg in ("--class", text)]
    est = runner.invoke(app, ["estimate", *base, "--rate", "10", *classes, "--format", "json"])
    assert est.exit_code == 0, est.output
    assert json.loads(est.output)["latency_by_class"]["rag"]["meets_slo"] is False
    # No objective but the classes': goodput still has one to hold.
    good = runner.invoke(app, ["goodput", *base, *classes])
    assert good.exit_code == 0, good.output
    assert "rag.ttft_p99" in good.output and "class rag" in good.output


def test_attention_data_parallelism_from_the_command_line(runner: CliRunner) -> None:
    # Qwen3-235B's 4 KV heads over tp 8 sit twice each under tensor-parallel attention; with
    # 8 attention groups each sequence's KV is whole on one rank: twice the KV tokens.
    base = ["estimate", "--model", "qwen3-235b-a22b", "--accelerator", "b200", "--tp", "8",
            "--precision", "fp4", "--input-len", "1024", "--output-len", "1024", "--scenario",
            "max_throughput", "--format", "json"]
    tp_only = json.loads(runner.invoke(app, base).output)
    grouped = json.loads(runner.invoke(app, [*base, "--attention-dp", "8"]).output)
    assert "attention_dp" not in tp_only["inputs"] and grouped["inputs"]["attention_dp"] == 8
    # Each rank also holds the attention projections whole, so not quite 2x.
    ratio = grouped["memory"]["kv_capacity_tokens"] / tp_only["memory"]["kv_capacity_tokens"]
    assert 1.8 < ratio < 2.0
