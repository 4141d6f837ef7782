"""Render speed: milliseconds per ``rgb_array`` frame (the 1280x720 dashboard of :mod:`envs.render`).

The env builds its figure once per scenario and updates artists per frame, so the first frame (the
figure build) is reported apart from the steady-state frames of an episode.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import table
from envs import CarbonAwareDCEnv, make_scenario

TARGET_MS = 50.0
"""Issue 16: at most 50 ms per frame."""


def frame_ms(preset: str, frames: int = 24) -> tuple[float, float, tuple[int, ...]]:
    """(first frame ms, median ms of the next ``frames``, frame shape) on preset seed 0."""
    env = CarbonAwareDCEnv(scenario=make_scenario(preset, 0), preset=preset, render_mode="rgb_array")
    env.action_space.seed(0)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    tick = time.perf_counter()
    frame = env.render()
    first = 1000.0 * (time.perf_counter() - tick)
    times = []
    for _ in range(frames):
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        if terminated:
            env.reset()
            env.step(env.action_space.sample())
        tick = time.perf_counter()
        env.render()
        times.append(1000.0 * (time.perf_counter() - tick))
    return first, float(np.median(times)), tuple(frame.shape)


def run(presets: tuple[str, ...] = ("paper", "week", "large"), frames: int = 24) -> str:
    """Measure and return the Markdown section."""
    rows = []
    for preset in presets:
        first, median, shape = frame_ms(preset, frames)
        verdict = "✓" if median <= TARGET_MS else "✗"
        rows.append([preset, f"{shape[1]}×{shape[0]}", f"{first:.0f}", f"{median:.1f} {verdict}"])
    return "\n".join(
        [
            "### Render",
            "",
            f'`render_mode="rgb_array"` frames on seed 0 (median of {frames} frames after the first; '
            f"target ≤ {TARGET_MS:.0f} ms per frame).",
            "",
            table(["preset", "frame px", "first frame ms (figure build)", "ms per frame"], rows),
        ]
    )


if __name__ == "__main__":
    print(run())
