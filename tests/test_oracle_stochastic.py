"""The scenario dimension of oracle/model.py (stochastic MPC) and agents/mpc.py's MPCStochasticPolicy."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pulp
import pytest

from agents.baselines import MPCPolicy, forecast_scenario, make_policy
from agents.evaluation import make_env, rollout
from agents.mpc import MPCStochasticPolicy
from envs.forecast import forecast_model
from envs.presets import make_scenario
from oracle.model import CONFIGS, ModelError, build_model
from oracle.solve import solve
from tests.conftest import make_site, make_tiny


def _lp_text(m) -> str:
    fd, path = tempfile.mkstemp(suffix=".lp")
    os.close(fd)
    try:
        m.prob.writeLP(path)
        with open(path) as f:
            return f.read()
    finally:
        os.remove(path)


@pytest.mark.parametrize("config", CONFIGS)
def test_one_scenario_is_todays_model(config: str) -> None:
    """``scenarios=[sc]`` writes the same LP file as the deterministic build (same variables, rows,
    names and objective) for every configuration."""
    sc = make_scenario("paper", 3)
    assert _lp_text(build_model(sc, config, scenarios=[sc])) == _lp_text(build_model(sc, config))


def test_two_copies_of_a_scenario_have_its_objective_and_suffixed_rows() -> None:
    """Two identical scenarios: the mean objective is the deterministic optimum (to the cent); every
    deterministic row appears once per scenario with suffix ``_w00`` / ``_w01``, plus ``na01_*``
    rows for the shared first period, and the budget row is in both scenarios."""
    sc = make_scenario("paper", 0)
    one = solve(sc, mip_gap=1e-6, threads=1)
    two = solve(sc, mip_gap=1e-6, threads=1, scenarios=[sc, sc])
    assert one.status == two.status == "optimal"
    assert two.objective_usd == pytest.approx(one.objective_usd, abs=0.01)
    assert two.bound_usd == pytest.approx(one.bound_usd, rel=2e-6)
    rows = set(build_model(sc).prob.constraints)
    rows2 = set(build_model(sc, scenarios=[sc, sc]).prob.constraints)
    suffixed = {f"{r}_w{w:02d}" for r in rows for w in (0, 1)}
    assert suffixed <= rows2
    assert all(r.startswith("na01_") for r in rows2 - suffixed) and rows2 - suffixed
    assert {"carbon_budget_w00", "carbon_budget_w01"} <= rows2


def _two_price_scenarios(p0: float) -> tuple:
    """One 0.4 MW job worth 100 USD, startable at period 0 or 1, nothing else. Period 0 costs ``p0``
    USD/MWh in both scenarios; period 1 costs 10 (scenario A) or 300 (scenario B)."""
    site = make_site(capacity_mwh=0.0, gen_capacity_mw=0.0, export_limit_mw=0.0)
    common = {"sites": (site,), "demand_gpus": np.zeros((1, 2)), "T": 2}
    a = make_tiny(price_import=np.array([[p0, 10.0]]), **common)
    b = make_tiny(price_import=np.array([[p0, 300.0]]), **common)
    return a, b


def _solve_members(scenarios) -> tuple[float, list[list[tuple[int, int, int]]]]:
    m = build_model(scenarios[0], scenarios=scenarios)
    m.prob.solve(pulp.HiGHS(msg=False, gapRel=0.0))
    assert pulp.LpStatus[m.prob.status] == "Optimal"
    starts = [sorted(k for k, v in w.start.items() if v.varValue > 0.5) for w in m.scenario_models]
    return m.prob.objective.value(), starts


def test_shared_first_decision_is_the_one_best_on_average() -> None:
    """Hand check (job energy 0.4 MWh). Waiting earns 100 - 0.4·10 = 96 in A and 0 in B (the job is
    skipped at 300 USD/MWh): 48 USD on average. Starting now earns 100 - 0.4·p0 in both.
    p0 = 150: now = 40 < 48, so the job waits in both scenarios (a deterministic plan on the mean
    price 155 would start now: 40 > 100 - 62 = 38); p0 = 120: now = 52 > 48, it starts at 0 in both."""
    objective, starts = _solve_members(_two_price_scenarios(150.0))
    assert objective == pytest.approx(48.0, abs=0.005)
    assert starts == [[(0, 0, 1)], []]
    mean = forecast_scenario(
        _two_price_scenarios(150.0)[0], {"price_import": np.array([[150.0, 155.0]])} | _rest(), 0
    )
    det = solve(mean, mip_gap=0.0)
    assert det.job_start == [(0, 0, 0)] and det.objective_usd == pytest.approx(40.0, abs=0.005)
    objective, starts = _solve_members(_two_price_scenarios(120.0))
    assert objective == pytest.approx(52.0, abs=0.005)
    assert starts == [[(0, 0, 0)], [(0, 0, 0)]]


def _rest() -> dict[str, np.ndarray]:
    """The other series of :func:`_two_price_scenarios` (as a forecast dict)."""
    a = _two_price_scenarios(0.0)[0]
    keys = ("price_export", "carbon_intensity", "renewable_mw", "cooling", "demand_gpus")
    return {key: np.asarray(getattr(a, key)) for key in keys}


def test_the_budget_holds_in_every_scenario() -> None:
    """Four ``poor`` draws around a paper forecast: each scenario's emissions stay within the budget
    (and the budget binds in at least one, so the check is not vacuous)."""
    sc = make_scenario("paper", 3)
    env = make_env("paper", sc, forecast_level="poor")
    env.reset(seed=3)
    draws = forecast_model("poor").sample_around(np.random.default_rng(7), env.unwrapped.forecast(), 4)
    members = [forecast_scenario(sc, d, 0) for d in draws]
    assert len({float(m.carbon_intensity[0, 5]) for m in members}) == 4  # the draws differ
    m = build_model(members[0], scenarios=members)
    m.prob.solve(pulp.HiGHS(msg=False, gapRel=1e-4))
    assert pulp.LpStatus[m.prob.status] == "Optimal"
    emissions = [w.emissions.value() for w in m.scenario_models]
    assert max(emissions) <= sc.carbon_budget_t + 1e-6
    assert max(emissions) >= sc.carbon_budget_t - 1e-3


def test_scenario_sizes_and_nonanticipative_periods_are_checked() -> None:
    sc = make_scenario("paper", 0)
    with pytest.raises(ModelError, match=r"scenarios\[1\]"):
        build_model(sc, scenarios=[sc, make_tiny()])
    with pytest.raises(ModelError, match="nonanticipative_periods"):
        build_model(sc, scenarios=[sc, sc], nonanticipative_periods=0)


@pytest.mark.parametrize("n", [1, 3])
def test_stochastic_mpc_with_exact_forecasts_is_mpc(n: int) -> None:
    """Exact forecasts: every draw is the forecast, so the actions and benefit equal MPC's."""
    sc = make_scenario("paper", 1)
    env = make_env("paper", sc)
    ref_env = make_env("paper", sc)
    sto, det = MPCStochasticPolicy(env, n_scenarios=n, window=sc.T), MPCPolicy(ref_env, window=sc.T)
    obs, _ = env.reset(seed=1)
    ref_obs, _ = ref_env.reset(seed=1)
    total = ref_total = 0.0
    for _ in range(sc.T):
        action, _ = sto.predict(obs)
        ref_action, _ = det.predict(ref_obs)
        for key in action:
            np.testing.assert_array_equal(action[key], ref_action[key])
        obs, reward, *_ = env.step(action)
        ref_obs, ref_reward, *_ = ref_env.step(ref_action)
        total, ref_total = total + reward, ref_total + ref_reward
    assert total == ref_total


