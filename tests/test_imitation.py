"""Oracle demonstrations, the .npz dataset, behaviour cloning and DAgger labels (agents/imitation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from agents.imitation import (
    TRAIN_SEED_LOW,
    BCConfig,
    DemoDataset,
    bc_targets,
    behaviour_clone,
    build_oracle_dataset,
    dagger_round,
    draw_training_seeds,
    flat_env,
    imitation_loss,
    replay_schedule,
    rollout,
    solve_from_state,
    state_to_json,
)
from agents.replay import OracleReplayPolicy, schedule_action
from agents.sb3 import flat_predictor, make_model, make_vec_env
from envs.presets import make_scenario
from envs.rules import greedy_workload
from envs.scenario import Scenario
from oracle.solve import solve

TRAIN_SEEDS = (1000, 1001, 1002, 1003)


@pytest.fixture(scope="module")
def schedules() -> dict[int, object]:
    return {s: solve(make_scenario("paper", s), "joint", threads=1) for s in TRAIN_SEEDS}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    cache = tmp_path_factory.mktemp("oracle_cache")
    return build_oracle_dataset(
        "paper", TRAIN_SEEDS, base_seed=7, cache_dir=cache, progress=False, max_workers=2
    )


def greedy_benefit_usd(sc: Scenario) -> float:
    """The carbon-agnostic operator of issue 5 (``greedy``): the workload rule of envs.rules,
    battery idle, generator off, played through the env."""
    starts, serve = greedy_workload(sc)
    env = flat_env("paper", sc).unwrapped
    env.reset(seed=0)
    total = 0.0
    for t in range(sc.T):
        start = np.zeros(env.n_slots, dtype=np.int64)
        for j, s, tt in starts:
            if tt == t:
                start[j] = 1 + s
        demand = sc.demand_gpus[:, t][:, None]
        route = np.divide(serve[:, :, t], demand, out=np.zeros((sc.K, sc.S)), where=demand > 0)
        action = {"start": start, "route": route, "battery": np.zeros(sc.S), "generator": np.zeros(sc.S)}
        total += env.step(action)[1]
    return total


def test_training_seeds_are_disjoint_from_evaluation_and_reproducible() -> None:
    seeds = draw_training_seeds(3, 50)
    assert len(set(seeds)) == 50
    assert min(seeds) >= TRAIN_SEED_LOW
    assert seeds == draw_training_seeds(3, 50)
    assert draw_training_seeds(3, 80)[:50] == seeds
    assert draw_training_seeds(4, 50) != seeds
    excluded = draw_training_seeds(3, 50, exclude=seeds[:10])
    assert not set(excluded) & set(seeds[:10])


def test_dataset_npz_round_trip_without_pickle(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = DemoDataset(
        rng.normal(size=(10, 5)).astype(np.float32),
        rng.uniform(-1, 1, size=(10, 3)).astype(np.float32),
        np.repeat([1000, 1001], 5),
        np.tile(np.arange(5), 2),
        np.zeros(10, dtype=np.int64),
        {"preset": "paper", "seeds": [1000, 1001], "nested": {"a": 1.5}},
    )
    path = data.save(tmp_path / "d.npz")
    with np.load(path, allow_pickle=False) as raw:
        assert set(raw.files) == {"obs", "actions", "seed", "period", "round", "meta"}
        assert raw["meta"].dtype.kind == "U"
    back = DemoDataset.load(path)
    for name in ("obs", "actions", "seed", "period", "round"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    assert back.meta["nested"] == {"a": 1.5}
    assert back.meta["rows"] == 10
    both = data.concat(back)
    assert len(both) == 20 and both.seeds == [1000, 1001]


def test_oracle_dataset_replays_the_schedules(small_dataset: DemoDataset, schedules, tmp_path) -> None:
    data = small_dataset
    assert len(data) == 24 * len(TRAIN_SEEDS)
    assert data.seeds == list(TRAIN_SEEDS)
    assert data.meta["replay_max_rel_error"] < 1e-9
    assert data.meta["obs_dim"] == data.obs.shape[1] and data.meta["act_dim"] == data.actions.shape[1]
    assert data.meta["base_seed"] == 7 and "versions" in data.meta
    for seed in TRAIN_SEEDS:
        assert data.meta["oracle_objective_usd"][str(seed)] == pytest.approx(
            schedules[seed].objective_usd, rel=1e-3
        )
    assert np.all(np.abs(data.actions) <= 1.0) and np.isfinite(data.obs).all()
    back = DemoDataset.load(data.save(tmp_path / "bc.npz"))
    np.testing.assert_array_equal(back.actions, data.actions)


def test_encode_decode_consistent_on_oracle_actions(schedules) -> None:
    """decode(encode(a)) gives back the oracle's action, and stepping with it earns the objective."""
    sched = schedules[1000]
    flat = flat_env("paper", sched.scenario)
    replay = OracleReplayPolicy(sched)
    obs, info = flat.unwrapped.reset(seed=0)
    total, done = 0.0, False
    while not done:
        action, _ = replay.predict(obs)
        back = flat.decode_action(flat.encode_action(action), info["action_mask"])
        np.testing.assert_array_equal(back["start"], action["start"])
        for key in ("route", "battery", "generator"):
            np.testing.assert_allclose(back[key], action[key], atol=1e-6)
        obs, reward, done, _, info = flat.unwrapped.step(back)
        assert not {"start_ignored", "route_scaled"} & set(info["repairs"])
        total += reward
    assert total == pytest.approx(sched.objective_usd, rel=1e-5)


