"""Independent recomputation of the objective and of every constraint of MODEL.md §4 from a
schedule's decision arrays (issue 3), on presets; CBC against HiGHS; statuses.

The checker below re-derives everything with plain loops over the scenario, sharing no code with
``oracle`` except the Scenario itself. Tolerances: 1e-6 on MW/MWh/GPU quantities (HiGHS's primal
feasibility tolerance is 1e-7 on rows whose coefficients are O(1)-O(10)); the objective is compared
to a relative 1e-9 with the schedule's own number (same arrays, different summation order).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.presets import make_scenario
from envs.scenario import OperatingState
from oracle import KPI_KEYS, Schedule, kpis_from_decisions, solve
from tests.conftest import make_site, make_tiny

TOL = 1e-6


def independent_objective(r: Schedule) -> float:
    sc, dt = r.scenario, r.scenario.dt_h
    total = 0.0
    for j, _, _ in r.job_start:
        total += sc.jobs[j].value_usd
    for i, t in enumerate(r.periods):
        for k, cls in enumerate(sc.classes):
            for s in range(sc.S):
                total += cls.revenue_usd_per_gpu_h * r.serve_gpus[k, s, i] * dt
            total -= cls.unserved_penalty_usd_per_gpu_h * r.unserved_gpus[k, i] * dt
        for s, site in enumerate(sc.sites):
            total += sc.price_export[s, t] * r.grid_export_mw[s, i] * dt
            total -= sc.price_import[s, t] * r.grid_import_mw[s, i] * dt
            total -= site.gen_cost_usd_per_mwh * r.gen_mw[s, i] * dt
            total -= site.degradation_usd_per_mwh * (r.charge_mw[s, i] + r.discharge_mw[s, i]) * dt
            emissions = (
                sc.carbon_intensity[s, t] * r.grid_import_mw[s, i]
                + site.gen_emissions_t_per_mwh * r.gen_mw[s, i]
            ) * dt
            total -= sc.carbon_price_usd_per_t * emissions
    return total


def check_constraints(r: Schedule, state: OperatingState | None = None) -> None:
    """Assert MODEL.md §4.1-§4.9 and the environment's completion rules on the arrays."""
    sc, dt = r.scenario, r.scenario.dt_h
    t0, n = r.t0, r.n_periods
    state = state or sc.initial_state()
    # 4.1 each job at most once, eligible site, inside its window and the horizon
    jobs = [j for j, _, _ in r.job_start] + [j for j, _, _ in state.job_starts]
    assert len(jobs) == len(set(jobs))
    for j, s, t in r.job_start:
        job = sc.jobs[j]
        assert (
            job.eligible[s] and job.release <= t <= job.deadline - job.duration and t + job.duration <= sc.T
        )
        assert t0 <= t < t0 + n
    for j, job in enumerate(sc.jobs):
        if job.mandatory:
            assert j in jobs
    running = [*state.job_starts, *r.job_start]
    for i, t in enumerate(r.periods):
        for k in range(sc.K):
            # 4.2 inference balance; serve only on routes (latency within the SLO)
            assert r.serve_gpus[k, :, i].sum() + r.unserved_gpus[k, i] == pytest.approx(
                sc.demand_gpus[k, t], abs=TOL
            )
            assert r.unserved_gpus[k, i] >= -TOL and (r.serve_gpus[k, :, i] >= -TOL).all()
            for s in range(sc.S):
                if sc.classes[k].latency_ms[s] > sc.classes[k].slo_ms:
                    assert r.serve_gpus[k, s, i] == 0.0
        for s, site in enumerate(sc.sites):
            busy = [(j, tau) for j, ss, tau in running if ss == s and tau <= t < tau + sc.jobs[j].duration]
            # 4.3 GPU capacity
            gpus = sum(sc.jobs[j].gpus for j, _ in busy) + r.serve_gpus[:, s, i].sum()
            assert gpus <= site.gpu_capacity + TOL
            # 4.4-4.6 IT power, cooling, balance
            it = (
                site.base_it_mw
                + sum(sc.jobs[j].gpus * site.gpu_power_kw / 1000.0 for j, _ in busy)
                + r.serve_gpus[:, s, i].sum() * site.gpu_power_kw / 1000.0
            )
            load = (1.0 + sc.cooling[s, t]) * it
            ch, dis = r.charge_mw[s, i], r.discharge_mw[s, i]
            imp, exp, used, gen = (
                r.grid_import_mw[s, i],
                r.grid_export_mw[s, i],
                r.renewable_used_mw[s, i],
                r.gen_mw[s, i],
            )
            assert load + ch + exp == pytest.approx(used + gen + dis + imp, abs=TOL)
            assert -TOL <= used <= sc.renewable_mw[s, t] + TOL
            assert -TOL <= gen <= site.gen_capacity_mw + TOL
            # 4.7 battery: power limits, exclusive modes, SoC recursion and bounds
            assert -TOL <= ch <= site.charge_mw + TOL and -TOL <= dis <= site.discharge_mw + TOL
            assert ch == 0.0 or dis == 0.0
            prev = state.soc_mwh[s] if i == 0 else r.soc_mwh[s, i - 1]
            if site.capacity_mwh == 0:
                prev = 0.0
            expected = prev + (site.eta_charge * ch - dis / site.eta_discharge) * dt
            assert r.soc_mwh[s, i] == pytest.approx(expected, abs=TOL)
            assert site.soc_min_mwh - TOL <= r.soc_mwh[s, i] <= site.soc_max_mwh + TOL
            # 4.8 grid limits, exclusive directions, no curtailment while importing
            assert -TOL <= imp <= site.import_limit_mw + TOL and -TOL <= exp <= site.export_limit_mw + TOL
            assert imp == 0.0 or exp == 0.0
            if imp > TOL:
                assert used == pytest.approx(sc.renewable_mw[s, t], abs=TOL)
            # environment completion: a surplus is exported up to the limit iff the price is positive
            surplus = sc.renewable_mw[s, t] - (load + ch - gen - dis)
            if surplus > 0:
                cap = site.export_limit_mw if sc.price_export[s, t] > 0 else 0.0
                assert exp == pytest.approx(min(cap, surplus), abs=TOL)
    if t0 + n == sc.T:
        for s, site in enumerate(sc.sites):
            if site.capacity_mwh > 0:
                assert r.soc_mwh[s, -1] >= site.soc_init_mwh - TOL
    # 4.9 carbon budget (unless energy_only relaxed it, which the schedule says)
    emissions = sum(
        (
            sc.carbon_intensity[s, t] * r.grid_import_mw[s, i]
            + sc.sites[s].gen_emissions_t_per_mwh * r.gen_mw[s, i]
        )
        * dt
        for i, t in enumerate(r.periods)
        for s in range(sc.S)
    )
    assert emissions == pytest.approx(r.kpis["emissions_t"], rel=1e-9, abs=1e-9)
    if sc.carbon_budget_t is not None and not r.carbon_budget_relaxed:
        assert emissions + state.emissions_t <= sc.carbon_budget_t + TOL


