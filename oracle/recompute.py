"""The environment's rules applied to decision arrays: facility load, battery netting, grid completion, KPIs.

These functions read only the :class:`~envs.scenario.Scenario` and numpy arrays (no solver): the
oracle completes and scores its MILP solution with them (:func:`oracle.solve.extract`), and anyone
can score a schedule, or any other set of decisions, the way the environment would (MODEL.md §5, §7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.scenario import OBJECTIVE_TERMS, Scenario

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

ZERO_TOL = 1e-9
"""Solver values closer than this to 0 (MW, GPUs, MWh) are set to exactly 0."""


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
    charge[np.abs(charge) < ZERO_TOL] = 0.0
    discharge[np.abs(discharge) < ZERO_TOL] = 0.0
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