def test_replay_schedule_records_pairs(schedules) -> None:
    ep = replay_schedule(schedules[1001], "paper")
    assert ep.obs.shape[0] == ep.actions.shape[0] == 24
    assert ep.return_usd == pytest.approx(schedules[1001].objective_usd, rel=1e-9)


def test_relabel_from_visited_state_is_the_exact_oracle(schedules) -> None:
    """Along the oracle's own trajectory, the oracle from the snapshot agrees with the full schedule."""
    sched = schedules[1002]
    env = flat_env("paper", sched.scenario).unwrapped
    replay = OracleReplayPolicy(sched)
    obs, _ = env.reset(seed=0)
    earned = 0.0
    for t in range(13):
        if t in (0, 12):
            state = env.state_snapshot()
            item = {"preset": "paper", "seed": 1002, "state": state_to_json(state)}
            out = solve_from_state({**item, "time_limit_s": 60.0, "mip_gap": 1e-4})
            assert not out["relaxed"]
            assert earned + out["objective_usd"] == pytest.approx(sched.objective_usd, rel=2e-4)
            if t == 0:
                expected = schedule_action(sched, 0, env.n_slots)
                np.testing.assert_array_equal(out["action"]["start"], expected["start"])
                np.testing.assert_allclose(out["action"]["route"], expected["route"], atol=1e-6)
        action, _ = replay.predict(obs)
        obs, reward, _, _, _ = env.step(action)
        earned += reward


