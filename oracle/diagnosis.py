"""Name the likely cause of an infeasible oracle model (or of a solve that found no feasible point).

Cheap checks on the data first (base load against supply, mandatory jobs that fit nowhere, mandatory
GPU-periods against capacity), then, with time left, a min-emissions MILP without the carbon budget.
:func:`oracle.solve.solve` appends the result to ``Schedule.diagnosis`` as ``likely cause: ...``.
"""

from __future__ import annotations

import numpy as np

from envs.scenario import OperatingState, Scenario
from oracle.model import Model, build_model
from oracle.solvers import run_highs


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
    run = run_highs(m, time_limit_s, 1e-6, None, False, None)
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
