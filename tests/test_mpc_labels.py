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
    [
        ["--scenarios", "1"],
        ["--epochs", "0"],
        ["--eval-levels", "typical,awful"],
        ["--level", "bad"],
        ["--expert", "oracle"],
        ["--dagger-rounds", "-1"],
        ["--dagger-scenarios", "0"],
    ],
)
def test_probe_flags_fail_before_any_work(argv: list[str], tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert not (tmp_path / "out" / "cache").exists()


def test_mpc_lp_episodes_are_its_own_actions(tmp_path) -> None:
    """The cheap planner as the dataset's expert: its labels are what MPCLPPolicy plays in-process."""
    from agents.window_lp import MPCLPPolicy

    data = build_mpc_dataset(
        "paper",
        SEEDS[:1],
        forecast_level=LEVEL,
        noise_draws=1,
        progress=False,
        max_workers=1,
        expert="mpc_lp",
    )
    assert data.meta["expert"]["name"] == "mpc_lp" and data.meta["mpc_solves"] >= 24
    sc = make_scenario("paper", SEEDS[0])
    env = CarbonAwareDCEnv(scenario=sc, preset="paper", forecast_level=LEVEL)
    policy = MPCLPPolicy(env)
    flat = flat_env("paper", sc, forecast_level=LEVEL)
    obs, _ = env.reset(seed=noise_seed(sc, 0))
    encoded, own, done = [], 0.0, False
    while not done:
        action, _ = policy.predict(obs)
        encoded.append(flat.encode_action(action))
        obs, reward, done, _, _ = env.step(action)
        own += reward
    np.testing.assert_array_equal(data.actions, np.stack(encoded))
    assert data.meta["expert_return_usd"][str(SEEDS[0])] == [pytest.approx(own, rel=1e-12)]
    with pytest.raises(ValueError, match="expert"):
        build_mpc_dataset("paper", SEEDS[:1], progress=False, expert="oracle")


def test_planner_dagger_round_labels_the_policys_states() -> None:
    """The states are the policy's (the deployed rollout's observations), the labels the planner's."""
    from agents.mpc_labels import planner_dagger_round
    from agents.rollouts import rollout
    from agents.safety import safe_flat_env
    from agents.window_lp import MPCLPPolicy

    rng = np.random.default_rng(3)
    act_dim = flat_env("paper").action_space.shape[0]
    table = rng.uniform(-1.0, 1.0, size=(24, act_dim)).astype(np.float32)

    def predict(obs: np.ndarray) -> np.ndarray:  # a fixed, state-blind policy: one action per period
        predict.t = (getattr(predict, "t", -1) + 1) % 24
        return table[predict.t]

    data, stats = planner_dagger_round(predict, "paper", SEEDS, 2, forecast_level=LEVEL)
    assert stats["labels"] == len(data) == 48 and stats["expert_fallbacks"] == 0
    assert set(data.round.tolist()) == {2} and data.seeds == list(SEEDS)
    predict.t = -1
    for seed in SEEDS:
        rows = np.flatnonzero(data.seed == seed)
        ep = rollout(
            predict, make_scenario("paper", seed), "paper", make_env=safe_flat_env, forecast_level=LEVEL
        )
        np.testing.assert_array_equal(data.obs[rows], ep.obs)
        assert not np.allclose(data.actions[rows], ep.actions)  # labels, not the policy's own actions
    # Period 0: the label is the planner's first action from the reset state.
    sc = make_scenario("paper", SEEDS[0])
    env = CarbonAwareDCEnv(scenario=sc, preset="paper", forecast_level=LEVEL)
    obs, _ = env.reset(seed=noise_seed(sc, 0))
    first, _ = MPCLPPolicy(env).predict(obs)
    np.testing.assert_array_equal(data.actions[0], flat_env("paper", sc).encode_action(first))
    # The pairs join a dataset and train as the pipeline's DAgger pairs do.
    model = make_model("ppo", make_vec_env("paper", 1, 0), 0)
    hist = behaviour_clone(model.policy, data, BCConfig(epochs=1, seed=0, val_seeds=[SEEDS[0]]))
    assert np.isfinite(hist.final_val["loss"])


def test_probe_with_planner_dagger_writes_its_rows(tmp_path) -> None:
    import json

    out = tmp_path / "probe"
    argv = [
        "--scenarios",
        "2",
        "--epochs",
        "1",
        "--val-scenarios",
        "1",
        "--clone-seeds",
        "1",
        "--noise-draws",
        "1",
    ]
    argv += ["--expert", "mpc_lp", "--dagger-rounds", "1", "--dagger-scenarios", "1", "--workers", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    record = json.loads((out / "mpc_labels_probe.json").read_text())
    labels = [row["labels"] for row in record["rows"]]
    assert labels == [
        "clairvoyant oracle",
        "MPC-LP on the forecast",
        "MPC-LP on the forecast + DAgger 1",
        "mpc itself (reference)",
        "mpc_lp itself (reference)",
    ]
    dagger_row = record["rows"][2]
    assert dagger_row["rows"] == record["rows"][1]["rows"] + 24  # one scenario's 24 labels joined
    assert record["dagger"][0]["labels"] == 24 and record["mpc_dataset"]["name"] == "mpc_lp"
    assert all(0 < row["pct_of_oracle"]["typical"] <= 101 for row in record["rows"][3:])
