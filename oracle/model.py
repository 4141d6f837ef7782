"""Build the oracle MILP of MODEL.md §3-§6 for one request: configurations, input checks, :func:`build_model`.

The configurations of MODEL.md §6 are flags of this one builder: all but ``energy_only`` are
transformations of the scenario (:func:`transform_scenario`), and ``energy_only`` fixes the workload
variables to the carbon-agnostic rule of :mod:`envs.rules` (or to a given ``workload``: a policy's
job starts and served GPUs, for :mod:`agents.diagnose`).

Periods: the model covers ``t0 .. t_end - 1`` where ``t0 = initial_state.period`` (0 by default) and
``t_end = min(T, t0 + window)`` (``T`` by default). Variables are keyed by absolute period indices.

The variables, constraint families and objective are :mod:`oracle.formulation` (sign conventions
there); :class:`~oracle.formulation.Model` and every ``add_*`` family are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pulp

from envs.rules import greedy_workload, route_order
from envs.scenario import OperatingState, Scenario
from oracle.formulation import (
    RENEWABLE_EPS_MW,
    Key2,
    Key3,
    Model,
    add_battery,
    add_emissions,
    add_gpu_capacity,
    add_grid,
    add_inference_balance,
    add_it_power,
    add_job_assignment,
    add_nonanticipativity,
    add_power_balance,
    add_variables,
    grid_binary_needed,
    set_objective,
)

__all__ = [
    "CONFIGS",
    "LATER_STARTS",
    "RENEWABLE_EPS_MW",
    "Key2",
    "Key3",
    "Model",
    "ModelError",
    "add_battery",
    "add_emissions",
    "add_gpu_capacity",
    "add_grid",
    "add_inference_balance",
    "add_it_power",
    "add_job_assignment",
    "add_nonanticipativity",
    "add_power_balance",
    "add_variables",
    "build_model",
    "check_workload",
    "fix_starts",
    "grid_binary_needed",
    "set_objective",
    "transform_scenario",
]

CONFIGS: tuple[str, ...] = ("joint", "compute_only", "energy_only", "no_battery", "no_routing", "no_carbon")
"""The configurations of MODEL.md §6, in table order."""

LATER_STARTS: tuple[str, ...] = ("binary", "relaxed", "none")
"""How :func:`build_model` with ``fixed_starts`` treats the job starts after the fixed periods."""


class ModelError(ValueError):
    """The request cannot be turned into a model (unknown config, inconsistent initial state)."""


# ------------------------------------------------------------------------------------------ configs
def transform_scenario(sc: Scenario, config: str) -> Scenario:
    """The scenario a configuration solves (MODEL.md §6); ``joint`` and ``energy_only`` return ``sc``.

    - ``compute_only``: ``capacity_mwh = gen_capacity_mw = export_limit_mw = 0`` at every site;
    - ``no_battery``: ``capacity_mwh = 0``;
    - ``no_routing``: every route of a class but its lowest-latency one (ties broken by site index,
      as :func:`envs.rules.route_order`) is removed by setting that latency to ``slo_ms + 1`` ms;
    - ``no_carbon``: ``carbon_budget_t = None`` (the carbon price stays).
    """
    if config not in CONFIGS:
        raise ModelError(f"config: unknown configuration {config!r}; choose one of {list(CONFIGS)}")
    if config == "compute_only":
        return sc.replace_sites(capacity_mwh=0.0, gen_capacity_mw=0.0, export_limit_mw=0.0)
    if config == "no_battery":
        return sc.replace_sites(capacity_mwh=0.0)
    if config == "no_carbon":
        return sc.replace(carbon_budget_t=None)
    if config == "no_routing":
        classes = []
        for k, cls in enumerate(sc.classes):
            order = route_order(sc, k)
            latency = tuple(
                cls.slo_ms + 1.0 if (s in order and s != order[0]) else lat
                for s, lat in enumerate(cls.latency_ms)
            )
            classes.append(dataclasses.replace(cls, latency_ms=latency))
        return sc.replace(classes=tuple(classes))
    return sc


# ------------------------------------------------------------------------------------------- build
def _check_state(sc: Scenario, state: OperatingState) -> None:
    if not 0 <= state.period < sc.T:
        raise ModelError(f"initial_state.period: must be in 0..{sc.T - 1} (got {state.period})")
    if len(state.soc_mwh) != sc.S:
        raise ModelError(
            f"initial_state.soc_mwh: needs one value per site ({sc.S}), got {len(state.soc_mwh)}"
        )
    seen: set[int] = set()
    for j, s, t in state.job_starts:
        if not (0 <= j < sc.J and 0 <= s < sc.S):
            raise ModelError(f"initial_state.job_starts: unknown job or site in {(j, s, t)}")
        if not 0 <= t < state.period:
            raise ModelError(
                f"initial_state.job_starts: start period of {(j, s, t)} must be before {state.period}"
            )
        if j in seen:
            raise ModelError(f"initial_state.job_starts: job {j} started twice")
        seen.add(j)


def check_workload(sc: Scenario, starts: Sequence[Key3], serve: np.ndarray) -> None:
    """Raise :class:`ModelError` naming the entry unless ``starts`` are valid starts of ``sc``
    (eligible site, inside the job's start window, each job at most once) and ``serve`` (K, S, T)
    is finite, >= 0, zero off the routes and at most the demand of its class and period."""
    serve = np.asarray(serve, dtype=float)
    if serve.shape != (sc.K, sc.S, sc.T):
        expected = (sc.K, sc.S, sc.T)
        raise ModelError(f"workload: serve has shape {serve.shape}, expected (K, S, T) = {expected}")
    if not np.isfinite(serve).all() or (serve < 0).any():
        raise ModelError("workload: serve must be finite and >= 0")
    if (serve[~np.asarray(sc.routes, dtype=bool)] > 0).any():
        raise ModelError("workload: serve is positive on a (class, site) pair that is not a route")
    over = serve.sum(axis=1) - sc.demand_gpus
    excess = over > 1e-6 * np.maximum(sc.demand_gpus, 1.0)
    if excess.any():
        k, t = np.argwhere(excess)[0]
        raise ModelError(f"workload: serve of class {k} in period {t} is {over[k, t]:.3g} GPUs above demand")
    seen: set[int] = set()
    for entry in starts:
        j, s, t = (int(x) for x in entry)
        if not (0 <= j < sc.J and 0 <= s < sc.S):
            raise ModelError(f"workload: start {tuple(entry)} names no job or site (J={sc.J}, S={sc.S})")
        job = sc.jobs[j]
        if j in seen or not job.eligible[s] or not job.release <= t <= job.latest_start:
            raise ModelError(
                f"workload: start {(j, s, t)} is not a valid start of job {job.name!r} (started twice, "
                f"ineligible site, or outside periods {job.release}..{job.latest_start})"
            )
        seen.add(j)


def build_model(
    scenario: Scenario,
    config: str = "joint",
    initial_state: OperatingState | None = None,
    window: int | None = None,
    *,
    terminal_soc_mwh: Sequence[float] | None = None,
    objective: str = "benefit",
    relax_budget: bool = False,
    battery_binary: bool = False,
    workload: tuple[Sequence[Key3], np.ndarray] | None = None,
    scenarios: Sequence[Scenario] | None = None,
    nonanticipative_periods: int = 1,
    shared_starts: bool = False,
    fixed_starts: Sequence[Key3] | None = None,
    fixed_start_periods: int = 1,
    later_starts: str = "binary",
) -> Model:
    """Build the MILP of ``config`` (MODEL.md §6) for ``scenario`` from ``initial_state`` over ``window``.

    Args:
        scenario: the untransformed scenario; the model's ``scenario`` is the transformed one.
        config: one of :data:`CONFIGS`.
        initial_state: where the system stands at ``t0 = initial_state.period`` (default: period 0,
            batteries at ``soc_init``, nothing started or emitted). Jobs in ``job_starts`` that are
            still running hold their GPUs and power; their value is not credited again and they are
            not started again. ``emissions_t`` counts against the budget.
        window: solve periods ``t0 .. min(T, t0 + window) - 1`` only. Jobs may start in the window if
            they finish by their deadline (within ``T``); a job running past the window end is
            modelled only up to it.
        terminal_soc_mwh: per-site SoC floor at the last modelled period (default ``soc_init_mwh``),
            capped at what full-power charging from ``soc0`` can reach, so a window is never
            infeasible because of it.
        objective: ``"benefit"`` (MODEL.md §5) or ``"emissions"`` (minimise E; diagnosis only).
        relax_budget: drop the carbon budget row (the ``energy_only`` overrun fallback).
        battery_binary: model the battery mode with MODEL.md's binary ``b`` (see :func:`add_battery`).
        workload: ``energy_only`` only: the fixed workload instead of the carbon-agnostic rule's,
            as ``(starts, serve)``: job starts ``(job, site, period)`` and served GPUs (K, S, T)
            (checked by :func:`check_workload`).
        scenarios: a scenario dimension (stochastic MPC): N >= 1 versions of ``scenario`` that
            differ only in their series (forecast draws). Every constraint family is built once per
            scenario on its own variables (names suffixed ``_w00``, ``_w01``, … when N > 1; the
            carbon budget holds in every scenario), the objective is the mean benefit, and
            :func:`add_nonanticipativity` shares the decisions of the first
            ``nonanticipative_periods`` periods. The returned model is scenario 0 (its
            ``members`` are the others). None: ``[scenario]``; N = 1 is exactly the
            deterministic model (same variables, rows and objective).
        nonanticipative_periods: how many periods from ``t0`` on are decided before the scenario
            is known (>= 1; only with ``scenarios``).
        shared_starts: also share the job starts of every later period (a two-stage model: the
            window's job schedule is decided now, the energy dispatch per scenario). The MILP then
            has the deterministic model's binaries, not N times as many.
        fixed_starts: opt-in (None: the model is unchanged). The job starts ``(job, site, period)``
            decided elsewhere (e.g. a learned policy's, :mod:`agents.hybrid`) for the fixed periods
            ``t0 .. t0 + fixed_start_periods - 1``: in those periods
            ``start[j,s,t] = 1`` if ``(j, s, t)`` is listed, else ``start[j,s,t] = 0`` (bounds of the
            start variables; see :func:`fix_starts`). Every listed start must have a variable
            (job waiting and released, eligible site that can hold it, period in the job's start
            window and in the fixed periods), else :class:`ModelError`. With N scenarios every
            scenario's starts are fixed alike.
        fixed_start_periods: how many periods from ``t0`` on ``fixed_starts`` decides (>= 1).
        later_starts: with ``fixed_starts``, the starts after the fixed periods (one of
            :data:`LATER_STARTS`): ``"binary"`` (the MILP), ``"relaxed"`` (continuous in [0, 1], a
            smaller model whose later schedule is the LP relaxation's; these variables are then
            kept out of ``Model.start``, so the polish and :func:`oracle.solve.extract` see only the
            fixed starts) or ``"none"`` (fixed to 0: no later start, except for a mandatory job that
            must start inside the window, whose starts stay binary so that the model stays feasible).
    """
    if fixed_starts is None and later_starts != "binary":
        raise ModelError(f"later_starts: {later_starts!r} needs fixed_starts (the starts it follows)")
    if later_starts not in LATER_STARTS:
        raise ModelError(f"later_starts: must be one of {list(LATER_STARTS)} (got {later_starts!r})")
    if int(fixed_start_periods) < 1:
        raise ModelError(f"fixed_start_periods: must be >= 1 (got {fixed_start_periods})")
    if scenarios is None:
        scenarios = [scenario]
    if len(scenarios) < 1:
        raise ModelError("scenarios: needs at least one scenario")
    for i, other in enumerate(scenarios):
        if (other.T, other.S, other.K, other.J) != (scenario.T, scenario.S, scenario.K, scenario.J):
            raise ModelError(
                f"scenarios[{i}]: sizes (T, S, K, J) = {(other.T, other.S, other.K, other.J)} differ from "
                f"the scenario's {(scenario.T, scenario.S, scenario.K, scenario.J)}"
            )
    if int(nonanticipative_periods) < 1:
        raise ModelError(f"nonanticipative_periods: must be >= 1 (got {nonanticipative_periods})")
    prob = None
    models: list[Model] = []
    for i, member in enumerate(scenarios):
        suffix = "" if len(scenarios) == 1 else f"_w{i:02d}"
        models.append(
            _build_scenario(
                member,
                config,
                initial_state,
                window,
                prob,
                suffix,
                terminal_soc_mwh=terminal_soc_mwh,
                objective=objective,
                relax_budget=relax_budget,
                battery_binary=battery_binary,
                workload=workload,
            )
        )
        prob = models[0].prob
    m = models[0]
    m.members = models[1:]
    m.nonanticipative_periods = int(nonanticipative_periods) if m.members else 0
    m.shared_starts = bool(shared_starts) and bool(m.members)
    add_nonanticipativity(m)
    set_objective(m)
    if fixed_starts is not None:
        for member in m.scenario_models:
            fix_starts(member, fixed_starts, int(fixed_start_periods), later_starts)
    return m


def fix_starts(m: Model, starts: Sequence[Key3], periods: int = 1, later: str = "binary") -> None:
    """Fix the job starts of periods ``m.t0 .. m.t0 + periods - 1`` of a built model to ``starts``.

    In those periods ``start[j,s,t]`` gets bounds ``[1, 1]`` if ``(j, s, t)`` is in ``starts`` and
    ``[0, 0]`` otherwise; the later starts follow ``later`` (:data:`LATER_STARTS`, see
    :func:`build_model`). Called after the objective is set: a relaxed start keeps its value
    ``value_usd`` in the objective and its GPUs and power in the rows, only its integrality is
    dropped (and it leaves ``m.start``). Raises :class:`ModelError` naming a listed start that has no
    variable, lies outside the fixed periods, or repeats a job.
    """
    last = m.t0 + periods - 1
    wanted: set[Key3] = set()
    for entry in starts:
        j, s, t = (int(x) for x in entry)
        if not m.t0 <= t <= last:
            raise ModelError(f"fixed_starts: start {(j, s, t)} is outside the fixed periods {m.t0}..{last}")
        if (j, s, t) not in m.start:
            raise ModelError(
                f"fixed_starts: start {(j, s, t)} is not a possible start of the model (job already "
                "started or not waiting, ineligible or too small site, or outside its start window)"
            )
        if any(job == j for job, _, _ in wanted):
            raise ModelError(f"fixed_starts: job {j} is started twice")
        wanted.add((j, s, t))
    sc = m.scenario
    mandatory = {j for j, job in enumerate(sc.jobs) if job.mandatory and job.latest_start < m.t_end}
    keep_binary = mandatory - {j for j, _, _ in wanted}
    for key, var in list(m.start.items()):
        j, _, t = key
        if t <= last:
            var.lowBound = var.upBound = float(key in wanted)
        elif j in {job for job, _, _ in wanted}:
            var.lowBound = var.upBound = 0.0  # started in a fixed period (the once row says so too)
        elif later == "none" and j not in keep_binary:
            var.lowBound = var.upBound = 0.0
        elif later == "relaxed":
            var.cat = pulp.LpContinuous
            del m.start[key]


def _build_scenario(
    scenario: Scenario,
    config: str,
    initial_state: OperatingState | None,
    window: int | None,
    prob: pulp.LpProblem | None,
    suffix: str,
    *,
    terminal_soc_mwh: Sequence[float] | None,
    objective: str,
    relax_budget: bool,
    battery_binary: bool,
    workload: tuple[Sequence[Key3], np.ndarray] | None,
) -> Model:
    """One scenario's variables and constraint families (all but the objective) in ``prob``
    (a new problem when None)."""
    sc = transform_scenario(scenario, config)
    if workload is not None:
        if config != "energy_only":
            raise ModelError(f"workload: only the energy_only configuration takes one (config {config!r})")
        check_workload(sc, *workload)
    state = initial_state if initial_state is not None else sc.initial_state()
    _check_state(sc, state)
    if window is not None and window < 1:
        raise ModelError(f"window: must be >= 1 period (got {window})")
    if objective not in ("benefit", "emissions"):
        raise ModelError(f"objective: must be 'benefit' or 'emissions' (got {objective!r})")
    t0 = state.period
    t_end = sc.T if window is None else min(sc.T, t0 + window)
    m = Model(
        prob=pulp.LpProblem(f"oracle_{config}", pulp.LpMaximize) if prob is None else prob,
        scenario=sc,
        config=config,
        t0=t0,
        t_end=t_end,
        objective=objective,
        started_before=frozenset(j for j, _, _ in state.job_starts),
        fixed_workload=config == "energy_only",
        battery_binary=battery_binary,
        suffix=suffix,
    )
    n = t_end - t0
    m.held_gpus, m.held_mw = np.zeros((sc.S, n)), np.zeros((sc.S, n))
    for j, s, tau in state.job_starts:
        lo, hi = max(tau, t0), min(tau + sc.jobs[j].duration, t_end)
        if lo < hi:
            m.held_gpus[s, lo - t0 : hi - t0] += sc.jobs[j].gpus
            m.held_mw[s, lo - t0 : hi - t0] += sc.job_power_mw[j, s]
    cap = sc.site_array("capacity_mwh")
    m.soc0_mwh = np.where(cap > 0, np.asarray(state.soc_mwh, dtype=float), 0.0)
    target = (
        sc.site_array("soc_init_frac") * cap
        if terminal_soc_mwh is None
        else np.asarray(terminal_soc_mwh, float)
    )
    reach = m.soc0_mwh + sc.site_array("eta_charge") * sc.site_array("charge_mw") * sc.dt_h * n
    m.terminal_soc_mwh = np.where(
        cap > 0, np.minimum(np.minimum(target, reach), sc.site_array("soc_max_frac") * cap), 0.0
    )
    if sc.carbon_budget_t is not None and not relax_budget:
        m.budget_remaining_t = float(sc.carbon_budget_t) - float(state.emissions_t)

    fixed = None
    if m.fixed_workload:
        starts, serve = greedy_workload(sc) if workload is None else workload
        fixed = ([(j, s, t) for j, s, t in starts if t0 <= t < t_end and j not in m.started_before], serve)
    add_variables(m, fixed)
    add_job_assignment(m)
    add_inference_balance(m)
    add_gpu_capacity(m)
    add_it_power(m)
    add_power_balance(m)
    add_battery(m)
    add_grid(m)
    add_emissions(m)
    return m
