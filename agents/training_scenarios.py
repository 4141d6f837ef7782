"""Where a training run's scenarios come from: preset seeds (the default) or a user's scenario source.

Every stage of :mod:`agents.pipeline` refers to a scenario by an integer *key*:

- **preset runs** (``train.py --preset paper``, the default): the key is the preset seed and the
  scenario is ``make_scenario(preset, key)``, exactly as before; the seeds come from
  :func:`agents.imitation.draw_training_seeds` (validation first, then the dataset, then DAgger).
- **source runs** (``train.py --scenario PATH``: a scenario JSON, a folder, or a data spec YAML,
  :func:`envs.sources.load_scenarios`): the key is the scenario's index in
  :attr:`TrainingScenarios.names`. The validation scenarios are the first ``eval_scenarios`` of the
  source's *validation* split; the dataset and DAgger scenarios come from its *train* split, drawn
  with ``SeedSequence(seed)`` (a data spec: random windows with their own workload draws, named
  ``<window>~draw<i>``; files: the train files in a seeded order, each once before any repeats).
  The *held-out* split is never used; its names are recorded so that a run can show it. Each
  scenario carries the source's name for it (a file's stem, a window's name), so results, caches
  and forecast-error draws (:func:`agents.imitation.noise_seed`) follow it.

Scenarios of one run must share their sizes (sites, inference classes, job slots, periods): one
network sees them all. The env then takes its shapes from the scenario (``preset=None``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from envs.presets import PRESETS
from envs.scenario import Scenario, ScenarioError
from envs.sources import FileSource, ScenarioSource, load_scenarios

SOURCE_DRAW_KEY = 0x5C
"""``spawn_key`` of the draws of a run's training scenarios from a source (apart from other streams)."""
RESET_DRAW_KEY = 0x5D
"""``spawn_key`` of the fine-tuning env's per-reset draws from a source."""