def check_schedule(r: Schedule, state: OperatingState | None = None) -> None:
    assert r.status in ("optimal", "time_limit"), r.diagnosis
    check_constraints(r, state)
    objective = independent_objective(r)
    assert objective == pytest.approx(r.objective_usd, rel=1e-9, abs=1e-6)
    assert r.kpis == pytest.approx(kpis_from_decisions(r.scenario, **r.decisions(), t0=r.t0))
    assert set(r.kpis) == set(KPI_KEYS)
    # the objective is the LP's (no completion or netting changed it) and within the proven gap
    assert "differs from the LP" not in r.diagnosis
    assert r.objective_usd <= r.bound_usd + 1e-6 * abs(r.bound_usd)
    assert (r.bound_usd - r.objective_usd) / abs(r.objective_usd) <= max(r.mip_gap, 0.0) + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "config", ["joint", "compute_only", "energy_only", "no_battery", "no_routing", "no_carbon"]
)
def test_paper_schedules_satisfy_every_constraint(seed, config):
    r = solve(make_scenario("paper", seed), config)
    assert r.status == "optimal"
    check_schedule(r)


def test_week_schedule_with_a_time_limit():
    r = solve(make_scenario("week", 0), time_limit_s=45.0, mip_gap=1e-3)
    check_schedule(r)
    assert r.mip_gap <= 1e-3 or r.status == "time_limit"


