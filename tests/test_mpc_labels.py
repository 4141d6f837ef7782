"""MPC's own episodes as a demonstration dataset (agents/mpc_labels.py, issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines import MPCPolicy
from agents.bc import BCConfig, behaviour_clone
from agents.demos import DemoDataset
from agents.imitation import build_oracle_dataset, flat_env, noise_seed
from agents.mpc_labels import build_mpc_dataset, main
from agents.sb3 import make_model, make_vec_env
from envs.dc_env import CarbonAwareDCEnv
from envs.presets import make_scenario

SEEDS = (1000, 1001)
LEVEL = "typical"


@pytest.fixture(scope="module")
def mpc_data(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    cache = tmp_path_factory.mktemp("mpc_cache")
    return build_mpc_dataset(
        "paper", SEEDS, base_seed=5, cache_dir=cache, forecast_level=LEVEL, noise_draws=2, progress=False
    )


def episode_rows(data: DemoDataset, seed: int, draw: int, T: int = 24) -> np.ndarray:
    """Rows of one episode: the dataset holds each seed's draws in order, T periods each."""
    rows = np.flatnonzero(data.seed == seed)
    return rows[draw * T : (draw + 1) * T]


def test_labels_are_mpcs_actions_and_replay_its_return(mpc_data: DemoDataset) -> None:
    sc = make_scenario("paper", SEEDS[0])
    # MPC played here, in this process, on draw 1's forecast errors.
    env = CarbonAwareDCEnv(scenario=sc, preset="paper", forecast_level=LEVEL)
    policy = MPCPolicy(env, exact=False, threads=1)
    flat = flat_env("paper", sc, forecast_level=LEVEL)
    obs, _ = env.reset(seed=noise_seed(sc, 1))
    own, encoded, done = 0.0, [], False
    while not done:
        action, _ = policy.predict(obs)
        encoded.append(flat.encode_action(action))
        obs, reward, done, _, _ = env.step(action)
        own += reward
    rows = episode_rows(mpc_data, SEEDS[0], 1)
    np.testing.assert_array_equal(mpc_data.actions[rows], np.stack(encoded))
    assert mpc_data.meta["expert_return_usd"][str(SEEDS[0])][1] == pytest.approx(own, rel=1e-12)
    # The flat labels stepped through the flat env (decode, action mask) earn MPC's return and
    # pass through the recorded observations.
    obs, _ = flat.reset(seed=noise_seed(sc, 1))
    total = 0.0
    for row in rows:
        np.testing.assert_allclose(obs, mpc_data.obs[row], atol=1e-5)
        obs, reward, _, _, _ = flat.step(mpc_data.actions[row])
        total += reward
    assert total == pytest.approx(own, rel=1e-5)
    assert mpc_data.meta["replay_max_rel_error"] < 1e-9
    assert mpc_data.meta["noise_draw_seeds"][str(SEEDS[0])] == [noise_seed(sc, 0), noise_seed(sc, 1)]


def test_layout_and_meta_match_the_oracle_dataset(mpc_data: DemoDataset) -> None:
    oracle = build_oracle_dataset(
        "paper", SEEDS, base_seed=5, forecast_level=LEVEL, noise_draws=2, progress=False, max_workers=2
    )
    assert mpc_data.obs.shape == oracle.obs.shape and mpc_data.actions.shape == oracle.actions.shape
    np.testing.assert_array_equal(mpc_data.seed, oracle.seed)
    np.testing.assert_array_equal(mpc_data.period, oracle.period)
    np.testing.assert_array_equal(mpc_data.round, oracle.round)
    expert_keys = {"oracle", "oracle_objective_usd"}
    missing = set(oracle.meta) - expert_keys - set(mpc_data.meta)
    assert not missing
    for key in set(oracle.meta) - expert_keys - {"solve_wall_s", "build_wall_s", "replay_max_rel_error"}:
        assert mpc_data.meta[key] == oracle.meta[key], key
    assert mpc_data.meta["expert"]["name"] == "mpc" and mpc_data.meta["expert"]["window"] == 24
    # Same forecast errors in both (same draws), other visited states: the first period agrees.
    np.testing.assert_array_equal(mpc_data.obs[mpc_data.period == 0], oracle.obs[oracle.period == 0])
    assert not np.array_equal(mpc_data.actions, oracle.actions)
    model = make_model("ppo", make_vec_env("paper", 1, 0), 0)
    hist = behaviour_clone(model.policy, mpc_data, BCConfig(epochs=1, seed=0))
    assert np.isfinite(hist.final_val["loss"]) and hist.val_seeds


def test_same_seed_same_dataset(mpc_data: DemoDataset, tmp_path) -> None:
    again = build_mpc_dataset(
        "paper", SEEDS, base_seed=5, forecast_level=LEVEL, noise_draws=2, progress=False, max_workers=2
    )
    for name in ("obs", "actions", "seed", "period", "round"):
        np.testing.assert_array_equal(getattr(again, name), getattr(mpc_data, name))
    assert again.meta["expert_return_usd"] == mpc_data.meta["expert_return_usd"]
    back = DemoDataset.load(mpc_data.save(tmp_path / "mpc.npz"))
    np.testing.assert_array_equal(back.actions, mpc_data.actions)
    # The draws differ: other forecast errors in the observations of one scenario.
    first, second = episode_rows(mpc_data, SEEDS[1], 0), episode_rows(mpc_data, SEEDS[1], 1)
    assert not np.array_equal(mpc_data.obs[first], mpc_data.obs[second])


@pytest.mark.parametrize(
    "argv",
    [["--scenarios", "1"], ["--epochs", "0"], ["--eval-levels", "typical,awful"], ["--level", "bad"]],
)
def test_probe_flags_fail_before_any_work(argv: list[str], tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert not (tmp_path / "out" / "cache").exists()
