"""Agent-side speed: MPC decision time, agent / agent_lp / mpc_lp / MPC decision time, oracle solves per
minute (local vs Ray), BC dataset generation rate, and env steps per second inside SB3 PPO with 1
and 2 envs."""

from __future__ import annotations

import os
import statistics
import time

from bench.common import table
from envs import CarbonAwareDCEnv, make_scenario
from oracle.executor import run_sweep
from oracle.solve import solve_item


def _mpc_episode_ms(preset: str, seed: int, level: str | float, warm: bool, limit: int | None) -> list[float]:
    """Milliseconds per ``MPCPolicy.predict`` over one episode (the first ``limit`` steps)."""
    from agents.baselines import MPCPolicy

    env = CarbonAwareDCEnv(scenario=make_scenario(preset, seed), preset=preset, forecast_level=level)
    policy = MPCPolicy(env, window=24, exact=env.forecast_noise == 0.0, warm=warm)
    obs, _ = env.reset(seed=seed)
    times: list[float] = []
    done = False
    while not done and (limit is None or len(times) < limit):
        t0 = time.perf_counter()
        action, _ = policy.predict(obs)
        times.append(1000.0 * (time.perf_counter() - t0))
        obs, _, done, _, _ = env.step(action)
    return times


def mpc_section(seeds: tuple[int, ...] = (0, 3)) -> str:
    """MPC decision time per forecast error level (``envs.forecast`` names, sigma shorthands).

    Before = ``warm=False`` (cold solves, HiGHS's default heuristics); after = ``warm=True``
    (previous plan as MIP start, no sub-MIPs or restarts); interleaved per episode so both see the
    same machine load."""
    rows = []
    levels: tuple[str | float, ...] = ("exact", 0.1, 0.2, "good", "typical", "poor")
    cases = [("paper", lv, None) for lv in levels] + [("week", lv, 48) for lv in ("exact", "typical", 0.2)]
    for preset, level, limit in cases:
        cold: list[float] = []
        warm: list[float] = []
        for seed in seeds:
            cold += _mpc_episode_ms(preset, seed, level, False, limit)
            warm += _mpc_episode_ms(preset, seed, level, True, limit)
        rows.append(
            [f"{preset} ({level if isinstance(level, str) else f'sigma {level:g}'})", len(warm),
             f"{statistics.median(cold):.0f}", f"{statistics.median(warm):.0f}",
             f"{statistics.mean(cold):.0f}", f"{statistics.mean(warm):.0f}",
             f"{max(cold):.0f}", f"{max(warm):.0f}"]
        )  # fmt: skip
    head = (
        f"### MPC decision time\n\nMilliseconds per step of `MPCPolicy` (window 24, one MILP per step; "
        f"seeds {list(seeds)}, week: first 48 steps); before = `warm=False`, after = `warm=True`.\n\n"
    )
    cols = ["instance", "steps", "median before", "median after", "mean before", "mean after",
            "max before", "max after"]  # fmt: skip
    return head + table(cols, rows)


def _policy_episode_ms(name: str, seed: int, level: str, **kw) -> list[float]:
    """Milliseconds per ``predict`` of the policy ``name`` (``agents.baselines.make_policy``) over one
    ``paper`` episode at forecast level ``level``."""
    from agents.baselines import make_policy

    env = CarbonAwareDCEnv(scenario=make_scenario("paper", seed), preset="paper", forecast_level=level)
    policy = make_policy(name, env, **kw)
    obs, _ = env.reset(seed=seed)
    times: list[float] = []
    done = False
    while not done:
        t0 = time.perf_counter()
        action, _ = policy.predict(obs, deterministic=True)
        times.append(1000.0 * (time.perf_counter() - t0))
        obs, _, done, _, _ = env.step(action)
    return times