def test_continuation_from_an_optimal_state_reproduces_the_tail():
    """Bellman: re-solving from the state an optimal schedule reaches at t=10 (SoC, running jobs,
    emissions so far) must reproduce that schedule's remaining value. Both solves use a 1e-7 gap, so
    the two numbers agree to the solver's optimality tolerance (1e-7 of ~2e4 USD + LP noise)."""
    sc = make_scenario("paper", 0)
    full = solve(sc, mip_gap=1e-7)
    cut = 10
    head = [(j, s, t) for j, s, t in full.job_start if t < cut]
    head_value = sum(sc.jobs[j].value_usd for j, _, _ in head)
    dec = {name: getattr(full, name) for name in ("serve_gpus", "unserved_gpus")}
    site_arrays = (
        "gen_mw",
        "charge_mw",
        "discharge_mw",
        "grid_import_mw",
        "grid_export_mw",
        "renewable_used_mw",
    )
    head_kpis = kpis_from_decisions(
        sc,
        head,
        dec["serve_gpus"][:, :, :cut],
        dec["unserved_gpus"][:, :cut],
        *(getattr(full, name)[:, :cut] for name in site_arrays),
    )
    assert head_kpis["training_value_usd"] == head_value
    state = OperatingState(
        period=cut,
        soc_mwh=tuple(full.soc_mwh[:, cut - 1]),
        job_starts=tuple(head),
        emissions_t=head_kpis["emissions_t"],
    )
    tail = solve(sc, initial_state=state, mip_gap=1e-7)
    check_schedule(tail, state)
    assert tail.t0 == cut and tail.n_periods == sc.T - cut
    assert head_kpis["benefit_usd"] + tail.objective_usd == pytest.approx(full.objective_usd, rel=2e-6)


def test_window_solve_covers_only_the_window():
    sc = make_scenario("paper", 1)
    state = OperatingState(period=5, soc_mwh=tuple(s.soc_init_mwh for s in sc.sites))
    r = solve(sc, initial_state=state, window=6)
    check_schedule(r, state)
    assert r.t0 == 5 and r.n_periods == 6 and r.soc_mwh.shape == (sc.S, 6) and r.serve_gpus.shape[2] == 6
    assert all(5 <= t < 11 for _, _, t in r.job_start)
    # the window ends at the initial SoC (the target is reachable from soc_init)
    assert (r.soc_mwh[:, -1] >= np.array([s.soc_init_mwh for s in sc.sites]) - TOL).all()


@pytest.mark.parametrize(
    "sc",
    [
        make_scenario("paper", 0),
        make_tiny(
            T=3,
            S=2,
            sites=(
                make_site("a", eta_charge=0.9, degradation_usd_per_mwh=1.0),
                make_site("b", base_it_mw=1.0),
            ),
            price_import=np.array([[30.0, 90.0, 50.0], [60.0, 20.0, 80.0]]),
            price_export=np.array([[20.0, 70.0, 40.0], [50.0, 10.0, 60.0]]),
            renewable_mw=np.array([[0.0, 2.0, 6.0], [3.0, 0.0, 1.0]]),
            carbon_budget_t=1.2,
            carbon_price_usd_per_t=30.0,
        ),
    ],
    ids=["paper0", "tiny2site"],
)
def test_cbc_agrees_with_highs(sc):
    """Both solvers to a 1e-6 relative gap must find the same optimum (to that gap, plus a cent)."""
    highs = solve(sc, mip_gap=1e-6)
    cbc = solve(sc, mip_gap=1e-6, solver="cbc")
    assert highs.status == cbc.status == "optimal"
    check_constraints(cbc)
    assert cbc.objective_usd == pytest.approx(highs.objective_usd, rel=2e-6, abs=0.01)
    assert math.isnan(cbc.bound_usd)


def test_time_limit_status_is_read_from_highs():
    """A week solve stopped after 3 s is either a ``time_limit`` with an incumbent (feasible arrays, a
    positive gap) or an ``error`` without one — never zeros presented as a solution."""
    r = solve(make_scenario("week", 1), time_limit_s=3.0)
    assert r.status in ("time_limit", "error", "optimal")
    if r.status == "time_limit":
        check_constraints(r)
        assert r.mip_gap > 1e-4 and r.bound_usd > r.objective_usd
    elif r.status == "error":  # no incumbent, or (on a loaded machine) no time left to polish one
        assert r.gen_mw is None and math.isnan(r.objective_usd)
        assert "no feasible" in r.diagnosis or "no time was left within time_limit_s" in r.diagnosis


def test_warm_start_reaches_the_same_optimum():
    """The rounded-LP MIP start changes the search, not the answer (same optimum to the 1e-6 gap)."""
    sc = make_scenario("paper", 15)
    cold = solve(sc, mip_gap=1e-6)
    warm = solve(sc, mip_gap=1e-6, warm_start=True)
    check_schedule(warm)
    assert warm.objective_usd == pytest.approx(cold.objective_usd, rel=2e-6)
