"""Imitation learning from the MILP oracle: the training seeds and the oracle dataset, and the
public names of the rooms that do the rest (importable from here as before).

Three pieces, used in this order by ``train.py``:

1. **Oracle dataset** (:func:`build_oracle_dataset`): training scenario seeds are drawn from a
   recorded base seed in ``1000 .. 999999`` (0..999 are held out for evaluation); each scenario is
   solved by the oracle (``joint``, full horizon) in parallel with :func:`oracle.executor.run_sweep`
   (one spawned process per core, progress bar, resumable JSON cache of the schedules); every
   schedule is then replayed through the Dict env built from ``schedule.scenario`` and each period
   gives one pair *(flat observation, flat action)*, the flat action being
   ``FlatObsActionWrapper.encode_action`` of the oracle's Dict action.
2. **Behaviour cloning** (:func:`behaviour_clone`): minimise the negative log-likelihood
   ``-log pi(a|s)`` of the demonstrated flat actions through ``policy.evaluate_actions``, plus an
   optional MSE term between the Gaussian mean and the action (see :class:`BCConfig`), with Adam in
   minibatches, a validation split by scenario (never by row: the periods of one scenario are
   strongly correlated) and the epoch with the lowest validation loss restored at the end.
3. **DAgger** (:func:`dagger_round`): roll the current policy on fresh training scenarios; at every
   visited state the expert is the oracle solved from ``env.unwrapped.state_snapshot()`` over the
   remaining horizon (exact: it sees the same scenario), and its action for that period labels the
   state. The new pairs are aggregated with the old ones and the policy is retrained.

Datasets are ``.npz`` files readable with ``allow_pickle=False``: arrays ``obs`` (N, obs_dim)
float32, ``actions`` (N, act_dim) float32, ``seed``, ``period``, ``round`` (N,) int64 (round 0 =
oracle replay, r >= 1 = DAgger round r) and ``meta``, a JSON string (preset, seeds, base seed,
layout sizes, versions, oracle settings, ...).
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.bc import (
    BCConfig,
    BCHistory,
    StartLayout,
    bc_targets,
    behaviour_clone,
    imitation_loss,
    policy_loss_terms,
    split_by_seed,
)
from agents.dagger import dagger_round, dagger_validation_seeds
from agents.demos import DATASET_FORMAT, DemoDataset, flat_env_sizes, layout_meta
from agents.oracle_labels import (
    solve_from_state,
    solve_full_horizon,
    solve_schedules,
    state_from_json,
    state_to_json,
)
from agents.rollouts import EnvFactory, Episode, PredictFn, flat_env, noise_seed, replay_schedule, rollout
from envs.scenario import Scenario

__all__ = [
    "DATASET_FORMAT",
    "TRAIN_SEED_HIGH",
    "TRAIN_SEED_LOW",
    "BCConfig",
    "BCHistory",
    "DemoDataset",
    "EnvFactory",
    "Episode",
    "PredictFn",
    "StartLayout",
    "bc_targets",
    "behaviour_clone",
    "build_oracle_dataset",
    "dagger_round",
    "dagger_validation_seeds",
    "draw_training_seeds",
    "flat_env",
    "flat_env_sizes",
    "imitation_loss",
    "layout_meta",
    "noise_seed",
    "policy_loss_terms",
    "replay_schedule",
    "rollout",
    "solve_from_state",
    "solve_full_horizon",
    "solve_schedules",
    "split_by_seed",
    "state_from_json",
    "state_to_json",
    "versions",
]

TRAIN_SEED_LOW = 1000
"""Training scenario seeds are drawn from ``TRAIN_SEED_LOW .. TRAIN_SEED_HIGH - 1``; below are held out."""


TRAIN_SEED_HIGH = 1_000_000


def draw_training_seeds(base_seed: int, n: int, exclude: Iterable[int] = ()) -> list[int]:
    """``n`` distinct scenario seeds in ``TRAIN_SEED_LOW .. TRAIN_SEED_HIGH - 1`` drawn from ``base_seed``.

    Deterministic for a given ``(base_seed, n, exclude)``; never returns a held-out seed (< 1000) or
    one in ``exclude`` (e.g. the validation seeds). The first seeds do not depend on ``n``, so a
    larger dataset extends a smaller one with the same base seed.
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0 (got {n})")
    banned = set(int(s) for s in exclude)
    rng = np.random.default_rng(np.random.SeedSequence(int(base_seed), spawn_key=(0x1D,)))
    seeds: list[int] = []
    seen: set[int] = set()
    while len(seeds) < n:
        s = int(rng.integers(TRAIN_SEED_LOW, TRAIN_SEED_HIGH))
        if s not in seen and s not in banned:
            seen.add(s)
            seeds.append(s)
    return seeds


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a dataset or a trained model depends on."""
    out = {"python": platform.python_version()}
    for name in ("carbon-aware-dc", "numpy", "torch", "stable-baselines3", "gymnasium", "highspy", "pulp"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def build_oracle_dataset(
    preset: str,
    seeds: Sequence[int],
    *,
    base_seed: int | None = None,
    cache_dir: str | Path | None = None,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    forecast_horizon: int = 24,
    progress: bool = True,
    forecast_level: str | float | None = None,
    noise_draws: int = 1,
    scenarios: Mapping[int, Scenario] | None = None,
    exact_draws: int = 0,
    **sweep_kwargs: Any,
) -> DemoDataset:
    """Solve the oracle on ``seeds`` (in parallel) and replay each schedule into (obs, action) pairs.

    ``scenarios``: a source run's scenarios by key (``preset`` None; see :func:`solve_schedules`);
    the ``seed`` column then holds the keys and the metadata their names (``scenario_names``).

    With ``forecast_level`` each schedule is replayed ``noise_draws`` times, each time with other
    forecast errors in the observations (the labels stay the clairvoyant oracle's); the first
    ``exact_draws`` of them with exact forecasts (the same pairs as without ``forecast_level``). The metadata
    records the preset, seeds, base seed, oracle settings, forecast level and draws, layout sizes,
    per-seed oracle objectives, timings and package versions.
    """
    if int(noise_draws) < 1:
        raise ValueError(f"noise_draws: must be >= 1 (got {noise_draws!r})")
    draws = int(noise_draws) if forecast_level else 1
    if int(exact_draws) < 0 or (forecast_level and int(exact_draws) > draws):
        raise ValueError(f"exact_draws: must be in 0..noise_draws ({draws}) (got {exact_draws!r})")
    exact = int(exact_draws) if forecast_level else 0
    tick = time.perf_counter()
    schedules = solve_schedules(
        preset,
        seeds,
        cache_dir=cache_dir,
        time_limit_s=time_limit_s,
        mip_gap=mip_gap,
        progress=progress,
        scenarios=scenarios,
        **sweep_kwargs,
    )
    solve_s = time.perf_counter() - tick
    obs, actions, seed_col, period_col = [], [], [], []
    objectives: dict[str, float] = {}
    worst = 0.0
    for seed, sched in schedules.items():
        for draw in range(draws):
            level = None if draw < exact else forecast_level
            ep = replay_schedule(sched, preset, forecast_horizon, level, draw)
            worst = max(worst, abs(ep.return_usd - sched.objective_usd) / max(1.0, abs(sched.objective_usd)))
            obs.append(ep.obs)
            actions.append(ep.actions)
            seed_col.append(np.full(len(ep.obs), seed))
            period_col.append(ep.periods)
        objectives[str(seed)] = float(sched.objective_usd)
    if not obs:
        raise RuntimeError("no oracle schedule: the dataset is empty")
    shape = None if scenarios is None else next(iter(schedules.values())).scenario
    flat = flat_env(preset, shape, forecast_horizon=forecast_horizon)
    names = {} if scenarios is None else {"scenario_names": {str(s): scenarios[s].name for s in schedules}}
    meta = {
        **names,
        "preset": preset,
        "base_seed": base_seed,
        "seeds": [int(s) for s in schedules],
        "oracle": {"config": "joint", "window": None, "time_limit_s": time_limit_s, "mip_gap": mip_gap},
        "oracle_objective_usd": objectives,
        "forecast_horizon": forecast_horizon,
        "forecast_level": None if not forecast_level else forecast_level,
        "noise_draws": draws,
        "exact_draws": exact,
        "replay_max_rel_error": worst,
        "solve_wall_s": solve_s,
        "build_wall_s": time.perf_counter() - tick,
        "dagger_rounds": 0,
        "versions": versions(),
        **layout_meta(flat),
    }
    return DemoDataset.from_episodes(obs, actions, seed_col, period_col, meta)
