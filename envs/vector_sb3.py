"""Stable-Baselines3 ``VecEnv`` adapter of the flat batched env, so ``PPO("MlpPolicy", vec_env)`` trains
on all lanes at numpy speed.

SB3 resets a finished sub-env in the same step and passes the terminal observation in
``infos[i]["terminal_observation"]``; the adapter runs the flat vector env with
``autoreset_mode=SAME_STEP`` for exactly that. ``infos`` are per-lane dicts as SB3 expects, holding
only ``terminal_observation`` and ``TimeLimit.truncated`` (building the single env's full ``info``
for every lane would cost more than the step; the batched ``info`` of the last step is in
``adapter.last_info``). Wrap it in SB3's ``VecMonitor`` for episode returns. Importing this module
imports SB3 (and torch); ``import envs`` does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from envs.vector_flat import CarbonAwareDCFlatVectorEnv
from envs.wrappers import DEFAULT_REWARD_SCALE


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a :class:`~envs.vector_flat.CarbonAwareDCFlatVectorEnv` in ``SAME_STEP``
    autoreset mode. ``seed(s)`` then ``reset()`` seeds lane i with ``s + i`` (as ``DummyVecEnv``)."""

    def __init__(self, venv: CarbonAwareDCFlatVectorEnv) -> None:
        if not isinstance(venv, CarbonAwareDCFlatVectorEnv):
            raise TypeError(f"venv: need a CarbonAwareDCFlatVectorEnv (got {type(venv).__name__})")
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("venv: SB3 needs autoreset_mode=SAME_STEP (SB3 resets in the step that ends)")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}

    def reset(self) -> np.ndarray:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, self.last_info = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        self.last_info = info
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = info["final_obs"]
            for i in np.flatnonzero(dones).tolist():
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError("set_attr: the lanes share one vector env; set the attribute on adapter.venv")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kw: Any
    ) -> list[Any]:
        raise AttributeError("env_method: the lanes share one vector env; call the method on adapter.venv")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


def make_sb3_vec_env(
    num_envs: int = 64, reward_scale: float = DEFAULT_REWARD_SCALE, seed: int | None = None, **kwargs: Any
) -> SB3VecEnv:
    """An SB3 ``VecEnv`` of ``num_envs`` flat lanes (``CarbonAwareDCFlatVectorEnv`` arguments in
    ``kwargs``), rewards scaled by ``reward_scale`` (default 1e-4, as ``agents.sb3.make_vec_env``)."""
    venv = CarbonAwareDCFlatVectorEnv(
        num_envs, reward_scale=reward_scale, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs
    )
    out = SB3VecEnv(venv)
    if seed is not None:
        out.seed(seed)
    return out
