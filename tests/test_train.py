"""The SB3 glue (agents/sb3.py), the safety layer (agents/safety.py) and train.py end to end
(agents/pipeline.py), including --resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from agents.ensemble import read_manifest
from agents.safety import action_mask_from_obs, project_action
from agents.sb3 import (
    ALGOS,
    DictPolicy,
    algo_of,
    load_hyperparams,
    load_model,
    load_policy,
    make_model,
    make_vec_env,
    parse_hp,
    resolve_hyperparams,
)
from envs.dc_env import CarbonAwareDCEnv

REPO = Path(__file__).resolve().parents[1]


def run_episode(policy: DictPolicy, env: CarbonAwareDCEnv, seed: int) -> float:
    obs, info = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        assert env.action_space.contains(action)
        assert info["action_mask"][np.arange(env.n_slots), action["start"]].all()
        obs, reward, done, _, info = env.step(action)
        assert "start_ignored" not in info["repairs"]
        total += reward
    return total


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_make_model_save_and_load_policy(algo: str, tmp_path) -> None:
    model = make_model(algo, make_vec_env("paper", 1, seed=0), seed=0)
    path = tmp_path / f"{algo}.zip"
    model.save(path)
    assert algo_of(path) == algo
    env = CarbonAwareDCEnv(preset="paper")
    policy = load_policy(path, env, trust_pickle=True)
    assert np.isfinite(run_episode(policy, env, seed=1))


def test_load_policy_rejects_another_preset(tmp_path) -> None:
    model = make_model("ppo", make_vec_env("paper", 1, seed=0), seed=0)
    model.save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="observation size"):
        load_policy(tmp_path / "m.zip", CarbonAwareDCEnv(preset="week"), trust_pickle=True)


def test_action_mask_from_obs_matches_env() -> None:
    env = CarbonAwareDCEnv(preset="paper")
    rng = np.random.default_rng(0)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            mask = action_mask_from_obs(obs, env.scenario.site_array("gpu_capacity"))
            np.testing.assert_array_equal(mask, info["action_mask"])
            action = env.action_space.sample()
            # Start jobs often, so the GPUs fill up and the capacity part of the mask is exercised.
            allowed = np.flatnonzero(info["action_mask"][:, 1:].any(axis=1))
            for j in allowed:
                if rng.random() < 0.5:
                    action["start"][j] = 1 + int(np.flatnonzero(info["action_mask"][j, 1:])[0])
            obs, _, done, _, info = env.step(action)


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "train.py",
        "--out",
        str(out),
        "--timesteps",
        "960",
        "--bc-scenarios",
        "2",
        "--bc-epochs",
        "5",
        "--dagger-rounds",
        "1",
        "--dagger-scenarios",
        "1",
        "--dagger-epochs",
        "3",
        "--eval-scenarios",
        "2",
        "--eval-freq",
        "480",
        "--checkpoint-freq",
        "480",
        "--value-pretrain-scenarios",
        "2",
        "--workers",
        "2",
        "--no-progress",
        *extra,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_smoke_then_resume(tmp_path) -> None:
    out = tmp_path / "run"
    first = _train(out, "--stop-after-steps", "480")
    assert first.returncode == 130, first.stderr[-3000:]
    assert "--resume" in first.stderr
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["num_timesteps"] == 480
    assert (out / "bc_dataset.npz").exists() and (out / "bc_model.zip").exists()
    assert (out / "model.zip").exists()  # the cloned policy, first candidate
    assert not (out / "learning_curve.png").exists()

    second = _train(out, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout and "ckpt_480.zip" in second.stdout
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["algo"] == "ppo" and record["config"]["bc_scenarios"] == 2
    assert record["hyperparams"]["setting"] == "finetune"
    assert record["hyperparams"]["values"] == resolve_hyperparams("ppo")
    assert len(record["resumed"]) == 1
    assert set(record["seeds"]) == {"validation", "bc", "dagger"}
    assert min(record["seeds"]["bc"]) >= 1000 and "stable-baselines3" in record["versions"]
    assert record["summary"]["final_timesteps"] == 960
    assert (out / "learning_curve.png").stat().st_size > 0
    history = json.loads((out / "eval_history.json").read_text())
    assert [(h["label"], h["timesteps"]) for h in history] == [
        ("bc", 0),
        ("dagger1", 0),
        ("ppo", 480),
        ("ppo", 960),
    ]
    assert (out / "checkpoints" / "ckpt_960.zip").exists()

    env = CarbonAwareDCEnv(preset="paper")
    assert np.isfinite(run_episode(load_policy(out / "model.zip", env, trust_pickle=True), env, seed=0))

    # The default ensemble: the main model plus four members cloned from the saved dataset.
    assert record["config"]["ensemble"] == 5
    manifest = read_manifest(out / "ensemble.json")
    names = ["model.zip", *(f"member_{m}.zip" for m in range(1, 5))]
    assert [Path(m).name for m in manifest["members"]] == names
    assert [m["seed"] for m in manifest["members_info"]] == [1, 2, 3, 4]
    assert record["summary"]["deployed"] == str(out / "policy" / "ensemble.json")
    assert list(record["summary"]["ensemble"]["member_pct_of_oracle"]) == names
    zipped = run_episode(load_policy(out / "ensemble.json", env, trust_pickle=True), env, seed=0)
    assert np.isfinite(zipped)
    # The deployed copy is pickle-free and plays exactly as the zips it was exported from.
    exported = read_manifest(out / "policy" / "ensemble.json")["members"]
    assert [Path(m).suffix for m in exported] == [".json"] * 5
    assert run_episode(load_policy(out / "policy" / "ensemble.json", env), env, seed=0) == zipped

    # A finished run, copied elsewhere and resumed, reuses its members instead of training them again.
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    before = {p.name: p.read_bytes() for p in (moved / "ensemble").glob("member_*.zip")}
    third = _train(moved, "--resume")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "4 of 4 members already trained" in third.stdout
    assert {p.name: p.read_bytes() for p in (moved / "ensemble").glob("member_*.zip")} == before
    assert read_manifest(moved / "ensemble.json")["members"][1].startswith(str(moved.resolve()))

    # Resumed with a changed learning rate and exploration noise, fine-tuning continues with both
    # (they used to stay the checkpoint's), anchored to the cloned policy.
    fourth = _train(
        moved, "--resume", "--resume-with-changes", "--timesteps", "1440", "--learning-rate", "3e-5",
        "--ft-log-std", "-3", "--ft-bc-steps", "2", "--ft-bc-target", "policy",
    )  # fmt: skip
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert "anchor toward the policy" in fourth.stdout
    ckpt = load_model(moved / "checkpoints" / "ckpt_1440.zip", trust_pickle=True)
    assert ckpt.lr_schedule(1.0) == pytest.approx(3e-5)
    assert ckpt.policy.log_std.detach().numpy() == pytest.approx(-3.0, abs=0.01)  # one small update


def test_a_resumed_zip_takes_the_changed_hyperparameters(tmp_path) -> None:
    import torch as th

    model = make_model("ppo", make_vec_env("paper", 1, seed=0), seed=0)
    path = tmp_path / "ckpt.zip"
    model.save(path)
    same = load_model(path, make_vec_env("paper", 1, seed=0), trust_pickle=True)
    assert same.lr_schedule(1.0) == pytest.approx(model.lr_schedule(1.0))
    changed = load_model(
        path,
        make_vec_env("paper", 1, seed=0),
        trust_pickle=True,
        overrides={"learning_rate": 3e-4, "clip_range": 0.3, "n_steps": 96},
    )
    assert changed.lr_schedule(1.0) == pytest.approx(3e-4) and model.lr_schedule(1.0) < 1e-4
    assert changed.clip_range(1.0) == pytest.approx(0.3) and changed.rollout_buffer.buffer_size == 96
    saved, loaded = model.policy.state_dict(), changed.policy.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(th.equal(saved[k], loaded[k]) for k in saved)  # the network is the saved one
    with pytest.raises(ValueError, match=r"overrides apply to an SB3 \.zip"):
        load_model(Path("agents/pretrained/paper/model.json"), overrides={"learning_rate": 3e-4})


@pytest.mark.slow
def test_train_without_bc_a2c(tmp_path) -> None:
    out = tmp_path / "a2c"
    res = _train(out, "--no-bc", "--algo", "a2c", "--hp", "n_steps=16")
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((out / "config.json").read_text())
    # Without BC the from-scratch setting, with the override, is what config.json and the model carry.
    assert record["hyperparams"]["setting"] == "scratch"
    assert record["hyperparams"]["values"] == {
        **resolve_hyperparams("a2c", "paper", "scratch"),
        "n_steps": 16,
    }
    assert load_model(out / "model.zip", trust_pickle=True).n_steps == 16
    assert record["seeds"]["bc"] == [] and "bc" not in record["summary"]
    # No oracle dataset to clone ensemble members from: the single model is deployed.
    assert record["config"]["ensemble"] == 1 and not (out / "ensemble.json").exists()
    assert record["summary"]["deployed"] == str(out / "policy" / "model.json")
    assert algo_of(out / "model.zip") == "a2c"


def test_safety_layer_barely_changes_the_oracle() -> None:
    from agents.replay import OracleReplayPolicy
    from envs.presets import make_scenario
    from oracle.solve import solve

    sched = solve(make_scenario("paper", 1005), "joint", threads=1)
    env = CarbonAwareDCEnv(scenario=sched.scenario)
    replay = OracleReplayPolicy(sched)
    for full in (False, True):  # without / with the state and forecast (carbon guard, energy rules)
        obs, _ = env.reset(seed=0)
        total, done = 0.0, False
        while not done:
            action, _ = replay.predict(obs)
            extra = (env.state_snapshot(), env.forecast()) if full else ()
            safe = project_action(action, obs, env.scenario, *extra)
            np.testing.assert_allclose(safe["route"], action["route"], atol=1e-9)
            np.testing.assert_array_equal(safe["start"], action["start"])
            obs, reward, done, _, _ = env.step(safe)
            total += reward
        assert total == pytest.approx(sched.objective_usd, rel=1e-2)


def test_energy_rules_sell_nothing_below_cost_and_end_at_the_initial_soc() -> None:
    """Generator and battery flat out, and batteries charging in the last period: the layer cuts
    both to each site's own deficit (no export beyond a renewable surplus) and ends the day exactly
    at the initial SoC."""
    env = CarbonAwareDCEnv(preset="paper")
    for seed in range(2):
        obs, info = env.reset(seed=seed)
        sc = env.scenario
        done, t, cut = False, 0, 0.0
        while not done:
            start = np.array([int(np.flatnonzero(row)[-1]) for row in info["action_mask"]], dtype=np.int64)
            action = {
                "start": start,
                "route": np.ones((sc.K, sc.S)),
                "battery": np.ones(sc.S) if t == sc.T - 1 else -np.ones(sc.S),
                "generator": np.ones(sc.S),
            }
            fc = env.forecast()
            safe = project_action(action, obs, sc, env.state_snapshot(), fc)
            raw = project_action(action, obs, sc)  # routing and SoC rules only
            cut += float(np.sum(safe["generator"] < raw["generator"] - 1e-9))
            obs, _, done, _, info = env.step(safe)
            f = info["flows"]
            for s in range(sc.S):
                if fc["price_export"][s, 0] < fc["price_import"][s, 0]:
                    surplus = max(fc["renewable_mw"][s, 0] - f["load_mw"][s] - f["charge_mw"][s], 0.0)
                    assert f["grid_export_mw"][s] <= surplus + 1e-6, (seed, t, s)
            assert info["reward_terms"]["soc_shortfall_usd"] == 0.0
            t += 1
        assert cut > 0  # the rule did act: a 4 MW generator exceeds the small site's load at night
        init = np.array([x.soc_init_mwh for x in sc.sites])
        np.testing.assert_allclose(env.state_snapshot().soc_mwh, init, atol=1e-4)


def test_safety_layer_prevents_overflow_and_terminal_shortfall() -> None:
    env = CarbonAwareDCEnv(preset="paper")
    for seed in range(3):
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        done, shortfall = False, 0.0
        while not done:
            action = env.action_space.sample()
            action["route"] = np.ones((3, 3))  # ask for everything everywhere: overflows
            action["battery"] = -np.ones(3)  # and drain the batteries
            safe = project_action(action, obs, env.scenario)
            obs, _, done, _, info = env.step(safe)
            assert "serve_cut_gpus" not in info["repairs"]
            shortfall += info["reward_terms"]["soc_shortfall_usd"]
        assert shortfall == 0.0


def test_carbon_guard_blocks_starts_that_would_break_the_budget() -> None:
    from envs.presets import make_scenario

    sc = make_scenario("paper", 1006)
    for budget, expect_start in ((1.0, False), (None, True)):
        env = CarbonAwareDCEnv(scenario=sc.replace(carbon_budget_t=budget))
        obs, info = env.reset(seed=0)
        while not info["action_mask"][:, 1:].any():
            hold = {"start": np.zeros(6, dtype=np.int64), "route": np.eye(3), "battery": np.zeros(3)}
            obs, _, _, _, info = env.step({**hold, "generator": np.zeros(3)})
        j, s = np.argwhere(info["action_mask"][:, 1:])[0]
        action = {
            "start": np.zeros(6, dtype=np.int64),
            "route": np.eye(3),
            "battery": np.zeros(3),
            "generator": np.zeros(3),
        }
        action["start"][j] = 1 + s
        safe = project_action(action, obs, env.scenario, env.state_snapshot(), env.forecast())
        assert (safe["start"][j] > 0) == expect_start


def test_hyperparams_settings_reach_the_model() -> None:
    """The fine-tuning and from-scratch settings of agents/hyperparams/ppo.yml differ where learning
    from scratch needs it, and make_model builds the model with the values asked for."""
    ft, scratch = resolve_hyperparams("ppo"), resolve_hyperparams("ppo", "paper", "scratch")
    assert scratch["learning_rate"] > 10 * ft["learning_rate"]
    assert scratch["clip_range"] > ft["clip_range"] and scratch["log_std_init"] > ft["log_std_init"]
    for params in (ft, scratch):
        model = make_model("ppo", make_vec_env("paper", 1, seed=0), seed=0, hyperparams=params)
        assert model.learning_rate == params["learning_rate"] and model.n_steps == params["n_steps"]
        assert model.clip_range(1.0) == params["clip_range"]
        log_std = model.policy.log_std.detach().numpy()
        np.testing.assert_allclose(log_std, params["log_std_init"])
    over = resolve_hyperparams(
        "a2c", overrides=parse_hp(["n_steps=8", "learning_rate=3e-4", "net_arch=[32]"])
    )
    model = make_model("a2c", make_vec_env("paper", 1, seed=0), seed=0, hyperparams=over)
    assert model.n_steps == 8 and model.learning_rate == 3e-4
    assert model.policy.mlp_extractor.policy_net[0].out_features == 32


def test_hyperparams_unknown_key_names_key_and_file(tmp_path) -> None:
    bad = tmp_path / "ppo.yml"
    bad.write_text("default:\n  finetune: {learning_rate: 1.0e-5, clip_rnage: 0.1}\n  scratch: {}\n")
    with pytest.raises(ValueError, match=r"ppo\.yml.*'clip_rnage'"):
        load_hyperparams("ppo", "paper", "finetune", bad)
    bad.write_text("default:\n  finetune: {}\n  scrach: {}\n")
    with pytest.raises(ValueError, match="'scrach'"):
        load_hyperparams("ppo", "paper", "finetune", bad)
    with pytest.raises(ValueError, match=r"--hp.*'lr'"):
        resolve_hyperparams("ppo", overrides={"lr": 1e-3})
    with pytest.raises(ValueError, match="key=value"):
        parse_hp(["clip_range"])


def test_train_rejects_unknown_hp_before_any_work(tmp_path) -> None:
    out = tmp_path / "never"
    res = subprocess.run(
        [sys.executable, "train.py", "--out", str(out), "--hp", "clip_rnage=0.2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "'clip_rnage'" in res.stderr
    assert not out.exists()


class _Bar:
    """Stands in for SB3's tqdm progress bar: records its total and how far it got."""

    made: ClassVar[list[_Bar]] = []

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0
        _Bar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_progress_bar_ends_at_its_total(monkeypatch) -> None:
    """SB3 collects whole rollouts (n_steps x n_envs), so learn(40) with 16-step rollouts on 1 env
    runs 48 steps under a bar of 40; whole_rollouts gives learn the 48 it will run."""
    import stable_baselines3.common.callbacks as sb3_callbacks

    from agents.pipeline import rollout_steps, whole_rollouts

    monkeypatch.setattr(sb3_callbacks, "tqdm", _Bar)
    params = {**resolve_hyperparams("ppo"), "n_steps": 8, "batch_size": 8}
    model = make_model("ppo", make_vec_env("paper", 2, seed=0), seed=0, hyperparams=params)
    assert rollout_steps(model) == 16 and whole_rollouts(model, 40) == 48 and whole_rollouts(model, 48) == 48
    model.learn(40, progress_bar=True)
    assert (_Bar.made[-1].total, _Bar.made[-1].n) == (40, 48)  # the overshoot: 48/40
    model.learn(whole_rollouts(model, 40), progress_bar=True, reset_num_timesteps=False)
    assert (_Bar.made[-1].total, _Bar.made[-1].n) == (48, 48)


