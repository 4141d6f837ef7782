"""Vector env speed (issue 17): env-steps/s of ``CarbonAwareDCVectorEnv`` at N = 1, 64, 1024, 4096 for
``paper`` and ``week`` (Dict and flat) beside Gymnasium's ``CartPoleVectorEnv`` at the same N in the
same run and beside a ``SyncVectorEnv`` of the single env; memory per lane; PPO training throughput
from scratch with the vector env vs ``SubprocVecEnv`` of the single flat env.

``python -m bench.vector_speed [--quick]`` prints the Markdown section; :func:`run` returns it.

Method: random batched actions are sampled before timing (a pool of 8, cycled) and ``step`` alone is
timed over many batched steps, autoresets included (every lane resets every T steps, as in
training); env-steps/s = batched steps × N / wall seconds, median of the repeats. The vector env
and the ``SyncVectorEnv`` draw from the same scenario seeds: the vector env from its pre-built pool,
each single env builds the scenario at its reset (as it always does). Each repeat of a vector env
is paired with a run of ``CartPoleVectorEnv`` at the same N just before it, and "/ CartPole" is the
median of the pairs' ratios, as in ``bench/env_speed.py``: this VM's speed drifts by 5-10 % within
an hour, so a CartPole measured minutes earlier is not the same machine.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Sequence

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

from bench.common import Stat, table
from envs import CarbonAwareDCEnv
from envs.vector import CarbonAwareDCVectorEnv, default_pool_size, draw_pool_seeds
from envs.vector_flat import CarbonAwareDCFlatVectorEnv
from envs.wrappers import make_flat_env

LANES = (1, 64, 1024, 4096)
ACTION_POOL = 8
TARGET_STEPS_PER_S = 1_000_000
"""paper, N = 4096: at least this many env-steps/s ..."""
CARTPOLE_FRACTION = 1 / 25
"""... and at least this fraction of CartPoleVectorEnv's rate at the same N in the same run."""
SYNC_SPEEDUP = 30.0
"""At N = 1024, at least this many times a SyncVectorEnv of the single env."""
PPO_TARGET = 5_000
"""PPO from scratch on 2 cores: env-steps/s."""


