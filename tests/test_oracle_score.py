"""agents.OracleScore: the oracle's benefit and the normalized score at episode end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.baselines import make_policy
from agents.evaluation import evaluate, rollout
from agents.oracle_score import OracleScore
from envs import CarbonAwareDCEnv, make_scenario
from envs.scenario import OBJECTIVE_TERMS
from envs.wrappers import make_flat_env


def test_oracle_score_equals_the_evaluation_table() -> None:
    sc = make_scenario("paper", 3)
    env = OracleScore(CarbonAwareDCEnv(scenario=sc, preset="paper"))
    for name in ("oracle", "carbon_greedy"):
        rollout(make_policy(name, env), env, seed=3)
    oracle_ep, cg_ep = env.episodes
    report = evaluate(["oracle", "carbon_greedy"], "paper", [3], progress=False, max_workers=1)
    rows = {r["policy"]: r for r in report.rows}
    assert oracle_ep["oracle_benefit_usd"] == pytest.approx(rows["oracle"]["oracle_benefit_usd"], rel=1e-9)
    assert oracle_ep["benefit_usd"] == pytest.approx(rows["oracle"]["benefit_usd"], rel=1e-9)
    assert oracle_ep["pct_of_oracle"] == pytest.approx(100.0, abs=1e-6)
    assert oracle_ep["normalized_score"] == pytest.approx(1.0, abs=1e-8)
    assert cg_ep["benefit_usd"] == pytest.approx(rows["carbon_greedy"]["benefit_usd"], rel=1e-9)
    summary = {s["policy"]: s for s in report.summary}
    assert cg_ep["pct_of_oracle"] == pytest.approx(summary["carbon_greedy"]["pct_of_oracle"], rel=1e-9)
    assert cg_ep["normalized_score"] == pytest.approx(summary["carbon_greedy"]["normalized_score"], rel=1e-9)
    assert 0.0 < cg_ep["normalized_score"] < 1.0
    # The references are solved once per scenario.
    assert len(env.cache) == 1


def test_oracle_score_on_the_flat_env_with_random_actions() -> None:
    sc = make_scenario("paper", 5)
    env = OracleScore(make_flat_env(scenario=sc, preset="paper"))
    env.action_space.seed(0)
    env.reset(seed=0)
    benefit, done, info = 0.0, False, {}
    while not done:
        _, _, done, _, info = env.step(env.action_space.sample())
        benefit += sum(info["reward_terms"][k] for k in OBJECTIVE_TERMS)
    score = info["oracle_score"]
    assert score["benefit_usd"] == pytest.approx(benefit, rel=1e-12)
    assert score["pct_of_oracle"] == pytest.approx(100.0 * benefit / score["oracle_benefit_usd"])
    assert score["benefit_usd"] < score["oracle_benefit_usd"]
    assert math.isfinite(score["normalized_score"]) and score["penalty_usd"] >= 0.0
    assert np.isfinite(score["greedy_benefit_usd"])


def test_oracle_score_rejects_a_bad_time_limit() -> None:
    with pytest.raises(ValueError, match="time_limit_s"):
        OracleScore(CarbonAwareDCEnv(), time_limit_s=0.0)
