"""DAgger rounds: the policy plays fresh training scenarios, the oracle labels every visited state.

:func:`dagger_round` rolls the policy out (behind the env factory it is deployed in), solves the
oracle from each visited state in one parallel sweep (:func:`agents.oracle_labels.solve_from_state`)
and returns the new pairs; :func:`dagger_validation_seeds` is the share of a round kept for
validation when the policy is retrained on the aggregate.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.demos import DemoDataset
from agents.oracle_labels import results_or_raise, solve_from_state, state_to_json
from agents.rollouts import EnvFactory, PredictFn, flat_env, rollout
from agents.training_scenarios import scenario_item
from envs.presets import make_scenario
from envs.scenario import Scenario
from oracle.executor import run_sweep


def dagger_round(
    predict: PredictFn,
    preset: str,
    seeds: Sequence[int],
    round_index: int,
    *,
    cache_dir: str | Path | None = None,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    forecast_horizon: int = 24,
    progress: bool = True,
    make_env: EnvFactory | None = None,
    forecast_level: str | float | None = None,
    scenarios: Mapping[int, Scenario] | None = None,
    **sweep_kwargs: Any,
) -> tuple[DemoDataset, dict[str, Any]]:
    """One DAgger round: roll ``predict`` on ``seeds`` and label every visited state with the oracle.

    The expert's label at period t is the oracle's period-t action solved from the visited state
    (:func:`solve_from_state`, all solves in one parallel sweep); ``make_env`` is the rollout's env
    factory (the one the policy is deployed in). Returns the new pairs (``round``
    column = ``round_index``) and statistics: the policy's mean return and how many labels needed the
    carbon budget relaxed. ``scenarios``: a source run's scenarios by key (``preset`` None).
    """
    shape = None if scenarios is None else scenarios[int(seeds[0])]
    flat = flat_env(preset, shape, forecast_horizon=forecast_horizon)
    items, rows, returns = [], [], []
    for seed in seeds:
        sc = make_scenario(preset, int(seed)) if scenarios is None else scenarios[int(seed)]
        where = scenario_item(preset, seed, scenarios)
        prefix = where.pop("prefix")
        if scenarios is not None:
            where["slots"] = flat.n_slots
        ep = rollout(
            predict,
            sc,
            preset,
            forecast_horizon,
            record_states=True,
            make_env=make_env,
            forecast_level=forecast_level,
        )
        returns.append(ep.return_usd)
        for t, state in enumerate(ep.states):
            state_json = state_to_json(state)
            digest = hashlib.sha1(json.dumps(state_json, sort_keys=True).encode()).hexdigest()[:16]
            items.append(
                {
                    "key": f"{prefix}-t{t:03d}-{digest}-gap{mip_gap:g}",
                    **where,
                    "state": state_json,
                    "time_limit_s": float(time_limit_s),
                    "mip_gap": float(mip_gap),
                }
            )
            rows.append((ep.obs[t], int(seed), t))
    tick = time.perf_counter()
    results = run_sweep(
        solve_from_state,
        items,
        out_dir=cache_dir,
        progress=progress,
        desc=f"DAgger {round_index} relabel",
        **sweep_kwargs,
    )
    solve_s = time.perf_counter() - tick
    results_or_raise(results, "DAgger relabels", 0.05)
    obs, actions, seed_col, period_col = [], [], [], []
    relaxed = 0
    for (o, seed, t), res in zip(rows, results, strict=True):
        if not res.ok:
            continue
        act = {key: np.asarray(value) for key, value in res.result["action"].items()}
        relaxed += bool(res.result["relaxed"])
        obs.append(o)
        actions.append(flat.encode_action(act))
        seed_col.append(seed)
        period_col.append(t)
    stats = {
        "round": round_index,
        "seeds": [int(s) for s in seeds],
        "labels": len(obs),
        "relaxed_budget_labels": relaxed,
        "policy_mean_return_usd": float(np.mean(returns)) if returns else math.nan,
        "relabel_wall_s": solve_s,
    }
    data = DemoDataset(
        np.stack(obs),
        np.stack(actions),
        np.asarray(seed_col),
        np.asarray(period_col),
        np.full(len(obs), round_index),
    )
    return data, stats


def dagger_validation_seeds(round_seeds: Sequence[int]) -> list[int]:
    """The share of a DAgger round's scenarios (the first tenth, at least one) kept for validation
    when the policy is retrained on the aggregated dataset."""
    return list(round_seeds[: max(1, len(round_seeds) // 10)])
