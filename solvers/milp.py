"""Solving a PuLP model with HiGHS, and what the solver said, stated honestly.

Every solver in fleetplan returns a `SolveFacts`: the status (a time-limited incumbent is
`FEASIBLE`, never `OPTIMAL`), the objective, the best bound, the relative gap and the time.
"""

from __future__ import annotations

import enum
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import cache

import highspy
import pulp

# HiGHS proves optimality to this relative gap by default (1e-4); fleetplan asks for a tighter
# one so that "optimal" means optimal to the cent on plans of a few thousand USD per hour.
MIP_REL_GAP = 1e-6


class SolveStatus(enum.StrEnum):
    """How a solve ended."""

    OPTIMAL = "optimal"
    """Proven optimal within `MIP_REL_GAP`."""
    FEASIBLE = "feasible"
    """A feasible plan without a proof of optimality (the time limit stopped the search)."""
    INFEASIBLE = "infeasible"
    """No plan satisfies the constraints."""
    ERROR = "error"
    """The solver failed or stopped without a feasible plan."""


@dataclass(frozen=True)
class SolveFacts:
    """The solver's own account of one solve."""

    status: SolveStatus
    objective: float
    """Objective of the returned solution (nan without one)."""
    bound: float
    """Best proven lower bound on the objective (minimisation; nan when unknown)."""
    gap: float
    """Relative gap (objective - bound) / |objective|; 0 when proven optimal."""
    time_s: float
    solver: str

    def as_dict(self) -> dict[str, object]:
        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None
        return {"status": str(self.status), "objective": num(self.objective),
                "bound": num(self.bound), "gap": num(self.gap), "time_s": self.time_s,
                "solver": self.solver}


@cache
def _quiet_banner() -> None:
    """HiGHS prints its banner on stdout (C level) the first time a `Highs` object is made in a
    process; stdout carries only reports, so make that first object with stdout closed."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()  # type: ignore[no-untyped-call]
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def solve(problem: pulp.LpProblem, *, time_limit_s: float, mip: bool = True) -> SolveFacts:
    """Solve a minimisation `problem` in place with HiGHS, single-threaded and deterministic."""
    _quiet_banner()
    solver = pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=MIP_REL_GAP, threads=1,
                        mip=mip, random_seed=0)
    start = time.perf_counter()
    problem.solve(solver)
    elapsed = time.perf_counter() - start
    model: highspy.Highs = problem.solverModel
    info = model.getInfo()
    model_status = model.getModelStatus()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    objective = float(pulp.value(problem.objective) or 0.0) if has_solution else math.nan
    is_mip = mip and any(v.cat == pulp.LpInteger for v in problem.variables())
    bound = float(info.mip_dual_bound) if is_mip else objective
    if model_status == highspy.HighsModelStatus.kOptimal:
        status = SolveStatus.OPTIMAL
    elif model_status == highspy.HighsModelStatus.kInfeasible:
        status = SolveStatus.INFEASIBLE
    elif has_solution:
        status = SolveStatus.FEASIBLE
    else:
        status = SolveStatus.ERROR
    if status is SolveStatus.OPTIMAL:
        gap = max(float(info.mip_gap), 0.0) if is_mip else 0.0
        gap = gap if math.isfinite(gap) else 0.0
    elif has_solution and math.isfinite(bound) and objective != 0:
        gap = abs(objective - bound) / abs(objective)
    else:
        gap = math.nan
    return SolveFacts(status, objective, bound if math.isfinite(bound) else math.nan, gap,
                      elapsed, f"HiGHS {model.version()} via PuLP {pulp.__version__}")
