"""Solving integer programs with HiGHS, and what the solver said, stated honestly.

Two ways in, one configuration of HiGHS (single-threaded, seeded, deterministic) and one account
of the outcome:

* `solve_milp` takes a model as arrays (`Milp`: costs, bounds, a coordinate-form matrix) and hands
  it to HiGHS through highspy in one call; the mix ILP is built this way, over whole arrays.
  `Relaxation` holds such a model's LP relaxation for the warm-started re-solves of a rounding
  heuristic.
* `solve` takes a PuLP model (the placement ILPs, small and clearer written as expressions) and
  solves it through PuLP's in-process `HiGHS` interface.

Every solver in fleetplan returns a `SolveFacts`: the status (a time-limited incumbent is
`FEASIBLE`, never `OPTIMAL`), the objective, the best bound, the relative gap and the time.
"""

from __future__ import annotations

import enum
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import highspy
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pulp  # imported by `solve`: a plan whose placements need no ILP never loads PuLP

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# HiGHS proves optimality to this relative gap by default (1e-4); fleetplan asks for a tighter
# one so that "optimal" means optimal to the cent on plans of a few thousand USD per hour.
MIP_REL_GAP = 1e-6

# The same for every solve, whichever way in: quiet, one thread, fixed seed (reproducible plans).
_OPTIONS: dict[str, bool | int | float] = {
    "output_flag": False, "mip_rel_gap": MIP_REL_GAP, "threads": 1, "random_seed": 0}
