"""One MIP run with HiGHS or CBC, then the polishing LP, within a deadline; and the solver option checks.

The status of a run comes from the HiGHS model status and PuLP's ``sol_status``, never from the
objective value (PuLP maps a time-limit stop to "Optimal"; here it is ``"time_limit"`` with the
incumbent). Polishing fixes every binary at its incumbent value and re-solves the LP, so the
continuous part is LP-optimal given the integers. Also here: the HiGHS process-wide quirks (its
version banner on stdout, its global thread scheduler) that every HiGHS call in the oracle goes
through.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import pulp

from oracle.model import Model, ModelError


class HiGHSWithStart(pulp.HiGHS):
    """``pulp.HiGHS`` that can pass a (partial) MIP start to HiGHS before ``run()``.

    ``warm_start`` maps variable names to values; HiGHS completes a partial assignment itself and
    uses it as the first incumbent if it is feasible.
    """

    def __init__(self, warm_start: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warm_start = warm_start or {}

    def callSolver(self, lp: pulp.LpProblem) -> None:
        if self.warm_start:
            idx, val = [], []
            for var in lp.variables():
                if var.name in self.warm_start:
                    idx.append(var.index)
                    val.append(float(self.warm_start[var.name]))
            lp.solverModel.setSolution(
                len(idx), np.array(idx, dtype=np.int32), np.array(val, dtype=np.float64)
            )
        lp.solverModel.run()


@functools.cache
def swallow_highs_banner() -> None:
    """Create one HiGHS instance with the process's stdout pointed at /dev/null.

    HiGHS's C++ library prints its version banner to file descriptor 1 on the first instance in a
    process, whatever ``output_flag`` says; that would corrupt machine-readable output such as
    ``evaluate.py --json``. Later instances print nothing.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


_scheduler_threads: list[int | None] = []


def use_threads(threads: int | None) -> None:
    """Reset HiGHS's process-wide thread scheduler when a solve asks for another thread count.

    HiGHS creates one global scheduler with the first solve's ``threads`` and fails every later
    solve in the same process that asks for a different count (model status "Not Set", no
    solution). Resetting it between such solves keeps ``threads`` a per-solve choice.
    """
    if _scheduler_threads and _scheduler_threads[0] != threads:
        highspy.Highs.resetGlobalScheduler(True)
    _scheduler_threads[:] = [threads]


@dataclass
class Run:
    status: str
    bound: float = math.nan
    gap: float = math.nan
    detail: str = ""
    no_incumbent: bool = False
    """The solver stopped (time limit) before it found any feasible point: perhaps infeasible."""


def run_highs(
    m: Model,
    time_limit_s: float,
    mip_gap: float,
    threads: int | None,
    msg: bool,
    warm: dict[str, float] | None,
    highs_options: dict[str, Any] | None = None,
) -> Run:
    if not msg:
        swallow_highs_banner()
    use_threads(threads)
    solver = HiGHSWithStart(
        warm_start=warm,
        msg=msg,
        timeLimit=time_limit_s,
        gapRel=mip_gap,
        threads=threads,
        **(highs_options or {}),
    )
    m.prob.solve(solver)
    h = m.prob.solverModel
    ms = h.getModelStatus()
    info = h.getInfo()
    detail = f"HiGHS model status: {h.modelStatusToString(ms)}"
    has_solution = m.prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible) and (
        info.primal_solution_status == 2
    )
    is_mip = bool(m.integer_variables())
    sign = -1.0 if m.prob.sense == pulp.LpMaximize else 1.0
    const = float(m.prob.objective.constant) if m.prob.objective is not None else 0.0
    M = highspy.HighsModelStatus
    if ms == M.kOptimal and has_solution:
        if is_mip:
            return Run("optimal", sign * info.mip_dual_bound + const, info.mip_gap, detail)
        obj = sign * info.objective_function_value + const
        return Run("optimal", obj, 0.0, detail)
    if ms in (M.kInfeasible, M.kUnboundedOrInfeasible):
        return Run("infeasible", detail=detail)
    if ms in (M.kTimeLimit, M.kIterationLimit, M.kInterrupt, M.kSolutionLimit):
        if has_solution:
            return Run("time_limit", sign * info.mip_dual_bound + const, info.mip_gap, detail)
        return Run(
            "error", detail=f"{detail}: stopped before any feasible solution was found", no_incumbent=True
        )
    return Run("error", detail=detail)


