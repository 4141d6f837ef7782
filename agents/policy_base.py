"""Shared plumbing of the built-in controllers (:mod:`agents.baselines`, :mod:`agents.carbon_greedy`).

:class:`EnvPolicy` gives every controller SB3's ``predict`` protocol on top of one ``act(period)``
method, the env's job-slot count and an idle action; the helpers compute what the rules need from
an :class:`~envs.scenario.OperatingState` (GPUs and IT MW held by jobs already running) and turn
served GPUs into the action's route fractions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.scenario import OperatingState, Scenario

FORECAST_SERIES = (
    "price_import",
    "price_export",
    "carbon_intensity",
    "renewable_mw",
    "cooling",
    "demand_gpus",
)
"""The keys of ``env.unwrapped.forecast()`` the controllers read (each (rows, H) from the current period)."""


def obs_period(obs: dict[str, np.ndarray]) -> int:
    """The current period from a Dict observation (its ``period`` entry, any shape)."""
    return int(np.asarray(obs["period"]).ravel()[0])


def held_gpus(sc: Scenario, state: OperatingState, n: int) -> np.ndarray:
    """(S, n) GPUs held in periods ``state.period .. +n-1`` by jobs started before ``state.period``."""
    t0 = state.period
    held = np.zeros((sc.S, n))
    for j, s, tau in state.job_starts:
        lo, hi = max(tau, t0), min(tau + sc.jobs[j].duration, t0 + n)
        if lo < hi:
            held[s, lo - t0 : hi - t0] += sc.jobs[j].gpus
    return held


def held_mw(sc: Scenario, state: OperatingState, n: int) -> np.ndarray:
    """(S, n) IT MW of jobs started before ``state.period``, over the next ``n`` periods."""
    t0 = state.period
    held = np.zeros((sc.S, n))
    for j, s, tau in state.job_starts:
        lo, hi = max(tau, t0), min(tau + sc.jobs[j].duration, t0 + n)
        if lo < hi:
            held[s, lo - t0 : hi - t0] += sc.job_power_mw[j, s]
    return held


def route_fractions(serve: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """(K, S) route fractions ``serve / demand`` (0 where the demand is 0)."""
    return np.divide(serve, demand[:, None], out=np.zeros_like(serve), where=demand[:, None] > 0)


class EnvPolicy:
    """Shared plumbing: the wrapped env's base, the number of job slots, an idle action."""

    name = "policy"

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.base = env.unwrapped
        self.n_slots = int(self.base.action_space["start"].shape[0])

    @property
    def scenario(self) -> Scenario:
        return self.base.scenario

    def idle_action(self) -> dict[str, np.ndarray]:
        sc = self.scenario
        return {
            "start": np.zeros(self.n_slots, dtype=np.int64),
            "route": np.zeros((sc.K, sc.S)),
            "battery": np.zeros(sc.S),
            "generator": np.zeros(sc.S),
        }

    def predict(
        self,
        obs: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, np.ndarray], Any]:
        """SB3's protocol: the Dict action for one Dict observation (``state`` passes through)."""
        return self.act(obs_period(obs)), state

    def act(self, period: int) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError
