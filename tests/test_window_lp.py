"""The window LP and the ``mpc_lp`` policy (agents/window_lp.py, issue 13).

The window LP claims to be the LP relaxation of the oracle's joint model over the window: checked
on hand-computable cases and against :func:`oracle.model.build_model`'s own model, relaxed and
solved by PuLP, at mid-episode states under forecast error (objectives equal to 1e-9).
"""

from __future__ import annotations

import numpy as np
import pulp
import pytest
import torch

from agents.baselines import POLICY_NAMES, forecast_scenario, make_policy
from agents.evaluation import make_env, rollout
from agents.window_lp import MPCLPPolicy, WindowLP
from envs.forecast import LEVELS
from envs.presets import make_scenario
from envs.scenario import OperatingState, TrainingJob
from oracle import solve
from oracle.model import build_model
from tests.conftest import make_cheap_hour, make_site

torch.set_num_threads(1)

SEED = 1000  # a training seed (never the held-out 0-19)
CENT = 0.005


def exact_forecast(sc, t: int) -> dict[str, np.ndarray]:
    """What ``env.forecast()`` returns with exact forecasts at period ``t`` (columns t .. T-1)."""
    keys = ("price_import", "price_export", "carbon_intensity", "renewable_mw", "cooling", "demand_gpus")
    return {key: np.array(getattr(sc, key)[:, t:], dtype=float) for key in keys}


def relaxed_oracle(sc, state, forecast, window=None, **kw) -> float | None:
    """The objective of build_model's model on the forecast scenario with every binary relaxed
    (None: infeasible)."""
    model_sc = forecast_scenario(sc, forecast, state.period)
    m = build_model(model_sc, "joint", initial_state=state, window=window, **kw)
    for var in m.prob.variables():
        var.cat = pulp.LpContinuous
    m.prob.solve(pulp.HiGHS(msg=False, threads=1))
    status = pulp.LpStatus[m.prob.status]
    assert status in ("Optimal", "Infeasible")
    return float(pulp.value(m.prob.objective)) if status == "Optimal" else None


def test_a_job_waits_for_the_make_cheap_hour() -> None:
    # One hour costs 0.4·(50+50) = 40, 0.4·(10+10) = 8, 0.4·(30+30) = 24 USD: start at t = 1, 92 USD.
    sc = make_cheap_hour()
    lp = WindowLP(sc)
    assert lp.solve(sc.initial_state(), exact_forecast(sc, 0))
    assert lp.objective_usd == pytest.approx(92.0, abs=CENT)
    assert lp.start_fractions() == {(0, 0): pytest.approx(0.0, abs=1e-9)}
    # At period 1 (nothing started) the start of period 1 is the LP's choice.
    assert lp.solve(OperatingState(1, (0.0,)), exact_forecast(sc, 1))
    assert lp.start_fractions() == {(0, 0): pytest.approx(1.0)}
    assert lp.objective_usd == pytest.approx(92.0, abs=CENT)


def test_a_started_job_loads_its_remaining_periods_without_its_value() -> None:
    # Duration 2, started at t = 0: at t = 1 the LP only pays its 0.4 MW at 10 USD/MWh + 0.1 t at 100 USD/t.
    sc = make_cheap_hour(jobs=(TrainingJob("job0", 4, 2, 0, 3, 100.0, (True,)),))
    lp = WindowLP(sc)
    assert lp.solve(OperatingState(1, (0.0,), ((0, 0, 0),)), exact_forecast(sc, 1))
    assert lp.objective_usd == pytest.approx(-0.4 * (10.0 + 100.0 * 0.1), abs=CENT)
    assert lp.start_fractions() == {}
    assert lp.dispatch()["gen"].tolist() == [0.0]


def test_a_budget_makes_the_relaxation_run_half_a_job() -> None:
    # 0.02 t left; the job emits 0.04 t at t = 1 (92 USD), 0.12 t at t = 2 (76 USD), 0.2 t at t = 0
    # (60 USD): per tonne t = 1 is best, and half of it fits: 46 USD. No budget row: 92 USD.
    sc = make_cheap_hour(carbon_budget_t=0.02)
    lp = WindowLP(sc)
    assert lp.solve(sc.initial_state(), exact_forecast(sc, 0), budget_t=0.02)
    assert lp.objective_usd == pytest.approx(46.0, abs=CENT)
    assert lp.solve(sc.initial_state(), exact_forecast(sc, 0), budget_t=None)
    assert lp.objective_usd == pytest.approx(92.0, abs=CENT)