def test_stochastic_mpc_runs_a_noisy_episode_and_its_draws_are_seeded() -> None:
    sc = make_scenario("paper", 3)
    results = []
    for _ in range(2):
        env = make_env("paper", sc, forecast_level="typical")
        policy = make_policy("mpc_stochastic", env, n_scenarios=2, window=sc.T, seed=5)
        results.append(rollout(policy, env, seed=3))
        assert policy.fallbacks == 0 and policy.seed == 5 and policy.episodes == 1
    assert results[0].steps == sc.T and np.isfinite(results[0].benefit_usd)
    assert results[0].benefit_usd == results[1].benefit_usd
    with pytest.raises(ValueError, match="n_scenarios"):
        MPCStochasticPolicy(make_env("paper", sc), n_scenarios=0)


def test_what_the_mpcs_plan_on() -> None:
    """``plan_on="posterior_mean"`` plans on the posterior mean (the forecast itself when forecasts are
    exact); the stochastic sampler draws around the posterior by default, around the forecast with
    ``sampler="forecast"``; unknown names are errors naming the argument."""
    sc = make_scenario("paper", 4)
    exact_env = make_env("paper", sc)
    exact_env.reset(seed=4)
    fc = exact_env.unwrapped.forecast()
    plain = MPCPolicy(exact_env).model_scenarios(sc, fc, 0)[0]
    assert MPCPolicy(exact_env, plan_on="posterior_mean").model_scenarios(sc, fc, 0)[0] == plain
    env = make_env("paper", sc, forecast_level="poor")
    env.reset(seed=4)
    fc = env.unwrapped.forecast()
    want = forecast_model("poor").posterior(fc, sc.dt_h, horizon=sc.T).mean()
    got = MPCPolicy(env, exact=False, plan_on="posterior_mean").model_scenarios(sc, fc, 0)[0]
    np.testing.assert_array_equal(got.price_import, want["price_import"][:, : sc.T])
    assert not np.array_equal(
        got.price_import, MPCPolicy(env, exact=False).model_scenarios(sc, fc, 0)[0].price_import
    )
    for sampler in ("posterior", "forecast"):
        policy = MPCStochasticPolicy(env, n_scenarios=4, sampler=sampler, seed=1)
        members = policy.model_scenarios(sc, fc, 0)
        prices = np.stack([m.price_import for m in members])
        centre = want["price_import"][:, : sc.T] if sampler == "posterior" else fc["price_import"][:, : sc.T]
        np.testing.assert_allclose(prices.mean(axis=0), centre, rtol=1e-9)  # antithetic pairs
    named = make_policy("mpc_posterior", env)
    assert named.name == "mpc_posterior" and named.plan_on == "posterior_mean" and not named.exact
    with pytest.raises(ValueError, match="sampler"):
        MPCStochasticPolicy(env, sampler="bogus")
    with pytest.raises(ValueError, match="plan_on"):
        MPCPolicy(env, plan_on="bogus")