def scenario_digest(sc: Scenario) -> str:
    """16 hex digits of the SHA-256 of the scenario's JSON form (cache keys, resume checks)."""
    return hashlib.sha256(json.dumps(sc.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def sizes(sc: Scenario) -> tuple[int, int, int, int]:
    """``(S, K, J, T)``: what fixes the observation and action spaces."""
    return (sc.S, sc.K, sc.J, sc.T)


@dataclass
class TrainingScenarios:
    """The scenarios of a run by key (see the module docstring).

    ``preset``: the preset of a preset run (None for a source run). ``names`` / ``by_key``: a source
    run's scenarios; ``source``: the source itself (for the fine-tuning env's draws); ``warnings``:
    what the run should say about them (e.g. an unsplit source).
    """

    preset: str | None
    names: list[str] = field(default_factory=list)
    by_key: dict[int, Scenario] = field(default_factory=dict)
    source: ScenarioSource | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def is_source(self) -> bool:
        return self.preset is None

    def scenario(self, key: int) -> Scenario:
        if self.preset is not None:
            from envs.presets import make_scenario

            return make_scenario(self.preset, int(key))
        return self.by_key[int(key)]

    def mapping(self) -> Mapping[int, Scenario] | None:
        """What the dataset and DAgger functions take as ``scenarios`` (None: preset seeds)."""
        return None if self.preset is not None else self.by_key

    def shape(self) -> Scenario | None:
        """A scenario whose sizes every scenario of the run shares (None for a preset run)."""
        return None if self.preset is not None else self.by_key[0]

    def export_preset(self) -> str | None:
        """The preset whose spaces equal this run's (what a pickle-free policy file records), or None
        when no preset has the same sizes."""
        if self.preset is not None:
            return self.preset
        want = sizes(self.by_key[0])
        return next((name for name, p in PRESETS.items() if (p["S"], p["K"], p["J"], p["T"]) == want), None)

    def digest(self, keys: Sequence[int]) -> str:
        """A digest of the scenarios behind ``keys`` (a resumed run checks its source is unchanged)."""
        h = hashlib.sha256()
        for key in keys:
            h.update(scenario_digest(self.scenario(key)).encode())
        return h.hexdigest()[:16]


def _renamed(sc: Scenario, i: int) -> Scenario:
    """A drawn spec window named uniquely by its draw index (``...~draw`` -> ``...~draw<i>``)."""
    return sc.replace(name=f"{sc.name}{i}" if sc.name.endswith("~draw") else f"{sc.name}~{i}")


def source_plan(
    path: str, seed: int, n_validation: int, n_train: int
) -> tuple[TrainingScenarios, dict[str, Any], list[str]]:
    """Load the source at ``path`` and draw a run's scenarios from it.

    Returns the run's scenarios, the ``validation`` keys and the ``train`` keys (``n_train`` of them,
    in draw order: the caller cuts them into the dataset and the DAgger rounds), and warnings (an
    unsplit source: its validation scenarios are training scenarios). Raises ``ScenarioError`` for
    a source without validation or training scenarios, or with scenarios of different sizes.
    """
    source = load_scenarios(path)
    unsplit = isinstance(source, FileSource) and source.split_kind is None
    warnings = []
    if unsplit:
        warnings.append(
            f"{path} has no train/ validation/ heldout/ sub-folders: validation scenarios are training "
            "scenarios (in-sample scores); split the folder to keep them apart"
        )
    val_part, train_part = source.split("validation"), source.split("train")
    val_names = val_part.names()[:n_validation]
    if not val_names:
        raise ScenarioError(f"scenario: {path} has no validation scenarios (a validation split is needed)")
    if not train_part.names() and n_train > 0:
        raise ScenarioError(f"scenario: {path} has no training scenarios (a train split is needed)")
    names: list[str] = []
    by_key: dict[int, Scenario] = {}
    key_of: dict[str, int] = {}

    def add(name: str, sc: Scenario) -> int:
        """The key of the scenario the source calls ``name`` (the scenario renamed so, if needed:
        results, caches and forecast-error draws then follow the file or window name)."""
        if name not in key_of:
            key_of[name] = len(names)
            by_key[len(names)] = sc if sc.name == name else sc.replace(name=name)
            names.append(name)
        return key_of[name]

    validation = [add(name, val_part.get(name)) for name in val_names]
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SOURCE_DRAW_KEY,)))
    train: list[int] = []
    if source.kind == "spec":
        for i in range(n_train):
            sc = _renamed(train_part.draw(rng), i)
            train.append(add(sc.name, sc))
    else:
        files = train_part.names()
        order: list[str] = []
        while len(order) < n_train:
            order += [files[i] for i in rng.permutation(len(files))]
        train = [add(name, train_part.get(name)) for name in order[:n_train]]
    scenarios = TrainingScenarios(None, names, by_key, source)
    first = by_key[0]
    for key, sc in by_key.items():
        if sizes(sc) != sizes(first):
            raise ScenarioError(
                f"scenario: {path}: the scenarios of a run must share their sizes (S, K, J, T) so that one "
                f"network sees them all: {names[0]!r} has {sizes(first)}, {names[key]!r} has {sizes(sc)}"
            )
    heldout = set(source.split("heldout").names())
    if not unsplit:
        used = {names[k] for k in validation + train}
        leaked = sorted(heldout & used)
        if leaked:  # cannot happen for a split source; a guard against a wrong split
            raise ScenarioError(f"scenario: {path}: held-out scenarios drawn for training: {leaked[:3]}")
    return scenarios, {"validation": validation, "train": train}, warnings


def source_record(scenarios: TrainingScenarios, plan: dict[str, Any]) -> dict[str, Any]:
    """What ``config.json`` records of a source run: the source, the names of every split's scenarios
    (keys are indices into ``names``) and a digest of their content."""
    assert scenarios.source is not None
    keys = [*plan["validation"], *plan["bc"], *(k for r in plan["dagger"] for k in r)]
    return {
        "source": scenarios.source.to_dict(),
        "names": scenarios.names,
        "validation": [scenarios.names[k] for k in plan["validation"]],
        "bc": [scenarios.names[k] for k in plan["bc"]],
        "dagger": [[scenarios.names[k] for k in r] for r in plan["dagger"]],
        "heldout": scenarios.source.split("heldout").names(),
        "digest": scenarios.digest(keys),
    }


# --------------------------------------------------------------------------- the fine-tuning env
class SourceDraws(gym.Wrapper):
    """Before every reset, pin the env to a new training scenario ``draw(rng)`` (a source run's
    fine-tuning env). ``rng`` restarts from ``SeedSequence(seed)`` on ``reset(seed=seed)``, so the
    draws follow the vec env's seed."""

    def __init__(self, env: gym.Env, draw: Callable[[np.random.Generator], Scenario]) -> None:
        super().__init__(env)
        self.draw = draw
        self.rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(RESET_DRAW_KEY,)))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self.rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(RESET_DRAW_KEY,)))
        self.env.unwrapped.set_scenario(self.draw(self.rng))
        return self.env.reset(seed=seed, options=options)


def make_train_vec_env(
    scenarios: TrainingScenarios,
    n_envs: int,
    seed: int,
    forecast_level: str | float | None = None,
    forecast_horizon: int = 24,
) -> Any:
    """The fine-tuning vec env: :func:`agents.sb3.make_vec_env` for a preset run; for a source run
    the same stack (safety layer, ``ScaleReward``, ``Monitor``) over envs that draw a new training
    scenario from the source's train split at every reset (:class:`SourceDraws`)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents import safety
    from agents.sb3 import make_vec_env
    from envs.wrappers import DEFAULT_REWARD_SCALE

    if scenarios.preset is not None:
        return make_vec_env(scenarios.preset, n_envs, seed, forecast_level=forecast_level)
    assert scenarios.source is not None
    train = scenarios.source.split("train")
    shape = scenarios.shape()

    def make() -> gym.Env:
        env = safety.safe_flat_env(
            None, shape, forecast_horizon, forecast_level, reward_scale=DEFAULT_REWARD_SCALE
        )
        return Monitor(SourceDraws(env, train.draw))

    venv = DummyVecEnv([make for _ in range(n_envs)])
    venv.seed(seed)
    return venv


def policy_extra(scenarios: TrainingScenarios, window_features: bool) -> dict[str, Any] | None:
    """:func:`agents.sb3.policy_features` for a preset run; for a source run the same features
    extractor sized from the run's scenarios (:func:`shape_policy_extra`)."""
    from agents.sb3 import policy_features

    if scenarios.preset is not None:
        return policy_features(scenarios.preset, window_features)
    return shape_policy_extra(scenarios.shape(), window_features)


def shape_policy_extra(shape: Scenario, window_features: bool) -> dict[str, Any] | None:
    """The start-window features extractor's ``policy_kwargs`` for scenarios of ``shape``'s sizes."""
    if not window_features:
        return None
    from agents.features import window_features_kwargs
    from agents.rollouts import flat_env

    return window_features_kwargs(flat_env(None, shape), shape.T)


def shape_vec_env(shape: Scenario, seed: int) -> Any:
    """A one-env vec env with the spaces of ``shape``'s sizes (an ensemble member's model needs
    the spaces only; it learns from the dataset)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents import safety

    venv = DummyVecEnv([lambda: Monitor(safety.safe_flat_env(None, shape))])
    venv.seed(seed)
    return venv


def item_scenario(item: Mapping[str, Any]) -> Scenario:
    """The scenario of a sweep work item: ``item["scenario"]`` (its JSON form, a source run) or
    preset ``item["preset"]`` seed ``item["seed"]``."""
    if item.get("scenario") is not None:
        return Scenario.from_dict(item["scenario"])
    from envs.presets import make_scenario

    return make_scenario(item["preset"], int(item["seed"]))


def scenario_item(preset: str | None, seed: int, scenarios: Mapping[int, Scenario] | None) -> dict[str, Any]:
    """The scenario part of a work item and the prefix of its cache key: preset seeds exactly as
    before (``paper-s1234``), a source's scenario by its content digest (``sc-<digest>``)."""
    if scenarios is None:
        return {"prefix": f"{preset}-s{int(seed)}", "preset": preset, "seed": int(seed)}
    sc = scenarios[int(seed)]
    return {
        "prefix": f"sc-{scenario_digest(sc)}",
        "preset": None,
        "seed": int(seed),
        "name": sc.name,
        "scenario": sc.to_dict(),
    }
