"""Hand-solvable 1-3 period instances of the oracle, asserted to the cent (issue 3).

Each test builds a scenario with the Scenario dataclasses directly, derives the optimum by hand in
its docstring, and checks the solver against it. Money is compared with ``abs=0.005`` (half a cent);
the solver's feasibility tolerance (1e-7 on MW-scale values) moves these objectives by far less.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.scenario import InferenceClass, OperatingState, TrainingJob
from oracle import CONFIGS, Schedule, build_model, solve, transform_scenario
from tests.conftest import make_cheap_hour, make_site, make_tiny

CENT = 0.005


def no_class(S: int = 1) -> InferenceClass:
    return InferenceClass("cls0", 10.0, 20.0, (10.0,) * S, 50.0)


def test_battery_arbitrage_lossless():
    """Load 5 MW in both periods, import at 10 then 100 USD/MWh, no export, battery 10 MWh at 5 MWh,
    5 MW both ways. Optimum: charge 5 MW at 10 (import 10 MW), discharge 5 MW at 100 (import 0).
    Benefit = -(10·10 + 0·100) = -100 USD; the battery ends where it started (5 MWh)."""
    sc = make_tiny(
        T=2,
        sites=(make_site(base_it_mw=5.0, gen_capacity_mw=0.0, export_limit_mw=0.0),),
        jobs=(),
        classes=(no_class(),),
        demand_gpus=np.zeros((1, 2)),
        price_import=np.array([[10.0, 100.0]]),
    )
    r = solve(sc)
    assert r.status == "optimal"
    assert r.objective_usd == pytest.approx(-100.0, abs=CENT)
    np.testing.assert_allclose(r.charge_mw, [[5.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(r.discharge_mw, [[0.0, 5.0]], atol=1e-6)
    np.testing.assert_allclose(r.grid_import_mw, [[10.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(r.soc_mwh, [[10.0, 5.0]], atol=1e-6)
    assert r.kpis["emissions_t"] == pytest.approx(10.0 * 0.5, abs=1e-6)


def test_battery_arbitrage_with_losses_and_degradation():
    """As above with eta 0.9/0.9 and 2 USD/MWh degradation. Charging x MW at t0 lets the battery give
    d <= 0.81·x MW at t1 and still end at 5 MWh, so cost(x) = 10(5 + x) + 100(5 - 0.81x) + 2(x + 0.81x)
    = 550 - 67.38x, minimal at x = 5 (charge limit; SoC 9.5 <= 10): benefit = -213.10 USD."""
    site = make_site(
        base_it_mw=5.0,
        gen_capacity_mw=0.0,
        export_limit_mw=0.0,
        eta_charge=0.9,
        eta_discharge=0.9,
        degradation_usd_per_mwh=2.0,
    )
    sc = make_tiny(
        T=2,
        sites=(site,),
        jobs=(),
        classes=(no_class(),),
        demand_gpus=np.zeros((1, 2)),
        price_import=np.array([[10.0, 100.0]]),
    )
    r = solve(sc)
    assert r.objective_usd == pytest.approx(-213.10, abs=CENT)
    np.testing.assert_allclose(r.charge_mw, [[5.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(r.discharge_mw, [[0.0, 4.05]], atol=1e-6)
    np.testing.assert_allclose(r.soc_mwh[0, -1], 5.0, atol=1e-6)


def test_job_waits_for_the_cheap_hour():
    """A 0.4 MW job (4 GPUs x 100 kW), duration 1, value 100 USD, window 0..2; prices 50/10/30 USD/MWh
    and carbon 0.5/0.1/0.3 t/MWh at 100 USD/t. Energy + carbon cost of one hour: 0.4·(50+50)=40,
    0.4·(10+10)=8, 0.4·(30+30)=24, so it starts at t=1: benefit 100 - 8 = 92.00 USD."""
    sc = make_cheap_hour()
    r = solve(sc)
    assert r.job_start == [(0, 0, 1)]
    assert r.objective_usd == pytest.approx(92.0, abs=CENT)
    assert r.kpis["emissions_t"] == pytest.approx(0.04, abs=1e-9)


def test_job_not_worth_running_is_skipped():
    """Same job but value 5 USD: the cheapest hour costs 8 USD, so it does not run (benefit 0)."""
    sc = make_cheap_hour(jobs=(TrainingJob("job0", 4, 1, 0, 3, 5.0, (True,)),))
    r = solve(sc)
    assert r.job_start == [] and r.objective_usd == pytest.approx(0.0, abs=CENT)


def test_routing_to_the_cleaner_site():
    """5 GPUs of inference (0.5 MW), both sites within the SLO, same price 50 USD/MWh, carbon 0.8 vs
    0.2 t/MWh at 100 USD/t. Serving at site 1 costs 0.5·(50+20) = 35 USD against 50 USD of revenue
    (site 0: 0.5·130 = 65; leaving it unserved costs 100): benefit 50 - 35 = 15.00 USD."""
    site = {"gen_capacity_mw": 0.0, "capacity_mwh": 0.0, "export_limit_mw": 0.0}
    sc = make_tiny(
        T=1,
        S=2,
        sites=(make_site("a", **site), make_site("b", **site)),
        jobs=(),
        classes=(InferenceClass("cls0", 10.0, 20.0, (10.0, 30.0), 50.0),),
        demand_gpus=np.array([[5.0]]),
        carbon_intensity=np.array([[0.8], [0.2]]),
        carbon_price_usd_per_t=100.0,
    )
    r = solve(sc)
    assert r.objective_usd == pytest.approx(15.0, abs=CENT)
    np.testing.assert_allclose(r.serve_gpus[0, :, 0], [0.0, 5.0], atol=1e-6)
    assert r.kpis["inference_served_pct"] == pytest.approx(100.0)


def test_no_routing_keeps_only_the_lowest_latency_site():
    """The same instance under ``no_routing``: only site 0 (10 ms) remains, where serving costs 65 USD
    for 50 USD of revenue, still better than the 100 USD penalty: benefit -15.00 USD."""
    site = {"gen_capacity_mw": 0.0, "capacity_mwh": 0.0, "export_limit_mw": 0.0}
    sc = make_tiny(
        T=1,
        S=2,
        sites=(make_site("a", **site), make_site("b", **site)),
        jobs=(),
        classes=(InferenceClass("cls0", 10.0, 20.0, (10.0, 30.0), 50.0),),
        demand_gpus=np.array([[5.0]]),
        carbon_intensity=np.array([[0.8], [0.2]]),
        carbon_price_usd_per_t=100.0,
    )
    r = solve(sc, "no_routing")
    assert r.scenario.routes.tolist() == [[True, False]]
    assert r.objective_usd == pytest.approx(-15.0, abs=CENT)


def test_export_at_the_limit_and_curtail_the_rest():
    """Renewables 8 MW, load 1 MW, export limit 5 MW at 40 USD/MWh: export 5, curtail 2, import 0;
    benefit 5·40 = 200.00 USD."""
    sc = make_tiny(
        T=1,
        sites=(make_site(base_it_mw=1.0, gen_capacity_mw=0.0, capacity_mwh=0.0, export_limit_mw=5.0),),
        jobs=(),
        demand_gpus=np.zeros((1, 1)),
        renewable_mw=np.array([[8.0]]),
    )
    r = solve(sc)
    assert r.objective_usd == pytest.approx(200.0, abs=CENT)
    assert r.grid_export_mw[0, 0] == pytest.approx(5.0, abs=1e-9)
    assert r.grid_import_mw[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert r.kpis["renewable_curtailed_mwh"] == pytest.approx(2.0, abs=1e-9)


def test_export_arbitrage_needs_the_grid_binary():
    """Export price 60 above import price 50 (with zero carbon): without the import/export binary the
    site would import 20 MW and export 5 MW at once. With it (MODEL.md §4.8) it may not; load 1 MW and
    renewables 3 MW give export 2 MW: benefit 2·60 = 120.00 USD."""
    sc = make_tiny(
        T=1,
        sites=(make_site(base_it_mw=1.0, gen_capacity_mw=0.0, capacity_mwh=0.0),),
        jobs=(),
        demand_gpus=np.zeros((1, 1)),
        renewable_mw=np.array([[3.0]]),
        price_import=np.array([[50.0]]),
        price_export=np.array([[60.0]]),
    )
    m = build_model(sc)
    assert len(m.g) == 1
    r = solve(sc)
    assert r.objective_usd == pytest.approx(120.0, abs=CENT)
    assert r.grid_import_mw[0, 0] == 0.0 and r.grid_export_mw[0, 0] == pytest.approx(2.0)


def test_grid_binary_dropped_when_it_cannot_matter():
    """With export price <= import price and non-negative prices no ``g`` is built (see
    ``grid_binary_needed``)."""
    assert build_model(make_tiny()).g == {}


def test_infeasible_mandatory_job_is_diagnosed():
    """A mandatory 20-GPU job at a 10-GPU site fits nowhere."""
    sc = make_tiny(jobs=(TrainingJob("big", 20, 1, 0, 3, 100.0, (True,), mandatory=True),))
    r = solve(sc)
    assert r.status == "infeasible"
    assert "mandatory job 0" in r.diagnosis and "fits nowhere" in r.diagnosis
    assert r.gen_mw is None and r.job_start is None and np.isnan(r.objective_usd)


def test_budget_below_the_minimum_is_diagnosed():
    """Base load 1 MW for 2 periods with only the grid (0.5 t/MWh): at least 1.00 t must be emitted,
    so a 0.5 t budget is infeasible and the diagnosis states the minimum."""
    sc = make_tiny(
        T=2,
        sites=(make_site(base_it_mw=1.0, gen_capacity_mw=0.0, capacity_mwh=0.0),),
        jobs=(),
        demand_gpus=np.zeros((1, 2)),
        carbon_budget_t=0.5,
    )
    r = solve(sc)
    assert r.status == "infeasible"
    assert "below the minimum achievable emissions of 1.00 t" in r.diagnosis
    assert solve(sc, "no_carbon").objective_usd == pytest.approx(-100.0, abs=CENT)


def test_energy_only_relaxes_an_unreachable_budget():
    """The rule starts the job at its release (t=0, 0.4 MW) and serves the 2 GPUs (0.2 MW) in every
    period: 0.4·0.5 + 3·0.2·0.5 = 0.5 t from the grid (battery round trips are lossless but the
    terminal SoC returns the energy). A 0.3 t budget cannot be met by the energy side alone, so
    energy_only solves without it and reports the overrun; joint meets it."""
    sc = make_tiny(
        sites=(make_site(gen_capacity_mw=0.0, capacity_mwh=0.0),),
        carbon_budget_t=0.3,
    )
    r = solve(sc, "energy_only")
    assert r.status == "optimal" and r.carbon_budget_relaxed
    assert r.scenario.carbon_budget_t is None
    assert r.kpis["emissions_t"] == pytest.approx(0.5, abs=1e-9)
    assert "overrun 0.20 t" in r.diagnosis
    assert r.job_start == [(0, 0, 0)]
    joint = solve(sc)
    assert joint.status == "optimal" and not joint.carbon_budget_relaxed
    assert joint.kpis["emissions_t"] <= 0.3 + 1e-9


def test_every_config_transforms_as_specified(tiny):
    base = tiny.replace(carbon_budget_t=10.0)
    co = transform_scenario(base, "compute_only")
    assert all(s.capacity_mwh == 0 and s.gen_capacity_mw == 0 and s.export_limit_mw == 0 for s in co.sites)
    assert all(s.capacity_mwh == 0 for s in transform_scenario(base, "no_battery").sites)
    assert transform_scenario(base, "no_carbon").carbon_budget_t is None
    assert transform_scenario(base, "joint") is base and transform_scenario(base, "energy_only") is base
    for config in CONFIGS:
        assert solve(base, config).status == "optimal"


def test_window_and_initial_state():
    """A window returns arrays for its periods only and records t0; jobs already started are not
    started (or credited) again and keep holding their GPUs."""
    sc = make_tiny(T=3, demand_gpus=np.full((1, 3), 8.0))
    state = OperatingState(period=1, soc_mwh=(5.0,), job_starts=((0, 0, 0),), emissions_t=0.0)
    r = solve(sc, initial_state=state, window=1)
    assert r.status == "optimal" and r.t0 == 1 and r.n_periods == 1 and list(r.periods) == [1]
    assert r.gen_mw.shape == (1, 1) and r.serve_gpus.shape == (1, 1, 1)
    assert r.job_start == [] and r.kpis["training_value_usd"] == 0.0
    # the job (duration 1) ended at t=0, so all 8 GPUs of demand fit at t=1
    assert r.serve_gpus[0, 0, 0] == pytest.approx(8.0)
    long_job = sc.replace(jobs=(TrainingJob("job0", 4, 3, 0, 3, 100.0, (True,)),))
    held = solve(long_job, initial_state=state, window=2)
    assert held.n_periods == 2 and held.serve_gpus[0, 0].tolist() == pytest.approx([6.0, 6.0])


def test_json_round_trip(tmp_path, tiny):
    r = solve(tiny.replace(carbon_budget_t=5.0))
    path = tmp_path / "schedule.json"
    r.to_json(path)
    back = Schedule.from_json(path)
    assert back.scenario == r.scenario and back.config == r.config and back.status == r.status
    assert back.objective_usd == r.objective_usd and back.kpis == r.kpis and back.job_start == r.job_start
    for name in ("serve_gpus", "unserved_gpus", "gen_mw", "charge_mw", "soc_mwh", "grid_export_mw"):
        np.testing.assert_array_equal(getattr(back, name), getattr(r, name))
    data = r.to_dict()
    assert set(data) >= {
        "scenario",
        "config",
        "status",
        "objective_usd",
        "bound_usd",
        "mip_gap",
        "build_time_s",
        "solve_time_s",
        "carbon_budget_relaxed",
        "kpis",
        "decisions",
    }
    assert data["decisions"]["job_start"] == [{"job": j, "site": s, "period": t} for j, s, t in r.job_start]
    assert np.array(data["decisions"]["serve_gpus"]).shape == (1, 1, 3)


def test_json_of_an_infeasible_schedule_has_no_decisions(tmp_path):
    sc = make_tiny(jobs=(TrainingJob("big", 20, 1, 0, 3, 100.0, (True,), mandatory=True),))
    r = solve(sc)
    back = Schedule.from_json(r.to_json())
    assert back.status == "infeasible" and back.gen_mw is None and np.isnan(back.objective_usd)
    assert r.to_dict()["decisions"] is None


def test_cli_solve_and_compare(tmp_path, capsys):
    from oracle.__main__ import main

    sc_path = tmp_path / "tiny.json"
    make_tiny(carbon_budget_t=5.0).to_json(sc_path)
    out = tmp_path / "schedule.json"
    assert main(["--scenario", str(sc_path), "--config", "no_battery", "--out", str(out)]) == 0
    r = Schedule.from_json(out)
    assert r.config == "no_battery" and r.status == "optimal"
    csv_path = tmp_path / "compare.csv"
    assert main(["compare", "--scenario", str(sc_path), "--out", str(csv_path)]) == 0
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("config,status,benefit_usd,emissions_t") and len(lines) == 1 + len(CONFIGS)
    assert "energy_only" in capsys.readouterr().out


def test_mandatory_job_in_a_window():
    """A mandatory job whose start window extends past the solve window need not start in it; one
    whose latest start is inside the window must."""
    job = TrainingJob("must", 4, 1, 0, 3, 1.0, (True,), mandatory=True)
    sc = make_tiny(jobs=(job,), price_import=np.full((1, 3), 1000.0))
    early = solve(sc, window=2)
    assert early.status == "optimal" and early.job_start == []
    full = solve(sc)
    assert full.status == "optimal" and len(full.job_start) == 1
    late = solve(sc, initial_state=OperatingState(period=1, soc_mwh=(5.0,)), window=2)
    assert late.status == "optimal" and len(late.job_start) == 1


def test_thread_count_can_change_between_solves_in_one_process():
    """HiGHS keeps one global thread scheduler; a later solve asking for another thread count used
    to come back with model status "Not Set" and no solution (found when a test ran after others)."""
    from envs import make_scenario

    sc = make_scenario("paper", 1000)
    results = [solve(sc, "joint", threads=threads) for threads in (None, 1, 2, 1)]
    assert [r.status for r in results] == ["optimal"] * 4, [r.diagnosis for r in results]
    assert max(r.objective_usd for r in results) - min(r.objective_usd for r in results) <= 1e-4 * abs(
        results[0].objective_usd
    )
