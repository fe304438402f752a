"""A grid with more candidates never plans at a higher cost: the shortlist of a superset grid
holds what the subset's shortlist holds, so the mix ILP chooses among more and its proven optimum
can only fall (within the solver's gap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from fleetplan.hardware import Catalog
from fleetplan.models.device import Device
from fleetplan.models.queueing import Lengths, Slo, Workload
from fleetplan.plan.cli import app
from fleetplan.solvers.search import (
    BucketLoad,
    Family,
    SearchSpace,
    goodput_of_rows,
    rows_at_limits,
    screen,
    shortlist,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
LONG_PROMPT = REPO / "examples" / "disaggregated-long-prompt.yaml"


def _plan(tmp_path: Path, runner: CliRunner, **options: Any) -> dict[str, Any]:
    """The JSON report of the long-prompt example, co-located replicas only, with `options`
    set on top of the example's own."""
    spec = yaml.safe_load(LONG_PROMPT.read_text())
    spec["options"] = {**spec.get("options", {}), "disaggregation": "off", **options}
    name = "-".join(f"{k}{'_'.join(map(str, v))}" for k, v in sorted(options.items()))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["plan", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["status"] == "optimal"
    return report


def _no_dearer(superset: dict[str, Any], subset: dict[str, Any]) -> None:
    """The superset's plan costs no more than the subset's: every plan of the subset is a plan
    of the superset, so the superset's proven bound lies at or under the subset's cost, and its
    plan is within its relative gap of that bound."""
    cost, bound = superset["cost_usd_h"], superset["solver"]["bound"]
    gap = superset["solver"]["gap"]
    assert bound <= subset["cost_usd_h"] * (1 + 1e-9)
    assert cost * (1 - gap) <= subset["cost_usd_h"] * (1 + 1e-9)


def test_more_prefill_chunks_never_cost_more(tmp_path: Path, runner: CliRunner) -> None:
    """Long prompts under a tight TPOT: small chunks protect every decoding sequence's TPOT,
    which the screen's bounds do not see. Offering bigger chunks besides must not push the
    small-chunk replicas off the shortlist."""
    chunks = [512, 2048, 8192]
    superset = _plan(tmp_path, runner, prefill_chunk=chunks)
    for chunk in chunks:
        _no_dearer(superset, _plan(tmp_path, runner, prefill_chunk=[chunk]))
    _no_dearer(superset, _plan(tmp_path, runner, prefill_chunk=chunks[:2]))


def test_more_batch_limits_never_cost_more(tmp_path: Path, runner: CliRunner) -> None:
    """With 512-token chunks the TPOT binds and the best limit differs by replica: a list of
    limits plans no dearer than any one of them (the screen ranks replicas without a limit and
    the exact model prices the largest listed, whose goodput the smaller ones do not beat)."""
    limits = [8, 16, 32]
    superset = _plan(tmp_path, runner, prefill_chunk=[512], max_batch=limits)
    for limit in limits:
        _no_dearer(superset, _plan(tmp_path, runner, prefill_chunk=[512], max_batch=[limit]))
    _no_dearer(superset, _plan(tmp_path, runner, prefill_chunk=[512], max_batch=limits[:2]))


def test_each_replica_runs_the_smallest_limit_that_carries_its_load(
        tmp_path: Path, runner: CliRunner, catalog: Catalog) -> None:
    """After the solve each allocation gets the smallest listed limit whose goodput still
    carries the replicas' planned load: at the reported limit the routed requests/s fit in the
    replicas at the goodput, at the next smaller listed limit they do not (or it cannot serve
    the bucket at all), and the re-check at the reported limit meets the SLO."""
    limits = [4, 8, 16, 32]
    report = _plan(tmp_path, runner, prefill_chunk=[512], max_batch=limits)
    spec = yaml.safe_load(LONG_PROMPT.read_text())
    w = spec["workloads"][0]
    engine = catalog.engine("trtllm")
    acc = catalog.accelerator("h100-sxm")
    family = Family("f", catalog.model(w["model"]), Device(
        acc, catalog.calibration.for_device(acc.id, engine.id), engine), 0.0, np.inf, 8)
    bucket = BucketLoad("b", w["name"], Workload(
        np.asarray(1.0), Lengths.lognormal(w["input_len"]["mean"], w["input_len"]["std"]),
        Lengths.lognormal(w["output_len"]["mean"], w["output_len"]["std"])),
        Slo(ttft_p99_s=w["slo"]["ttft_p99_s"], tpot_p99_s=w["slo"]["tpot_p99_s"]), 0.0)
    below_max = 0
    for a in report["allocations"]:
        m = a["max_batch"]
        at = limits[:limits.index(m) + 1]
        row = {k: a[k] for k in ("precision", "tp", "pp", "ep", "prefill_chunk")}
        row["attn_dp"] = a["attention_dp"]
        gp = goodput_of_rows(family, rows_at_limits(row, at), [bucket])[:, 0]
        rate = sum(r["rate_rps"] for r in a["routes"])       # per replica
        assert rate <= gp[-1] * (1 + 1e-6)
        if len(at) > 1:
            assert rate > gp[-2]
        assert all(r["slo_ratio"] <= 1 + 1e-6 for r in a["routes"])
        below_max += m < limits[-1]
    # The case is one where the refinement acts.
    assert below_max >= 1


def test_goodput_hardly_falls_as_the_batch_limit_rises(catalog: Catalog) -> None:
    """The dominance the search rests on: over every fitting replica of a 70B model on H100
    (a tight TPOT, long prompts, chunks of 512 and 8192 tokens) and limits 1-256, a higher
    limit lowers the exact goodput by under 1% wherever it is above a trickle. (A limit can
    pay a little where the TPOT binds: capping the batch trades TTFT, queued for a slot, for
    TPOT near capacity.)"""
    engine = catalog.engine("trtllm")
    acc = catalog.accelerator("h100-sxm")
    family = Family("f", catalog.model("llama-3.1-70b"), Device(
        acc, catalog.calibration.for_device(acc.id, engine.id), engine), 0.0, np.inf, 8)
    buckets = [BucketLoad(f"b{k}", "w", Workload(np.asarray(1.0), Lengths.lognormal(i, i / 2),
                                                  Lengths.lognormal(o, o / 2)),
                          Slo(ttft_p99_s=2.0, tpot_p99_s=tpot), 0.0)
               for k, (i, o, tpot) in enumerate([(8000, 400, 0.015), (1024, 256, 0.05)])]
    limits = [1, 4, 16, 64, 256]
    space = SearchSpace(("fp8",), (1, 2, 4, 8), (1, 2), None, (max(limits),), (512, 8192))
    shapes = screen(family, buckets, space).grid
    assert shapes["tp"].size >= 8
    checked = 0
    for j in range(shapes["tp"].size):
        row = {k: v[j] for k, v in shapes.items()}
        gp = goodput_of_rows(family, rows_at_limits(row, limits), buckets)
        drop = (gp[:-1] - gp[1:]) / np.maximum(gp[:-1], 1e-12)
        assert np.all((drop < 0.01) | (gp[:-1] < 0.002)), (j, gp)
        checked += int(np.sum(gp[:-1] >= 0.002))
    assert checked >= 20


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), few=st.integers(1, 4), buckets=st.integers(1, 3),
       chunks=st.lists(st.sampled_from([256, 512, 2048, 8192]), min_size=2, max_size=4,
                       unique=True))
