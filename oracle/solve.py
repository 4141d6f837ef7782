"""Solve the oracle MILP and return a :class:`Schedule`: the pipeline from a scenario to a result.

Pipeline of :func:`solve`:

1. :func:`oracle.model.build_model` (timed as ``build_time_s``);
2. the MIP with HiGHS (``pulp.HiGHS``, in-process via highspy) or CBC; the status comes from the
   HiGHS model status and PuLP's ``sol_status``, never from the objective value (PuLP maps a
   time-limit stop to "Optimal"; here it is ``"time_limit"`` with the incumbent);
3. *polish*: every binary is fixed at its incumbent value and the LP is re-solved, so the continuous
   part is LP-optimal given the integers (the environment completes each period's grid exchange
   greedily, which an LP-optimal point does too);
4. *complete* (:func:`extract`): renewable use, import and export are recomputed from the facility
   load by the environment's rule (:func:`oracle.recompute.complete_grid`) and the state of charge
   by its recursion; on an LP-optimal point this changes nothing beyond ties (see
   :func:`oracle.model.grid_binary_needed`);
5. KPIs and the objective are recomputed from the final arrays
   (:func:`oracle.recompute.kpis_from_decisions`).

Steps 2-3 are ``solve_time_s``. With a ``window`` the arrays cover the modelled periods
``t0 .. t0 + n - 1`` only (``Schedule.t0``, ``Schedule.n_periods``); periods outside are not part of
the result, never zero-filled.

The other pieces live in their own modules and are re-exported here, so ``oracle.solve`` stays the
one import for callers: :mod:`oracle.schedule` (the result), :mod:`oracle.recompute` (the
environment's rules on arrays, KPIs), :mod:`oracle.solvers` (steps 2-3, option checks),
:mod:`oracle.warm_start` (MIP starts), :mod:`oracle.diagnosis` (the likely cause of an infeasible
model). This module keeps :func:`solve`, :func:`solve_item` and :func:`extract` (step 4).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pulp

from envs.scenario import OperatingState, Scenario
from oracle.diagnosis import diagnose
from oracle.model import CONFIGS, Model, ModelError, build_model
from oracle.recompute import (
    KPI_KEYS,
    ZERO_TOL,
    complete_grid,
    facility_load_mw,
    kpis_from_decisions,
    net_battery,
)
from oracle.schedule import DECISION_ARRAYS, STATUSES, Schedule
from oracle.solvers import Run, check_options, run_mip
from oracle.warm_start import (
    BUDGET_ROUNDING_SLACK,
    ROLLING_HIGHS_OPTIONS,
    shifted_plan_start,
    warm_start_values,
)

__all__ = [
    "BUDGET_ROUNDING_SLACK",
    "DECISION_ARRAYS",
    "KPI_KEYS",
    "ROLLING_HIGHS_OPTIONS",
    "STATUSES",
    "Schedule",
    "check_options",
    "complete_grid",
    "diagnose",
    "extract",
    "facility_load_mw",
    "kpis_from_decisions",
    "net_battery",
    "shifted_plan_start",
    "solve",
    "solve_item",
    "warm_start_values",
]


# ------------------------------------------------------------------------------------ extraction
def _value(var: pulp.LpVariable) -> float:
    if var.varValue is None:
        raise RuntimeError(f"solver returned no value for {var.name}")
    x = float(var.varValue)
    lo = var.lowBound if var.lowBound is not None else -math.inf
    up = var.upBound if var.upBound is not None else math.inf
    x = min(max(x, lo), up)
    return 0.0 if abs(x) < ZERO_TOL else x


def _array(m: Model, table: dict, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.zeros(shape)
    for key, var in table.items():
        arr[(*key[:-1], key[-1] - m.t0)] = _value(var)
    return arr


def _serve_within_limits(
    m: Model, serve: np.ndarray, job_start: list[tuple[int, int, int]], state: OperatingState | None
) -> np.ndarray:
    """Scale inference down where solver round-off (about 1e-9 with HiGHS, 1e-5 with CBC's solution
    file) puts a class above its demand or a site above its free GPUs, as the environment would."""
    sc = m.scenario
    demand = sc.demand_gpus[:, m.t0 : m.t_end]
    total = serve.sum(axis=1)
    over = total > demand
    serve = serve * np.where(over, demand / np.where(over, total, 1.0), 1.0)[:, None, :]
    held = np.zeros((sc.S, m.n))
    for j, s, tau in [*(state.job_starts if state is not None else ()), *job_start]:
        lo, hi = max(tau, m.t0), min(tau + sc.jobs[j].duration, m.t_end)
        if lo < hi:
            held[s, lo - m.t0 : hi - m.t0] += sc.jobs[j].gpus
    free = np.maximum(0.0, sc.site_array("gpu_capacity")[:, None] - held)
    used = serve.sum(axis=0)
    over = used > free
    return serve * np.where(over, free / np.where(over, used, 1.0), 1.0)[None, :, :]


class _NeedsBatteryBinary(Exception):
    """Netting freed battery power that the grid completion cannot absorb (see ``add_battery``)."""


def extract(
    m: Model, initial_state: OperatingState | None = None, lp_load: bool = False
) -> tuple[dict[str, Any], str]:
    """Decision arrays of a solved model, completed as the environment would complete them.

    Returns the arrays (keyword arguments of :func:`kpis_from_decisions` plus ``soc_mwh``) and a
    note listing anything the completion had to change by more than 1e-6. Raises
    ``_NeedsBatteryBinary`` when the netted battery power cannot be absorbed.

    ``lp_load``: complete the grid against the LP's own facility load ``(1 + cooling)·it`` (MW)
    instead of the load recomputed from the integer starts: for ``later_starts="relaxed"``, whose
    fractional later jobs are not in ``job_start`` but draw power in the LP's balance.
    """
    sc, n = m.scenario, m.n
    job_start = sorted((j, s, t) for (j, s, t), var in m.start.items() if _value(var) > 0.5)
    serve = _serve_within_limits(m, _array(m, m.serve, (sc.K, sc.S, n)), job_start, initial_state)
    unserved = np.maximum(0.0, sc.demand_gpus[:, m.t0 : m.t_end] - serve.sum(axis=1))
    gen = _array(m, m.gen, (sc.S, n))
    lp_charge = _array(m, m.charge, (sc.S, n))
    lp_discharge = _array(m, m.discharge, (sc.S, n))
    charge, discharge = net_battery(sc, lp_charge, lp_discharge)
    lp_soc = _array(m, m.soc, (sc.S, n))
    running = initial_state.job_starts if initial_state is not None else ()
    load = facility_load_mw(sc, job_start, serve, m.t0, running)
    if lp_load:
        it = np.array([[m.it_mw[s, t].value() for t in m.periods] for s in range(sc.S)]).reshape(sc.S, n)
        load = (1.0 + sc.cooling[:, m.t0 : m.t_end]) * it
    used, grid_import, grid_export = complete_grid(sc, load, gen, charge, discharge, m.t0)
    balance = load + charge + grid_export - used - gen - discharge - grid_import
    if (
        np.abs(balance).max(initial=0.0) > 1e-6
        or (grid_import > sc.site_array("import_limit_mw")[:, None] + 1e-6).any()
    ):
        raise _NeedsBatteryBinary
    soc = np.zeros((sc.S, n))
    eta_c, eta_d = sc.site_array("eta_charge"), sc.site_array("eta_discharge")
    level = m.soc0_mwh.copy()
    for i in range(n):
        level = level + (eta_c * charge[:, i] - discharge[:, i] / eta_d) * sc.dt_h
        soc[:, i] = level
    notes = []
    netted = int(((lp_charge > 0) & (lp_discharge > 0)).sum())
    if netted:
        notes.append(f"netted simultaneous charge and discharge in {netted} site-periods")
    for name, mine, lp in (
        ("grid_import_mw", grid_import, _array(m, m.grid_import, (sc.S, n))),
        ("grid_export_mw", grid_export, _array(m, m.grid_export, (sc.S, n))),
        ("renewable_used_mw", used, _array(m, m.renewable_used, (sc.S, n))),
        ("soc_mwh", soc, lp_soc),
    ):
        diff = float(np.abs(mine - lp).max()) if mine.size else 0.0
        if diff > 1e-6:
            notes.append(f"{name} completed by the env rule (max change {diff:.3g})")
    arrays = {
        "job_start": job_start,
        "serve_gpus": serve,
        "unserved_gpus": unserved,
        "gen_mw": gen,
        "charge_mw": charge,
        "discharge_mw": discharge,
        "grid_import_mw": grid_import,
        "grid_export_mw": grid_export,
        "renewable_used_mw": used,
        "soc_mwh": soc,
    }
    return arrays, "; ".join(notes)


def solve(
    scenario: Scenario,
    config: str = "joint",
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    threads: int | None = None,
    initial_state: OperatingState | None = None,
    window: int | None = None,
    solver: str = "highs",
    msg: bool = False,
    *,
    terminal_soc_mwh: Sequence[float] | None = None,
    warm_start: bool = False,
    workload: tuple[Sequence[tuple[int, int, int]], np.ndarray] | None = None,
    previous_plan: Schedule | None = None,
    highs_options: dict[str, Any] | None = None,
    scenarios: Sequence[Scenario] | None = None,
    nonanticipative_periods: int = 1,
    shared_starts: bool = False,
    fixed_starts: Sequence[tuple[int, int, int]] | None = None,
    fixed_start_periods: int = 1,
    later_starts: str = "binary",
) -> Schedule:
    """Solve configuration ``config`` (MODEL.md §6) of ``scenario`` and return a :class:`Schedule`.

    Args:
        scenario: the scenario (untransformed).
        config: one of :data:`oracle.model.CONFIGS`.
        time_limit_s: wall-clock limit of the whole call, s, finite and > 0: model build, warm
            start, MIP and polishing LP (the polish gets what the MIP leaves, and is skipped when
            nothing is left; a re-solve with the battery binary shares the same limit). A stop with
            an incumbent is ``time_limit``; one without is ``error`` (with a likely cause).
        mip_gap: relative MIP gap at which HiGHS/CBC stop, in [0, 1) (1e-4 = 0.01 %).
        threads: solver threads, an integer >= 1 (None: the solver's default).

    Raises:
        ModelError: an unknown ``config`` or ``solver``, or an option out of range (the message
            names the option).
        initial_state / window / terminal_soc_mwh: see :func:`oracle.model.build_model` (for MPC).
        solver: ``"highs"`` (default) or ``"cbc"``.
        msg: show the solver log.
        warm_start: pass a rounded LP relaxation as a MIP start (:func:`warm_start_values`; its
            time counts as solve time). Worth it on ``large``; ``paper`` and ``week`` do not need it.
        workload: ``energy_only`` only: a fixed workload ``(starts, serve)`` instead of the
            carbon-agnostic rule's (see :func:`oracle.model.build_model`).
        previous_plan: the previous MPC period's schedule: its job starts from ``t0`` on are the
            MIP start (:func:`shifted_plan_start`; HiGHS completes it and ignores it if infeasible).
            Takes precedence over ``warm_start``; HiGHS only.
        highs_options: extra HiGHS options by name (e.g. :data:`ROLLING_HIGHS_OPTIONS`).
        scenarios / nonanticipative_periods / shared_starts: a scenario dimension (stochastic MPC, see
            :func:`oracle.model.build_model`); the schedule is scenario 0's plan, whose first
            ``nonanticipative_periods`` periods every scenario shares, and ``bound_usd`` / the
            MIP's objective are the mean over scenarios.
        fixed_starts / fixed_start_periods / later_starts: opt-in (None: unchanged): the job starts
            of periods ``t0 .. t0 + fixed_start_periods - 1`` are exactly ``fixed_starts``, the later
            ones binary, relaxed or none (see :func:`oracle.model.build_model`; the repair step of
            :class:`agents.hybrid.HybridPolicy`). A ``previous_plan`` start takes the fixed values
            for every start variable whose bounds are fixed. With ``"relaxed"`` the schedule lists
            the fixed starts only, while its grid arrays carry the relaxed later jobs' fractional
            load (``extract(lp_load=True)``); only the fixed periods' decisions are meant for use.
    """
    if config not in CONFIGS:
        raise ModelError(f"config: unknown configuration {config!r}; choose one of {list(CONFIGS)}")
    check_options(time_limit_s, mip_gap, threads, solver)
    t_start = time.perf_counter()
    deadline = t_start + float(time_limit_s)
    times = [0.0, 0.0]  # build, solve (s)
    options = {
        "initial_state": initial_state,
        "window": window,
        "terminal_soc_mwh": terminal_soc_mwh,
        "workload": workload,
        "scenarios": scenarios,
        "nonanticipative_periods": nonanticipative_periods,
        "shared_starts": shared_starts,
    }
    if fixed_starts is not None or later_starts != "binary" or fixed_start_periods != 1:
        options.update(
            fixed_starts=fixed_starts, fixed_start_periods=fixed_start_periods, later_starts=later_starts
        )

    def attempt(relax_budget: bool, battery_binary: bool, warm: bool) -> tuple[Model, Run]:
        tick = time.perf_counter()
        m = build_model(scenario, config, **options, relax_budget=relax_budget, battery_binary=battery_binary)
        times[0] += time.perf_counter() - tick
        tick = time.perf_counter()
        start_values = (
            warm_start_values(m, threads, deadline) if warm and solver == "highs" and m.start else None
        )
        if previous_plan is not None and solver == "highs":
            start_values = shifted_plan_start(m, previous_plan)
            if start_values is not None and fixed_starts is not None:
                fixed = {v.name: float(v.upBound) for v in m.start.values() if v.lowBound == v.upBound}
                start_values.update(fixed)
        run = run_mip(m, solver, deadline, mip_gap, threads, msg, start_values, highs_options)
        times[1] += time.perf_counter() - tick
        return m, run

    relaxed, battery_binary = False, False
    relaxed_later = fixed_starts is not None and later_starts == "relaxed"
    m, run = attempt(False, False, warm_start)
    if run.status == "infeasible" and config == "energy_only" and m.budget_remaining_t is not None:
        relaxed = True
        m, run = attempt(True, False, False)
    arrays: dict[str, Any] | None = None
    note = ""
    if run.status in ("optimal", "time_limit"):
        try:
            arrays, note = extract(m, initial_state, relaxed_later)
        except _NeedsBatteryBinary:
            if time.perf_counter() < deadline:
                battery_binary = True
                m, run = attempt(relaxed, True, warm_start)
                if run.status in ("optimal", "time_limit"):
                    try:
                        arrays, note = extract(m, initial_state, relaxed_later)
                    except _NeedsBatteryBinary:  # the binary forbids netting: not expected, but named
                        run = Run(
                            "error",
                            detail=f"{run.detail}; the schedule still needs battery netting with the "
                            "battery-mode binary (numerical tolerance?); no schedule",
                        )
            else:
                run = Run(
                    "error",
                    detail=f"{run.detail}; the incumbent needs the battery-mode binary to replay exactly and "
                    "no time was left within time_limit_s to re-solve with it; give more time",
                )
    solved = relaxed and arrays is not None
    sched = Schedule(
        # the scenario as solved (MODEL.md §6): without the budget when it had to be relaxed, so the
        # schedule replays to its objective in an env built from it
        scenario=m.scenario.replace(carbon_budget_t=None) if solved else m.scenario,
        config=config,
        status=run.status,
        bound_usd=run.bound,
        mip_gap=run.gap,
        build_time_s=times[0],
        solve_time_s=times[1],
        carbon_budget_relaxed=solved,
        t0=m.t0,
    )
    notes = [run.detail]
    if battery_binary:
        notes.append("re-solved with the battery mode binary (netting could not be absorbed)")
    if run.status == "infeasible" or (run.status == "error" and run.no_incumbent):
        left = deadline - time.perf_counter()
        cause = diagnose(scenario, config, initial_state, window, time_limit_s=left, model=m)
        notes.append(f"likely cause: {cause}")
    if arrays is None:
        sched.diagnosis = "; ".join(notes)
        return sched
    for name, value in arrays.items():
        setattr(sched, name, value)
    sched.kpis = kpis_from_decisions(m.scenario, **arrays, t0=m.t0)
    sched.objective_usd = sched.kpis["benefit_usd"]
    lp_objective = m.prob.objective.value()
    if (
        m.objective == "benefit"
        and not m.members
        and not relaxed_later
        and abs(lp_objective - sched.objective_usd) > 1e-6 * max(1.0, abs(lp_objective))
    ):
        notes.append(f"objective of the completed arrays differs from the LP's {lp_objective:.6f} USD")
    if note:
        notes.append(note)
    if sched.carbon_budget_relaxed:
        emitted = initial_state.emissions_t if initial_state is not None else 0.0
        left = float(scenario.carbon_budget_t) - float(emitted)
        notes.append(
            "carbon budget relaxed: the fixed carbon-agnostic workload cannot meet the budget of "
            f"{left:.2f} t; solved without it, emissions {sched.kpis['emissions_t']:.2f} t, overrun "
            f"{sched.kpis['emissions_t'] - left:.2f} t"
        )
    sched.diagnosis = "; ".join(notes)
    return sched


def solve_item(item: dict[str, Any]) -> dict[str, Any]:
    """Executor work item (``oracle.executor.run_sweep``): solve one configuration of a scenario.

    ``item``: ``{"key", "scenario": <scenario JSON dict>, "config", "time_limit_s", "mip_gap",
    "threads", "solver", "warm_start"}`` (all but key, scenario and config optional). Returns the
    schedule's JSON dict (``Schedule.from_dict`` rebuilds it), so any backend can run it.
    """
    options = {
        name: item[name]
        for name in ("time_limit_s", "mip_gap", "threads", "solver", "warm_start")
        if item.get(name) is not None
    }
    return solve(Scenario.from_dict(item["scenario"]), item["config"], **options).to_dict()