def test_bc_targets_push_boundary_values_out() -> None:
    a = np.array([[-1.0, -0.5, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(bc_targets(a, 0.2), [[-1.2, -0.5, 0.0, 1.2]], rtol=1e-6)


@pytest.mark.slow
def test_bc_lowers_loss_and_beats_greedy(small_dataset: DemoDataset, schedules) -> None:
    th.manual_seed(0)
    model = make_model("ppo", make_vec_env("paper", 1, seed=0), seed=0)
    cfg = BCConfig(epochs=150, val_frac=0.0, patience=None)
    before = imitation_loss(model.policy, small_dataset, cfg)
    hist = behaviour_clone(model.policy, small_dataset, cfg)
    after = imitation_loss(model.policy, small_dataset, cfg)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["mse"] < before["mse"] and after["start_acc"] > before["start_acc"]
    assert hist.final_val["loss"] == pytest.approx(after["loss"], rel=1e-5)
    predict = flat_predictor(model)
    for seed in TRAIN_SEEDS:
        sc = schedules[seed].scenario
        bc = rollout(predict, sc, "paper").return_usd
        greedy = greedy_benefit_usd(sc)
        assert bc > greedy, (seed, bc, greedy)


def test_bc_anchor_pulls_fine_tuning_toward_the_demonstrations(small_dataset: DemoDataset) -> None:
    from agents.sb3 import BCAnchorCallback, resolve_hyperparams

    hp = {**resolve_hyperparams("ppo", "paper", "finetune"), "n_steps": 48, "batch_size": 48, "n_epochs": 2}
    losses = {}
    for steps in (0, 20):
        th.manual_seed(0)
        model = make_model("ppo", make_vec_env("paper", 1, seed=0), seed=0, hyperparams=hp)
        anchor = BCAnchorCallback(small_dataset, steps, lr=1e-3, seed=0)
        model.learn(3 * 48, callback=anchor)
        # Three rollouts: the anchor runs after the first and the second update, not before any.
        assert anchor.updates == (2 if steps else 0)
        losses[steps] = imitation_loss(model.policy, small_dataset)["loss"]
    assert losses[20] < 0.8 * losses[0]
    # The anchor trains every parameter but the exploration noise (log_std), which stays the RL stage's.
    anchored = {name for name, p in model.policy.named_parameters() if any(p is q for q in anchor.params)}
    assert anchored == {name for name, _ in model.policy.named_parameters()} - {"log_std"}


def test_policy_anchor_keeps_fine_tuning_near_the_cloned_policy(small_dataset: DemoDataset) -> None:
    from agents.sb3 import BCAnchorCallback, resolve_hyperparams

    hp = {**resolve_hyperparams("ppo", "paper", "finetune"), "n_steps": 48, "batch_size": 48}
    hp.update(n_epochs=4, learning_rate=1e-3, target_kl=None)  # RL steps large enough to move it
    obs = th.as_tensor(small_dataset.obs)
    drift = {}
    for steps in (0, 40):
        th.manual_seed(0)
        model = make_model("ppo", make_vec_env("paper", 1, seed=0), seed=0, hyperparams=hp)
        with th.no_grad():
            start = model.policy.get_distribution(obs).distribution.mean.clone()
        with pytest.raises(ValueError, match="target must be one of"):
            BCAnchorCallback(small_dataset, steps, lr=1e-3, seed=0, target="oracle")
        model.learn(4 * 48, callback=BCAnchorCallback(small_dataset, steps, lr=1e-3, seed=0, target="policy"))
        with th.no_grad():
            end = model.policy.get_distribution(obs).distribution.mean
        drift[steps] = float(((end - start) ** 2).mean())
    assert drift[0] > 0 and drift[40] < 0.5 * drift[0]


def test_bc_runs_on_sac_and_a2c(small_dataset: DemoDataset) -> None:
    for algo in ("sac", "a2c"):
        model = make_model(algo, make_vec_env("paper", 1, seed=0), seed=0)
        cfg = BCConfig(epochs=3, val_frac=0.0, patience=None)
        before = imitation_loss(model.policy, small_dataset, cfg)["loss"]
        behaviour_clone(model.policy, small_dataset, cfg)
        assert imitation_loss(model.policy, small_dataset, cfg)["loss"] < before


def test_behaviour_clone_rejects_another_layout(small_dataset: DemoDataset) -> None:
    model = make_model("ppo", make_vec_env("paper", 1, seed=0), seed=0)
    bad = DemoDataset(
        small_dataset.obs[:, :10],
        small_dataset.actions,
        small_dataset.seed,
        small_dataset.period,
        small_dataset.round,
        small_dataset.meta,
    )
    with pytest.raises(ValueError, match="do not match"):
        behaviour_clone(model.policy, bad)


@pytest.mark.slow
def test_dagger_round_labels_visited_states(tmp_path) -> None:
    flat = flat_env("paper")
    hold = np.full(flat.action_space.shape, -1.0, dtype=np.float32)  # everything off, nothing served
    data, stats = dagger_round(
        lambda obs: hold, "paper", [1004], 1, cache_dir=tmp_path, progress=False, max_workers=2
    )
    assert len(data) == 24 and stats["labels"] == 24
    assert set(data.round.tolist()) == {1} and data.seeds == [1004]
    assert np.all(np.abs(data.actions) <= 1.0)
    # The expert serves inference the policy left unserved: route weights of some site are high.
    route = data.actions[:, 6 * 4 : 6 * 4 + 3 * 4].reshape(-1, 3, 4)
    assert (route[:, :, 1:].max(axis=2) > 0.9).all()


def test_noisy_dataset_keeps_the_oracle_labels_and_varies_the_observations() -> None:
    from agents.imitation import build_oracle_dataset

    seeds = [1001, 1002]
    noisy = build_oracle_dataset(
        "paper", seeds, forecast_level="typical", noise_draws=2, progress=False, max_workers=1
    )
    exact = build_oracle_dataset("paper", seeds, noise_draws=2, progress=False, max_workers=1)
    T = 24
    assert len(exact) == len(seeds) * T  # exact forecasts: one replay per schedule whatever noise_draws
    assert len(noisy) == 2 * len(exact)
    assert noisy.meta["forecast_level"] == "typical" and noisy.meta["noise_draws"] == 2
    assert noisy.meta["replay_max_rel_error"] < 1e-9  # the oracle's actions still earn its objective
    first, second = noisy.obs[:T], noisy.obs[T : 2 * T]
    np.testing.assert_array_equal(noisy.actions[:T], noisy.actions[T : 2 * T])  # same clairvoyant labels
    np.testing.assert_array_equal(noisy.actions[:T], exact.actions[:T])
    assert not np.array_equal(first, second)  # other forecast errors in the observations
    assert not np.array_equal(first, exact.obs[:T])
    again = build_oracle_dataset(
        "paper", seeds, forecast_level="typical", noise_draws=2, progress=False, max_workers=1
    )
    np.testing.assert_array_equal(again.obs, noisy.obs)  # reproducible
    # exact_draws=1: the first replay of each schedule sees exact forecasts, the second draw 1's errors
    mixed = build_oracle_dataset(
        "paper", seeds, forecast_level="typical", noise_draws=2, exact_draws=1, progress=False, max_workers=1
    )
    assert mixed.meta["exact_draws"] == 1 and len(mixed) == len(noisy)
    np.testing.assert_array_equal(mixed.obs[:T], exact.obs[:T])
    np.testing.assert_array_equal(mixed.obs[T : 2 * T], second)
    with pytest.raises(ValueError, match="exact_draws"):
        build_oracle_dataset("paper", seeds, forecast_level="typical", noise_draws=2, exact_draws=3)
