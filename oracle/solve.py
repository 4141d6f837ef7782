"""Solve the oracle MILP and return a :class:`Schedule` (solver config, status handling, results).

Pipeline of :func:`solve`:

1. :func:`oracle.model.build_model` (timed as ``build_time_s``);
2. the MIP with HiGHS (``pulp.HiGHS``, in-process via highspy) or CBC; the status comes from the
   HiGHS model status and PuLP's ``sol_status``, never from the objective value (PuLP maps a
   time-limit stop to "Optimal"; here it is ``"time_limit"`` with the incumbent);
3. *polish*: every binary is fixed at its incumbent value and the LP is re-solved, so the continuous
   part is LP-optimal given the integers (the environment completes each period's grid exchange
   greedily, which an LP-optimal point does too);
4. *complete*: renewable use, import and export are recomputed from the facility load by the
   environment's rule (:func:`complete_grid`) and the state of charge by its recursion; on an
   LP-optimal point this changes nothing beyond ties (see :func:`oracle.model.grid_binary_needed`);
5. KPIs and the objective are recomputed from the final arrays (:func:`kpis_from_decisions`).

Steps 2-3 are ``solve_time_s``. With a ``window`` the arrays cover the modelled periods
``t0 .. t0 + n - 1`` only (``Schedule.t0``, ``Schedule.n_periods``); periods outside are not part of
the result, never zero-filled.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highspy
import numpy as np
import pulp

from envs.atomic import atomic_write_text
from envs.scenario import OBJECTIVE_TERMS, OperatingState, Scenario
from oracle.model import CONFIGS, Key3, Model, ModelError, build_model

STATUSES = ("optimal", "time_limit", "infeasible", "error")

KPI_KEYS = (
    "benefit_usd",
    *OBJECTIVE_TERMS,
    "energy_cost_usd",
    "emissions_t",
    "energy_imported_mwh",
    "energy_exported_mwh",
    "renewable_curtailed_mwh",
    "battery_throughput_mwh",
    "jobs_run",
    "inference_served_pct",
)
"""Fixed KPI keys (USD, tCO2, MWh, count, percent)."""

DECISION_ARRAYS = (
    "serve_gpus",
    "unserved_gpus",
    "gen_mw",
    "charge_mw",
    "discharge_mw",
    "grid_import_mw",
    "grid_export_mw",
    "renewable_used_mw",
    "soc_mwh",
)

_ZERO = 1e-9
"""Solver values closer than this to 0 (MW, GPUs, MWh) are set to exactly 0."""


# ----------------------------------------------------------------------------------------- Schedule
@dataclass
class Schedule:
    """The result of one oracle solve.

    ``scenario`` is the scenario as solved (after the configuration's transformation), so the
    schedule replays in an env built from it. Decision arrays have periods last and cover periods
    ``t0 .. t0 + n_periods - 1``: ``serve_gpus`` (K, S, n), ``unserved_gpus`` (K, n), and (S, n) for
    ``gen_mw``, ``charge_mw``, ``discharge_mw``, ``grid_import_mw``, ``grid_export_mw``,
    ``renewable_used_mw``, ``soc_mwh`` (end of period). ``job_start`` lists ``(job, site, period)``
    started in those periods. When there is no solution (``infeasible``/``error``) the arrays are
    ``None`` and the objective is NaN — never zeros.

    ``objective_usd`` is the benefit of the returned arrays (recomputed, MODEL.md §5); ``bound_usd``
    and ``mip_gap`` are HiGHS's dual bound and relative gap of the MIP (NaN with CBC, which does not
    report them through PuLP). ``carbon_budget_relaxed`` is True when ``energy_only``'s fixed
    workload could not meet the budget and was solved without it (overrun in ``diagnosis``).
    """

    scenario: Scenario
    config: str
    status: str
    objective_usd: float = math.nan
    bound_usd: float = math.nan
    mip_gap: float = math.nan
    build_time_s: float = 0.0
    solve_time_s: float = 0.0
    carbon_budget_relaxed: bool = False
    diagnosis: str = ""
    kpis: dict[str, float] = field(default_factory=dict)
    job_start: list[tuple[int, int, int]] | None = None
    serve_gpus: np.ndarray | None = None
    unserved_gpus: np.ndarray | None = None
    gen_mw: np.ndarray | None = None
    charge_mw: np.ndarray | None = None
    discharge_mw: np.ndarray | None = None
    grid_import_mw: np.ndarray | None = None
    grid_export_mw: np.ndarray | None = None
    renewable_used_mw: np.ndarray | None = None
    soc_mwh: np.ndarray | None = None
    t0: int = 0

    @property
    def has_solution(self) -> bool:
        return self.status in ("optimal", "time_limit") and self.gen_mw is not None

    @property
    def n_periods(self) -> int:
        return 0 if self.gen_mw is None else int(self.gen_mw.shape[1])

    @property
    def periods(self) -> range:
        return range(self.t0, self.t0 + self.n_periods)

    def to_frame(self) -> Any:
        """The plan as a :class:`pandas.DataFrame`, one row per (period, site): the (S, n) decision
        arrays (MW, MWh), ``serve_gpus`` summed over classes at the site, and ``starts`` (the jobs
        started there in that period, ``"j0 j3"``). Raises ``ValueError`` without a solution."""
        import pandas as pd

        if not self.has_solution:
            raise ValueError(f"schedule: no solution to tabulate (status {self.status!r})")
        starts: dict[tuple[int, int], list[str]] = {}
        for j, s, t in self.job_start or ():
            starts.setdefault((t, s), []).append(f"j{j}")
        rows = []
        for i, t in enumerate(self.periods):
            for s, site in enumerate(self.scenario.sites):
                row: dict[str, Any] = {"period": t, "site": s, "site_name": site.name}
                row["starts"] = " ".join(starts.get((t, s), []))
                for name in DECISION_ARRAYS:
                    if name == "serve_gpus":
                        row[name] = float(self.serve_gpus[:, s, i].sum())
                    elif name != "unserved_gpus":
                        row[name] = float(getattr(self, name)[s, i])
                rows.append(row)
        return pd.DataFrame(rows)

    def decisions(self) -> dict[str, Any]:
        """The decision arrays as keyword arguments of :func:`kpis_from_decisions`."""
        return {"job_start": self.job_start, **{name: getattr(self, name) for name in DECISION_ARRAYS}}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of issue 3, plus ``diagnosis`` and ``t0`` (0 unless solved in a window)."""
        decisions = None
        if self.has_solution:
            decisions = {"job_start": [{"job": j, "site": s, "period": t} for j, s, t in self.job_start]}
            decisions.update({name: getattr(self, name).tolist() for name in DECISION_ARRAYS})
        return {
            "scenario": self.scenario.to_dict(),
            "config": self.config,
            "status": self.status,
            "objective_usd": _num(self.objective_usd),
            "bound_usd": _num(self.bound_usd),
            "mip_gap": _num(self.mip_gap),
            "build_time_s": self.build_time_s,
            "solve_time_s": self.solve_time_s,
            "carbon_budget_relaxed": self.carbon_budget_relaxed,
            "diagnosis": self.diagnosis,
            "t0": self.t0,
            "kpis": {key: _num(value) for key, value in self.kpis.items()},
            "decisions": decisions,
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise (NaN as ``null``); write to ``path`` atomically if given. Returns the JSON text."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        decisions = data.get("decisions")
        arrays: dict[str, Any] = {}
        if decisions:
            arrays["job_start"] = [
                (int(d["job"]), int(d["site"]), int(d["period"])) for d in decisions["job_start"]
            ]
            arrays.update({name: np.array(decisions[name], dtype=np.float64) for name in DECISION_ARRAYS})
        return cls(
            scenario=Scenario.from_dict(data["scenario"]),
            config=data["config"],
            status=data["status"],
            objective_usd=_nan(data.get("objective_usd")),
            bound_usd=_nan(data.get("bound_usd")),
            mip_gap=_nan(data.get("mip_gap")),
            build_time_s=float(data.get("build_time_s", 0.0)),
            solve_time_s=float(data.get("solve_time_s", 0.0)),
            carbon_budget_relaxed=bool(data.get("carbon_budget_relaxed", False)),
            diagnosis=data.get("diagnosis", ""),
            kpis={key: _nan(value) for key, value in data.get("kpis", {}).items()},
            t0=int(data.get("t0", 0)),
            **arrays,
        )

    @classmethod
    def from_json(cls, source: str | Path) -> Schedule:
        """Load from a file path or from JSON text (a string starting with ``{``)."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            return cls.from_dict(json.loads(source))
        return cls.from_dict(json.loads(Path(source).read_text()))


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


# ------------------------------------------------------------------------- recomputation from arrays
def facility_load_mw(
    sc: Scenario,
    job_start: Sequence[tuple[int, int, int]],
    serve_gpus: np.ndarray,
    t0: int = 0,
    running: Sequence[tuple[int, int, int]] = (),
) -> np.ndarray:
    """(S, n) facility load ``(1 + cooling)·(base_it + Σ_j P[j,s]·running + Σ_k serve·gpu_mw)`` (MW).

    ``running`` are starts made before ``t0`` (an initial state's ``job_starts``)."""
    n = serve_gpus.shape[2]
    job_mw = np.zeros((sc.S, n))
    for j, s, tau in [*running, *job_start]:
        lo, hi = max(tau, t0), min(tau + sc.jobs[j].duration, t0 + n)
        if lo < hi:
            job_mw[s, lo - t0 : hi - t0] += sc.job_power_mw[j, s]
    it = sc.site_array("base_it_mw")[:, None] + job_mw + serve_gpus.sum(axis=0) * sc.gpu_mw[:, None]
    return (1.0 + sc.cooling[:, t0 : t0 + n]) * it


def net_battery(
    sc: Scenario, charge_mw: np.ndarray, discharge_mw: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove simultaneous charging and discharging without changing any state of charge (MW, (S, n)).

    Where both are positive, charge falls by ``δ = min(charge, discharge/(eta_c·eta_d))`` and
    discharge by ``eta_c·eta_d·δ``: ``eta_c·charge - discharge/eta_d`` is unchanged, and the battery
    draws ``(1 - eta_c·eta_d)·δ`` MW less from the site (see :func:`oracle.model.add_battery`).
    """
    both = (charge_mw > 0) & (discharge_mw > 0)
    if not both.any():
        return charge_mw, discharge_mw
    loop = (sc.site_array("eta_charge") * sc.site_array("eta_discharge"))[:, None]
    delta = np.where(both, np.minimum(charge_mw, discharge_mw / loop), 0.0)
    charge = np.where(both, charge_mw - delta, charge_mw)
    discharge = np.where(both, discharge_mw - loop * delta, discharge_mw)
    charge[np.abs(charge) < _ZERO] = 0.0
    discharge[np.abs(discharge) < _ZERO] = 0.0
    return charge, discharge


def complete_grid(
    sc: Scenario,
    load_mw: np.ndarray,
    gen_mw: np.ndarray,
    charge_mw: np.ndarray,
    discharge_mw: np.ndarray,
    t0: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The environment's grid completion (MODEL.md §7): ``(renewable_used, import, export)`` (S, n) MW.

    With ``net = load + charge - gen - discharge``: renewables first, ``import = max(0, net - R)``; a
    surplus ``R - net`` is exported up to ``export_limit_mw`` when ``price_export > 0`` and
    curtailed otherwise; ``renewable_used = net + export`` in surplus periods. Assumes the surplus
    can be absorbed (``net >= -export``), which holds for every feasible MILP point.
    """
    n = load_mw.shape[1]
    ren = sc.renewable_mw[:, t0 : t0 + n]
    net = load_mw + charge_mw - gen_mw - discharge_mw
    grid_import = np.maximum(0.0, net - ren)
    limit = np.where(sc.price_export[:, t0 : t0 + n] > 0, sc.site_array("export_limit_mw")[:, None], 0.0)
    grid_export = np.where(net < ren, np.minimum(limit, np.maximum(0.0, ren - net)), 0.0)
    used = np.where(net >= ren, ren, np.maximum(0.0, net + grid_export))
    return used, grid_import, grid_export


def kpis_from_decisions(
    scenario: Scenario,
    job_start: Sequence[tuple[int, int, int]],
    serve_gpus: np.ndarray,
    unserved_gpus: np.ndarray,
    gen_mw: np.ndarray,
    charge_mw: np.ndarray,
    discharge_mw: np.ndarray,
    grid_import_mw: np.ndarray,
    grid_export_mw: np.ndarray,
    renewable_used_mw: np.ndarray,
    soc_mwh: np.ndarray | None = None,
    t0: int = 0,
) -> dict[str, float]:
    """Recompute the KPIs of :data:`KPI_KEYS` from decision arrays covering periods ``t0 .. t0+n-1``.

    Per MODEL.md §5 (``dt = dt_h``): training value ``Σ value_usd[j]`` over starts; inference revenue
    ``Σ revenue·serve·dt``; unserved penalty ``Σ penalty·unserved·dt``; export revenue
    ``Σ price_export·export·dt``; import cost ``Σ price_import·import·dt``; generation cost
    ``Σ gen_cost·gen·dt``; degradation ``Σ degradation·(charge + discharge)·dt``; emissions
    ``E = Σ (ci·import + gen_emissions·gen)·dt``; carbon cost ``carbon_price·E``;
    ``energy_cost = import - export + gen + degradation``;
    ``benefit = training + inference - unserved - energy_cost - carbon_cost``. ``soc_mwh`` is accepted
    (and ignored) so that ``kpis_from_decisions(sc, **schedule.decisions())`` works.
    """
    sc, dt = scenario, scenario.dt_h
    n = gen_mw.shape[1]
    sl = slice(t0, t0 + n)
    rev = sc.class_array("revenue_usd_per_gpu_h")
    pen = sc.class_array("unserved_penalty_usd_per_gpu_h")
    training = float(sum(sc.jobs[j].value_usd for j, _, _ in job_start))
    inference = float((rev[:, None, None] * serve_gpus).sum() * dt)
    unserved = float((pen[:, None] * unserved_gpus).sum() * dt)
    export = float((sc.price_export[:, sl] * grid_export_mw).sum() * dt)
    imports = float((sc.price_import[:, sl] * grid_import_mw).sum() * dt)
    gen_cost = float((sc.site_array("gen_cost_usd_per_mwh")[:, None] * gen_mw).sum() * dt)
    degradation = float(
        (sc.site_array("degradation_usd_per_mwh")[:, None] * (charge_mw + discharge_mw)).sum() * dt
    )
    emissions = float(
        (
            (sc.carbon_intensity[:, sl] * grid_import_mw).sum()
            + (sc.site_array("gen_emissions_t_per_mwh")[:, None] * gen_mw).sum()
        )
        * dt
    )
    carbon = sc.carbon_price_usd_per_t * emissions
    energy = imports - export + gen_cost + degradation
    demand = float(sc.demand_gpus[:, sl].sum())
    return {
        "benefit_usd": training + inference - unserved - energy - carbon,
        "training_value_usd": training,
        "inference_revenue_usd": inference,
        "unserved_penalty_usd": unserved,
        "export_revenue_usd": export,
        "import_cost_usd": imports,
        "gen_cost_usd": gen_cost,
        "degradation_cost_usd": degradation,
        "carbon_cost_usd": carbon,
        "energy_cost_usd": energy,
        "emissions_t": emissions,
        "energy_imported_mwh": float(grid_import_mw.sum() * dt),
        "energy_exported_mwh": float(grid_export_mw.sum() * dt),
        "renewable_curtailed_mwh": float((sc.renewable_mw[:, sl] - renewable_used_mw).sum() * dt),
        "battery_throughput_mwh": float((charge_mw + discharge_mw).sum() * dt),
        "jobs_run": float(len(job_start)),
        "inference_served_pct": 100.0 * float(serve_gpus.sum()) / demand if demand > 0 else 100.0,
    }


# ---------------------------------------------------------------------------------------- solvers
class _HiGHS(pulp.HiGHS):
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
def _swallow_highs_banner() -> None:
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


def _use_threads(threads: int | None) -> None:
    """Reset HiGHS's process-wide thread scheduler when a solve asks for another thread count.

    HiGHS creates one global scheduler with the first solve's ``threads`` and fails every later
    solve in the same process that asks for a different count (model status "Not Set", no
    solution). Resetting it between such solves keeps ``threads`` a per-solve choice.
    """
    if _scheduler_threads and _scheduler_threads[0] != threads:
        highspy.Highs.resetGlobalScheduler(True)
    _scheduler_threads[:] = [threads]


@dataclass
class _Run:
    status: str
    bound: float = math.nan
    gap: float = math.nan
    detail: str = ""
    no_incumbent: bool = False
    """The solver stopped (time limit) before it found any feasible point: perhaps infeasible."""


def _run_highs(
    m: Model,
    time_limit_s: float,
    mip_gap: float,
    threads: int | None,
    msg: bool,
    warm: dict[str, float] | None,
    highs_options: dict[str, Any] | None = None,
) -> _Run:
    if not msg:
        _swallow_highs_banner()
    _use_threads(threads)
    solver = _HiGHS(
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
            return _Run("optimal", sign * info.mip_dual_bound + const, info.mip_gap, detail)
        obj = sign * info.objective_function_value + const
        return _Run("optimal", obj, 0.0, detail)
    if ms in (M.kInfeasible, M.kUnboundedOrInfeasible):
        return _Run("infeasible", detail=detail)
    if ms in (M.kTimeLimit, M.kIterationLimit, M.kInterrupt, M.kSolutionLimit):
        if has_solution:
            return _Run("time_limit", sign * info.mip_dual_bound + const, info.mip_gap, detail)
        return _Run(
            "error", detail=f"{detail}: stopped before any feasible solution was found", no_incumbent=True
        )
    return _Run("error", detail=detail)


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


def _run_cbc(m: Model, time_limit_s: float, mip_gap: float, threads: int | None, msg: bool) -> _Run:
    solver = pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit_s, gapRel=mip_gap, threads=threads)
    m.prob.solve(solver)
    if m.prob.sol_status == pulp.LpSolutionOptimal:
        return _Run("optimal", detail="CBC: optimal")
    if m.prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return _Run("time_limit", detail="CBC: stopped with an incumbent")
    if m.prob.sol_status == pulp.LpSolutionInfeasible or m.prob.status == pulp.LpStatusInfeasible:
        return _Run("infeasible", detail="CBC: infeasible")
    return _Run("error", detail=f"CBC: {pulp.LpStatus[m.prob.status]}")


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


def _run(
    m: Model,
    solver: str,
    deadline: float,
    mip_gap: float,
    threads: int | None,
    msg: bool,
    warm: dict[str, float] | None,
    highs_options: dict[str, Any] | None = None,
) -> _Run:
    """The MIP, then the polishing LP, both before ``deadline`` (``time.perf_counter()`` s).

    The MIP gets the time left; the polish gets what the MIP left over and is skipped (the MIP's
    values are kept, and the detail says so) when nothing is left.
    """
    left = deadline - time.perf_counter()
    if left <= 0:
        return _Run(
            "error", detail="time_limit_s used up by the model build before the MIP started; give more time"
        )
    if solver == "highs":
        run = _run_highs(m, left, mip_gap, threads, msg, warm, highs_options)
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


# ------------------------------------------------------------------------------------ extraction
def _value(var: pulp.LpVariable) -> float:
    if var.varValue is None:
        raise RuntimeError(f"solver returned no value for {var.name}")
    x = float(var.varValue)
    lo = var.lowBound if var.lowBound is not None else -math.inf
    up = var.upBound if var.upBound is not None else math.inf
    x = min(max(x, lo), up)
    return 0.0 if abs(x) < _ZERO else x


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


def extract(m: Model, initial_state: OperatingState | None = None) -> tuple[dict[str, Any], str]:
    """Decision arrays of a solved model, completed as the environment would complete them.

    Returns the arrays (keyword arguments of :func:`kpis_from_decisions` plus ``soc_mwh``) and a
    note listing anything the completion had to change by more than 1e-6. Raises
    ``_NeedsBatteryBinary`` when the netted battery power cannot be absorbed.
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


# --------------------------------------------------------------------------------------- diagnosis
def diagnose(
    scenario: Scenario,
    config: str = "joint",
    initial_state: OperatingState | None = None,
    window: int | None = None,
    time_limit_s: float = 30.0,
    model: Model | None = None,
) -> str:
    """Name the likely cause of an infeasible model (or of a solve that found no feasible point).

    ``model`` is the model that failed, if built already (its variables and held GPUs are reused
    instead of building the model again).

    Cheap checks on the data first (always run, no solver):

    1. *base load*: a site's always-on load ``(1 + cooling)·base_it_mw`` exceeds the most it can be
       supplied with, ``import_limit + gen_capacity + discharge_mw + renewable_mw`` (MW), in a
       period, or over all modelled periods in energy (MWh; the battery adds at most
       ``(soc0 − soc_min)·eta_discharge``);
    2. a mandatory job with no start variable (no eligible site has its GPUs, or its window lies
       outside the modelled periods), or whose IT power cannot be supplied at any eligible site and
       start for its whole run (the bound of 1 plus its job power);
    3. *mandatory GPU-periods*: for every interval of periods ``[a, b)``, the mandatory jobs whose
       whole window lies inside need ``Σ gpus·duration`` GPU-periods, at most the free
       ``Σ_s (gpu_capacity − held)`` over the interval (eligibility ignored, so a necessary condition).

    Then, with ``time_limit_s > 0`` left, a min-emissions MILP without the budget: if it is
    infeasible, the workload or power limits are the cause; if its proven lower bound exceeds the
    budget left, the carbon budget is.
    """
    causes = []
    base = (
        model
        if model is not None
        else build_model(scenario, config, initial_state, window, relax_budget=True)
    )
    sc, t0, t_end = base.scenario, base.t0, base.t_end
    periods = slice(t0, t_end)
    supply = (
        sc.site_array("import_limit_mw")[:, None]
        + sc.site_array("gen_capacity_mw")[:, None]
        + sc.site_array("discharge_mw")[:, None]
        + sc.renewable_mw[:, periods]
    )
    base_it = sc.site_array("base_it_mw")[:, None] + base.held_mw
    base_load = (1.0 + sc.cooling[:, periods]) * base_it
    over = np.argwhere(base_load > supply + 1e-9)
    if over.size:
        s, i = over[0]
        causes.append(
            f"site {s} ({sc.sites[s].name!r}) cannot supply its base load in period {t0 + i}: "
            f"{base_load[s, i]:.3f} MW needed, at most {supply[s, i]:.3f} MW from import, generator, "
            f"battery and renewables ({len(over)} site-periods like this)"
        )
    # Energy over the modelled periods: the battery can add at most what it holds above its minimum.
    stored = np.maximum(0.0, base.soc0_mwh - sc.site_array("soc_min_frac") * sc.site_array("capacity_mwh"))
    energy_supply = (supply - sc.site_array("discharge_mw")[:, None]).sum(axis=1) * sc.dt_h
    energy_supply += stored * sc.site_array("eta_discharge")
    energy_need = base_load.sum(axis=1) * sc.dt_h
    for s in np.flatnonzero(energy_need > energy_supply + 1e-6):
        causes.append(
            f"site {s} ({sc.sites[s].name!r}) cannot supply its base load over periods {t0}..{t_end - 1}: "
            f"{energy_need[s]:,.2f} MWh needed, at most {energy_supply[s]:,.2f} MWh from import, generator, "
            "renewables and the energy stored in its battery"
        )
    mandatory = [
        j
        for j, job in enumerate(sc.jobs)
        if job.mandatory and j not in base.started_before and job.latest_start < t_end
    ]
    with_start = {key[0] for key in base.start}
    for j in mandatory:
        job = sc.jobs[j]
        if j not in with_start:
            causes.append(
                f"mandatory job {j} ({job.name!r}, {job.gpus} GPUs, start window "
                f"{job.release}..{job.latest_start}) fits nowhere: no eligible site has the GPUs, "
                "or its start window is outside the modelled periods"
            )
            continue
        powered = False
        for _, s, t in (key for key in base.start if key[0] == j):
            run_periods = slice(t - t0, min(t + job.duration, t_end) - t0)
            need = (1.0 + sc.cooling[s, t : t + job.duration][: run_periods.stop - run_periods.start]) * (
                base_it[s, run_periods] + sc.job_power_mw[j, s]
            )
            if (need <= supply[s, run_periods] + 1e-9).all():
                powered = True
                break
        if not powered:
            causes.append(
                f"mandatory job {j} ({job.name!r}, {sc.job_power_mw[j].max():.2f} MW of IT power) cannot be "
                "powered at any eligible site and start: the load exceeds import + generator + battery + "
                "renewables in some period of every run"
            )
    if mandatory:
        n = t_end - t0
        need = np.zeros((n + 1, n + 1))  # need[a, b]: GPU-periods of jobs whose window is in [a, b)
        for j in mandatory:
            job = sc.jobs[j]
            a, b = max(job.release, t0) - t0, job.deadline - t0
            if j in with_start and b <= n:
                need[a, b] += job.gpus * job.duration
        # Σ over r >= a and d <= b: cumulative sums, reversed over a and forward over b.
        need = np.cumsum(np.cumsum(need[::-1], axis=0)[::-1], axis=1)
        free = np.maximum(0.0, sc.site_array("gpu_capacity")[:, None] - base.held_gpus).sum(axis=0)
        cum = np.concatenate([[0.0], np.cumsum(free)])
        have = cum[None, :] - cum[:, None]  # have[a, b] = free GPU-periods in [a, b)
        excess = np.where(np.triu(np.ones_like(need, dtype=bool), 1), need - have, -np.inf)
        a, b = np.unravel_index(np.argmax(excess), excess.shape)
        if excess[a, b] > 1e-9:
            causes.append(
                f"mandatory jobs vs GPU capacity: the mandatory jobs whose windows lie in periods "
                f"{t0 + a}..{t0 + b - 1} need {need[a, b]:,.0f} GPU-periods, but all sites together have "
                f"{have[a, b]:,.0f} free"
            )
    if causes:
        return "; ".join(causes)
    if not time_limit_s > 0:
        return (
            "the data checks (base load, mandatory jobs vs GPUs and power) found no cause and no time "
            "was left for a diagnostic solve: the model may be feasible but hard; give more time or "
            "warm_start=True"
        )
    m = build_model(scenario, config, initial_state, window, objective="emissions", relax_budget=True)
    run = _run_highs(m, time_limit_s, 1e-6, None, False, None)
    budget = None
    if sc.carbon_budget_t is not None:
        emitted = initial_state.emissions_t if initial_state is not None else 0.0
        budget = float(sc.carbon_budget_t) - float(emitted)
    if run.status == "infeasible":
        causes.append(
            "infeasible even without a carbon budget: the mandatory jobs cannot all be placed within GPU "
            "capacity, or a site's load cannot be supplied within its import, generator and battery limits"
        )
    elif run.status in ("optimal", "time_limit") and budget is not None:
        lower = run.bound
        if lower > budget + 1e-6:
            causes.append(
                f"carbon budget {budget:.2f} t (left for periods {m.t0}..{m.t_end - 1}) is below the minimum "
                f"achievable emissions of {lower:.2f} t"
            )
    elif run.no_incumbent:
        causes.append("the diagnostic solve found no feasible point in the time left either")
    if not causes:
        causes.append("no single cause found (budget and mandatory jobs are each satisfiable)")
    return "; ".join(causes)


# ------------------------------------------------------------------------------------------ solve
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


def warm_start_values(m: Model, threads: int | None = None) -> dict[str, float] | None:
    """A MIP start by rounding the LP relaxation (a heuristic incumbent for large instances).

    Solve the LP relaxation with ``BUDGET_ROUNDING_SLACK`` of the carbon budget left. Each job's LP
    run fraction is ``Σ_{s,t} start[j,s,t]``; for thresholds 0.5, 0.75, 0.9 and 1, jobs whose
    fraction reaches the threshold are placed, most complete first, at their LP start with the
    largest value whose GPUs are still free (none if no LP start fits), and the LP over the
    continuous variables is solved with those integers fixed. The first feasible rounding is
    returned (higher thresholds drop load); None when none is feasible (e.g. a mandatory job is
    dropped). HiGHS completes the continuous variables and uses the start only if it is feasible.
    """
    _swallow_highs_banner()
    _use_threads(threads)
    solver = _HiGHS(mip=False, msg=False, threads=threads)
    solver.createAndConfigureSolver(m.prob)
    solver.buildSolverModel(m.prob)
    h = m.prob.solverModel
    budget = m.prob.constraints.get("carbon_budget")
    if budget is not None:  # leave room for the rounding to emit a little more than the LP
        h.changeRowBounds(budget.index, -highspy.kHighsInf, BUDGET_ROUNDING_SLACK * m.budget_remaining_t)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
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
        h.run()
        if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
            return {var.name: float(var.name in chosen) for var in m.start.values()}
    return None


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

    def attempt(relax_budget: bool, battery_binary: bool, warm: bool) -> tuple[Model, _Run]:
        tick = time.perf_counter()
        m = build_model(scenario, config, **options, relax_budget=relax_budget, battery_binary=battery_binary)
        times[0] += time.perf_counter() - tick
        tick = time.perf_counter()
        start_values = warm_start_values(m, threads) if warm and solver == "highs" and m.start else None
        if previous_plan is not None and solver == "highs":
            start_values = shifted_plan_start(m, previous_plan)
        run = _run(m, solver, deadline, mip_gap, threads, msg, start_values, highs_options)
        times[1] += time.perf_counter() - tick
        return m, run

    relaxed, battery_binary = False, False
    m, run = attempt(False, False, warm_start)
    if run.status == "infeasible" and config == "energy_only" and m.budget_remaining_t is not None:
        relaxed = True
        m, run = attempt(True, False, False)
    arrays: dict[str, Any] | None = None
    note = ""
    if run.status in ("optimal", "time_limit"):
        try:
            arrays, note = extract(m, initial_state)
        except _NeedsBatteryBinary:
            if time.perf_counter() < deadline:
                battery_binary = True
                m, run = attempt(relaxed, True, warm_start)
                if run.status in ("optimal", "time_limit"):
                    arrays, note = extract(m, initial_state)
            else:
                run = _Run(
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