def test_shortlist_of_more_chunks_holds_each_subsets(seed: int, few: int, buckets: int,
                                                     chunks: list[int]) -> None:
    """Rows of a grid with several chunks, scores with ties and ruled-out (inf) rows: whatever
    the subset of chunks, the rows its own grid shortlists are shortlisted in the full grid."""
    rng = np.random.default_rng(seed)
    configs = 12
    # The grid's chunk axis runs fastest, as `grid` lays it out.
    chunk = np.tile(np.array(chunks), configs)
    devices = np.repeat(rng.choice([1.0, 2.0, 4.0, 8.0], size=configs), len(chunks))
    score = rng.choice([1.0, 2.0, 3.0, 5.0, 8.0, np.inf], size=(chunk.size, buckets))
    full = set(shortlist(score, devices, chunk, few).tolist())
    for r in range(1, 1 << len(chunks)):
        subset = [c for b, c in enumerate(chunks) if r >> b & 1]
        rows = np.flatnonzero(np.isin(chunk, subset))
        mine = shortlist(score[rows], devices[rows], chunk[rows], few)
        assert set(rows[mine].tolist()) <= full


def test_shortlist_of_one_chunk_is_the_best_few_and_each_size() -> None:
    """One chunk: per bucket the best `few` by score (ties by row) and the best of each replica
    size, nothing ruled out."""
    score = np.array([[3.0], [1.0], [2.0], [1.0], [np.inf], [9.0]])
    devices = np.array([1.0, 2.0, 2.0, 4.0, 8.0, 1.0])
    keep = shortlist(score, devices, np.full(6, 512), 2)
    # Best two: rows 1 and 3 (tied, row order); best of size 1: row 0; size 2: row 1;
    # size 4: row 3; size 8 only ruled out.
    assert keep.tolist() == [0, 1, 3]
