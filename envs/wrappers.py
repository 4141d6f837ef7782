"""Wrappers: a flat SB3-ready interface to :class:`~envs.dc_env.CarbonAwareDCEnv`, reward scaling.

- :class:`FlatObsActionWrapper` - a flat float32 ``Box`` observation and a single ``Box[-1, 1]``
  action decoded to the Dict action (``docs/env.md``, "Flat interface"). ``encode_action`` maps a
  Dict action back to the flat one, so that behaviour cloning can learn from oracle actions.
- :class:`ScaleReward` - multiply the reward by a constant (learning works better with rewards of
  order 1 than with USD); the env itself always reports USD.
- :func:`make_flat_env` - both, the entry point of ``CarbonAwareDC-Flat-v0`` (rewards scaled by
  :data:`DEFAULT_REWARD_SCALE` unless ``reward_scale`` says otherwise).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.dc_env import CarbonAwareDCEnv

DEFAULT_REWARD_SCALE = 1e-4
"""USD -> learning units: a paper period is worth O(1e3-1e4) USD, so rewards become O(0.1-1)."""

FLAT_SKIPPED_KEYS = ("period",)
"""Dict observation keys left out of the flat observation (``period`` is raw and unscaled; the
scaled ``time`` carries it)."""


class FlatObsActionWrapper(gym.Wrapper):
    """Flat float32 observation and a single ``Box[-1, 1]`` action for SB3.

    Observation: the Dict observation's arrays, raveled and concatenated in the order of
    ``obs_keys`` (the Dict order without ``period``); ``obs_layout[key] = (slice, shape)``.

    Action (length ``slots*(S+1) + K*(S+1) + 2*S``), in this order:

    - ``start`` scores, (slots, S+1): choice = argmax (0 = hold, 1+s = site s); a choice the current
      ``action_mask`` forbids falls back to hold;
    - ``route`` weights, (K, S+1): ``w = (a + 1) / 2``; column 0 is the *unserved* option and the
      fraction served at site s is ``w[1+s] / sum(w)`` (all zero -> nothing served);
    - ``battery``, (S,): passed through (already in [-1, 1]);
    - ``generator``, (S,): ``(a + 1) / 2``.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(base, CarbonAwareDCEnv):
            raise TypeError(f"FlatObsActionWrapper needs a CarbonAwareDCEnv (got {type(base).__name__})")
        self.S, self.K, self.n_slots = base.S, base.K, base.n_slots
        obs_space = base.observation_space
        self.obs_keys = tuple(k for k in obs_space.spaces if k not in FLAT_SKIPPED_KEYS)
        self.obs_layout: dict[str, tuple[slice, tuple[int, ...]]] = {}
        lows, highs, offset = [], [], 0
        for key in self.obs_keys:
            box = obs_space[key]
            size = int(np.prod(box.shape))
            self.obs_layout[key] = (slice(offset, offset + size), box.shape)
            lows.append(np.ravel(box.low).astype(np.float32))
            highs.append(np.ravel(box.high).astype(np.float32))
            offset += size
        self.observation_space = spaces.Box(np.concatenate(lows), np.concatenate(highs), dtype=np.float32)
        S1 = self.S + 1
        self._n_start = self.n_slots * S1
        self._n_route = self.K * S1
        self.action_layout = {
            "start": (slice(0, self._n_start), (self.n_slots, S1)),
            "route": (slice(self._n_start, self._n_start + self._n_route), (self.K, S1)),
            "battery": (
                slice(self._n_start + self._n_route, self._n_start + self._n_route + self.S),
                (self.S,),
            ),
            "generator": (
                slice(self._n_start + self._n_route + self.S, self._n_start + self._n_route + 2 * self.S),
                (self.S,),
            ),
        }
        n_act = self._n_start + self._n_route + 2 * self.S
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), dtype=np.float32)
        self._mask: np.ndarray | None = None
        self._slot_rows = np.arange(self.n_slots)
        self._flat_obs = np.zeros(self.observation_space.shape, dtype=np.float32)

    # ------------------------------------------------------------------ observation
    def flatten_obs(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The flat float32 observation of a Dict observation."""
        out = np.empty_like(self._flat_obs)
        for key, (sl, _) in self.obs_layout.items():
            out[sl] = obs[key].reshape(-1)
        return out

    # ------------------------------------------------------------------ action
    def decode_action(self, action: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The Dict action of a flat action; ``mask`` (slots, S+1) turns forbidden starts into holds."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: shape {a.shape}, expected {self.action_space.shape}")
        if not np.isfinite(a).all():
            raise ValueError("action: NaN or inf")
        a = np.minimum(np.maximum(a, -1.0), 1.0)
        S1 = self.S + 1
        start = a[: self._n_start].reshape(self.n_slots, S1).argmax(axis=1)
        if mask is not None:
            start = start * mask[self._slot_rows, start]
        # (a + 1) / 2 weights; the factor 1/2 cancels in the normalisation. All-zero rows stay 0.
        w = a[self._n_start : self._n_start + self._n_route].reshape(self.K, S1) + 1.0
        total = np.maximum(np.add.reduce(w, axis=1), 1e-300)
        off = self._n_start + self._n_route
        return {
            "start": start,
            "route": w[:, 1:] / total[:, None],
            "battery": a[off : off + self.S],
            "generator": (a[off + self.S : off + 2 * self.S] + 1.0) * 0.5,
        }

    def encode_action(self, action: dict[str, Any]) -> np.ndarray:
        """A flat action that decodes to ``action`` (starts exactly, the rest to float32 precision).

        Route fractions are made valid first as the env would (clipped to [0, 1], a row summing
        above 1 scaled to 1); the unserved share ``1 - sum`` becomes the weight of column 0.
        """
        S1 = self.S + 1
        start = np.asarray(action["start"], dtype=np.int64).reshape(self.n_slots)
        scores = -np.ones((self.n_slots, S1))
        scores[np.arange(self.n_slots), np.clip(start, 0, self.S)] = 1.0
        frac = np.clip(np.asarray(action["route"], dtype=np.float64).reshape(self.K, self.S), 0.0, 1.0)
        frac = frac / np.maximum(frac.sum(axis=1, keepdims=True), 1.0)
        shares = np.concatenate([np.maximum(1.0 - frac.sum(axis=1, keepdims=True), 0.0), frac], axis=1)
        weights = shares / shares.max(axis=1, keepdims=True)
        battery = np.clip(np.asarray(action["battery"], dtype=np.float64).reshape(self.S), -1.0, 1.0)
        gen = np.clip(np.asarray(action["generator"], dtype=np.float64).reshape(self.S), 0.0, 1.0)
        flat = np.concatenate([scores.ravel(), (2.0 * weights - 1.0).ravel(), battery, 2.0 * gen - 1.0])
        return flat.astype(np.float32)

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._mask = info["action_mask"]
        return self.flatten_obs(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(self.decode_action(action, self._mask))
        self._mask = info["action_mask"]
        return self.flatten_obs(obs), reward, terminated, truncated, info


class ScaleReward(gym.RewardWrapper):
    """Multiply the reward by ``scale`` (default :data:`DEFAULT_REWARD_SCALE`); ``info`` stays in USD."""

    def __init__(self, env: gym.Env, scale: float = DEFAULT_REWARD_SCALE) -> None:
        super().__init__(env)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale: must be a positive finite number (got {scale!r})")
        self.scale = float(scale)

    def reward(self, reward: float) -> float:
        return reward * self.scale


def make_flat_env(reward_scale: float = DEFAULT_REWARD_SCALE, **env_kwargs: Any) -> gym.Env:
    """``CarbonAwareDCEnv(**env_kwargs)`` behind :class:`FlatObsActionWrapper`, its reward in learning
    units: the entry point of ``CarbonAwareDC-Flat-v0``.

    ``reward_scale`` (default :data:`DEFAULT_REWARD_SCALE`, 1e-4 per USD, what the project's training
    uses) multiplies the reward through :class:`ScaleReward`, placed under the flat wrapper
    (``FlatObsActionWrapper(ScaleReward(env))``). Why a default other than 1: a ``paper`` period is
    worth thousands of USD, and PPO on raw USD rewards fits its value function to returns of order
    1e5 (``value_loss`` around 1e9, explained variance near 0 after 5k steps), while at 1e-4 the
    returns are O(1-10). ``reward_scale=1.0`` gives raw USD (no :class:`ScaleReward`).
    ``info["reward_terms"]`` is always in USD, so scores (``agents.OracleScore``, ``evaluate.py``)
    never depend on the scale."""
    env: gym.Env = CarbonAwareDCEnv(**env_kwargs)
    if reward_scale != 1.0:
        env = ScaleReward(env, reward_scale)
    return FlatObsActionWrapper(env)
