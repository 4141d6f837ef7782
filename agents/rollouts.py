"""Episodes in the flat env: replaying an oracle schedule, and rolling out a policy.

:func:`flat_env` builds the flat interface over the Dict env (with forecast errors when asked);
:func:`replay_schedule` steps it with an oracle schedule's exact actions (the replay identity: the
return equals the schedule's objective) and records the pairs; :func:`rollout` plays a flat policy
for one episode (optionally recording the state at every period, for DAgger). Forecast errors of an
episode come from :func:`noise_seed`, a function of the scenario's name and the draw only.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.dc_env import CarbonAwareDCEnv
from envs.scenario import OperatingState, Scenario
from envs.wrappers import FlatObsActionWrapper

EnvFactory = Callable[[str, Scenario | None, int], Any]
"""``(preset, scenario, forecast_horizon) -> flat env`` (see :func:`flat_env`)."""


PredictFn = Callable[[np.ndarray], np.ndarray]
"""A flat observation -> flat action function (e.g. ``lambda o: model.predict(o, deterministic=True)[0]``)."""


def flat_env(
    preset: str,
    scenario: Scenario | None = None,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
) -> FlatObsActionWrapper:
    """The flat interface over a Dict env of ``preset`` (optionally pinned to ``scenario``), with the
    forecast errors of ``forecast_level`` (:mod:`envs.forecast`; None = exact)."""
    return FlatObsActionWrapper(
        CarbonAwareDCEnv(
            scenario=scenario, preset=preset, forecast_horizon=forecast_horizon, forecast_level=forecast_level
        )
    )


def noise_seed(scenario: Scenario, draw: int = 0) -> int:
    """The ``reset`` seed of episode ``draw`` on ``scenario``: its forecast errors are a function of the
    scenario's name and the draw only, so a dataset, a DAgger round and a validation score are
    reproducible, and different scenarios do not share one error sequence."""
    return zlib.crc32(f"{scenario.name}#{draw}".encode())


@dataclass
class Episode:
    """One episode's flat observations and actions, periods and return (USD)."""

    obs: np.ndarray
    actions: np.ndarray
    periods: np.ndarray
    return_usd: float
    states: list[OperatingState] = field(default_factory=list)
    rewards_usd: np.ndarray | None = None


def reset_seed(scenario: Scenario, forecast_level: str | float | None, draw: int = 0) -> int:
    """The ``reset`` seed of draw ``draw`` on ``scenario``: :func:`noise_seed` with forecast errors,
    0 without (exact forecasts draw nothing)."""
    return noise_seed(scenario, draw) if forecast_level else 0


def record_dict_actions(
    act: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    scenario: Scenario,
    preset: str | None,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
    draw: int = 0,
) -> Episode:
    """Play one episode of ``scenario`` with an expert's Dict actions ``act(obs)`` and record the pairs
    as the datasets store them: ``flatten_obs`` of the Dict observation, ``encode_action`` of the
    Dict action; the env is stepped with the exact Dict action (so the return is the expert's).
    The forecast errors are draw ``draw``'s (:func:`reset_seed`)."""
    flat = flat_env(preset, scenario, forecast_horizon, forecast_level)
    base = flat.unwrapped
    obs, _ = base.reset(seed=reset_seed(scenario, forecast_level, draw))
    obs_rows, act_rows, rewards = [], [], []
    done = False
    while not done:
        action = act(obs)
        obs_rows.append(flat.flatten_obs(obs))
        act_rows.append(flat.encode_action(action))
        obs, reward, done, _, _ = base.step(action)
        rewards.append(reward)
    rewards_arr = np.asarray(rewards)
    return Episode(
        np.stack(obs_rows),
        np.stack(act_rows),
        np.arange(len(obs_rows)),
        float(rewards_arr.sum()),
        rewards_usd=rewards_arr,
    )


def replay_schedule(
    schedule: Any,
    preset: str,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
    draw: int = 0,
) -> Episode:
    """Replay an oracle schedule in an env built from ``schedule.scenario`` and record the pairs
    (:func:`record_dict_actions`).

    ``return_usd`` equals ``schedule.objective_usd`` (the replay identity). With ``forecast_level``
    the observations carry forecast errors (draw ``draw`` of :func:`noise_seed`) while the actions
    stay the clairvoyant oracle's (a privileged expert).
    """
    from agents.replay import OracleReplayPolicy

    replay = OracleReplayPolicy(schedule)
    return record_dict_actions(
        lambda obs: replay.predict(obs)[0],
        schedule.scenario,
        preset,
        forecast_horizon,
        forecast_level,
        draw,
    )


def rollout(
    predict: PredictFn,
    scenario: Scenario,
    preset: str,
    forecast_horizon: int = 24,
    record_states: bool = False,
    make_env: EnvFactory | None = None,
    forecast_level: str | float | None = None,
) -> Episode:
    """Run a flat policy for one episode of ``scenario``; record observations, actions and rewards (USD).

    ``record_states`` also keeps ``state_snapshot()`` at the start of every period (for DAgger).
    ``make_env(preset, scenario, forecast_horizon, forecast_level)`` builds the flat env (default
    :func:`flat_env`; ``agents.safety.safe_flat_env`` adds the safety layer); its reward must be in
    USD. With ``forecast_level`` the episode's forecast errors are those of :func:`noise_seed`.
    """
    flat = (make_env or flat_env)(preset, scenario, forecast_horizon, forecast_level)
    obs, _ = flat.reset(seed=noise_seed(scenario) if forecast_level else 0)
    obs_rows, act_rows, rewards, states = [], [], [], []
    done = False
    while not done:
        if record_states:
            states.append(flat.unwrapped.state_snapshot())
        action = np.asarray(predict(obs), dtype=np.float32)
        obs_rows.append(obs)
        act_rows.append(action)
        obs, reward, done, _, _ = flat.step(action)
        rewards.append(reward)
    rewards_arr = np.asarray(rewards)
    return Episode(
        np.stack(obs_rows),
        np.stack(act_rows),
        np.arange(len(obs_rows)),
        float(rewards_arr.sum()),
        states,
        rewards_arr,
    )
