"""The rgb_array frame (envs/render.py): size, and that it shows what happened."""

from __future__ import annotations

import numpy as np

from envs import CarbonAwareDCEnv, make_scenario


def _play(env: CarbonAwareDCEnv, steps: int, seed: int = 0) -> np.ndarray:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(steps):
        env.step(env.action_space.sample())
    return env.render()


def test_frame_is_a_legible_16_by_9_image() -> None:
    env = CarbonAwareDCEnv(scenario=make_scenario("paper", 0), preset="paper", render_mode="rgb_array")
    frame = _play(env, 1)
    assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # not a blank canvas


def test_frame_changes_with_the_episode_and_redraws_a_new_episode_identically() -> None:
    env = CarbonAwareDCEnv(scenario=make_scenario("paper", 0), preset="paper", render_mode="rgb_array")
    first = _play(env, 1)
    later = _play(env, 8)
    assert (first != later).any(axis=2).sum() > 1000  # stacks, SoC lines, jobs and title moved
    again = _play(env, 1)
    np.testing.assert_array_equal(first, again)  # a new episode clears the stack of the old one


def test_frame_for_another_scenario_is_rebuilt() -> None:
    env = CarbonAwareDCEnv(preset="paper", render_mode="rgb_array")
    a = _play(env, 2, seed=0)
    b = _play(env, 2, seed=1)
    assert env.unwrapped.scenario is not None
    assert a.shape == b.shape and (a != b).any()
