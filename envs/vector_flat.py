"""The flat batched env: :class:`CarbonAwareDCFlatVectorEnv`, lane i = ``CarbonAwareDC-Flat-v0``.

The observation is the (N, D) float32 buffer the vector env builds anyway (the layout of
``envs.wrappers.FlatObsActionWrapper``: the Dict keys in the space's order without ``period``), and
the action a (N, A) ``Box[-1, 1]`` decoded per lane exactly as ``FlatObsActionWrapper.decode_action``
does (start scores → argmax, masked by the current ``action_mask``; route weights ``(a+1)/2`` with an
*unserved* column; battery as is; generator ``(a+1)/2``). ``reward_scale`` (default
``DEFAULT_REWARD_SCALE``, 1e-4 per USD, as ``make_flat_env``) multiplies the reward as
``envs.wrappers.ScaleReward`` does; 1.0 gives USD; ``info`` stays in USD.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from envs.vector import CarbonAwareDCVectorEnv
from envs.wrappers import DEFAULT_REWARD_SCALE


class CarbonAwareDCFlatVectorEnv(CarbonAwareDCVectorEnv):
    """``CarbonAwareDCVectorEnv`` with flat float32 observations (N, D) and flat actions (N, A) in
    [-1, 1] (module docstring); every other argument, ``info`` and autoreset as the Dict env.
    ``reward_scale`` (default 1e-4 per USD, as ``CarbonAwareDC-Flat-v0``) multiplies the reward."""

    def __init__(self, num_envs: int = 1, reward_scale: float = DEFAULT_REWARD_SCALE, **kwargs: Any) -> None:
        if not np.isfinite(reward_scale) or reward_scale <= 0:
            raise ValueError(f"reward_scale: must be a positive finite number (got {reward_scale!r})")
        super().__init__(num_envs, **kwargs)
        self.reward_scale = float(reward_scale)
        self.dict_observation_space = self.single_observation_space
        self.dict_action_space = self.single_action_space
        obs = self.single_observation_space
        lows = [np.ravel(obs[key].low).astype(np.float32) for key in self.obs_layout]
        highs = [np.ravel(obs[key].high).astype(np.float32) for key in self.obs_layout]
        S, K, J = self.S, self.K, self.n_slots
        S1 = S + 1
        n_start, n_route = J * S1, K * S1
        self.action_layout = {
            "start": (slice(0, n_start), (J, S1)),
            "route": (slice(n_start, n_start + n_route), (K, S1)),
            "battery": (slice(n_start + n_route, n_start + n_route + S), (S,)),
            "generator": (slice(n_start + n_route + S, n_start + n_route + 2 * S), (S,)),
        }
        self.single_observation_space = spaces.Box(
            np.concatenate(lows), np.concatenate(highs), dtype=np.float32
        )
        self.single_action_space = spaces.Box(-1.0, 1.0, (n_start + n_route + 2 * S,), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        choice = np.arange(S1, dtype=np.int8)[None, :, None]
        self._choice_index = np.ascontiguousarray(np.broadcast_to(choice, (J, S1, self.num_envs)))
        self._slot_lane = np.arange(J * self.num_envs)  # flat (slot, lane) index of the (S+1, J, N) mask

    def decode_actions(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(start (J, N), route (K, S, N), battery (S, N), generator (S, N))`` (lane axis last) of flat
        actions (N, A), with the current action mask (``FlatObsActionWrapper.decode_action`` per lane)."""
        N, S, K, J = self.num_envs, self.S, self.K, self.n_slots
        S1 = S + 1
        a = np.asarray(actions)
        if a.shape != self.action_space.shape:
            raise ValueError(f"actions: shape {a.shape}, expected {self.action_space.shape}")
        if a.dtype.kind not in "fiu":
            raise ValueError(f"actions: must be numbers (got dtype {a.dtype})")
        lo, hi = a.min(), a.max()  # NaN propagates, so both are finite iff every value is
        if not (np.isfinite(lo) and np.isfinite(hi)):
            a = self._valid_rows(a, np.isfinite(a), "the flat action", "NaN or inf")
            lo, hi = a.min(), a.max()
        lay = self.action_layout
        n_start = lay["start"][0].stop
        if a.dtype.kind == "f" and a.dtype.itemsize <= 8 and lo >= -1.0 and hi <= 1.0:
            # In the box, clipping changes nothing: the start scores are compared in their own
            # precision (a float32's argmax is its float64 cast's), the rest cast to float64 (as the
            # wrapper does), lane axis last.
            scores = np.ascontiguousarray(a.T[:n_start]).reshape(J, S1, N)
            rest = np.ascontiguousarray(a.T[n_start:], dtype=np.float64)
        else:  # float64 (as the wrapper), clipped to [-1, 1], lane axis last: one pass
            full = np.clip(a.T, -1.0, 1.0, out=np.empty(a.shape[::-1]), casting="unsafe")
            scores, rest = full[:n_start].reshape(J, S1, N), full[n_start:]
        # argmax over the S+1 choices (the first maximum): the smallest index c among the maxima,
        # as min(c | 16·[not a maximum]) in int8 (a reduction over a leading axis; fast).
        best = scores == np.maximum.reduce(scores, axis=1)[:, None, :]
        start = np.minimum.reduce(self._choice_index | ((~best).view(np.int8) << 4), axis=1).astype(np.int64)
        # the mask at (start, slot, lane), as one take on flat indices
        start = start * self._mask.reshape(-1).take(start.ravel() * (J * N) + self._slot_lane).reshape(J, N)
        # (a + 1) / 2 weights; the factor 1/2 cancels in the normalisation. All-zero rows stay 0.
        route_at, battery_at, gen_at = (
            slice(lay[key][0].start - n_start, lay[key][0].stop - n_start)
            for key in ("route", "battery", "generator")
        )
        w = rest[route_at].reshape(K, S1, N) + 1.0
        total = np.maximum(np.add.reduce(w, axis=1), 1e-300)
        route = w[:, 1:, :] / total[:, None, :]
        return start, route, rest[battery_at], (rest[gen_at] + 1.0) * 0.5

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One period in every lane from flat actions (N, A)."""
        obs, reward, terminated, truncated, info = self._advance(*self.decode_actions(actions))
        if self.reward_scale != 1.0:
            reward = reward * self.reward_scale
        return obs, reward, terminated, truncated, info

    def _output_obs(self, flat: np.ndarray) -> np.ndarray:
        return flat

    def _lane_obs(self, rows: np.ndarray, periods: np.ndarray) -> list[np.ndarray]:
        return list(rows)


def make_flat_vector_env(num_envs: int = 1, **kwargs: Any) -> CarbonAwareDCFlatVectorEnv:
    """The ``vector_entry_point`` of ``CarbonAwareDC-Flat-v0`` (``gym.make_vec(...,
    vectorization_mode="vector_entry_point")``)."""
    return CarbonAwareDCFlatVectorEnv(num_envs, **kwargs)
