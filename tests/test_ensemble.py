"""Ensembles (agents/ensemble.py): manifests, the mean action, load_policy and evaluation on manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents.ensemble import EnsembleModel, model_digest, read_manifest, write_manifest
from agents.evaluation import policy_label, policy_labels
from agents.sb3 import load_model, load_policy, make_model, make_vec_env
from envs.dc_env import CarbonAwareDCEnv
from envs.wrappers import FlatObsActionWrapper


class _Const:
    """A stand-in model that always plays ``value``."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = np.asarray(value, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-1, 1, (4,))
        self.action_space = gym.spaces.Box(-1, 1, self.value.shape)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.value.copy(), state


def test_ensemble_plays_the_mean_action() -> None:
    ens = EnsembleModel([_Const([1.0, -1.0, 0.5]), _Const([0.0, -1.0, -0.5]), _Const([-0.4, 1.0, 0.3])])
    action, state = ens.predict(np.zeros(4), state="s")
    np.testing.assert_allclose(action, [0.2, -1.0 / 3.0, 0.1], rtol=1e-6)
    assert state == "s" and action.dtype == np.float32 and len(ens) == 3


def test_ensemble_rejects_mismatched_members() -> None:
    with pytest.raises(ValueError, match="no members"):
        EnsembleModel([])
    with pytest.raises(ValueError, match="member 1 action size"):
        EnsembleModel([_Const([0.0, 0.0]), _Const([0.0, 0.0, 0.0])])


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> Path:
    """A folder with two differently initialised PPO models on ``paper`` and their manifest."""
    folder = tmp_path_factory.mktemp("ens")
    (folder / "sub").mkdir()
    for i, path in enumerate((folder / "model.zip", folder / "sub" / "member_1.zip")):
        make_model("ppo", make_vec_env("paper", 1, seed=i), seed=i).save(path)
    write_manifest(
        folder / "ensemble.json", [folder / "model.zip", folder / "sub" / "member_1.zip"], {"x": 1}
    )
    return folder


def test_manifest_round_trip_is_relative(two_models: Path, tmp_path: Path) -> None:
    data = json.loads((two_models / "ensemble.json").read_text())
    assert data["members"] == ["model.zip", "sub/member_1.zip"] and data["x"] == 1
    moved = tmp_path / "moved"
    shutil.copytree(two_models, moved)
    members = read_manifest(moved / "ensemble.json")["members"]
    assert [Path(m) for m in members] == [
        (moved / "model.zip").resolve(),
        (moved / "sub/member_1.zip").resolve(),
    ]


def test_manifest_errors_name_the_problem(two_models: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="members is empty"):
        write_manifest(tmp_path / "e.json", [])
    with pytest.raises(ValueError, match=r"not an existing model \.zip"):
        write_manifest(tmp_path / "e.json", [tmp_path / "nope.zip"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something-else", "members": ["a.zip"]}))
    with pytest.raises(ValueError, match="kind must be"):
        read_manifest(bad)
    bad.write_text(json.dumps({"kind": "carbon-aware-dc-ensemble", "members": []}))
    with pytest.raises(ValueError, match="members must be a non-empty list"):
        read_manifest(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(bad)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"kind": "carbon-aware-dc-ensemble", "members": ["gone.zip"]}))
    with pytest.raises(FileNotFoundError, match=r"gone\.zip"):
        load_model(missing)


def test_load_policy_on_a_manifest_averages_the_members(two_models: Path) -> None:
    env = CarbonAwareDCEnv(preset="paper")
    policy = load_policy(two_models / "ensemble.json", env, trust_pickle=True)
    members = [
        load_model(two_models / "model.zip", trust_pickle=True),
        load_model(two_models / "sub" / "member_1.zip", trust_pickle=True),
    ]
    flat = FlatObsActionWrapper(CarbonAwareDCEnv(preset="paper"))
    obs, info = env.reset(seed=3)
    done, steps = False, 0
    while not done:
        flat_obs = flat.flatten_obs(obs)
        acts = [m.predict(flat_obs, deterministic=True)[0] for m in members]
        assert not np.allclose(acts[0], acts[1])  # the members really differ
        ens_act, _ = policy.model.predict(flat_obs, deterministic=True)
        np.testing.assert_allclose(ens_act, (acts[0] + acts[1]) / 2, rtol=1e-6, atol=1e-7)
        action, _ = policy.predict(obs, deterministic=True)
        assert env.action_space.contains(action)
        assert info["action_mask"][np.arange(env.n_slots), action["start"]].all()
        obs, _, done, _, info = env.step(action)
        steps += 1
    assert steps == env.scenario.T


def test_digest_and_label_of_a_manifest(two_models: Path, tmp_path: Path) -> None:
    copy = tmp_path / "default"
    shutil.copytree(two_models, copy)
    before = model_digest(copy / "ensemble.json")
    assert before == model_digest(two_models / "ensemble.json")
    with open(copy / "sub" / "member_1.zip", "ab") as fh:  # a retrained member changes the digest
        fh.write(b"\0")
    assert model_digest(copy / "ensemble.json") != before
    assert policy_label(str(copy / "ensemble.json")) == "agent"
    assert policy_label("runs/exp/ensemble.json") == "agent_exp"
    assert policy_label("runs/exp/model.zip") == "agent_exp"
    both = policy_labels(["oracle", "runs/exp/model.zip", "runs/exp/ensemble.json", "runs/other/model.zip"])
    assert list(both.values()) == ["oracle", "agent_model", "agent_ensemble", "agent_other"]
    members = policy_labels(["runs/a/ensemble/member_1.zip", "runs/b/ensemble/member_1.zip", "x/m.zip"])
    assert list(members.values()) == ["agent_a_ensemble_member_1", "agent_b_ensemble_member_1", "agent_m"]


def test_fast_deterministic_path_equals_the_members_own_predict() -> None:
    """The shipped ensemble's deterministic fast path (one observation conversion, the shared window
    features once) gives the members' own ``predict`` mean bit for bit on an episode's observations;
    sampled actions still go through each member; a recurrent member turns the fast path off."""
    import torch
    from sb3_contrib import RecurrentPPO

    from agents.ensemble import _shared_feature_groups
    from agents.evaluation import PRETRAINED

    torch.set_num_threads(1)
    ens = load_model(PRETRAINED)
    assert ens._groups == [list(range(len(ens)))]  # one shared WindowFeatures layout
    env = CarbonAwareDCEnv(preset="paper", forecast_level="typical")
    flat = FlatObsActionWrapper(env)
    obs, _ = flat.reset(seed=1000)
    done = False
    while not done:
        own = np.mean(np.stack([m.predict(obs, deterministic=True)[0] for m in ens.models]), axis=0)
        fast, _ = ens.predict(obs, deterministic=True)
        np.testing.assert_array_equal(fast, own.astype(np.float32))
        two = np.stack([obs, obs])  # a vectorised call
        own = np.mean(np.stack([m.predict(two, deterministic=True)[0] for m in ens.models]), axis=0)
        np.testing.assert_array_equal(ens.predict(two, deterministic=True)[0], own.astype(np.float32))
        obs, _, done, _, _ = flat.step(fast)
    sampled = [ens.predict(obs, deterministic=False)[0] for _ in range(2)]
    assert not np.array_equal(sampled[0], sampled[1])  # the members' own sampling
    recurrent = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=8, seed=0, device="cpu")
    assert _shared_feature_groups([recurrent]) is None
