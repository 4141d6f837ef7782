"""MIP starts for the oracle: the LP relaxation rounded, or the previous rolling plan shifted by a period.

Also the HiGHS options the rolling (MPC) solves use with their start (:data:`ROLLING_HIGHS_OPTIONS`).
A start only helps HiGHS find a first incumbent; HiGHS completes a partial start and ignores an
infeasible one, so the optimum is unchanged.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import highspy
import numpy as np
import pulp

from oracle.model import Key3, Model
from oracle.schedule import Schedule
from oracle.solvers import HiGHSWithStart, swallow_highs_banner, use_threads

BUDGET_ROUNDING_SLACK = 0.97
"""The LP relaxation behind the warm start uses this fraction of the carbon budget left."""


ROLLING_HIGHS_OPTIONS: dict[str, Any] = {
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_allow_restart": False,
}
"""HiGHS options for the rolling (MPC) solves, which start from the previous plan.

Measured on ``paper`` seed 3, window 24, 24 decisions (HiGHS 1.16, 1 thread; MIP only): with
``forecast_noise=0.2`` the default spends most of a slow solve in RINS/RENS sub-MIPs and root
restarts (period 1: 3.4 s of which 2.6 s sub-MIPs, 3 B&B nodes), because the noisy windows' LP
relaxations are 2-3x more fractional (9-13 of ~117 starts vs 3-4) under a carbon budget whose dual
is 10-40x higher. Without them: mean 574 -> 199 ms, max 3.7 -> 1.2 s; exact forecasts: mean 137 ->
76 ms; the same objectives (relative difference <= 6e-14)."""


def shifted_plan_start(m: Model, previous: Schedule | None) -> dict[str, float] | None:
    """A MIP start for the rolling solve ``m`` from the previous period's plan, shifted by one period.

    Every job start of ``previous`` planned at or after ``m.t0`` becomes 1, every other start
    variable of ``m`` 0; the continuous part is left for HiGHS to complete. None when there is no
    previous plan or it has no solution.
    """
    if previous is None or not previous.has_solution:
        return None
    planned = {(j, s, t) for j, s, t in previous.job_start if t >= m.t0}
    return {var.name: float(key in planned) for key, var in m.start.items()}


def warm_start_values(
    m: Model, threads: int | None = None, deadline: float | None = None
) -> dict[str, float] | None:
    """A MIP start by rounding the LP relaxation (a heuristic incumbent for large instances).

    Solve the LP relaxation with ``BUDGET_ROUNDING_SLACK`` of the carbon budget left. Each job's LP
    run fraction is ``Σ_{s,t} start[j,s,t]``; for thresholds 0.5, 0.75, 0.9 and 1, jobs whose
    fraction reaches the threshold are placed, most complete first, at their LP start with the
    largest value whose GPUs are still free (none if no LP start fits), and the LP over the
    continuous variables is solved with those integers fixed. The first feasible rounding is
    returned (higher thresholds drop load); None when none is feasible (e.g. a mandatory job is
    dropped). HiGHS completes the continuous variables and uses the start only if it is feasible.

    ``deadline`` (``time.perf_counter()`` s, the solve's): every LP run gets only the time left
    before it, and the heuristic gives up (None, the MIP then starts cold) when the time is gone,
    so that the whole solve stays inside its ``time_limit_s``.
    """
    swallow_highs_banner()
    use_threads(threads)
    solver = HiGHSWithStart(mip=False, msg=False, threads=threads)
    solver.createAndConfigureSolver(m.prob)
    solver.buildSolverModel(m.prob)
    h = m.prob.solverModel
    budget = m.prob.constraints.get("carbon_budget")
    if budget is not None:  # leave room for the rounding to emit a little more than the LP
        h.changeRowBounds(budget.index, -highspy.kHighsInf, BUDGET_ROUNDING_SLACK * m.budget_remaining_t)
    if not _run_lp(h, deadline):
        return None
    x = np.asarray(h.getSolution().col_value)
    if budget is not None:
        h.changeRowBounds(budget.index, -highspy.kHighsInf, m.budget_remaining_t)
    fraction: dict[int, float] = defaultdict(float)
    options: dict[int, list[tuple[float, Key3, pulp.LpVariable]]] = defaultdict(list)
    for key, var in m.start.items():
        fraction[key[0]] += x[var.index]
        if x[var.index] > 1e-6:
            options[key[0]].append((x[var.index], key, var))
    sc = m.scenario
    for threshold in (0.5, 0.75, 0.9, 1.0 - 1e-6):
        free = sc.site_array("gpu_capacity")[:, None] - m.held_gpus
        chosen: set[str] = set()
        for j in sorted(options, key=lambda j: -fraction[j]):
            if fraction[j] < threshold:
                continue
            for _, (_, s, t), var in sorted(options[j], key=lambda o: -o[0]):
                lo, hi = t - m.t0, min(t + sc.jobs[j].duration, m.t_end) - m.t0
                if (free[s, lo:hi] >= sc.jobs[j].gpus).all():
                    free[s, lo:hi] -= sc.jobs[j].gpus
                    chosen.add(var.name)
                    break
        for var in m.start.values():
            value = float(var.name in chosen)
            h.changeColBounds(var.index, value, value)
        if _run_lp(h, deadline):
            return {var.name: float(var.name in chosen) for var in m.start.values()}
        if deadline is not None and time.perf_counter() >= deadline:
            return None
    return None


def _run_lp(h: highspy.Highs, deadline: float | None) -> bool:
    """Run the LP in ``h`` within the time left before ``deadline``; True iff it solved to optimal."""
    if deadline is not None:
        left = deadline - time.perf_counter()
        if left <= 0.0:
            return False
        h.setOptionValue("time_limit", left)
    h.run()
    return h.getModelStatus() == highspy.HighsModelStatus.kOptimal
