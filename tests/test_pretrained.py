"""The pretrained default agent shipped in agents/pretrained/: found by default, pickle-free, plays."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.baselines import make_policy
from agents.evaluation import DEFAULT_RUN, PRETRAINED, default_model, policy_label
from agents.loading import default_safety_layer, load_policy
from agents.rollout import rollout
from envs import CarbonAwareDCEnv, make_scenario


def test_default_model_falls_back_to_the_shipped_ensemble(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/default yet
    assert default_model() == PRETRAINED and PRETRAINED.exists()
    assert policy_label(str(PRETRAINED)) == "agent_pretrained"
    # A run of train.py takes precedence over the shipped agent.
    deployed = tmp_path / DEFAULT_RUN / "policy" / "ensemble.json"
    deployed.parent.mkdir(parents=True)
    deployed.write_text("{}")
    assert default_model() == Path(DEFAULT_RUN) / "policy" / "ensemble.json"
    # Any other run folder never falls back to it.
    assert default_model(tmp_path / "elsewhere") == tmp_path / "elsewhere" / "model.zip"


@pytest.mark.parametrize("seed", [0])
def test_shipped_agent_loads_without_pickle_and_beats_greedy(seed):
    sc = make_scenario("paper", seed)
    env = CarbonAwareDCEnv(scenario=sc, preset="paper")
    assert default_safety_layer(PRETRAINED)  # trained behind the safety layer, deployed with it
    agent = rollout(load_policy(PRETRAINED, env), env, sc, seed=seed)  # trust_pickle=False
    greedy_env = CarbonAwareDCEnv(scenario=sc, preset="paper")
    greedy = rollout(make_policy("greedy", greedy_env), greedy_env, sc, seed=seed)
    assert agent.benefit_usd > greedy.benefit_usd