# HiGHS's own primal heuristics (sub-MIPs, feasibility jump). Worth their time when the search
# starts from nothing; when the caller supplies a good plan they mostly re-find it, and on the mix
# ILP they then take about two thirds of the solve. Switching them off changes how the optimum is
# found, never what is proven: the gap tolerance stays `MIP_REL_GAP`.
_NO_HEURISTICS: dict[str, bool | int | float] = {
    "mip_heuristic_effort": 0.0, "mip_heuristic_run_feasibility_jump": False,
    "mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False}


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
    """Wall-clock seconds spent solving."""
    solver: str

    def as_dict(self) -> dict[str, object]:
        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None
        return {"status": str(self.status), "objective": num(self.objective),
                "bound": num(self.bound), "gap": num(self.gap), "time_s": self.time_s,
                "solver": self.solver}


class Rows(NamedTuple):
    """A family of linear constraints ``lower <= A v <= upper`` in coordinate form: entry ``i``
    puts ``value[i]`` at (``row[i]``, ``col[i]``); rows are numbered from 0 within the family."""

    row: IntArray
    col: IntArray
    value: FloatArray
    lower: FloatArray
    """(R,) lower bounds, -inf for none."""
    upper: FloatArray
    """(R,) upper bounds, inf for none."""


@dataclass(frozen=True, eq=False)
class Milp:
    """``min cost @ v`` subject to ``row_lower <= A v <= row_upper``,
    ``col_lower <= v <= col_upper`` and ``v[integer]`` integral, with ``A`` in coordinate form.

    Build it with `Milp.of` from constraint families (one `Rows` each); column and row order
    are the caller's and decide nothing but HiGHS's path through ties.
    """

    cost: FloatArray
    col_lower: FloatArray
    col_upper: FloatArray
    """Bounds, +-inf for none."""
    integer: BoolArray
    row_lower: FloatArray
    row_upper: FloatArray
    a_row: IntArray
    a_col: IntArray
    a_value: FloatArray

    @classmethod
    def of(cls, cost: FloatArray, col_lower: FloatArray, col_upper: FloatArray,
           integer: BoolArray, families: list[Rows]) -> Milp:
        """The model with `families`' rows stacked in order."""
        base = cls(cost, col_lower, col_upper, integer, np.zeros(0), np.zeros(0),
                   np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
        return base.with_rows(*families)

    @property
    def n_cols(self) -> int:
        return int(self.cost.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.row_lower.shape[0])

    def with_rows(self, *families: Rows) -> Milp:
        """This model with `families`' rows appended after its own, in order."""
        rows, offset = [], self.n_rows
        for family in families:
            rows.append(family.row + offset)
            offset += len(family.lower)
        return replace(
            self,
            row_lower=np.concatenate([self.row_lower, *(f.lower for f in families)]),
            row_upper=np.concatenate([self.row_upper, *(f.upper for f in families)]),
            a_row=np.concatenate([self.a_row, *rows]),
            a_col=np.concatenate([self.a_col, *(f.col for f in families)]),
            a_value=np.concatenate([self.a_value, *(f.value for f in families)]))

    def with_cost(self, cost: FloatArray) -> Milp:
        return replace(self, cost=cost)

    def highs_lp(self, *, relax: bool = False) -> highspy.HighsLp:
        """The model as HiGHS's column-wise LP (integrality dropped when `relax`)."""
        order = np.lexsort((self.a_row, self.a_col))
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.n_cols, self.n_rows
        lp.col_cost_, lp.col_lower_, lp.col_upper_ = self.cost, self.col_lower, self.col_upper
        lp.row_lower_, lp.row_upper_ = self.row_lower, self.row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.concatenate(
            [[0], np.cumsum(np.bincount(self.a_col, minlength=self.n_cols))])
        lp.a_matrix_.index_ = self.a_row[order]
        lp.a_matrix_.value_ = self.a_value[order]
        if not relax and self.integer.any():
            kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
            lp.integrality_ = [kinds[flag] for flag in self.integer.tolist()]
        return lp


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


def _highs(options: dict[str, bool | int | float]) -> highspy.Highs:
    """A fresh HiGHS with fleetplan's options, then `options`."""
    _quiet_banner()
    model = highspy.Highs()  # type: ignore[no-untyped-call]
    for name, value in {**_OPTIONS, **options}.items():
        if model.setOptionValue(name, value) != highspy.HighsStatus.kOk:
            raise RuntimeError(f"HiGHS {model.version()} rejects option {name}={value!r}")
    return model


def _facts(model: highspy.Highs, *, objective: Callable[[], float], is_mip: bool,
           elapsed_s: float, via: str) -> SolveFacts:
    """`SolveFacts` from a HiGHS run: `objective` gives the solution's objective (called only
    when there is a solution)."""
    info = model.getInfo()
    model_status = model.getModelStatus()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    value = objective() if has_solution else math.nan
    bound = float(info.mip_dual_bound) if is_mip else value
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
    elif has_solution and math.isfinite(bound) and value != 0:
        gap = abs(value - bound) / abs(value)
    else:
        gap = math.nan
    return SolveFacts(status, value, bound if math.isfinite(bound) else math.nan, gap,
                      elapsed_s, f"HiGHS {model.version()} via {via}")


def solve_milp(model: Milp, *, time_limit_s: float, start: FloatArray | None = None,
               heuristics: bool = True) -> tuple[SolveFacts, FloatArray]:
    """Solve `model` with HiGHS: the facts and the column values (zeros without a solution).

    `start` is a feasible point to begin from (HiGHS checks it and ignores it if infeasible);
    `heuristics=False` switches HiGHS's own primal heuristics off, for callers whose `start` is
    already near-optimal. The objective is summed left to right in column order, as PuLP sums
    it, so that reported objectives keep their last digit.
    """
    highs = _highs({"time_limit": float(time_limit_s)} | ({} if heuristics else _NO_HEURISTICS))
    begin = time.perf_counter()
    highs.passModel(model.highs_lp())
    if start is not None:
        solution = highspy.HighsSolution()
        solution.col_value = start.tolist()
        highs.setSolution(solution)
    highs.run()
    elapsed = time.perf_counter() - begin
    values = np.zeros(model.n_cols)
    if highs.getInfo().primal_solution_status == 2:  # kSolutionStatusFeasible
        values = np.array(highs.getSolution().col_value, dtype=np.float64)
    facts = _facts(highs, objective=lambda: float(sum((model.cost * values).tolist())),
                   is_mip=bool(model.integer.any()), elapsed_s=elapsed, via="highspy")
    return facts, values


class Relaxation:
    """The LP relaxation of a `Milp`, held by HiGHS for warm-started re-solves after bound changes
    and added rows (a rounding heuristic's dive). Every solve stops at `deadline` (a
    `time.perf_counter()` value)."""

    def __init__(self, model: Milp, *, deadline: float) -> None:
        self._highs = _highs({})
        self._highs.passModel(model.highs_lp(relax=True))
        self._deadline = deadline

    def set_bounds(self, cols: IntArray, lower: FloatArray, upper: FloatArray) -> None:
        """Change the bounds of columns `cols`."""
        self._highs.changeColsBounds(len(cols), cols.astype(np.int32), lower, upper)

    def add_rows(self, rows: Rows) -> None:
        """Append the rows of `rows`."""
        order = np.lexsort((rows.col, rows.row))
        starts = np.searchsorted(rows.row[order], np.arange(len(rows.lower)))
        self._highs.addRows(len(rows.lower), rows.lower, rows.upper, len(order),
                            starts.astype(np.int32), rows.col[order].astype(np.int32),
                            rows.value[order])

    def solve(self) -> FloatArray | None:
        """Column values of an optimal solution of the LP as it now stands; None when it is
        infeasible, the deadline has passed, or HiGHS stops for any other reason."""
        left = self._deadline - time.perf_counter()
        if left <= 0:
            return None
        # The limit applies to HiGHS's run clock, which accumulates over the runs of one object.
        self._highs.setOptionValue("time_limit", self._highs.getRunTime() + left)
        self._highs.run()
        if self._highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        return np.array(self._highs.getSolution().col_value, dtype=np.float64)


def solve(problem: pulp.LpProblem, *, time_limit_s: float, mip: bool = True) -> SolveFacts:
    """Solve a minimisation `problem` in place with HiGHS through PuLP."""
    import pulp

    _quiet_banner()
    solver = pulp.HiGHS(msg=False, timeLimit=time_limit_s, mip=mip, **_OPTIONS)
    start = time.perf_counter()
    problem.solve(solver)
    elapsed = time.perf_counter() - start
    is_mip = mip and any(v.cat == pulp.LpInteger for v in problem.variables())
    return _facts(problem.solverModel,
                  objective=lambda: float(pulp.value(problem.objective) or 0.0),
                  is_mip=is_mip, elapsed_s=elapsed, via=f"PuLP {pulp.__version__}")