def _tiny_config(out: Path, **changes) -> object:
    from agents.pipeline import TrainConfig

    fields = dict(
        out=str(out),
        bc_scenarios=2,
        bc_epochs=2,
        dagger_rounds=0,
        eval_scenarios=1,
        ensemble=1,
        timesteps=480,
        eval_freq=480,
        checkpoint_freq=480,
        value_pretrain_scenarios=1,
        workers=2,
        progress_bar=False,
    )
    fields.update(changes)
    return TrainConfig(**fields)


@pytest.mark.slow
def test_training_log_csv_has_every_stage(tmp_path) -> None:
    import pandas as pd

    from agents.pipeline import train_agent
    from agents.train_log import CSV_COLUMNS

    out = tmp_path / "run"
    train_agent(_tiny_config(out))
    log = pd.read_csv(out / "train_log.csv")
    assert tuple(log.columns) == CSV_COLUMNS == ("wall_s", "stage", "step", "key", "value")
    bc = log[log.stage == "bc"]
    assert set(bc.key) >= {"bc/train_loss", "bc/val_loss", "bc/val_start_acc"}
    assert sorted(set(bc[bc.key == "bc/train_loss"].step)) == [0, 1]  # one row per epoch
    history = json.loads((out / "eval_history.json").read_text())
    val = log[log.key == "validation/pct_of_oracle"]
    assert list(val.stage) == [h["label"] for h in history] == ["bc", "ppo"]
    np.testing.assert_allclose(val.value, [h["pct_of_oracle"] for h in history])
    assert list(val.step) == [0, 1]
    finetune = log[log.stage == "finetune"]
    assert {"train/approx_kl", "rollout/ep_rew_mean"} <= set(finetune.key)
    assert finetune.step.max() == 480 and log.wall_s.is_monotonic_increasing

    # A resumed run appends to the same file, under the one header.
    train_agent(_tiny_config(out, timesteps=960), resume=True)
    text = (out / "train_log.csv").read_text()
    assert text.count("wall_s,stage") == 1
    assert pd.read_csv(out / "train_log.csv").query("stage == 'finetune'").step.max() == 960


def test_tensorboard_needs_its_package(tmp_path, capsys) -> None:
    import train
    from agents.train_log import tensorboard_problem

    if tensorboard_problem() is None:
        pytest.skip("tensorboard is installed")
    with pytest.raises(SystemExit):
        train.parse_args(["--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "run")])
    assert "--tensorboard: needs the tensorboard package" in capsys.readouterr().err


@pytest.mark.slow
def test_tensorboard_gets_event_files(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from agents.pipeline import train_agent

    train_agent(_tiny_config(tmp_path / "run", tensorboard=str(tmp_path / "tb")))
    assert list((tmp_path / "tb" / "run").glob("events.out.tfevents.*"))