def _polish_highs(m: Model, time_limit_s: float) -> bool:
    """Fix every binary at its incumbent value and re-solve the LP in the same HiGHS instance,
    within ``time_limit_s`` seconds (False if it does not reach optimality in time)."""
    h = m.prob.solverModel
    for var in m.integer_variables():
        value = float(round(var.varValue))
        h.changeColIntegrality(var.index, highspy.HighsVarType.kContinuous)
        h.changeColBounds(var.index, value, value)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return False
    values = h.getSolution().col_value
    for var in m.prob.variables():
        var.varValue = values[var.index]
    return True


def _run_cbc(m: Model, time_limit_s: float, mip_gap: float, threads: int | None, msg: bool) -> Run:
    solver = pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit_s, gapRel=mip_gap, threads=threads)
    m.prob.solve(solver)
    if m.prob.sol_status == pulp.LpSolutionOptimal:
        return Run("optimal", detail="CBC: optimal")
    if m.prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return Run("time_limit", detail="CBC: stopped with an incumbent")
    if m.prob.sol_status == pulp.LpSolutionInfeasible or m.prob.status == pulp.LpStatusInfeasible:
        return Run("infeasible", detail="CBC: infeasible")
    return Run("error", detail=f"CBC: {pulp.LpStatus[m.prob.status]}")


def _polish_cbc(m: Model, msg: bool, time_limit_s: float) -> bool:
    saved = []
    for var in m.integer_variables():
        saved.append((var, var.lowBound, var.upBound, var.cat))
        value = float(round(var.varValue))
        var.lowBound = var.upBound = value
        var.cat = pulp.LpContinuous
    try:
        m.prob.solve(pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit_s))
        return m.prob.sol_status == pulp.LpSolutionOptimal
    finally:
        for var, lo, up, cat in saved:
            var.lowBound, var.upBound, var.cat = lo, up, cat


def run_mip(
    m: Model,
    solver: str,
    deadline: float,
    mip_gap: float,
    threads: int | None,
    msg: bool,
    warm: dict[str, float] | None,
    highs_options: dict[str, Any] | None = None,
) -> Run:
    """The MIP, then the polishing LP, both before ``deadline`` (``time.perf_counter()`` s).

    The MIP gets the time left; the polish gets what the MIP left over and is skipped (the MIP's
    values are kept, and the detail says so) when nothing is left.
    """
    left = deadline - time.perf_counter()
    if left <= 0:
        return Run(
            "error",
            detail=(
                "time_limit_s used up by the model build (and warm start) before the MIP started; "
                "give more time"
            ),
        )
    if solver == "highs":
        run = run_highs(m, left, mip_gap, threads, msg, warm, highs_options)
        polish = _polish_highs
    elif solver == "cbc":
        run = _run_cbc(m, left, mip_gap, threads, msg)
        polish = lambda model, limit: _polish_cbc(model, msg, limit)  # noqa: E731
    else:
        raise ModelError(f"solver: must be 'highs' or 'cbc' (got {solver!r})")
    if run.status in ("optimal", "time_limit"):
        left = deadline - time.perf_counter()
        if left <= 0:
            run.detail += "; polishing skipped: no time left within time_limit_s, kept the MIP values"
        elif not polish(m, left):
            run.detail += (
                f"; the LP with binaries fixed did not solve to optimality within the {left:.3g} s left, "
                "kept the MIP values"
            )
    return run


def check_options(time_limit_s: Any, mip_gap: Any, threads: Any, solver: Any = "highs") -> None:
    """Raise :class:`ModelError` naming the option unless the solver options are usable.

    ``time_limit_s``: a finite number of seconds > 0 (HiGHS takes any positive limit; a limit
    shorter than the model build returns ``error`` right after the build). ``mip_gap``: a relative
    gap in [0, 1) (1 would accept any incumbent). ``threads``: None or an integer >= 1.
    ``solver``: ``"highs"`` or ``"cbc"``.
    """

    def real(value: Any) -> bool:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        )

    if not real(time_limit_s) or not math.isfinite(time_limit_s) or not time_limit_s > 0:
        raise ModelError(f"time_limit_s: must be a finite number of seconds > 0 (got {time_limit_s!r})")
    if not real(mip_gap) or not 0.0 <= mip_gap < 1.0:
        raise ModelError(f"mip_gap: must be a relative gap in [0, 1), e.g. 1e-4 (got {mip_gap!r})")
    if threads is not None and (
        isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ModelError(f"threads: must be None (the solver's default) or an integer >= 1 (got {threads!r})")
    if solver not in ("highs", "cbc"):
        raise ModelError(f"solver: must be 'highs' or 'cbc' (got {solver!r})")