def _cartpole_predict_ms(calls: int = 500) -> float:
    """Median milliseconds of SB3 ``PPO("MlpPolicy")``'s ``predict`` on one CartPole observation: the
    textbook policy forward pass, the same-run reference of :func:`decision_section`."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, seed=0, device="cpu")
    obs, _ = env.reset(seed=0)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model.predict(obs, deterministic=True)
        times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def decision_section(
    seeds: tuple[int, ...] = (0, 3), levels: tuple[str, ...] = ("exact", "typical", "poor")
) -> str:
    """Decision time of the shipped agent, ``agent_lp`` (the agent plus the one-period LP), ``mpc_lp``
    (MPC on the LP relaxation of its model) and ``mpc`` per forecast level (issue 13: <= 1/10 of MPC's
    decision time), with a CartPole ``MlpPolicy.predict`` as the same-run reference."""
    import torch

    from agents.evaluation import PRETRAINED

    torch.set_num_threads(1)
    model = str(PRETRAINED)
    cartpole = _cartpole_predict_ms()
    rows = []
    for level in levels:
        ms: dict[str, list[float]] = {"agent": [], "agent_lp": [], "mpc_lp": [], "mpc": []}
        for seed in seeds:  # interleaved per episode: the four see the same machine load
            ms["agent"] += _policy_episode_ms(model, seed, level)
            ms["agent_lp"] += _policy_episode_ms("agent_lp", seed, level, model=model)
            ms["mpc_lp"] += _policy_episode_ms("mpc_lp", seed, level)
            ms["mpc"] += _policy_episode_ms("mpc", seed, level, window=24, exact=level == "exact")
        med = {k: statistics.median(v) for k, v in ms.items()}
        avg = {k: statistics.mean(v) for k, v in ms.items()}
        rows.append(
            [level, len(ms["mpc"]), f"{med['agent']:.2f} / {avg['agent']:.2f}",
             f"{med['agent_lp']:.2f} / {avg['agent_lp']:.2f}", f"{med['mpc_lp']:.2f} / {avg['mpc_lp']:.2f}",
             f"{med['mpc']:.1f} / {avg['mpc']:.1f}",
             f"{med['mpc'] / med['agent_lp']:.1f}x / {avg['mpc'] / avg['agent_lp']:.1f}x",
             f"{med['mpc'] / med['mpc_lp']:.1f}x / {avg['mpc'] / avg['mpc_lp']:.1f}x",
             f"{med['agent_lp'] / cartpole:.0f}x"]
        )  # fmt: skip
    head = (
        f"### Decision time: agent, agent_lp, mpc_lp, MPC\n\nMilliseconds per `predict` (median / mean) "
        f"in one process, `paper` seeds {list(seeds)} (the shipped ensemble; `agent_lp` = the same agent "
        f"plus the one-period routing/generator LP; `mpc_lp` = MPC on the LP relaxation of its model, "
        f"posterior mean, 3 branchings; `mpc` window 24, warm). Reference, same run: SB3 PPO "
        f"`MlpPolicy.predict` on "
        f"one CartPole observation, {cartpole:.3f} ms.\n\n"
    )
    cols = [
        "level",
        "steps",
        "agent ms",
        "agent_lp ms",
        "mpc_lp ms",
        "mpc ms",
        "mpc / agent_lp",
        "mpc / mpc_lp",
        "agent_lp / CartPole (median)",
    ]
    return head + table(cols, rows)


def sweep_section(n: int = 12) -> str:
    """Oracle solves of paper scenarios per minute with the executor's backends."""
    items = [
        {"key": f"paper-{seed}", "scenario": make_scenario("paper", seed).to_dict(), "config": "joint",
         "threads": 1}
        for seed in range(1000, 1000 + n)
    ]  # fmt: skip
    rows = []
    cores = os.cpu_count() or 1
    runs = [("local", 1), ("local", cores)]
    try:
        import ray  # noqa: F401

        runs.append(("ray", cores))
    except ImportError:
        pass
    for backend, workers in runs:
        t0 = time.perf_counter()
        res = run_sweep(solve_item, items, backend=backend, max_workers=workers, progress=False)
        wall = time.perf_counter() - t0
        ok = sum(r.ok for r in res)
        rows.append([backend, workers, f"{ok}/{n}", f"{wall:.1f}", f"{60.0 * ok / wall:.0f}"])
    head = (
        f"### Sweeps\n\n{n} `paper` oracle solves (joint, 1 solver thread each) through "
        "`oracle.executor.run_sweep`; wall time includes starting the workers (and Ray).\n\n"
    )
    return head + table(["backend", "workers", "solved", "wall s", "scenarios / min"], rows)


def dataset_section(n: int = 8) -> str:
    from agents.imitation import build_oracle_dataset

    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    data = build_oracle_dataset("paper", list(range(2000, 2000 + n)), progress=False, max_workers=cores)
    wall = time.perf_counter() - t0
    rows = [[n, cores, len(data.obs), f"{wall:.1f}", f"{60.0 * n / wall:.0f}"]]
    head = (
        "### Behaviour-cloning dataset\n\nSolve the oracle on `paper` training scenarios and replay "
        "each through the env into (observation, action) pairs, on all cores.\n\n"
    )
    return head + table(["scenarios", "workers", "pairs", "wall s", "scenarios / min"], rows)


def training_section(steps: int = 4096) -> str:
    from agents.sb3 import make_model, make_vec_env, set_torch_threads

    set_torch_threads(1)
    rows = []
    for n_envs in (1, 2):
        venv = make_vec_env("paper", n_envs=n_envs, seed=0)
        model = make_model("ppo", venv, seed=0)
        model.learn(512)  # warm-up: first rollout and first update
        t0 = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        wall = time.perf_counter() - t0
        rows.append([n_envs, steps, f"{wall:.1f}", f"{steps / wall:,.0f}"])
    head = (
        "### Training throughput\n\nEnv steps per second inside SB3 PPO (`DummyVecEnv`, torch with 1 "
        "thread; rollouts plus gradient updates).\n\n"
    )
    return head + table(["n_envs", "steps", "wall s", "steps/s"], rows)


if __name__ == "__main__":
    import sys

    print(mpc_section() if sys.argv[1:] == ["mpc"] else sweep_section(4))
