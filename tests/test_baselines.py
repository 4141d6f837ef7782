"""Controllers of agents/baselines.py: full episodes, the greedy rule, MPC = oracle, the oracle bound."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from agents.baselines import (
    CarbonGreedyPolicy,
    GreedyPolicy,
    MPCPolicy,
    OraclePolicy,
    forecast_scenario,
    make_policy,
)
from agents.evaluation import make_env, rollout
from envs.presets import make_scenario
from envs.rules import greedy_workload


@pytest.mark.parametrize("seed", [0, 3, 7, 1001])
def test_greedy_plays_the_rule(seed: int) -> None:
    sc = make_scenario("paper", seed)
    env = make_env("paper", sc)
    policy = GreedyPolicy(env)
    obs, _ = env.reset(seed=seed)
    serve = np.zeros((sc.K, sc.S, sc.T))
    done = False
    while not done:
        action, _ = policy.predict(obs)
        assert not action["battery"].any() and not action["generator"].any()
        obs, _, done, _, info = env.step(action)
        serve[:, :, info["period"]] = info["flows"]["serve_gpus"]
        assert not {"start_ignored", "serve_cut_gpus"} & set(info["repairs"])
    starts, expected = greedy_workload(sc)
    assert sorted(env.unwrapped.state_snapshot().job_starts) == sorted(starts)
    np.testing.assert_allclose(serve, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["greedy", "carbon_greedy", "mpc", "oracle"])
def test_every_policy_runs_a_paper_episode(name: str) -> None:
    sc = make_scenario("paper", 0)
    env = make_env("paper", sc)
    kw = {"window": 6} if name == "mpc" else {}
    result = rollout(make_policy(name, env, **kw), env, seed=0, preset="paper")
    assert result.steps == sc.T
    assert result.policy == name
    assert np.isfinite(result.benefit_usd)
    assert result.fallbacks == 0
    assert 0.0 <= result.inference_served_pct <= 100.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["greedy", "carbon_greedy", "oracle"])
def test_every_policy_runs_a_week_episode(name: str) -> None:
    sc = make_scenario("week", 0)
    env = make_env("week", sc)
    kw = {"time_limit_s": 20.0, "mip_gap": 1e-3} if name == "oracle" else {}
    result = rollout(make_policy(name, env, **kw), env, seed=0, preset="week")
    assert result.steps == sc.T == 168
    assert np.isfinite(result.benefit_usd)
    if name == "oracle":
        assert result.violations == 0


@pytest.mark.slow
def test_mpc_runs_a_week_episode_with_a_short_window() -> None:
    sc = make_scenario("week", 0)
    env = make_env("week", sc)
    policy = MPCPolicy(env, window=3, time_limit_s=5.0, mip_gap=1e-3)
    result = rollout(policy, env, seed=0, preset="week")
    assert result.steps == 168
    assert np.isfinite(result.benefit_usd)
    assert policy.solves >= 168


def test_mpc_with_exact_forecasts_and_full_window_equals_the_oracle() -> None:
    sc = make_scenario("paper", 0)
    env = make_env("paper", sc)
    oracle = OraclePolicy(env)
    ref = rollout(oracle, env, seed=0)
    mpc = MPCPolicy(env, window=sc.T, exact=True)
    got = rollout(mpc, env, seed=0)
    gap = max(oracle.schedule.mip_gap, 1e-4)
    assert got.benefit_usd >= oracle.schedule.objective_usd - gap * abs(oracle.schedule.objective_usd) - 1e-6
    assert got.benefit_usd <= oracle.schedule.bound_usd + 1e-6
    assert got.penalty_usd == 0.0 and mpc.fallbacks == 0
    assert ref.benefit_usd == pytest.approx(oracle.schedule.objective_usd, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_policy_beats_the_oracle_beyond_its_gap(seed: int) -> None:
    sc = make_scenario("paper", seed)
    env = make_env("paper", sc)
    oracle = OraclePolicy(env)
    rollout(oracle, env, seed=seed)
    bound = oracle.schedule.objective_usd * (1 + max(oracle.schedule.mip_gap, 0.0)) + 1e-6
    bound = max(bound, oracle.schedule.bound_usd + 1e-6)
    for policy in (GreedyPolicy(env), CarbonGreedyPolicy(env), MPCPolicy(env, window=8)):
        result = rollout(policy, env, seed=seed)
        # a policy that breaks the carbon budget is outside the oracle's feasible set: its return
        # (penalties included) is what the bound covers
        assert result.return_usd <= bound
        if result.penalty_usd == 0.0:
            assert result.benefit_usd <= bound


def test_forecast_scenario_is_exact_without_noise() -> None:
    sc = make_scenario("paper", 4)
    env = make_env("paper", sc, forecast_horizon=6)
    env.reset(seed=0)
    for _ in range(5):
        env.step(GreedyPolicy(env).act(env.unwrapped.state_snapshot().period))
    fsc = forecast_scenario(sc, env.unwrapped.forecast(), 5)
    np.testing.assert_array_equal(fsc.price_import[:, 5:12], sc.price_import[:, 5:12])
    np.testing.assert_array_equal(fsc.demand_gpus[:, 12:], np.repeat(sc.demand_gpus[:, 11:12], sc.T - 12, 1))


def test_mpc_falls_back_to_greedy_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    solve_mod = importlib.import_module("oracle.solve")

    sc = make_scenario("paper", 0)
    env = make_env("paper", sc)
    policy = MPCPolicy(env, window=4)
    real = solve_mod.solve

    def failing(*args, **kwargs):
        sched = real(*args, **kwargs)
        sched.status = "infeasible"
        return sched

    monkeypatch.setattr(solve_mod, "solve", failing)
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs)
    greedy, _ = GreedyPolicy(env).predict(obs)
    assert policy.fallbacks == 1
    for key in action:
        np.testing.assert_array_equal(action[key], greedy[key])


def test_make_policy_rejects_unknown_names(tmp_path) -> None:
    env = make_env("paper", make_scenario("paper", 0))
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nonsense", env)
    with pytest.raises(FileNotFoundError):
        make_policy(str(tmp_path / "missing.zip"), env)


@pytest.mark.parametrize("plan_on", ["forecast", "posterior_mean"])
@pytest.mark.parametrize("level", ["typical", "poor", 0.2])
def test_mpc_runs_a_full_episode_with_forecast_errors(level: str | float, plan_on: str) -> None:
    """Warm-started MPC on noisy forecasts (as observed, or their posterior mean): every period
    solved (no fallback), warm starts used."""
    sc = make_scenario("paper", 3)
    env = make_env("paper", sc, forecast_level=level)
    policy = MPCPolicy(env, window=sc.T, exact=False, plan_on=plan_on)
    result = rollout(policy, env, seed=3)
    assert result.steps == sc.T
    assert np.isfinite(result.benefit_usd)
    assert policy.fallbacks == 0 and policy.solves == sc.T


def test_shifted_plan_start_is_the_previous_plan_from_t0_on() -> None:
    """The MIP start of period 1 is the period-0 plan's starts from period 1 on (1), all else 0; it
    and the warm solve with the rolling options reaches the cold solve's optimum within the MIP gap."""
    from oracle.model import build_model
    from oracle.solve import ROLLING_HIGHS_OPTIONS, shifted_plan_start, solve

    sc = make_scenario("paper", 3)
    env = make_env("paper", sc, forecast_level="typical")
    obs, _ = env.reset(seed=3)
    mpc = MPCPolicy(env, window=sc.T, exact=False)
    action, _ = mpc.predict(obs)
    first = mpc.last_schedule
    env.step(action)
    state = env.unwrapped.state_snapshot()
    model_sc = forecast_scenario(sc, env.unwrapped.forecast(), 1)
    m = build_model(model_sc, "joint", state, sc.T)
    start = shifted_plan_start(m, first)
    later = {(j, s, t) for j, s, t in first.job_start if t >= 1}
    assert later and {k for k, v in m.start.items() if start[v.name] == 1.0} == later
    assert sum(start.values()) == len(later)
    common = {"time_limit_s": 30.0, "mip_gap": 1e-6, "threads": 1, "initial_state": state, "window": sc.T}
    cold = solve(model_sc, "joint", **common)
    warm = solve(model_sc, "joint", **common, previous_plan=first, highs_options=ROLLING_HIGHS_OPTIONS)
    assert cold.status == warm.status == "optimal"
    assert warm.objective_usd == pytest.approx(cold.objective_usd, rel=2e-6)
    assert shifted_plan_start(m, None) is None
