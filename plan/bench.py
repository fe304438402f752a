"""`fleetplan bench`: the speed figures the README quotes, measured on this machine."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..hardware.catalog import Catalog
from ..models.device import Device
from ..models.queueing import Lengths, Slo, Workload
from ..models.training import training_setup, training_step
from ..solvers.mix import MixProblem, solve_mix
from ..solvers.search import BucketLoad, Family, SearchSpace, screen, search_family
from ..solvers.training import TrainSpace, layout_grid
from .planner import resolve_plan, run_plan
from .spec import load_spec


def _best_of(repeats: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _family(catalog: Catalog) -> tuple[Family, list[BucketLoad], SearchSpace]:
    acc = catalog.accelerator("h100-sxm")
    engine = catalog.engine("trtllm")
    device = Device(acc, catalog.calibration.for_device(acc.id, engine.id), engine)
    family = Family("llama-3.1-70b@h100-sxm", catalog.model("llama-3.1-70b"), device, 4.29,
                    float("inf"), 8)
    slo = Slo(ttft_p99_s=1.0, tpot_p99_s=0.05)
    buckets = [BucketLoad(f"b{k}", "bench", Workload(np.asarray(1.0), Lengths.fixed(i),
                                                     Lengths.fixed(o)), slo, 1.0)
               for k, (i, o) in enumerate((i, o) for i in (128, 512, 1024, 2048, 4096,
                                                          8192, 16384, 32768)
                                          for o in (64, 256, 1024, 4096))]
    space = SearchSpace(("bf16", "fp8"), (1, 2, 4, 8), (1, 2, 4), None,
                        (8, 16, 32, 64, 128, 256, 512, 1024), (512, 2048, 8192))
    return family, buckets, space


def _mix_problem(types: int, buckets: int, per_type: int, seed: int) -> MixProblem:
    """A random but plausible mix: capacities 0.1-20 req/s, demands 0.01-5 req/s."""
    rng = np.random.default_rng(seed)
    c = types * per_type
    devices = rng.choice([1, 2, 4, 8], size=c)
    group = np.repeat(np.arange(types), per_type)
    price = rng.uniform(1.0, 7.0, size=types)
    cap = rng.uniform(0.1, 20.0, size=(c, buckets)) * devices[:, None] ** 0.8
    cap[rng.random((c, buckets)) < 0.2] = 0.0
    return MixProblem(demand_rps=rng.uniform(0.01, 5.0, size=buckets), capacity_rps=cap,
                      group=group, devices=devices, cost_usd_h=price[group] * devices,
                      power_idle_w=np.full(c, 100.0), power_busy_w=np.full(c, 500.0),
                      available=np.full(types, np.inf))


def _mix_ilp(repeats: int) -> dict[str, Any]:
    """The mix ILP at 10 types x 100 buckets: end-to-end seconds of `solve_mix` and the
    solver's own seconds (rounding heuristic and HiGHS), each the best of `repeats` after one
    warm-up; the difference is the dominance filter, building the model and reading the plan."""
    problem = _mix_problem(10, 100, 5, seed=0)
    result = solve_mix(problem)
    solver_seconds: list[float] = []
    seconds = _best_of(repeats, lambda: solver_seconds.append(solve_mix(problem).facts.time_s))
    return {"types": 10, "buckets": 100, "candidates": problem.n_candidates,
            "status": str(result.facts.status), "gap": result.facts.gap, "seconds": seconds,
            "solver_seconds": min(solver_seconds)}


def _training_grid(catalog: Catalog, repeats: int) -> dict[str, Any]:
    """One vectorised evaluation of the default training layout grid: a 70B model on 1024
    H100s over four global batch sizes."""
    setup = training_setup(catalog, catalog.calibration, catalog.model("llama-3.1-70b"),
                           "h100-sxm", "bf16", "megatron")
    grid = layout_grid(setup.arch, 1024, [256, 512, 1024, 2048], 8192, TrainSpace())
    seconds = _best_of(repeats, lambda: training_step(setup, grid))
    return {"layouts": int(grid.tp.size), "seconds": seconds,
            "layouts_per_s": grid.tp.size / seconds}


# A fresh interpreter running the `fleetplan` command: what a shell user waits for.
_CLI = "import sys; from fleetplan.plan.cli import main; sys.argv[0] = 'fleetplan'; main()"


def end_to_end(path: Path, repeats: int) -> dict[str, float]:
    """Wall seconds of `fleetplan plan PATH --format json` in a new process (interpreter start,
    imports, catalog, plan, report), median and best of `repeats` runs."""
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", _CLI, "plan", str(path), "--format", "json"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - start)
    return {"median": statistics.median(walls), "best": min(walls)}


def run_bench(catalog: Catalog, examples: list[Path], repeats: int = 3,
              fresh_process: bool = False) -> dict[str, Any]:
    """Grid screen rate, exact goodput rate, mix ILP solve time, and each example end to end
    (best of `repeats`, single process, after one warm-up; with `fresh_process`, also the
    median and best of `repeats` runs of the command in new processes)."""
    family, buckets, space = _family(catalog)
    sc = screen(family, buckets, space)
    t_screen = _best_of(repeats, lambda: screen(family, buckets, space))
    few = buckets[:4]
    cands = search_family(family, few, space)
    t_search = _best_of(repeats, lambda: search_family(family, few, space))
    out: dict[str, Any] = {
        # The grid's pairs (every batch limit) are settled; the distinct replicas' pairs are
        # what the roofline evaluates (the batch limit is settled by dominance).
        "grid_screen": {"family": family.key, "candidates": sc.grid_size,
                        "replicas": int(sc.grid["tp"].size), "buckets": len(buckets),
                        "candidate_bucket_pairs": sc.grid_size * len(buckets),
                        "replica_bucket_pairs": sc.pairs, "seconds": t_screen,
                        "pairs_per_s": sc.grid_size * len(buckets) / t_screen,
                        "evaluated_pairs_per_s": sc.pairs / t_screen},
        "search_with_exact_goodput": {
            "buckets": len(few), "pairs_screened": cands.pairs_screened,
            "pairs_with_exact_goodput": cands.pairs_evaluated, "seconds": t_search,
            "exact_pairs_per_s": cands.pairs_evaluated / t_search},
    }
    out["mix_ilp"] = _mix_ilp(repeats)
    out["training_grid"] = _training_grid(catalog, repeats)
    plans = {}
    for path in examples:
        def once(path: Path = path) -> None:
            inputs = resolve_plan(load_spec(path), catalog)
            run_plan(inputs, catalog)
        once()
        plans[path.name] = _best_of(repeats, once)
    out["example_plans_seconds"] = plans
    if fresh_process:
        out["example_plans_fresh_process_seconds"] = {path.name: end_to_end(path, repeats)
                                                      for path in examples}
    return out