@pytest.mark.parametrize(("level", "window"), [("exact", None), ("typical", None), ("poor", 12)])
def test_equals_the_oracle_models_relaxation_along_an_episode(level: str, window: int | None) -> None:
    sc = make_scenario("paper", SEED)
    env = make_env("paper", sc, forecast_level=level)
    greedy = make_policy("greedy", env)
    obs, _ = env.reset(seed=SEED)
    lp = WindowLP(sc)
    feasible = infeasible = 0
    for t in range(sc.T):
        state, fc = env.unwrapped.state_snapshot(), env.unwrapped.forecast()
        if t % 3 == 1:
            left = sc.carbon_budget_t - state.emissions_t
            ok = lp.solve(state, fc, window=window, budget_t=left)
            ref = relaxed_oracle(sc, state, fc, window)
            assert ok == (ref is not None)  # greedy overruns the budget late in the day: both see it
            if ok:
                assert lp.objective_usd == pytest.approx(ref, rel=1e-9, abs=1e-6)
            feasible, infeasible = feasible + ok, infeasible + (not ok)
        obs, *_ = env.step(greedy.predict(obs)[0])
    assert feasible >= 5


def test_equals_the_oracle_with_the_period_starts_fixed_and_the_later_ones_relaxed() -> None:
    sc = make_scenario("paper", SEED)
    env = make_env("paper", sc, forecast_level="typical")
    greedy = make_policy("greedy", env)
    obs, _ = env.reset(seed=SEED)
    for _ in range(2):
        obs, *_ = env.step(greedy.predict(obs)[0])
    state, fc = env.unwrapped.state_snapshot(), env.unwrapped.forecast()
    lp = WindowLP(sc)
    assert lp.solve(state, fc, budget_t=sc.carbon_budget_t - state.emissions_t)
    relaxed = lp.objective_usd
    keys = sorted(lp.start_fractions())
    assert keys, "some job can start at period 2"
    j, s = keys[0]
    for value in (1.0, 0.0):
        fixed = {key: (value if key == (j, s) else 0.0) for key in keys}
        assert lp.resolve(fixed)
        assert lp.start_fractions() == {key: pytest.approx(v, abs=1e-9) for key, v in fixed.items()}
        assert lp.objective_usd <= relaxed + 1e-6
        starts = [(j, s, state.period)] if value else []
        ref = relaxed_oracle(sc, state, fc, fixed_starts=starts, later_starts="relaxed")
        assert lp.objective_usd == pytest.approx(ref, rel=1e-9, abs=1e-6)


def test_equals_the_oracle_on_a_week_with_a_one_day_window() -> None:
    # The whole-week matrix and one that starts at period 57 (jobs started before it are constants
    # of its rows, as the oracle's held_gpus / held_mw) both give build_model's relaxed optimum.
    sc = make_scenario("week", SEED)
    env = make_env("week", sc, forecast_level="typical")
    greedy = make_policy("greedy", env)
    obs, _ = env.reset(seed=SEED)
    whole, late = WindowLP(sc), WindowLP(sc, first=57, end=105)
    for t in range(62):
        if t in (0, 61):
            state, fc = env.unwrapped.state_snapshot(), env.unwrapped.forecast()
            remaining = sc.T - t
            share = (sc.carbon_budget_t - state.emissions_t) * 24 / remaining
            # build_model's window gets budget_remaining = carbon_budget_t - emitted = share
            windowed = sc.replace(carbon_budget_t=state.emissions_t + share)
            ref = relaxed_oracle(windowed, state, fc, 24)
            for lp in (whole, late) if t else (whole,):
                assert lp.solve(state, fc, window=24, budget_t=share)
                assert lp.objective_usd == pytest.approx(ref, rel=1e-9, abs=1e-6)
        if t < 61:
            obs, *_ = env.step(greedy.predict(obs)[0])
    held = [(j, s, tau) for j, s, tau in state.job_starts if tau < 57 and tau + sc.jobs[j].duration > 61]
    assert held, "a job started before period 57 still runs at 61: the held-load path is exercised"
    with pytest.raises(ValueError, match=r"outside this model's periods 57\.\.104"):
        late.solve(state, fc, window=48)


