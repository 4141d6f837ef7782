"""The replay identity (MODEL.md §7): an oracle schedule replayed through the env earns exactly its
objective, with no repair, and the same emissions and state-of-charge trajectories.

Never skipped; the tolerance (relative 1e-6) is never widened. A disagreement is a bug in the env or
in the oracle: find which one departs from MODEL.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.replay import OracleReplayPolicy
from envs import CarbonAwareDCEnv, make_scenario
from oracle import solve

CONFIGS = ("joint", "compute_only", "energy_only", "no_battery", "no_routing", "no_carbon")
TIME_LIMIT_S = 60.0


def replay(schedule, scenario=None):
    """Episode return, per-period emissions (T,), SoC (S, T) and the repairs reported."""
    sc = scenario if scenario is not None else schedule.scenario
    env = CarbonAwareDCEnv(scenario=sc, preset=None)
    policy = OracleReplayPolicy(schedule)
    obs, _ = env.reset(seed=0)
    total, emissions, soc, repairs = 0.0, [], [], []
    terminated = False
    while not terminated:
        action, _ = policy.predict(obs)
        obs, reward, terminated, _, info = env.step(action)
        total += reward
        emissions.append(info["emissions_t"])
        soc.append(info["flows"]["soc_mwh"])
        if info["repairs"]:
            repairs.append((info["period"], info["repairs"]))
    return total, np.array(emissions), np.array(soc).T, repairs


def schedule_emissions(schedule) -> np.ndarray:
    sc = schedule.scenario
    gen_em = sc.site_array("gen_emissions_t_per_mwh")[:, None]
    return (sc.carbon_intensity * schedule.grid_import_mw + gen_em * schedule.gen_mw).sum(axis=0) * sc.dt_h


def assert_identity(schedule):
    assert schedule.status in ("optimal", "time_limit"), schedule.diagnosis
    total, emissions, soc, repairs = replay(schedule, schedule.scenario)
    assert repairs == []
    assert total == pytest.approx(schedule.objective_usd, rel=1e-6)
    np.testing.assert_allclose(emissions, schedule_emissions(schedule), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(soc, schedule.soc_mwh, rtol=1e-6, atol=1e-6)
    assert emissions.sum() == pytest.approx(schedule.kpis["emissions_t"], rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_replay_identity_paper_joint(seed):
    assert_identity(solve(make_scenario("paper", seed), config="joint", time_limit_s=TIME_LIMIT_S))


@pytest.mark.parametrize("config", CONFIGS[1:])
def test_replay_identity_paper_configurations(config):
    assert_identity(solve(make_scenario("paper", 0), config=config, time_limit_s=TIME_LIMIT_S))


def test_replay_identity_week():
    assert_identity(solve(make_scenario("week", 0), config="joint", time_limit_s=TIME_LIMIT_S))


def test_relaxed_budget_overrun_is_charged_in_the_scenario_with_budget():
    """If the oracle relaxed the budget, replaying in the scenario *with* the budget costs exactly
    the env's overrun penalty on the excess emissions (and nothing else changes)."""
    original = make_scenario("paper", 0)
    schedule = solve(original, config="energy_only", time_limit_s=TIME_LIMIT_S)
    assert schedule.carbon_budget_relaxed and schedule.scenario.carbon_budget_t is None
    with_budget = schedule.scenario.replace(carbon_budget_t=original.carbon_budget_t)
    total, emissions, _, repairs = replay(schedule, with_budget)
    assert repairs == []
    overrun = emissions.sum() - original.carbon_budget_t
    assert overrun > 0
    assert f"overrun {overrun:.2f} t" in schedule.diagnosis
    penalty = CarbonAwareDCEnv(preset=None, scenario=with_budget).carbon_overrun_usd_per_t
    assert total == pytest.approx(schedule.objective_usd - penalty * overrun, rel=1e-6)
