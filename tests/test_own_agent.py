"""Your own agent: any SB3 / sb3-contrib model loaded by its own class (agents/loading.py), its
recurrent state, VecNormalize statistics, the safety layer only when asked; the SB3 example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.evaluation import make_env, rollout
from agents.loading import (
    ALGORITHMS,
    DictPolicy,
    UntrustedModelError,
    algo_of,
    algorithm_class,
    default_safety_layer,
    load_model,
    load_policy,
)
from agents.policy_file import read_description, save_policy_file
from envs.presets import make_scenario
from envs.wrappers import FlatObsActionWrapper, make_flat_env

pytest.importorskip("sb3_contrib")  # every kind below but the stable-baselines3 ones needs it

ROOT = Path(__file__).resolve().parents[1]
OFF_POLICY = {"sac", "td3", "ddpg", "tqc", "crossq"}


def tiny_model(algo: str, seed: int = 0):
    """An untrained ``algo`` model on the paper flat env, small networks and buffers."""
    cls = algorithm_class(algo)
    env = make_flat_env(preset="paper")
    kw: dict = {"seed": seed, "device": "cpu", "verbose": 0}
    if algo in OFF_POLICY:
        kw.update(buffer_size=64, learning_starts=0, policy_kwargs={"net_arch": [16, 16]})
    elif algo == "recurrentppo":
        kw.update(n_steps=16, batch_size=16, policy_kwargs={"net_arch": [16], "lstm_hidden_size": 8})
    elif algo == "ars":
        kw.update(n_delta=2)
    else:
        kw.update(n_steps=16, policy_kwargs={"net_arch": [16, 16]})
        if algo in ("ppo", "trpo"):
            kw["batch_size"] = 16
    policy = "MlpLstmPolicy" if algo == "recurrentppo" else ("LinearPolicy" if algo == "ars" else "MlpPolicy")
    return cls(policy, env, **kw)


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zips")
    out = {}
    for algo in ALGORITHMS:
        out[algo] = folder / f"{algo}.zip"
        tiny_model(algo).save(out[algo])
    return out


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_kind_loads_by_its_own_class_and_plays(zips, algo) -> None:
    path = zips[algo]
    assert algo_of(path) == algo
    model = load_model(path, trust_pickle=True)
    assert type(model) is algorithm_class(algo)
    sc = make_scenario("paper", 3)
    env = make_env("paper", sc)
    policy = load_policy(path, env, trust_pickle=True)
    assert policy.safety_layer is False  # a foreign zip plays as it is
    result = rollout(policy, env, seed=0)
    assert result.steps == sc.T and np.isfinite(result.return_usd)
    # the Dict policy plays exactly the model's own flat action, decoded as the flat env decodes it
    flat = FlatObsActionWrapper(make_env("paper", sc))
    flat_obs, _ = flat.reset(seed=0)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(policy.flat.flatten_obs(obs), flat_obs)
    expected = flat.decode_action(model.predict(flat_obs, deterministic=True)[0], flat._mask)
    got, _ = policy.predict(obs, episode_start=np.ones((1,), dtype=bool))
    for key in ("start", "route", "battery", "generator"):
        np.testing.assert_array_equal(got[key], expected[key])


def test_a_zip_without_trust_is_refused_and_discrete_models_are_named(zips, tmp_path) -> None:
    with pytest.raises(UntrustedModelError, match="trust_pickle"):
        load_model(zips["td3"])
    from stable_baselines3 import DQN

    DQN("MlpPolicy", "CartPole-v1", buffer_size=64, learning_starts=0, device="cpu").save(
        tmp_path / "dqn.zip"
    )
    with pytest.raises(ValueError, match="DQN model has discrete actions"):
        algo_of(tmp_path / "dqn.zip")


def test_recurrent_ppo_keeps_its_state_within_an_episode(zips) -> None:
    model = load_model(zips["recurrentppo"], trust_pickle=True)
    sc = make_scenario("paper", 3)
    env = make_env("paper", sc)
    policy = load_policy(zips["recurrentppo"], env, trust_pickle=True)

    class Forgetful:
        """The same policy with its LSTM state reset at every step (how a plain PPO load played it)."""

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return policy.predict(obs, None, np.ones((1,), dtype=bool), deterministic)

    def actions(p) -> list[np.ndarray]:
        obs, _ = env.reset(seed=0)
        state, start, out = None, np.ones((1,), dtype=bool), []
        for _ in range(6):
            action, state = p.predict(obs, state=state, episode_start=start, deterministic=True)
            start = np.zeros((1,), dtype=bool)
            out.append(np.concatenate([np.ravel(action[k]) for k in ("route", "battery", "generator")]))
            obs, *_ = env.step(action)
        return out

    assert type(model).__name__ == "RecurrentPPO"
    kept, forgot = actions(policy), actions(Forgetful())
    np.testing.assert_array_equal(kept[0], forgot[0])  # the first step starts from the zero state
    assert any(not np.allclose(a, b) for a, b in zip(kept[1:], forgot[1:], strict=True))
    again = actions(policy)  # a new episode starts from the zero state again: the same actions
    for a, b in zip(kept, again, strict=True):
        np.testing.assert_array_equal(a, b)
    one = rollout(policy, env, seed=0).benefit_usd
    assert rollout(policy, env, seed=0).benefit_usd == one
    assert rollout(Forgetful(), env, seed=0).benefit_usd != one


def test_safety_layer_only_when_asked(zips, tmp_path) -> None:
    sc = make_scenario("paper", 3)
    env = make_env("paper", sc)
    plain = load_policy(zips["ppo"], env, trust_pickle=True)
    safe = load_policy(zips["ppo"], env, trust_pickle=True, safety_layer=True)
    assert (plain.safety_layer, safe.safety_layer) == (False, True)
    # off: the episode is exactly the model's own on the flat env
    model = load_model(zips["ppo"], trust_pickle=True)
    flat = FlatObsActionWrapper(make_env("paper", sc))
    obs, _ = flat.reset(seed=0)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = flat.step(model.predict(obs, deterministic=True)[0])
        total += reward
        done = terminated or truncated
    assert rollout(plain, env, seed=0).return_usd == pytest.approx(total, rel=1e-12, abs=1e-9)
    assert rollout(safe, env, seed=0).return_usd != pytest.approx(total, rel=1e-6)
    # the project's policy files default to on, as recorded; a file without the field is on
    on = save_policy_file(model, tmp_path / "on.json", "paper")
    off = save_policy_file(model, tmp_path / "off.json", "paper", safety_layer=False)
    assert read_description(on)["safety_layer"] is True and read_description(off)["safety_layer"] is False
    assert load_policy(on, env).safety_layer is True and load_policy(off, env).safety_layer is False
    old = json.loads(on.read_text())
    del old["safety_layer"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert default_safety_layer(tmp_path / "old.json") is True
    assert load_policy(tmp_path / "old.json", env).safety_layer is True
    assert default_safety_layer(zips["ppo"]) is False


def _vecnormalize(path: Path, steps: int = 30) -> Path:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: make_flat_env(preset="paper")]), norm_reward=False)
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        venv.step(rng.uniform(-1, 1, (1, *venv.action_space.shape)).astype(np.float32))
    venv.save(str(path))
    return path


def test_vecnormalize_statistics_are_applied_to_the_observations(zips, tmp_path) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    stats_path = _vecnormalize(tmp_path / "vecnormalize.pkl")
    sc = make_scenario("paper", 3)
    env = make_env("paper", sc)
    with pytest.raises(UntrustedModelError, match="pickle"):
        load_policy(zips["sac"], env, trust_pickle=False, vecnormalize=stats_path)
    policy = load_policy(zips["sac"], env, trust_pickle=True, vecnormalize=stats_path)
    plain = load_policy(zips["sac"], env, trust_pickle=True)
    stats = VecNormalize.load(str(stats_path), DummyVecEnv([lambda: make_flat_env(preset="paper")]))
    assert stats.obs_rms.count > 30  # the statistics of the steps taken, not a fresh normalizer
    seen = []

    class Spy:
        """The model, recording the observations it is asked about."""

        observation_space = policy.model.observation_space

        def predict(self, obs, **kw):
            seen.append(obs)
            return policy.model.predict(obs, **kw)

    obs, _ = env.reset(seed=0)
    a, _ = DictPolicy(Spy(), env, obs_normalizer=policy.obs_normalizer).predict(obs)
    flat = policy.flat.flatten_obs(obs)
    np.testing.assert_allclose(seen[0], stats.normalize_obs(flat), rtol=1e-6)
    assert not np.allclose(seen[0], flat)
    b, _ = plain.predict(obs)
    assert not all(np.allclose(a[k], b[k]) for k in ("route", "battery", "generator"))
    week = make_env(None, make_scenario("week", 0))
    with pytest.raises(ValueError, match="does not match the env"):
        DictPolicy(policy.model, week)


def test_evaluate_cli_loading_flags_fail_before_any_work(zips, tmp_path, capsys) -> None:
    import evaluate

    stats = tmp_path / "vn.pkl"
    stats.write_bytes(b"never read")
    own = str(save_policy_file(load_model(zips["ppo"], trust_pickle=True), tmp_path / "own.json", "paper"))
    cases = [
        (["--model", str(zips["td3"])], "SB3 .zip models hold pickles"),
        (["--model", own, "--vecnormalize", str(stats)], "VecNormalize files are pickles"),
        (["--model", own, "--vecnormalize", str(tmp_path / "nope.pkl"), "--trust-pickle"], "no such file"),
        (["--model", own, "--model", str(zips["sac"]), "--vecnormalize", str(stats), "--trust-pickle"],
         "exactly one model"),
        (["--model", own, "--safety-layer", "maybe"], "invalid choice"),
        (["--model", own, "--preset", "week"], "trained on observations of shape (534,), but preset week"),
        (["--model", str(zips["td3"]), "--trust-pickle", "--scenario", str(ROOT / "examples/data_spec.yaml"),
          "--preset", "paper"], "without --seeds and --preset"),
    ]  # fmt: skip
    from tests.conftest import make_tiny

    make_tiny(T=6, S=2).to_json(tmp_path / "two-sites.json")
    cases.append(
        (["--model", own, "--scenario", str(tmp_path / "two-sites.json")], "but scenario two-sites gives")
    )
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            evaluate.main([*argv, "--policies", "greedy", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and message in err[-1], err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluate_cli_plays_a_recurrent_ppo_with_vecnormalize(zips, tmp_path) -> None:
    stats = _vecnormalize(tmp_path / "vn.pkl")
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--model", str(zips["recurrentppo"]), "--trust-pickle",
         "--vecnormalize", str(stats), "--policies", "greedy", "--seeds", "0", "--out", str(out),
         "--json", "--workers", "2", "--no-plots"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {r["policy"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"greedy", "agent_recurrentppo"}
    env = make_env("paper", make_scenario("paper", 0))
    policy = load_policy(zips["recurrentppo"], env, trust_pickle=True, vecnormalize=stats)
    assert rows["agent_recurrentppo"]["benefit_usd"] == pytest.approx(
        rollout(policy, env, seed=0).benefit_usd
    )


def test_evaluate_cli_draws_the_dispatch_of_a_trusted_zip(zips, tmp_path) -> None:
    """The report's dispatch figure replays the best non-oracle policy; a zip found there must be
    loaded with the run's --trust-pickle (its loading flags are keyed by the model's path)."""
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--model", str(zips["ppo"]), "--trust-pickle", "--policies", "oracle",
         "--seeds", "0", "--out", str(out), "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / "dispatch.png").is_file()


# ------------------------------------------------------------------------------ the SB3 example
@pytest.mark.slow
@pytest.mark.parametrize("vecnormalize", [False, True])
def test_sb3_ppo_scratch_example_at_smoke_size(tmp_path, vecnormalize) -> None:
    from examples.sb3_ppo_scratch import main

    argv = ["--timesteps", "64", "--n-steps", "32", "--eval-seeds", "2", "--out", str(tmp_path / "run")]
    out = main(argv + (["--vecnormalize"] if vecnormalize else []))
    assert (tmp_path / "run" / "model.zip").is_file()
    assert (tmp_path / "run" / "vecnormalize.pkl").is_file() == vecnormalize
    assert algo_of(tmp_path / "run" / "model.zip") == "ppo"
    model = load_model(tmp_path / "run" / "model.zip", trust_pickle=True)
    assert model.n_steps == 32 and model.learning_rate == pytest.approx(3e-4)  # the YAML's scratch setting
    assert model.num_timesteps >= 64
    scores = out["oracle_score"]
    rows = [r for r in out["evaluate"]["rows"] if r["policy"] != "greedy"]
    # evaluate_policy through OracleScore and evaluate.py score the same episodes of seeds 0 and 1
    assert [s["scenario_seed"] for s in scores] == [0, 1] and [r["seed"] for r in rows] == [0, 1]
    for s, r in zip(scores, rows, strict=True):
        assert s["benefit_usd"] == pytest.approx(r["benefit_usd"], rel=1e-9)
        assert s["oracle_benefit_usd"] == pytest.approx(r["oracle_benefit_usd"], rel=1e-6)


def test_the_flat_id_rewards_are_scaled_and_its_info_is_in_usd() -> None:
    import gymnasium as gym

    import envs
    from envs.wrappers import DEFAULT_REWARD_SCALE

    scaled = gym.make(envs.FLAT_ENV_ID, preset="paper")
    raw = make_flat_env(reward_scale=1.0, preset="paper")
    for env in (scaled, raw):
        env.reset(seed=0)
        env.action_space.seed(0)
    action = scaled.action_space.sample()
    _, r_scaled, *_, info = scaled.step(action)
    _, r_raw, *_, info_raw = raw.step(action)
    assert DEFAULT_REWARD_SCALE == 1e-4
    assert r_raw == pytest.approx(sum(info_raw["reward_terms"].values()))
    assert r_scaled == pytest.approx(DEFAULT_REWARD_SCALE * r_raw) and abs(r_raw) > 1.0
    assert info["reward_terms"] == info_raw["reward_terms"]