def env_steps_per_s(venv, env_steps: int, seed: int = 0) -> float:
    """Env-steps per second of ``venv.step`` over at least ``env_steps`` env-steps (>= 3 batched)."""
    venv.action_space.seed(seed)
    actions = [venv.action_space.sample() for _ in range(ACTION_POOL)]
    venv.reset(seed=seed)
    for i in range(2):
        venv.step(actions[i])
    n = max(3, env_steps // venv.num_envs)
    t0 = time.perf_counter()
    for i in range(n):
        venv.step(actions[i % ACTION_POOL])
    return n * venv.num_envs / (time.perf_counter() - t0)


def _cartpole(n: int, env_steps: int) -> float:
    """Env-steps/s of ``CartPoleVectorEnv(num_envs=n)``: 20x ``env_steps`` where CartPole is fast
    enough for them to matter (N >= 64); at N = 1 it steps ~35k/s, and 20x would cost minutes."""
    return env_steps_per_s(CartPoleVectorEnv(num_envs=n), (20 if n >= 64 else 1) * env_steps)


def _vector(preset: str, api: str, n: int, seeds: Sequence[int]):
    cls = CarbonAwareDCVectorEnv if api == "Dict" else CarbonAwareDCFlatVectorEnv
    return cls(n, preset=preset, scenario_seeds=seeds)


def _sync(preset: str, n: int, seeds: Sequence[int]) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([lambda: CarbonAwareDCEnv(preset=preset, scenario_seeds=seeds)] * n)


def _progress(what: str) -> None:
    print(f"[bench.vector_speed] {what}", file=sys.stderr, flush=True)


def _fmt(stat: Stat | None) -> str:
    return "-" if stat is None else f"{stat.median:,.0f}"


def steps_section(
    presets: Sequence[str], lanes: Sequence[int], repeats: int, env_steps: int, sync_lanes: Sequence[int]
) -> tuple[str, dict]:
    """The throughput table and the measurements ``{(row, n): Stat}``."""
    results: dict = {}
    for n in lanes:
        results["CartPoleVectorEnv", n] = Stat([_cartpole(n, env_steps) for _ in range(repeats)])
    for preset in presets:
        seeds = draw_pool_seeds(POOL_SIZES.get(preset) or default_pool_size(preset))
        for api in ("Dict", "flat"):
            for n in lanes:
                _progress(f"vector {preset} {api} N={n}")
                venv = _vector(preset, api, n, seeds)
                pairs = [(_cartpole(n, env_steps), env_steps_per_s(venv, env_steps)) for _ in range(repeats)]
                results[f"vector {preset} ({api})", n] = Stat([v for _, v in pairs])
                results[f"vector {preset} ({api}) / CartPole", n] = Stat([v / c for c, v in pairs])
        for n in sync_lanes:
            _progress(f"SyncVectorEnv {preset} N={n}")
            results[f"SyncVectorEnv {preset} (Dict)", n] = Stat(
                [env_steps_per_s(_sync(preset, n, seeds), env_steps // 10) for _ in range(repeats)]
            )
    rows = []
    names = dict.fromkeys(name for name, _ in results if not name.endswith("/ CartPole"))
    for name in names:
        rows.append([name, *(_fmt(results.get((name, n))) for n in lanes)])
    for preset in presets:
        for api in ("Dict", "flat"):
            name = f"vector {preset} ({api})"
            rows.append([f"{name} / CartPole", *(_paired(results, name, n) for n in lanes)])
        sync = f"SyncVectorEnv {preset} (Dict)"
        rows.append(
            [
                f"vector {preset} (Dict) / Sync",
                *(_ratio(results, f"vector {preset} (Dict)", sync, n) for n in lanes),
            ]
        )
    text = table(["env-steps/s (median)", *(f"N = {n:,}" for n in lanes)], rows)
    return text, results


def _ratio(results: dict, num: str, den: str, n: int) -> str:
    a, b = results.get((num, n)), results.get((den, n))
    if a is None or b is None:
        return "-"
    r = a.median / b.median
    return f"{r:,.1f}×"


def _paired(results: dict, name: str, n: int) -> str:
    """The median of the paired ratios ``name`` / CartPole at ``n`` lanes, as ``1/x``."""
    r = results.get((f"{name} / CartPole", n))
    return "-" if r is None else f"1/{1 / r.median:.1f}"


def verdicts(results: dict) -> list[str]:
    """The issue's targets, each with ✓ or ✗ (reported, never adjusted)."""
    out = []
    for api in ("Dict", "flat"):
        v = results.get((f"vector paper ({api})", 4096))
        paired = results.get((f"vector paper ({api}) / CartPole", 4096))
        if v is not None:
            ok = v.median >= TARGET_STEPS_PER_S
            out.append(
                f"- paper ({api}), N = 4096: {v.median:,.0f} env-steps/s, target ≥ 1,000,000 {_mark(ok)}"
            )
        if paired is not None:
            r = paired.median
            out.append(
                f"- paper ({api}), N = 4096: 1/{1 / r:.1f} of CartPoleVectorEnv (median of the paired "
                f"ratios), target ≥ 1/25 {_mark(r >= CARTPOLE_FRACTION)}"
            )
    v, s = results.get(("vector paper (Dict)", 1024)), results.get(("SyncVectorEnv paper (Dict)", 1024))
    if v is not None and s is not None:
        r = v.median / s.median
        out.append(
            f"- paper (Dict), N = 1024: {r:,.0f}× SyncVectorEnv, target ≥ 30× {_mark(r >= SYNC_SPEEDUP)}"
        )
    return out


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


POOL_SIZES: dict[str, int | None] = {"paper": None, "week": None}
"""Pool size per preset for the throughput runs (None: the env's default)."""


def memory_section(presets: Sequence[str], small: int = 64, large: int = 1024, steps: int = 30) -> str:
    """Peak traced memory per lane: (peak at ``large`` lanes - peak at ``small``) / (large - small),
    over construction, reset and ``steps`` steps; the pool (shared by all lanes) separately."""
    rows = []
    for preset in presets:
        _progress(f"memory {preset}")
        seeds = draw_pool_seeds(64)
        peaks, pool = [], 0
        for n in (small, large):
            tracemalloc.start()
            venv = CarbonAwareDCVectorEnv(n, preset=preset, scenario_seeds=seeds)
            venv.action_space.seed(0)
            venv.reset(seed=0)
            for _ in range(steps):
                venv.step(venv.action_space.sample())
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            pool = venv.pool_nbytes
        per_lane = (peaks[1] - peaks[0]) / (large - small)
        rows.append(
            [
                preset,
                f"{per_lane / 2**10:,.1f}",
                f"{pool / len(seeds) / 2**10:,.0f}",
                f"{single_env_kib(preset):,.0f}",
            ]
        )
    head = (
        f"Memory: peak traced by tracemalloc (construction, reset, {steps} random steps), per lane = "
        f"(peak at N = {large} − peak at N = {small}) / {large - small}, step buffers included; the pool "
        "is shared by all lanes (per pooled scenario); a single env, for comparison, holds its scenario "
        "tables itself.\n\n"
    )
    return head + table(["preset", "KiB per lane", "pool KiB per scenario", "single env KiB"], rows)


def single_env_kib(preset: str, steps: int = 30) -> float:
    """Peak traced memory of one single env over construction, reset and ``steps`` steps, KiB."""
    tracemalloc.start()
    env = CarbonAwareDCEnv(preset=preset)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(steps):
        if env.step(env.action_space.sample())[2]:
            env.reset()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**10


PPO_SETTINGS = {
    "SB3 defaults (batch 64, 10 epochs)": {"batch_size": 64, "n_epochs": 10},
    "large batch (512, 4 epochs)": {"batch_size": 512, "n_epochs": 4},
}
"""PPO from scratch for the throughput runs: SB3's MlpPolicy ([64, 64] networks) and its defaults
except these; the rollout buffer is 4096 env-steps in every run (``n_envs × n_steps``)."""


def ppo_section(
    preset: str, updates: int, vector_envs: int = 64, subproc_envs: int = 4, torch_threads: int = 1
) -> str:
    """Env-steps/s of ``PPO.learn`` from scratch (rollouts + updates) on the vector env (SB3 adapter)
    and on ``SubprocVecEnv`` of the single flat env, same settings, ``updates`` rollouts of 4096."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from envs.vector_sb3 import make_sb3_vec_env

    torch.set_num_threads(torch_threads)
    seeds = draw_pool_seeds(64)
    rows = []
    for setting, params in PPO_SETTINGS.items():
        for label, n_envs in (
            ("vector env (SB3 adapter)", vector_envs),
            ("SubprocVecEnv, flat env", subproc_envs),
        ):
            _progress(f"PPO {setting}, {label}")
            if label.startswith("vector"):
                vec = make_sb3_vec_env(n_envs, preset=preset, scenario_seeds=seeds, seed=0)
            else:
                vec = SubprocVecEnv([lambda: make_flat_env(preset=preset, scenario_seeds=seeds)] * n_envs)
                vec.seed(0)
            model = PPO("MlpPolicy", vec, n_steps=4096 // n_envs, seed=0, device="cpu", **params)
            t0 = time.perf_counter()
            model.learn(total_timesteps=updates * 4096)
            wall = time.perf_counter() - t0
            vec.close()
            rate = model.num_timesteps / wall
            rows.append([setting, label, n_envs, f"{model.num_timesteps:,}", f"{wall:.1f}", f"{rate:,.0f}"])
    head = (
        f"PPO from scratch on `{preset}`: `PPO('MlpPolicy', vec_env)` with SB3's defaults except the "
        f"setting's batch size and epochs, rollout buffer 4096, torch {torch_threads} thread(s) in the "
        f"learner (2 threads on a loaded 2-core machine made PPO several times slower here); rollouts "
        f"and updates timed together. Target ≥ {PPO_TARGET:,} env-steps/s on 2 cores.\n\n"
    )
    return head + table(["setting", "vec env", "n_envs", "env-steps", "wall s", "env-steps/s"], rows)


def run(quick: bool = False, presets: Sequence[str] = ("paper", "week"), lanes: Sequence[int] = LANES) -> str:
    """Measure and return the Markdown section (``quick``: a smoke run, numbers not meaningful)."""
    repeats = 1 if quick else 3
    env_steps = 20_000 if quick else 200_000
    if quick:
        POOL_SIZES.update(paper=64, week=16)
    sync_lanes = [n for n in lanes if n <= 1024]
    text, results = steps_section(presets, lanes, repeats, env_steps, sync_lanes)
    parts = [
        "### Vector env",
        "",
        "Env-steps/s of `CarbonAwareDCVectorEnv` (`envs/vector.py`; flat: `CarbonAwareDCFlatVectorEnv`), "
        "random pre-sampled batched actions, autoresets included, median of "
        f"{repeats} run(s), beside Gymnasium's `CartPoleVectorEnv` and a `SyncVectorEnv` of the single env "
        "in the same run (same scenario seeds). Each vector run is paired with a CartPoleVectorEnv run at "
        "the same N just before it; \"/ CartPole\" is the median of the pairs' ratios (the VM's speed "
        "drifts within a run; the CartPole row is its own first measurement).",
        "",
        text,
        "",
        *verdicts(results),
        "",
        memory_section(presets, steps=10 if quick else 30),
        "",
        ppo_section("paper", 1 if quick else 5),
    ]
    if quick:
        parts.insert(1, "\n_--quick: smoke run on small pools and few steps; not a measurement._")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vector_speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (small pools, few steps)")
    args = parser.parse_args(argv)
    print(run(quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
