"""Environment speed: raw step throughput beside CartPole-v1, reset time, memory of one env.

Actions are sampled before timing (a pool of 512, cycled) so that sampling Dict spaces is not
measured; only ``step`` calls are timed ("raw" throughput); resets are timed separately.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import gymnasium as gym
import numpy as np

from bench.common import Stat, table
from envs import CarbonAwareDCEnv, make_scenario
from envs.wrappers import make_flat_env

POOL = 512


def steps_per_second(env: gym.Env, n_steps: int, seed: int = 0) -> float:
    """Steps per second of ``env.step`` alone, over ``n_steps`` steps (resets excluded)."""
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(POOL)]
    env.reset(seed=seed)
    spent = 0.0
    for i in range(n_steps):
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(actions[i % POOL])
        spent += time.perf_counter() - t0
        if terminated or truncated:
            env.reset()
    return n_steps / spent


def reset_ms(env: gym.Env, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        env.reset(seed=i)
    return 1000.0 * (time.perf_counter() - t0) / n


def memory_mb(preset: str, n_steps: int = 500) -> float:
    """Peak Python-tracked memory (MiB) to build one env, reset it and run ``n_steps`` steps."""
    tracemalloc.start()
    env = CarbonAwareDCEnv(preset=preset)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(n_steps):
        _, _, term, _, _ = env.step(env.action_space.sample())
        if term:
            env.reset()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def run(presets: tuple[str, ...] = ("paper", "week", "large"), repeats: int = 5, n_steps: int = 4000) -> str:
    """Measure and return the Markdown section."""
    rows: list[list[str]] = []
    cart_all: list[float] = []

    def cartpole() -> float:
        value = steps_per_second(gym.make("CartPole-v1").unwrapped, 4 * n_steps)
        cart_all.append(value)
        return value

    targets = {"paper": 8, "week": 20, "large": None}
    for preset in presets:
        fixed = make_scenario(preset, 0)
        for api in ("Dict", "flat"):

            def one(api=api, preset=preset, fixed=fixed) -> float:
                if api == "Dict":
                    env = CarbonAwareDCEnv(scenario=fixed, preset=preset)
                else:
                    env = make_flat_env(scenario=fixed, preset=preset, reward_scale=1.0)
                return steps_per_second(env, n_steps)

            # CartPole and the env alternate, and the ratio is taken per pair: a change of the
            # machine's load during the run then moves both sides of a ratio alike.
            pairs = [(cartpole(), one()) for _ in range(repeats)]
            sps = Stat([env_sps for _, env_sps in pairs])
            ratio = statistics.median(env_sps / cart_sps for cart_sps, env_sps in pairs)
            target = targets.get(preset)
            verdict = f"1/{1 / ratio:.1f}" + (
                "" if target is None else (" ✓" if ratio >= 1 / target else f" ✗ (target 1/{target})")
            )
            reset_draw = Stat([reset_ms(CarbonAwareDCEnv(preset=preset), 5)])
            reset_fixed = Stat([reset_ms(CarbonAwareDCEnv(scenario=fixed, preset=preset), 5)])
            rows.append(
                [
                    f"{preset} ({api})",
                    f"{fixed.S}×{fixed.T}×{fixed.J}",
                    sps.fmt(),
                    verdict,
                    f"{reset_fixed.fmt('.1f')} / {reset_draw.fmt('.1f')}",
                    f"{memory_mb(preset):.1f}" if api == "Dict" else "-",
                ]
            )
    rows.insert(0, ["CartPole-v1 (reference)", "-", Stat(cart_all).fmt(), "1", "-", "-"])
    head = (
        "### Environment\n\nRaw `step` throughput with pre-sampled random actions (median of "
        f"{repeats} runs of {n_steps:,} steps, min–max in brackets). Each run is paired with a run "
        "of Gymnasium's CartPole-v1 just before it, and \"vs CartPole\" is the median of the pairs' "
        "ratios (robust to load that changes during the run). The flat rows time the bare flat "
        "wrapper (reward_scale=1). Reset: ms with a fixed scenario / drawing a new preset scenario. "
        "Memory: peak traced by tracemalloc for one env over 500 steps.\n\n"
    )
    return head + table(
        ["env", "S×T×J", "steps/s", "vs CartPole", "reset ms (fixed / draw)", "memory MiB"], rows
    )


if __name__ == "__main__":
    print(run(repeats=int(np.clip(3, 1, 9))))
