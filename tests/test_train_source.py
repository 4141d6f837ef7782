"""Training on a user's scenarios (train.py --scenario; agents/training_scenarios.py): the run's
validation, dataset and DAgger scenarios come from the source's splits, held-out never (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import train
from agents.pipeline import TrainConfig
from agents.training_scenarios import TrainingScenarios, make_train_vec_env, scenario_item, source_plan
from envs.presets import make_scenario
from envs.scenario import ScenarioError
from envs.sources import load_scenarios

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "data_spec.yaml"


def _start(name: str) -> pd.Timestamp:
    """The first period (UTC) of a window named ``spec@2023-03-05T07`` (optionally ``~draw<i>``)."""
    return pd.Timestamp(name.split("@")[1].split("~")[0] + ":00", tz="UTC")


def _hours(name: str, T: int = 24) -> set[pd.Timestamp]:
    return set(pd.date_range(_start(name), periods=T, freq="h"))


@pytest.fixture(scope="module")
def spec_plan():
    return source_plan(str(SPEC), seed=0, n_validation=16, n_train=12)


def test_spec_plan_keeps_train_validation_and_heldout_apart(spec_plan) -> None:
    scenarios, plan, warnings = spec_plan
    assert warnings == []
    split = load_scenarios(SPEC).to_dict()["split"]
    names = scenarios.names
    validation = [names[k] for k in plan["validation"]]
    train_names = [names[k] for k in plan["train"]]
    heldout = scenarios.source.split("heldout").names()
    # All three validation days (fewer than the 16 asked for), 12 distinct drawn training windows.
    assert validation == load_scenarios(SPEC).split("validation").names() and len(validation) == 3
    assert len(set(train_names)) == 12 and all("~draw" in n for n in train_names)
    lo, hi = (pd.Timestamp(x) for x in split["train"])
    for name in train_names:
        assert lo <= _start(name) and _start(name) + pd.Timedelta(hours=24) <= hi, name
    train_hours = set().union(*(_hours(n) for n in train_names))
    val_hours = set().union(*(_hours(n) for n in validation))
    held_hours = set().union(*(_hours(n) for n in heldout))
    assert not train_hours & val_hours and not train_hours & held_hours and not val_hours & held_hours
    assert not set(heldout) & (set(validation) | set(train_names))
    # Each name is one scenario: the drawn window's name is the scenario's, so forecast errors differ.
    assert [scenarios.scenario(k).name for k in plan["train"]] == train_names


def test_spec_plan_is_reproducible_from_the_seed(spec_plan) -> None:
    scenarios, plan, _ = spec_plan
    again, plan2, _ = source_plan(str(SPEC), seed=0, n_validation=16, n_train=12)
    assert again.names == scenarios.names and plan2 == plan
    assert again.digest(plan["train"]) == scenarios.digest(plan["train"])
    other, plan3, _ = source_plan(str(SPEC), seed=1, n_validation=16, n_train=12)
    assert [other.names[k] for k in plan3["train"]] != [scenarios.names[k] for k in plan["train"]]
    # A larger draw extends a smaller one (as preset seeds do).
    small, plan4, _ = source_plan(str(SPEC), seed=0, n_validation=16, n_train=5)
    assert [small.names[k] for k in plan4["train"]] == [scenarios.names[k] for k in plan["train"][:5]]


def test_folder_source_draws_each_train_file_once_before_repeating(tmp_path) -> None:
    for split, seeds in (("train", (1000, 1001, 1002)), ("validation", (1003,)), ("heldout", (5,))):
        (tmp_path / split).mkdir()
        for seed in seeds:
            make_scenario("paper", seed).to_json(tmp_path / split / f"day{seed}.json")
    scenarios, plan, warnings = source_plan(str(tmp_path), seed=0, n_validation=4, n_train=5)
    names = [scenarios.names[k] for k in plan["train"]]
    assert warnings == [] and sorted(names[:3]) == ["day1000", "day1001", "day1002"]
    assert len(scenarios.names) == 4  # a file drawn twice is one scenario (one key)
    assert [scenarios.names[k] for k in plan["validation"]] == ["day1003"]
    assert scenarios.export_preset() == "paper"  # same sizes: the policy file records paper's spaces


def test_unsplit_folder_warns_and_mixed_sizes_are_an_error(tmp_path) -> None:
    for seed in (1, 2):
        make_scenario("paper", seed).to_json(tmp_path / f"day{seed}.json")
    _, _, warnings = source_plan(str(tmp_path), seed=0, n_validation=1, n_train=2)
    assert "in-sample" in warnings[0]
    make_scenario("week", 3).to_json(tmp_path / "week3.json")
    with pytest.raises(ScenarioError, match=r"share their sizes .*'week3' has \(5, 6, 40, 168\)"):
        source_plan(str(tmp_path), seed=0, n_validation=3, n_train=3)


def test_fine_tuning_env_draws_training_windows_from_the_seed(spec_plan) -> None:
    scenarios = spec_plan[0]
    lo, hi = (pd.Timestamp(x) for x in scenarios.source.to_dict()["split"]["train"])

    def names(seed: int) -> list[str]:
        venv = make_train_vec_env(scenarios, 2, seed)
        venv.reset()
        out = [env.unwrapped.scenario.name for env in venv.envs]
        venv.reset()  # every reset draws again
        return out + [env.unwrapped.scenario.name for env in venv.envs]

    first = names(3)
    assert first == names(3) and len(set(first)) == 4
    assert all(lo <= _start(n) < hi for n in first)


def test_preset_runs_keep_their_seed_plan_and_cache_keys() -> None:
    cfg = TrainConfig(bc_scenarios=5, dagger_rounds=1, dagger_scenarios=2, eval_scenarios=2)
    scenarios, plan = cfg.scenario_plan()
    assert scenarios == TrainingScenarios("paper") and plan == cfg.seed_plan()
    assert scenario_item("paper", 1234, None) == {"prefix": "paper-s1234", "preset": "paper", "seed": 1234}
    assert scenarios.scenario(1234) == make_scenario("paper", 1234)


def test_scenario_flag_checks(capsys, tmp_path) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--scenario", str(SPEC), "--preset", "week", "--out", str(tmp_path)])
    assert "--scenario replaces --preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--scenario", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)])
    assert "--scenario: no such file or folder" in capsys.readouterr().err
    args = train.parse_args(["--scenario", str(SPEC), "--out", str(tmp_path)])
    cfg = train.config_from_args(args)
    assert cfg.scenario == str(SPEC) and cfg.preset is None


@pytest.mark.slow
def test_train_on_a_data_spec_end_to_end(tmp_path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "train.py",
        "--scenario",
        str(SPEC),
        "--out",
        str(out),
        "--bc-scenarios",
        "2",
        "--bc-epochs",
        "2",
        "--dagger-rounds",
        "1",
        "--dagger-scenarios",
        "1",
        "--dagger-epochs",
        "1",
        "--eval-scenarios",
        "2",
        "--ensemble",
        "1",
        "--workers",
        "2",
        "--no-progress",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["scenario"] == str(SPEC) and record["config"]["preset"] is None
    drawn = record["scenarios"]
    assert drawn["source"] == load_scenarios(SPEC).to_dict()
    used = set(drawn["validation"]) | set(drawn["bc"]) | {n for r in drawn["dagger"] for n in r}
    assert len(used) == 2 + 2 + 1
    assert not set(drawn["validation"]) & (set(drawn["bc"]) | set(drawn["dagger"][0]))
    assert (
        drawn["heldout"] == load_scenarios(SPEC).split("heldout").names() and not set(drawn["heldout"]) & used
    )
    # The dataset's seed column holds keys into the recorded names, and names its scenarios.
    with np.load(out / "bc_dataset.npz", allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        keys = sorted(set(data["seed"].tolist()))
    assert [drawn["names"][k] for k in keys] == drawn["bc"] + drawn["dagger"][0]
    assert {drawn["names"][int(k)] for k in meta["scenario_names"]} == set(drawn["bc"])
    assert meta["replay_max_rel_error"] < 1e-6  # the oracle's schedules replay to their objective
    history = json.loads((out / "eval_history.json").read_text())
    assert [h["label"] for h in history] == ["bc", "dagger1"]
    assert all(np.isfinite(h["pct_of_oracle"]) for h in history)
    # Same sizes as paper: the deployed policy is the pickle-free file, and plays a held-out window.
    assert record["summary"]["deployed"] == str(out / "policy" / "model.json")
    from agents.sb3 import load_policy
    from envs.dc_env import CarbonAwareDCEnv

    name, sc = load_scenarios(SPEC).heldout()[0]
    env = CarbonAwareDCEnv(scenario=sc)
    policy = load_policy(out / "policy" / "model.json", env)
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs)
    assert env.action_space.contains(action) and env.scenario.name == name

    again = subprocess.run(
        [*cmd[:2], "--resume", "--out", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["scenarios"]["digest"] == drawn["digest"]
