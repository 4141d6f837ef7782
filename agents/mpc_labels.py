"""MPC on the noisy forecast as the expert: a demonstration dataset from MPC's own episodes (issue 13).

The pipeline's dataset labels noisy observations with the clairvoyant oracle's actions (a
privileged expert, :func:`agents.imitation.build_oracle_dataset`): part of what it does depends on
the true future, which the policy cannot see. The alternative expert here is
:class:`agents.baselines.MPCPolicy` (rolling ``joint`` MILP on ``env.forecast()``, window 24),
which acts on exactly what the policy observes.

- :func:`mpc_episode` (sweep worker): one MPC episode of a scenario with the forecast errors of one
  noise draw (:func:`agents.rollouts.noise_seed`, the draws the oracle dataset uses); returns MPC's
  Dict actions of every period and its return (USD).
- :func:`build_mpc_dataset`: every (scenario, draw) episode in parallel
  (:func:`oracle.executor.run_sweep`, a resumable cache), each replayed in the parent through the
  flat env to record the flat observations and ``FlatObsActionWrapper.encode_action`` of MPC's
  actions (the oracle dataset's encoding); the replay must earn MPC's return. A
  :class:`~agents.demos.DemoDataset` with the oracle dataset's layout, so ``behaviour_clone`` takes
  it unchanged.

``python -m agents.mpc_labels`` is the probe of issue 13: on the same training scenarios and noise
draws (the seeds of ``train.py``'s plan for ``--seed``) it builds both datasets, clones the same
network with the same :class:`~agents.bc.BCConfig` on each, from ``--clone-seeds`` network seeds
(the same seeds for every expert, so differences are paired), and scores every clone on the
pipeline's validation scenarios (% of the oracle, :func:`agents.sb3.evaluate_vs_oracle`); it
prints a table and writes it as JSON (``--out``/``mpc_labels_probe.json``).

``--expert mpc_lp`` takes :class:`agents.window_lp.MPCLPPolicy` as the planner (about a tenth of
MPC's decision time, as good on these levels), and ``--dagger-rounds R`` then lets the planner
label every state its clones visit (:func:`planner_dagger_round`, ``--dagger-scenarios`` fresh
scenarios a round, retrained as the pipeline's DAgger stage): MPC as the DAgger expert, at a cost
the oracle's DAgger solves cannot match.

Measured (paper, 200 scenarios x 3 draws at ``typical``, 100 epochs, 3 network seeds): clairvoyant
labels 83.1 +- 1.1 % of the oracle at ``typical`` and 82.7 +- 0.7 % at ``poor``, MPC labels 84.3 +-
0.8 / 81.4 +- 1.6, both concatenated 82.4 +- 2.1 / 81.0 +- 2.7; MPC itself 97.8 / 94.8. No
difference beyond the network-seed noise, and the MPC dataset takes ~12 times longer to build, so
the pipeline keeps the clairvoyant expert. The ``mpc_lp`` expert with DAgger: docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.demos import DemoDataset, layout_meta
from agents.oracle_labels import results_or_raise
from agents.rollouts import Episode, PredictFn, flat_env, record_dict_actions, reset_seed
from agents.training_scenarios import item_scenario, scenario_item
from envs.atomic import atomic_path, atomic_write_json
from envs.scenario import Scenario
from oracle.executor import run_sweep

if TYPE_CHECKING:
    from agents.train_config import TrainConfig

MPC_WINDOW = 24
"""MPC's default window (periods): the whole ``paper`` day, what the README's MPC scores use."""

EXPERTS = {"mpc": "MPC on the forecast", "mpc_lp": "MPC-LP on the forecast"}
"""The planners that can label: ``mpc`` (:class:`agents.baselines.MPCPolicy`, the rolling MILP) and
``mpc_lp`` (:class:`agents.window_lp.MPCLPPolicy`, its LP relaxation kept warm: about a tenth of
MPC's decision time, so it can label every state a DAgger round visits)."""

PROBE_FILE = "mpc_labels_probe.json"
"""The probe's table in ``--out``."""


def level_tag(forecast_level: str | float | None) -> str:
    """The forecast level as a cache-key part: its name, ``sigma<x>`` for a number, ``exact`` for None."""
    if forecast_level is None:
        return "exact"
    if isinstance(forecast_level, str):
        return forecast_level
    return f"sigma{float(forecast_level):g}"


def expert_policy(expert: str, env: Any, window: int, time_limit_s: float, mip_gap: float) -> Any:
    """The labelling planner ``expert`` (a key of :data:`EXPERTS`) on the Dict ``env``: ``mpc`` with
    ``window``, ``time_limit_s``, ``mip_gap`` on one thread, or ``mpc_lp`` with ``window`` (an LP: no
    gap or time limit)."""
    if expert == "mpc":
        from agents.baselines import MPCPolicy

        return MPCPolicy(
            env, window=window, exact=False, time_limit_s=time_limit_s, mip_gap=mip_gap, threads=1
        )
    if expert == "mpc_lp":
        from agents.window_lp import MPCLPPolicy

        return MPCLPPolicy(env, window=window)
    raise ValueError(f"expert: {expert!r}: choose from {sorted(EXPERTS)}")


def mpc_episode(item: dict[str, Any]) -> dict[str, Any]:
    """Sweep worker: one episode of the item's planner (``expert``, :func:`expert_policy`; ``mpc``
    if the item has none) on the item's scenario.

    The Dict env has the item's ``forecast_level`` and is reset with ``item["reset_seed"]`` (the
    noise draw's forecast errors); the planner decides with ``window`` (MPC also with
    ``time_limit_s``, ``mip_gap``, one thread). Returns its Dict action of every period (JSON lists,
    floats kept exactly), its return (USD), how many periods fell back to the greedy rule and how
    many MILPs (LPs for ``mpc_lp``) were solved.
    """
    from envs.dc_env import CarbonAwareDCEnv

    sc = item_scenario(item)
    env = CarbonAwareDCEnv(
        scenario=sc,
        preset=item["preset"],
        forecast_horizon=item["forecast_horizon"],
        forecast_level=item["forecast_level"],
    )
    policy = expert_policy(
        item.get("expert", "mpc"), env, item["window"], item["time_limit_s"], item["mip_gap"]
    )
    obs, _ = env.reset(seed=item["reset_seed"])
    actions, total, done = [], 0.0, False
    while not done:
        action, _ = policy.predict(obs)
        actions.append({key: np.asarray(value).tolist() for key, value in action.items()})
        obs, reward, done, _, _ = env.step(action)
        total += float(reward)
    return {
        "actions": actions,
        "return_usd": total,
        "fallbacks": policy.fallbacks,
        "solves": policy.solves,
    }


def replay_actions(
    actions: Sequence[Mapping[str, Any]],
    scenario: Scenario,
    preset: str | None,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
    draw: int = 0,
) -> Episode:
    """Step the flat env's Dict env of ``scenario`` with recorded Dict ``actions`` (one per period)
    and record the pairs as the oracle dataset does (:func:`agents.rollouts.record_dict_actions`);
    the forecast errors are draw ``draw``'s. The return (USD) equals the episode's that produced
    ``actions``."""
    recorded = iter(actions)
    return record_dict_actions(
        lambda obs: {key: np.asarray(value) for key, value in next(recorded).items()},
        scenario,
        preset,
        forecast_horizon,
        forecast_level,
        draw,
    )


def mpc_items(
    preset: str | None,
    seeds: Sequence[int],
    draws: int,
    *,
    window: int,
    time_limit_s: float,
    mip_gap: float,
    forecast_horizon: int,
    forecast_level: str | float | None,
    scenarios: Mapping[int, Scenario] | None = None,
    expert: str = "mpc",
) -> list[dict[str, Any]]:
    """The sweep items of :func:`mpc_episode`: one per (seed, draw), in seed-then-draw order.

    Keys name the scenario (``paper-s1234`` or a source scenario's digest), the planner and its
    settings, the forecast level and the draw, so a cache holds every combination apart."""
    if expert not in EXPERTS:
        raise ValueError(f"expert: {expert!r}: choose from {sorted(EXPERTS)}")
    items = []
    for seed in seeds:
        where = scenario_item(preset, seed, scenarios)
        prefix = where.pop("prefix")
        sc = item_scenario(where)
        for draw in range(draws):
            key = (
                f"{prefix}-{expert}-w{window}-h{forecast_horizon}-{level_tag(forecast_level)}-d{draw}"
                f"-gap{mip_gap:g}-tl{time_limit_s:g}"
            )
            items.append(
                {
                    "key": key,
                    **where,
                    "expert": expert,
                    "draw": draw,
                    "reset_seed": reset_seed(sc, forecast_level, draw),
                    "window": int(window),
                    "time_limit_s": float(time_limit_s),
                    "mip_gap": float(mip_gap),
                    "forecast_horizon": int(forecast_horizon),
                    "forecast_level": forecast_level,
                }
            )
    return items


def build_mpc_dataset(
    preset: str | None,
    seeds: Sequence[int],
    *,
    base_seed: int | None = None,
    cache_dir: str | Path | None = None,
    window: int = MPC_WINDOW,
    time_limit_s: float = 10.0,
    mip_gap: float = 1e-4,
    forecast_horizon: int = 24,
    progress: bool = True,
    forecast_level: str | float | None = None,
    noise_draws: int = 1,
    scenarios: Mapping[int, Scenario] | None = None,
    expert: str = "mpc",
    **sweep_kwargs: Any,
) -> DemoDataset:
    """MPC's own episodes on ``seeds`` (in parallel) as (flat observation, flat action) pairs;
    ``expert="mpc_lp"`` plays :class:`~agents.window_lp.MPCLPPolicy` instead (same window).

    Each scenario is played ``noise_draws`` times with forecast errors (draw d resets with
    ``noise_seed(scenario, d)``, the draws of :func:`agents.imitation.build_oracle_dataset`), once
    without them; MPC (``window``, ``time_limit_s``, ``mip_gap``: :class:`MPCPolicy`'s defaults)
    decides on what the policy would observe. The observations are MPC's visited states, the labels
    its actions in the oracle dataset's encoding. ``scenarios``, ``cache_dir`` and ``sweep_kwargs``
    as for the oracle dataset (``cache_dir`` keeps finished episodes; at most 5 % may fail).

    The metadata has the oracle dataset's keys (layout, preset, seeds, base seed, forecast level and
    draws, timings, versions), except that ``oracle`` / ``oracle_objective_usd`` become ``expert``
    (MPC's settings) / ``expert_return_usd`` (per seed, one return per draw, USD); it also records
    ``noise_draw_seeds`` (the reset seeds, per seed) and MPC's ``mpc_fallbacks`` / ``mpc_solves``.
    Raises ``RuntimeError`` if a replay does not earn the episode's return (relative 1e-9).
    """
    from agents.imitation import versions

    if int(noise_draws) < 1:
        raise ValueError(f"noise_draws: must be >= 1 (got {noise_draws!r})")
    if int(window) < 1:
        raise ValueError(f"window: must be >= 1 (got {window!r})")
    draws = int(noise_draws) if forecast_level else 1
    tick = time.perf_counter()
    items = mpc_items(
        preset,
        seeds,
        draws,
        window=window,
        time_limit_s=time_limit_s,
        mip_gap=mip_gap,
        forecast_horizon=forecast_horizon,
        forecast_level=forecast_level,
        scenarios=scenarios,
        expert=expert,
    )
    results = run_sweep(
        mpc_episode, items, out_dir=cache_dir, progress=progress, desc=f"{expert} episodes", **sweep_kwargs
    )
    results_or_raise(results, f"{expert} episodes", 0.05)
    solve_s = time.perf_counter() - tick
    obs, actions, seed_col, period_col = [], [], [], []
    returns: dict[str, list[float]] = {}
    reset_seeds: dict[str, list[int]] = {}
    worst, fallbacks, solves = 0.0, 0, 0
    scenario_of: dict[int, Scenario] = {}
    for item, res in zip(items, results, strict=True):
        if not res.ok:
            continue
        seed = int(item["seed"])
        sc = scenario_of.setdefault(seed, item_scenario(item))
        ep = replay_actions(res.result["actions"], sc, preset, forecast_horizon, forecast_level, item["draw"])
        expected = float(res.result["return_usd"])
        worst = max(worst, abs(ep.return_usd - expected) / max(1.0, abs(expected)))
        obs.append(ep.obs)
        actions.append(ep.actions)
        seed_col.append(np.full(len(ep.obs), seed))
        period_col.append(ep.periods)
        returns.setdefault(str(seed), []).append(expected)
        reset_seeds.setdefault(str(seed), []).append(int(item["reset_seed"]))
        fallbacks += int(res.result["fallbacks"])
        solves += int(res.result["solves"])
    if not obs:
        raise RuntimeError(f"no {expert} episode: the dataset is empty")
    if worst > 1e-9:
        raise RuntimeError(f"{expert}'s actions replayed earn another return (relative error {worst:.2e})")
    shape = None if scenarios is None else next(iter(scenario_of.values()))
    flat = flat_env(preset, shape, forecast_horizon=forecast_horizon)
    names = (
        {} if scenarios is None else {"scenario_names": {str(s): sc.name for s, sc in scenario_of.items()}}
    )
    meta = {
        **names,
        "preset": preset,
        "base_seed": base_seed,
        "seeds": list(scenario_of),
        "expert": {
            "name": expert,
            "config": "joint" if expert == "mpc" else "joint, LP relaxation (agents.window_lp)",
            "window": int(window),
            "time_limit_s": float(time_limit_s),
            "mip_gap": float(mip_gap),
            "warm": True,
        },
        "expert_return_usd": returns,
        "noise_draw_seeds": reset_seeds,
        "mpc_fallbacks": fallbacks,
        "mpc_solves": solves,
        "forecast_horizon": forecast_horizon,
        "forecast_level": None if not forecast_level else forecast_level,
        "noise_draws": draws,
        "exact_draws": 0,  # every draw with the level's errors (the oracle dataset's default)
        "replay_max_rel_error": worst,
        "solve_wall_s": solve_s,
        "build_wall_s": time.perf_counter() - tick,
        "dagger_rounds": 0,
        "versions": versions(),
        **layout_meta(flat),
    }
    return DemoDataset.from_episodes(obs, actions, seed_col, period_col, meta)


def planner_dagger_round(
    predict: PredictFn,
    preset: str | None,
    seeds: Sequence[int],
    round_index: int,
    *,
    expert: str = "mpc_lp",
    window: int = MPC_WINDOW,
    time_limit_s: float = 10.0,
    mip_gap: float = 1e-4,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
    scenarios: Mapping[int, Scenario] | None = None,
) -> tuple[DemoDataset, dict[str, Any]]:
    """A DAgger round with a planner as the expert (:func:`agents.dagger.dagger_round` asks the
    clairvoyant oracle instead).

    ``predict`` plays each scenario of ``seeds`` behind the safety layer, as it is deployed (the
    forecast errors of draw 0, as :func:`agents.rollouts.rollout`); at every visited state the
    planner ``expert`` (:func:`expert_policy`), built on the same env, gives the action it would
    play there, which labels the flat observation. All in this process: ``mpc_lp`` labels a state
    in about 2 ms, so a round needs no parallel sweep. Returns the pairs (``round`` column =
    ``round_index``, the oracle dataset's layout) and statistics: labels, the policy's mean return
    (USD), the planner's greedy fallbacks, the wall time.
    """
    from agents.safety import safe_flat_env

    tick = time.perf_counter()
    obs, actions, seed_col, period_col, returns = [], [], [], [], []
    fallbacks = 0
    flat = None
    for seed in seeds:
        sc = item_scenario(scenario_item(preset, seed, scenarios))
        flat = safe_flat_env(preset, sc, forecast_horizon, forecast_level)
        o, _ = flat.reset(seed=reset_seed(sc, forecast_level, 0))
        planner = expert_policy(expert, flat.unwrapped, window, time_limit_s, mip_gap)
        rows, labels, total, done = [], [], 0.0, False
        while not done:
            label, _ = planner.predict(flat.dict_obs)
            rows.append(o)
            labels.append(flat.encode_action(label))
            o, reward, done, _, _ = flat.step(np.asarray(predict(o), dtype=np.float32))
            total += float(reward)
        obs.append(np.stack(rows))
        actions.append(np.stack(labels))
        seed_col.append(np.full(len(rows), int(seed)))
        period_col.append(np.arange(len(rows)))
        returns.append(total)
        fallbacks += planner.fallbacks
    if flat is None:
        raise ValueError("seeds: a DAgger round needs at least one scenario")
    stats = {
        "round": round_index,
        "expert": expert,
        "seeds": [int(s) for s in seeds],
        "labels": int(sum(len(r) for r in obs)),
        "policy_mean_return_usd": float(np.mean(returns)),
        "expert_fallbacks": fallbacks,
        "wall_s": time.perf_counter() - tick,
    }
    meta = {
        "forecast_horizon": forecast_horizon,
        "forecast_level": forecast_level or None,
        **layout_meta(flat),
    }
    data = DemoDataset.from_episodes(obs, actions, seed_col, period_col, meta)
    data.round[:] = round_index
    return data, stats


# ------------------------------------------------------------------------------------------- probe
def _say(msg: str) -> None:
    """One time-stamped progress line on stderr."""
    print(f"[mpc_labels {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mpc_reference(
    preset: str,
    seeds: Sequence[int],
    oracle_usd: Sequence[float],
    forecast_level: str | None,
    cache_dir: Path,
    progress: bool = True,
    expert: str = "mpc",
    **sweep_kwargs: Any,
) -> dict[str, Any]:
    """The planner ``expert`` itself on the validation seeds with draw 0's forecast errors (the draw
    :func:`agents.sb3.evaluate_vs_oracle` scores the cloned policies on): mean % of the oracle."""
    items = mpc_items(
        preset,
        seeds,
        1,
        window=MPC_WINDOW,
        time_limit_s=10.0,
        mip_gap=1e-4,
        forecast_horizon=24,
        forecast_level=forecast_level,
        expert=expert,
    )
    results = run_sweep(
        mpc_episode,
        items,
        out_dir=cache_dir,
        progress=progress,
        desc=f"{expert} on validation",
        **sweep_kwargs,
    )
    ok = results_or_raise(results, f"{expert} validation episodes", 0.0)
    pcts = [100.0 * r.result["return_usd"] / o for r, o in zip(ok, oracle_usd, strict=True)]
    return {"pct_of_oracle": float(np.mean(pcts)), "fallbacks": sum(int(r.result["fallbacks"]) for r in ok)}


def clone_and_score(
    cfg: TrainConfig,
    data: DemoDataset,
    scenarios: Sequence[Scenario],
    oracle_usd: Sequence[float],
    eval_levels: Sequence[str],
    model_path: Path | None = None,
    dagger: Callable[[PredictFn, int], DemoDataset] | None = None,
) -> dict[str, Any]:
    """Clone ``data`` into a fresh network of the pipeline (``cfg``: a :class:`TrainConfig`; same
    algorithm, hyperparameters, features extractor, seed, ``BCConfig(epochs=cfg.bc_epochs,
    seed=cfg.seed)`` and fine-tuning ``log_std`` as its BC stage) and score it on ``scenarios`` at
    each of ``eval_levels`` (% of the oracle's benefit ``oracle_usd``).

    ``dagger(predict, r)`` (optional): the new pairs of DAgger round ``r`` = 1 .. ``cfg.dagger_rounds``
    for the current policy (e.g. :func:`planner_dagger_round`); after each round the network is
    retrained on the aggregate as the pipeline's DAgger stage does (``cfg.dagger_epochs`` at
    ``cfg.dagger_lr``, validation on BC's validation scenarios) and scored again. Each round's record
    (the BC record's keys) is in ``dagger``, in order."""
    from agents.bc import BCConfig, behaviour_clone
    from agents.sb3 import (
        evaluate_vs_oracle,
        flat_predictor,
        make_model,
        make_vec_env,
        policy_features,
        set_log_std,
        set_torch_threads,
    )

    def record(data: DemoDataset, hist: Any) -> dict[str, Any]:
        set_log_std(model, cfg.ft_log_std)
        tick = time.perf_counter()
        scores = {
            level: evaluate_vs_oracle(model, scenarios, oracle_usd, cfg.preset, level)
            for level in eval_levels
        }
        return {
            "rows": len(data),
            "bc_epochs_run": len(hist.epochs),
            "best_epoch": hist.best_epoch,
            "val_loss_before": hist.initial_val["loss"],
            "val_loss_after": hist.final_val["loss"],
            "start_acc_after": hist.final_val["start_acc"],
            "bc_val_seeds": list(hist.val_seeds),
            "bc_wall_s": hist.wall_s,
            "eval_wall_s": time.perf_counter() - tick,
            "pct_of_oracle": {level: s["pct_of_oracle"] for level, s in scores.items()},
            "benefit_usd": {level: s["benefit_usd"] for level, s in scores.items()},
        }

    set_torch_threads(cfg.torch_threads)
    model = make_model(
        cfg.algo,
        make_vec_env(cfg.preset, 1, cfg.seed),
        cfg.seed,
        hyperparams=cfg.hyperparams(),
        policy_extra=policy_features(cfg.preset, cfg.window_features),
    )
    hist = behaviour_clone(model.policy, data, BCConfig(epochs=cfg.bc_epochs, seed=cfg.seed))
    result = record(data, hist)
    val_seeds = list(hist.val_seeds)
    if dagger is not None:
        result["dagger"] = []
        for r in range(1, cfg.dagger_rounds + 1):
            tick = time.perf_counter()
            data = data.concat(dagger(flat_predictor(model), r))
            label_s = time.perf_counter() - tick
            retrain = BCConfig(
                epochs=cfg.dagger_epochs, seed=cfg.seed, lr=cfg.dagger_lr, patience=None, val_seeds=val_seeds
            )
            hist = behaviour_clone(model.policy, data, retrain)
            result["dagger"].append({**record(data, hist), "round": r, "label_wall_s": label_s})
    if model_path is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(model_path) as tmp:
            model.save(tmp)
    return result


def expert_pct_on_training(mpc: DemoDataset, oracle: DemoDataset) -> float:
    """MPC's mean return on the training episodes in % of the clairvoyant oracle's objective (per seed
    and draw, the seeds both datasets have)."""
    pcts = [
        100.0 * ret / oracle.meta["oracle_objective_usd"][seed]
        for seed, rets in mpc.meta["expert_return_usd"].items()
        if seed in oracle.meta["oracle_objective_usd"]
        for ret in rets
    ]
    return float(np.mean(pcts)) if pcts else math.nan


def summarize_clones(runs: Sequence[Mapping[str, Any]], eval_levels: Sequence[str]) -> dict[str, Any]:
    """One table row from :func:`clone_and_score` runs with several network seeds: the mean and the
    standard deviation over seeds of % of the oracle per level, mean losses, total BC time, and the
    runs themselves (``clones``)."""
    pcts = {level: [r["pct_of_oracle"][level] for r in runs] for level in eval_levels}
    return {
        "rows": runs[0]["rows"],
        "clone_seeds": [r["seed"] for r in runs],
        "pct_of_oracle": {level: float(np.mean(v)) for level, v in pcts.items()},
        "pct_of_oracle_sd": {
            level: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for level, v in pcts.items()
        },
        "pct_of_oracle_by_seed": pcts,
        "val_loss_before": float(np.mean([r["val_loss_before"] for r in runs])),
        "val_loss_after": float(np.mean([r["val_loss_after"] for r in runs])),
        "start_acc_after": float(np.mean([r["start_acc_after"] for r in runs])),
        "bc_wall_s": float(sum(r["bc_wall_s"] for r in runs)),
        "clones": list(runs),
    }


def paired_difference(row: Mapping[str, Any], base: Mapping[str, Any], level: str) -> tuple[float, float]:
    """Mean and standard deviation over network seeds of ``row``'s % of the oracle minus ``base``'s
    (same seeds, so the network initialisation and the BC split cancel)."""
    diff = np.subtract(row["pct_of_oracle_by_seed"][level], base["pct_of_oracle_by_seed"][level])
    return float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0


def format_table(rows: Sequence[Mapping[str, Any]], eval_levels: Sequence[str]) -> str:
    """The probe's table: one line per expert (and MPC itself), % of the oracle per level as mean +-
    standard deviation over network seeds, and each expert's paired difference to the first row.
    ``dataset s`` is this run's time for the dataset (a cached dataset: the time to read it back; a
    DAgger row adds one clone's labelling up to that round); ``BC s`` sums the clones' training;
    BC validation losses are on each expert's own labels (how predictable they are), not comparable
    as scores."""
    pct_cols = "".join(f" | % oracle {level}" for level in eval_levels)
    diff_cols = "".join(f" | vs first, {level}" for level in eval_levels)
    lines = [
        f"| labels | rows | dataset s | BC val loss | start acc | BC s{pct_cols}{diff_cols} |",
        "|---" * (6 + 2 * len(eval_levels)) + "|",
    ]
    base = rows[0]
    for row in rows:
        if row.get("rows") is None:
            pcts = "".join(f" | {row['pct_of_oracle'][level]:.1f}" for level in eval_levels)
            lines.append(f"| {row['labels']} | - | - | - | - | -{pcts}" + " | -" * len(eval_levels) + " |")
            continue
        pcts = "".join(
            f" | {row['pct_of_oracle'][level]:.1f} +- {row['pct_of_oracle_sd'][level]:.1f}"
            for level in eval_levels
        )
        diffs = "".join(
            " | {:+.1f} +- {:.1f}".format(*paired_difference(row, base, level)) for level in eval_levels
        )
        lines.append(
            f"| {row['labels']} | {row['rows']} | {row['dataset_wall_s']:.0f} | "
            f"{row['val_loss_before']:.3f} -> {row['val_loss_after']:.3f} | {row['start_acc_after']:.2f} | "
            f"{row['bc_wall_s']:.0f}{pcts}{diffs} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m agents.mpc_labels``."""
    from envs.forecast import LEVELS
    from envs.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m agents.mpc_labels",
        description="Issue 13: clone the clairvoyant oracle's labels and MPC's labels on the same training "
        "scenarios and noise draws, score both on the same validation scenarios (percent of the oracle).",
    )
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="default %(default)s")
    parser.add_argument("--scenarios", type=int, default=200, help="training scenarios (default %(default)s)")
    parser.add_argument(
        "--level",
        default="typical",
        choices=LEVELS,
        help="forecast errors of the datasets (default %(default)s)",
    )
    parser.add_argument(
        "--eval-levels",
        default=None,
        help="comma-separated forecast levels to score at (default: --level, then poor)",
    )
    parser.add_argument(
        "--noise-draws", type=int, default=3, help="episodes per scenario (default %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=100, help="BC epochs, early stopping as train.py")
    parser.add_argument("--val-scenarios", type=int, default=16, help="validation scenarios (default 16)")
    parser.add_argument(
        "--seed", type=int, default=0, help="base seed of the scenario draws and the networks"
    )
    parser.add_argument(
        "--expert",
        default="mpc",
        choices=sorted(EXPERTS),
        help="the planner whose labels are compared with the oracle's: mpc (the rolling MILP) or mpc_lp "
        "(its LP relaxation, about a tenth of its decision time) (default %(default)s)",
    )
    parser.add_argument(
        "--dagger-rounds",
        type=int,
        default=0,
        help="DAgger rounds on the planner's clones, the planner labelling every state the clone visits "
        "(default %(default)s; the oracle's clones get none here: train.py's DAgger is theirs)",
    )
    parser.add_argument(
        "--dagger-scenarios",
        type=int,
        default=200,
        help="fresh training scenarios per DAgger round (default %(default)s)",
    )
    parser.add_argument("--mix", action="store_true", help="also clone both datasets concatenated")
    parser.add_argument(
        "--clone-seeds",
        type=int,
        default=3,
        help="networks cloned per dataset, seeds --seed + m (default %(default)s): the spread between "
        "them is the noise a difference between experts is read against",
    )
    parser.add_argument("--workers", type=int, default=None, help="solves at once (default: all cores)")
    parser.add_argument(
        "--out",
        default="runs/mpc_labels",
        help="caches, datasets, models and the table (default %(default)s)",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Validate the flags before any work (``parser.error`` on a bad one); returns the eval levels."""
    from envs.forecast import LEVELS

    for name, low in (
        ("scenarios", 2),
        ("noise_draws", 1),
        ("epochs", 1),
        ("val_scenarios", 1),
        ("seed", 0),
        ("clone_seeds", 1),
        ("dagger_rounds", 0),
        ("dagger_scenarios", 1),
    ):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low} (got {getattr(args, name)})")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1 (got {args.workers})")
    text = args.eval_levels if args.eval_levels is not None else f"{args.level},poor"
    levels = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    bad = [level for level in levels if level not in LEVELS]
    if bad or not levels:
        parser.error(f"--eval-levels: {bad or text!r}: choose from {list(LEVELS)}")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {args.out}: cannot create it ({exc.strerror or exc})")
    return levels


def main(argv: list[str] | None = None) -> int:
    from agents.imitation import TRAIN_SEED_LOW, build_oracle_dataset, solve_schedules
    from agents.train_config import TrainConfig

    parser = build_parser()
    args = parser.parse_args(argv)
    eval_levels = check_args(parser, args)
    out = Path(args.out)
    cfg = TrainConfig(
        preset=args.preset,
        seed=args.seed,
        bc_scenarios=args.scenarios,
        bc_epochs=args.epochs,
        dagger_rounds=args.dagger_rounds,
        dagger_scenarios=args.dagger_scenarios,
        eval_scenarios=args.val_scenarios,
        forecast_level=args.level,
        noise_draws=args.noise_draws,
        workers=args.workers,
        ensemble=1,
        out=str(out),
    )
    try:
        cfg.check()
    except ValueError as exc:
        parser.error(str(exc))
    plan = cfg.seed_plan()
    val_seeds, train_seeds = plan["validation"], plan["bc"]
    round_seeds = plan.get("dagger", [])
    if (
        min(val_seeds + train_seeds + [s for r in round_seeds for s in r]) < TRAIN_SEED_LOW
    ):  # the held-out seeds stay unseen
        parser.error("seed plan reaches below the training range")
    sweep = cfg.sweep_kwargs()
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    _say(
        f"{args.preset}: {len(train_seeds)} training scenarios x {args.noise_draws} draws at {args.level}, "
        f"{len(val_seeds)} validation scenarios (seeds from base seed {args.seed}), {args.epochs} BC epochs"
    )

    tick = time.perf_counter()
    scheds = solve_schedules(
        args.preset, val_seeds, cache_dir=out / "cache" / "oracle", mip_gap=1e-4, **sweep, progress=True
    )
    val_scenarios = [scheds[s].scenario for s in val_seeds if s in scheds]
    oracle_usd = [scheds[s].objective_usd for s in val_seeds if s in scheds]
    val_kept = [s for s in val_seeds if s in scheds]
    timings["validation_oracle_s"] = time.perf_counter() - tick
    _say(f"validation oracle: {len(val_kept)} scenarios in {timings['validation_oracle_s']:.0f} s")

    common = {
        "base_seed": args.seed,
        "forecast_level": args.level,
        "noise_draws": args.noise_draws,
        "progress": True,
        **sweep,
    }
    tick = time.perf_counter()
    oracle_data = build_oracle_dataset(
        args.preset,
        train_seeds,
        cache_dir=out / "cache" / "oracle",
        time_limit_s=cfg.oracle_time_limit_s,
        mip_gap=cfg.demo_mip_gap,
        **common,
    )
    timings["oracle_dataset_s"] = time.perf_counter() - tick
    oracle_data.save(out / "datasets" / "oracle.npz")
    _say(f"oracle dataset: {len(oracle_data)} pairs in {timings['oracle_dataset_s']:.0f} s")

    tick = time.perf_counter()
    expert, expert_label = args.expert, EXPERTS[args.expert]
    mpc_data = build_mpc_dataset(
        args.preset, oracle_data.seeds, cache_dir=out / "cache" / "mpc", expert=expert, **common
    )
    timings["mpc_dataset_s"] = time.perf_counter() - tick
    mpc_data.save(out / "datasets" / f"{expert}.npz")
    expert_pct = expert_pct_on_training(mpc_data, oracle_data)
    _say(
        f"{expert} dataset: {len(mpc_data)} pairs in {timings['mpc_dataset_s']:.0f} s "
        f"({expert} earns {expert_pct:.1f} % of the oracle on these episodes, "
        f"{mpc_data.meta['mpc_fallbacks']} fallbacks)"
    )
    dagger_stats: list[dict[str, Any]] = []

    def planner_labels(predict: PredictFn, r: int) -> DemoDataset:
        new, stats = planner_dagger_round(
            predict, args.preset, round_seeds[r - 1], r, expert=expert, forecast_level=args.level
        )
        dagger_stats.append(stats)
        _say(
            f"DAgger round {r}: {stats['labels']} {expert} labels in {stats['wall_s']:.0f} s "
            f"(policy's mean return {stats['policy_mean_return_usd']:,.0f} USD)"
        )
        return new

    datasets = [
        ("clairvoyant oracle", "oracle", oracle_data, timings["oracle_dataset_s"]),
        (expert_label, expert, mpc_data, timings["mpc_dataset_s"]),
    ]
    if args.mix:
        mixed = oracle_data.concat(mpc_data)
        datasets.append(
            ("both (concatenated)", "mix", mixed, timings["oracle_dataset_s"] + timings["mpc_dataset_s"])
        )
    rows: list[dict[str, Any]] = []
    for label, name, data, wall in datasets:
        tick, runs = time.perf_counter(), []
        dagger = planner_labels if name == expert and args.dagger_rounds else None
        for m in range(args.clone_seeds):
            clone_cfg = dataclasses.replace(cfg, seed=cfg.seed + m)
            path = out / "models" / f"{name}_seed{clone_cfg.seed}.zip"
            runs.append(
                {
                    "seed": clone_cfg.seed,
                    **clone_and_score(clone_cfg, data, val_scenarios, oracle_usd, eval_levels, path, dagger),
                }
            )
            last = runs[-1]
            scores = ", ".join(f"{lvl} {pct:.1f} %" for lvl, pct in last["pct_of_oracle"].items())
            _say(
                f"{label}, network seed {clone_cfg.seed}: BC validation loss {last['val_loss_after']:.3f} "
                f"in {last['bc_wall_s']:.0f} s; {scores} of the oracle"
            )
        timings[f"{name}_clone_and_score_s"] = time.perf_counter() - tick
        rows.append(
            {"labels": label, "dataset": name, "dataset_wall_s": wall, **summarize_clones(runs, eval_levels)}
        )
        for r in range(1, args.dagger_rounds + 1 if dagger else 1):
            per_round = [{"seed": run["seed"], **run["dagger"][r - 1]} for run in runs]
            # each clone labels its own rounds: the dataset's time is the expert's episodes plus one
            # clone's labelling up to round r (the mean over clones)
            label_s = float(np.mean([sum(x["label_wall_s"] for x in run["dagger"][:r]) for run in runs]))
            for x in per_round:
                scores = ", ".join(f"{lvl} {pct:.1f} %" for lvl, pct in x["pct_of_oracle"].items())
                _say(f"{label} + DAgger {r}, network seed {x['seed']}: {scores} of the oracle")
            rows.append(
                {
                    "labels": f"{label} + DAgger {r}",
                    "dataset": f"{name}_dagger{r}",
                    "dataset_wall_s": wall + label_s,
                    **summarize_clones(per_round, eval_levels),
                }
            )

    tick = time.perf_counter()
    for planner in dict.fromkeys(["mpc", expert]):
        reference = {
            level: mpc_reference(
                args.preset, val_kept, oracle_usd, level, out / "cache" / "mpc", expert=planner, **sweep
            )
            for level in eval_levels
        }
        rows.append(
            {
                "labels": f"{planner} itself (reference)",
                "pct_of_oracle": {lvl: r["pct_of_oracle"] for lvl, r in reference.items()},
            }
        )
    timings["mpc_reference_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - t_start
    table = format_table(rows, eval_levels)
    print(table)
    record = {
        "args": vars(args),
        "eval_levels": eval_levels,
        "seeds": {"validation": val_kept, "train": oracle_data.seeds},
        "noise_draw_seeds": mpc_data.meta["noise_draw_seeds"],
        "mpc_pct_of_oracle_on_training_episodes": expert_pct,
        "mpc_fallbacks_training": mpc_data.meta["mpc_fallbacks"],
        "oracle_dataset": {"mip_gap": cfg.demo_mip_gap, "time_limit_s": cfg.oracle_time_limit_s},
        "mpc_dataset": mpc_data.meta["expert"],
        "dagger": dagger_stats,
        "rows": rows,
        "table": table,
        "timings_s": timings,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = out / PROBE_FILE
    atomic_write_json(path, record)
    _say(f"wrote {path} ({timings['total_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
