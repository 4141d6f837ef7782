"""The stages that clone the oracle: the validation oracle, the oracle dataset, behaviour cloning,
DAgger rounds and the value head's pre-training (see :mod:`agents.pipeline` for the order).

Each stage reads what it needs from the :class:`~agents.run_folder.Run`, writes its outputs into
the run folder and then its record ``stages/<name>.json``; on ``--resume`` a recorded stage reads
its outputs back instead of running again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.imitation import (
    BCConfig,
    DemoDataset,
    behaviour_clone,
    build_oracle_dataset,
    dagger_round,
    rollout,
    solve_schedules,
)
from agents.run_folder import Run, save_model, say, write_json
from agents.safety import safe_flat_env
from agents.sb3 import (
    OracleEvalCallback,
    flat_predictor,
    load_model,
    set_log_std,
)
from envs.scenario import Scenario
from envs.wrappers import DEFAULT_REWARD_SCALE


def _forget(evaluator: OracleEvalCallback, label: str) -> None:
    """Drop validation rows of a stage that is run again on resume (it was interrupted after scoring)."""
    evaluator.history = [h for h in evaluator.history if h["label"] != label]
    evaluator.best_pct = max((h["pct_of_oracle"] for h in evaluator.history), default=-math.inf)


def stage_validation(run: Run) -> tuple[list[Scenario], list[float]]:
    """The validation scenarios and their oracle benefit (USD), solved to a MIP gap of 1e-4; the
    schedules are cached in ``oracle_cache/full`` (a resumed run reads them back)."""
    cfg, tick = run.cfg, time.perf_counter()
    scheds = solve_schedules(
        cfg.preset,
        run.plan["validation"],
        cache_dir=run.out / "oracle_cache" / "full",
        time_limit_s=cfg.oracle_time_limit_s,
        mip_gap=1e-4,
        progress=cfg.progress_bar,
        scenarios=run.scenarios.mapping(),
        **cfg.sweep_kwargs(),
    )
    seeds = [s for s in run.plan["validation"] if s in scheds]
    run.timings["validation_oracle_s"] = time.perf_counter() - tick
    return [scheds[s].scenario for s in seeds], [scheds[s].objective_usd for s in seeds]


def stage_oracle_dataset(run: Run) -> DemoDataset:
    """Oracle demonstrations on the BC seeds -> ``datasets/oracle.npz`` (and ``bc_dataset.npz``)."""
    cfg, path = run.cfg, run.out / "datasets" / "oracle.npz"
    if run.done("oracle_dataset"):
        return DemoDataset.load(path)
    tick = time.perf_counter()
    data = build_oracle_dataset(
        cfg.preset,
        run.plan["bc"],
        base_seed=cfg.seed,
        cache_dir=run.out / "oracle_cache" / "full",
        time_limit_s=cfg.oracle_time_limit_s,
        mip_gap=cfg.demo_mip_gap,
        progress=cfg.progress_bar,
        forecast_level=cfg.forecast_level,
        noise_draws=cfg.noise_draws,
        exact_draws=cfg.exact_draws,
        scenarios=run.scenarios.mapping(),
        **cfg.sweep_kwargs(),
    )
    wall = time.perf_counter() - tick
    info = {
        "dataset_wall_s": wall,
        "dataset_rows": len(data),
        "dataset_scenarios_per_s": len(data.seeds) / max(wall, 1e-9),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    data.save(path)
    data.save(run.out / "bc_dataset.npz")
    say(
        f"oracle dataset: {len(data.seeds)} scenarios, {len(data)} pairs in {wall:.1f} s "
        f"({info['dataset_scenarios_per_s']:.2f} scenarios/s)"
    )
    run.finish("oracle_dataset", {**info, "wall_s": wall})
    return data


def stage_behaviour_cloning(
    run: Run, model: BaseAlgorithm, data: DemoDataset, evaluator: OracleEvalCallback
) -> dict[str, Any]:
    """Clone the oracle into ``model.policy`` (:func:`agents.imitation.behaviour_clone`), set the
    fine-tuning ``log_std`` and score it on validation (label ``bc``) -> ``stages/bc.zip``.

    Returns the round record (the BC history, with the validation seeds every later round keeps)."""
    cfg, path = run.cfg, run.out / "stages" / "bc.zip"
    if run.done("bc"):
        model.set_parameters(str(path), device="cpu")
        return run.stage_info("bc")["round"]
    hist = behaviour_clone(
        model.policy, data, BCConfig(epochs=cfg.bc_epochs, seed=cfg.seed), run.epochs("bc")
    )
    say(
        f"BC: validation loss {hist.initial_val['loss']:.3f} -> {hist.final_val['loss']:.3f} "
        f"(start accuracy {hist.final_val['start_acc']:.2f}) in {hist.wall_s:.1f} s"
    )
    set_log_std(model, cfg.ft_log_std)
    _forget(evaluator, "bc")
    evaluator.evaluate(model, 0, "bc")
    save_model(model, path)
    return run.finish("bc", {"round": {"round": 0, **hist.to_dict()}, "wall_s": hist.wall_s})["round"]


def stage_dagger_round(
    run: Run,
    r: int,
    model: BaseAlgorithm,
    data: DemoDataset,
    val_seeds: Sequence[int],
    evaluator: OracleEvalCallback,
) -> tuple[DemoDataset, dict[str, Any]]:
    """DAgger round ``r``: the current policy (with the safety layer) plays the round's scenarios,
    the oracle labels every visited state, the pairs join ``data`` and the policy is retrained on
    the aggregate (``dagger_epochs`` at ``dagger_lr``, validation on ``val_seeds``); then scored
    (label ``dagger<r>``) -> ``datasets/dagger<r>.npz``, ``stages/dagger<r>.zip``.

    Returns the aggregated dataset and the round record."""
    cfg, name = run.cfg, f"dagger{r}"
    data_path, model_path = run.out / "datasets" / f"{name}.npz", run.out / "stages" / f"{name}.zip"
    if run.done(name):
        model.set_parameters(str(model_path), device="cpu")
        return DemoDataset.load(data_path), run.stage_info(name)["round"]
    tick = time.perf_counter()
    new, stats = dagger_round(
        flat_predictor(model),
        cfg.preset,
        run.plan["dagger"][r - 1],
        r,
        cache_dir=run.out / "oracle_cache" / "dagger",
        time_limit_s=cfg.oracle_time_limit_s,
        mip_gap=cfg.demo_mip_gap,
        progress=cfg.progress_bar,
        make_env=safe_flat_env,
        forecast_level=cfg.forecast_level,
        scenarios=run.scenarios.mapping(),
        **cfg.sweep_kwargs(),
    )
    data = data.concat(new)
    data.meta["dagger_rounds"] = r
    data.meta.setdefault("dagger", []).append(stats)
    data.save(data_path)
    data.save(run.out / "bc_dataset.npz")
    bc_cfg = BCConfig(
        epochs=cfg.dagger_epochs, seed=cfg.seed, lr=cfg.dagger_lr, patience=None, val_seeds=list(val_seeds)
    )
    hist = behaviour_clone(model.policy, data, bc_cfg, run.epochs(name))
    say(
        f"DAgger round {r}: {stats['labels']} labels in {stats['relabel_wall_s']:.1f} s, "
        f"validation loss {hist.initial_val['loss']:.3f} -> {hist.final_val['loss']:.3f}"
    )
    set_log_std(model, cfg.ft_log_std)
    _forget(evaluator, name)
    evaluator.evaluate(model, 0, name)
    save_model(model, model_path)
    rnd = {"round": r, "stats": stats, **hist.to_dict()}
    run.finish(name, {"round": rnd, "wall_s": time.perf_counter() - tick})
    return data, rnd


def pretrain_value(
    model: BaseAlgorithm,
    scenarios: Sequence[Scenario],
    preset: str,
    *,
    reward_scale: float = DEFAULT_REWARD_SCALE,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    forecast_level: str | None = None,
) -> dict[str, float]:
    """Fit a PPO/A2C value head to the discounted (scaled) returns of the policy's own rollouts.

    The policy plays each scenario deterministically; the targets are ``sum_k gamma^k r_{t+k}`` with
    the model's ``gamma`` and the training reward scale. Only the value network is updated, so the
    first advantages of fine-tuning are not the noise of an untrained critic. Returns the value
    loss before and after (mean squared error, reward-scale units), ``{}`` for SAC.
    """
    if not hasattr(model.policy, "predict_values"):
        return {}
    gamma = float(model.gamma)
    obs_rows, targets = [], []
    predict = flat_predictor(model)
    for sc in scenarios:
        ep = rollout(predict, sc, preset, make_env=safe_flat_env, forecast_level=forecast_level)
        rewards = np.asarray(ep.rewards_usd) * reward_scale
        ret = np.zeros_like(rewards)
        acc = 0.0
        for t in range(len(rewards) - 1, -1, -1):
            acc = rewards[t] + gamma * acc
            ret[t] = acc
        obs_rows.append(ep.obs)
        targets.append(ret)
    obs = th.as_tensor(np.concatenate(obs_rows), dtype=th.float32)
    target = th.as_tensor(np.concatenate(targets), dtype=th.float32)
    policy = model.policy
    params = list(policy.mlp_extractor.value_net.parameters()) + list(policy.value_net.parameters())
    optimizer = th.optim.Adam(params, lr=lr)

    def loss_all() -> float:
        with th.no_grad():
            return float(((policy.predict_values(obs).flatten() - target) ** 2).mean())

    before = loss_all()
    gen = th.Generator().manual_seed(0)
    policy.set_training_mode(True)
    for _ in range(epochs):
        perm = th.randperm(len(obs), generator=gen)
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            loss = ((policy.predict_values(obs[idx]).flatten() - target[idx]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    policy.set_training_mode(False)
    return {"value_mse_before": before, "value_mse_after": loss_all(), "rows": len(obs)}


def stage_value_pretrain(
    run: Run, model: BaseAlgorithm, evaluator: OracleEvalCallback, bc_info: dict[str, Any]
) -> dict[str, Any]:
    """The start of fine-tuning: the best cloned policy by validation (back from ``model.zip`` if
    the last round did not improve), its value head fitted (:func:`pretrain_value`) on the first
    ``value_pretrain_scenarios`` BC seeds -> ``bc_model.zip``, ``bc_info.json``.

    Returns ``bc_info`` with ``best_cloned`` and ``value_pretrain``."""
    cfg = run.cfg
    cloned = [h for h in evaluator.history if h["label"] == "bc" or h["label"].startswith("dagger")]
    bc_info["best_cloned"] = next((h["label"] for h in reversed(cloned) if h["best"]), "bc")
    if evaluator.history and not evaluator.history[-1]["best"]:
        # The last round did not improve on validation: continue from the best cloned policy.
        best = load_model(evaluator.best_path, trust_pickle=True)
        model.policy.load_state_dict(best.policy.state_dict())
    set_log_std(model, cfg.ft_log_std)
    say(f"cloned policy ({bc_info['best_cloned']}): {evaluator.best_pct:.1f} % of the oracle on validation")
    if cfg.value_pretrain_scenarios > 0 and cfg.timesteps > 0:
        tick = time.perf_counter()
        vseeds = run.plan["bc"][: cfg.value_pretrain_scenarios]
        vinfo = pretrain_value(
            model,
            [run.scenarios.scenario(s) for s in vseeds],
            cfg.preset,
            forecast_level=cfg.forecast_level,
        )
        bc_info["value_pretrain"] = vinfo
        run.timings["value_pretrain_s"] = time.perf_counter() - tick
        if vinfo:
            say(f"value head: MSE {vinfo['value_mse_before']:.4f} -> {vinfo['value_mse_after']:.4f}")
    write_json(run.out / "bc_info.json", bc_info)
    return bc_info