def test_bad_inputs_are_named() -> None:
    sc = make_cheap_hour()
    lp = WindowLP(sc)
    with pytest.raises(ValueError, match=r"state\.period"):
        lp.solve(OperatingState(3, (0.0,)), exact_forecast(sc, 2))
    with pytest.raises(ValueError, match="window"):
        lp.solve(sc.initial_state(), exact_forecast(sc, 0), window=0)
    with pytest.raises(ValueError, match="job 0 started at site 0, period 5"):
        lp.solve(OperatingState(1, (0.0,), ((0, 0, 5),)), exact_forecast(sc, 1))
    with pytest.raises(RuntimeError, match="solve"):
        WindowLP(sc).dispatch()
    env = make_env("paper", make_scenario("paper", SEED))
    for bad in ({"window": 0}, {"branch": -1}, {"threshold": 0.0}, {"plan_on": "median"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MPCLPPolicy(env, **bad)


def test_budget_tries_as_mpc() -> None:
    sc = make_scenario("paper", SEED)
    env = make_env("paper", sc)
    env.reset(seed=SEED)
    policy = make_policy("mpc_lp", env, window=6)
    assert "mpc_lp" in POLICY_NAMES
    state = OperatingState(
        12, tuple(sc.site_array("soc_init_frac") * sc.site_array("capacity_mwh")), (), 100.0
    )
    left = sc.carbon_budget_t - 100.0
    assert policy.budgets(state) == [pytest.approx(left * 6 / 12), pytest.approx(left), None]
    policy.window = 24
    assert policy.budgets(state) == [pytest.approx(left), None]


@pytest.mark.parametrize("level", LEVELS)
def test_mpc_lp_plays_an_episode_at_every_level(level: str) -> None:
    sc = make_scenario("paper", SEED)
    env = make_env("paper", sc, forecast_level=level)
    policy = make_policy("mpc_lp", env)
    result = rollout(policy, env, seed=SEED)
    assert policy.fallbacks == 0 and policy.budget_dropped == 0
    assert "start_ignored" not in result.repairs  # only starts the env accepts are sent
    assert result.violations == 0
    if level == "exact":  # the relaxation, rounded, stays within half a percent of the oracle
        assert result.benefit_usd >= 0.995 * solve(sc).objective_usd


def test_terminal_charge_floor_is_capped_at_what_charging_can_reach() -> None:
    # Last period, battery empty, 2 MW of charging: the floor soc_init (5 MWh) is out of reach, so the
    # LP must charge the 2 MWh it can (2 MW at 30 USD/MWh + 0.3 t/MWh at 100 USD/t = 120 USD), as the
    # oracle's model does.
    site = make_site(gen_capacity_mw=0.0, export_limit_mw=0.0, charge_mw=2.0)
    sc = make_cheap_hour(sites=(site,), jobs=())
    state = OperatingState(2, (0.0,))
    lp = WindowLP(sc)
    assert lp.solve(state, exact_forecast(sc, 2))
    assert lp.objective_usd == pytest.approx(-120.0, abs=CENT)
    assert lp.dispatch()["charge"] == pytest.approx([2.0])
    assert relaxed_oracle(sc, state, exact_forecast(sc, 2)) == pytest.approx(-120.0, abs=CENT)


def test_a_mandatory_job_must_start_only_when_its_latest_start_is_in_the_window() -> None:
    # Value 5 USD, its cheapest hour costs 8: skipped unless it must run. Latest start 2: a one-period
    # window from t = 0 may leave it (0 USD); the whole horizon must start it at t = 1 (5 - 8 = -3).
    sc = make_cheap_hour(jobs=(TrainingJob("job0", 4, 1, 0, 3, 5.0, (True,), mandatory=True),))
    lp = WindowLP(sc)
    for window, expected in ((1, 0.0), (None, -3.0)):
        assert lp.solve(sc.initial_state(), exact_forecast(sc, 0), window=window)
        assert lp.objective_usd == pytest.approx(expected, abs=CENT)
        assert relaxed_oracle(sc, sc.initial_state(), exact_forecast(sc, 0), window) == pytest.approx(
            expected
        )


def test_a_job_started_before_the_matrix_holds_its_gpus_and_power() -> None:
    # 10 GPUs, an 8-GPU job (0.8 MW) started at t = 0 for 2 periods, 5 GPUs of inference every period
    # (10 USD per GPU-hour, 20 unserved), power at 50 USD/MWh. At t = 1 only 2 GPUs are free: serve 2
    # (20 - 10 USD), leave 3 (-60), pay the job's 0.8 MW (-40); at t = 2 serve 5 (50 - 25): -65 USD.
    sc = make_cheap_hour(
        jobs=(TrainingJob("job0", 8, 2, 0, 3, 100.0, (True,)),),
        demand_gpus=np.full((1, 3), 5.0),
        price_import=np.full((1, 3), 50.0),
        carbon_price_usd_per_t=0.0,
    )
    state = OperatingState(1, (0.0,), ((0, 0, 0),))
    forecast = exact_forecast(sc, 1)
    for lp in (WindowLP(sc), WindowLP(sc, first=1)):  # the job's column fixed at 1 / no column
        assert lp.solve(state, forecast)
        assert lp.objective_usd == pytest.approx(-65.0, abs=CENT)
        np.testing.assert_allclose(lp.dispatch()["serve"], [[2.0]], atol=1e-9)
    assert relaxed_oracle(sc, state, forecast) == pytest.approx(-65.0, abs=CENT)
