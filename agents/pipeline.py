"""The training pipeline as a short sequence of named stages; ``train.py`` calls :func:`train_agent`.

Each stage is a function with explicit inputs and outputs. It writes its outputs into the run folder
and, last, its record ``stages/<name>.json``; on ``--resume`` a stage whose record exists is not run
again, its outputs are read back instead.

1. :func:`stage_seeds`: the config, the scenario seeds, versions -> ``config.json``;
2. :func:`stage_validation`: the oracle on the validation seeds, the reference of every score
   -> ``oracle_cache/full/`` (a cache: a resumed run reads the schedules back);
3. :func:`stage_oracle_dataset`: oracle demonstrations on the BC seeds -> ``datasets/oracle.npz``;
4. :func:`stage_behaviour_cloning`: BC of the policy, scored on validation -> ``stages/bc.zip``;
5. :func:`stage_dagger_round` (r = 1..``dagger_rounds``): DAgger labels, retraining on the aggregate
   -> ``datasets/dagger<r>.npz``, ``stages/dagger<r>.zip``;
6. :func:`stage_value_pretrain`: the best cloned policy, its value head fitted -> ``bc_model.zip``,
   ``bc_info.json`` (on resume, an existing ``bc_model.zip`` skips stages 3-6);
7. :func:`stage_finetune`: RL fine-tuning (``timesteps=0`` switches it off) -> ``checkpoints/``,
   ``model.zip``; resumed from its last checkpoint (SB3 zip + ``latest.json``);
8. :func:`stage_ensemble`: ``ensemble - 1`` members cloned in parallel -> ``ensemble/``,
   ``ensemble.json`` (finished members are reused).

``bc_dataset.npz`` always holds the latest aggregated dataset (what ensemble members clone),
``eval_history.json`` every validation score, ``model.zip`` the best model by validation (the cloned
policies are candidates too), ``learning_curve.png`` the plot of both. A fresh run (no ``--resume``)
first clears ``stages/``, ``datasets/``, ``checkpoints/`` and ``bc_model.zip``, so that nothing of an
earlier run in the same folder is taken for this run's output.

The stages live in rooms of their own: :mod:`agents.train_config` (the settings),
:mod:`agents.run_folder` (stage 1 and the folder), :mod:`agents.imitation_stages` (stages 2-6),
:mod:`agents.rl_stages` (stages 7-8); this module runs them in order. Their names stay importable
from here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from agents.imitation import (
    dagger_validation_seeds,
)
from agents.imitation_stages import (
    pretrain_value,
    stage_behaviour_cloning,
    stage_dagger_round,
    stage_oracle_dataset,
    stage_validation,
    stage_value_pretrain,
)
from agents.plots import plot_learning_curve
from agents.policy_file import export as export_policy
from agents.rl_stages import rollout_steps, stage_ensemble, stage_finetune, whole_rollouts
from agents.run_folder import (
    Run,
    config_changes,
    kept_summary,
    network_changes,
    resumed_config,
    save_model,
    saved_config,
    say,
    stage_seeds,
    writable_problem,
)
from agents.sb3 import (
    POLICY_KEYS,
    Interrupted,
    OracleEvalCallback,
    latest_checkpoint,
    load_model,
    make_model,
    set_log_std,
    set_torch_threads,
)
from agents.train_config import MAX_SEED, RUNTIME_FIELDS, TrainConfig
from agents.train_log import LoggedEvalCallback, TrainLog
from agents.training_scenarios import (
    make_train_vec_env,
    policy_extra,
)
from envs.scenario import Scenario

__all__ = [
    "MAX_SEED",
    "RUNTIME_FIELDS",
    "Interrupted",
    "Run",
    "TrainConfig",
    "config_changes",
    "kept_summary",
    "network_changes",
    "pretrain_value",
    "resumed_config",
    "rollout_steps",
    "saved_config",
    "stage_behaviour_cloning",
    "stage_dagger_round",
    "stage_ensemble",
    "stage_finetune",
    "stage_oracle_dataset",
    "stage_seeds",
    "stage_validation",
    "stage_value_pretrain",
    "train_agent",
    "whole_rollouts",
    "writable_problem",
]


def _vec_env(run: Run, seed: int) -> Any:
    """The model's vec env (fine-tuning): the run's scenarios, ``n_envs`` copies, its forecast errors."""
    cfg = run.cfg
    return make_train_vec_env(run.scenarios, cfg.n_envs, seed, forecast_level=cfg.forecast_level)


def _evaluator(
    run: Run, scenarios: Sequence[Scenario], oracle_usd: Sequence[float], ckpt: dict[str, Any] | None
) -> OracleEvalCallback:
    """The validation scorer, with the history of a resumed run (checkpoint's, else the file's)."""
    history: list[dict[str, Any]] = []
    history_path = run.out / "eval_history.json"
    if run.resume and history_path.exists():
        history = json.loads(history_path.read_text())
    if ckpt is not None:
        history = ckpt.get("history", history)
    best = max((h["pct_of_oracle"] for h in history), default=-math.inf)
    return LoggedEvalCallback(
        scenarios,
        oracle_usd,
        run.cfg.preset,
        run.cfg.eval_freq,
        run.out / "model.zip",
        history,
        best,
        history_path,
        1,
        forecast_level=run.cfg.forecast_level,
        train_log=run.log,
    )


def _imitate(run: Run, model: BaseAlgorithm, evaluator: OracleEvalCallback) -> dict[str, Any]:
    """Oracle dataset -> behaviour cloning -> DAgger rounds -> value pre-training on ``model``.

    The validation scenarios of BC stay the validation scenarios of every DAgger retraining (plus a
    tenth of each round's new scenarios)."""
    tick = time.perf_counter()
    data = stage_oracle_dataset(run)
    bc_info: dict[str, Any] = {
        k: v for k, v in run.stage_info("oracle_dataset").items() if k.startswith("dataset_")
    }
    rounds = [stage_behaviour_cloning(run, model, data, evaluator)]
    val_seeds = list(rounds[0]["val_seeds"])
    for r, seeds in enumerate(run.plan["dagger"], start=1):
        val_seeds += dagger_validation_seeds(seeds)
        data, rnd = stage_dagger_round(run, r, model, data, val_seeds, evaluator)
        rounds.append(rnd)
    bc_info["rounds"] = rounds
    run.timings["bc_total_s"] = time.perf_counter() - tick
    return stage_value_pretrain(run, model, evaluator, bc_info)


def train_agent(
    cfg: TrainConfig,
    resume: bool = False,
    stop_after_steps: int | None = None,
    apply: Collection[str] = (),
) -> dict[str, Any]:
    """BC from the oracle (optional, with DAgger), then RL fine-tuning; the best validated model wins.

    Runs the stages of this module in order (see its docstring for the run folder) and returns the
    ``config.json`` record with its ``summary``. ``resume`` continues the run saved in ``cfg.out``
    with its saved config (see :func:`resumed_config`; the fields named in ``apply`` are taken from
    ``cfg`` instead), skips the stages already recorded and continues fine-tuning from the last
    checkpoint (or from ``bc_model.zip`` if fine-tuning had not checkpointed yet). Raises
    :class:`Interrupted` on Ctrl-C (anywhere), its message saying where and what was kept
    (:func:`kept_summary`).
    """
    try:
        return _train(cfg, resume, stop_after_steps, apply)
    except (KeyboardInterrupt, Interrupted) as exc:
        where = f" {exc}" if isinstance(exc, Interrupted) and str(exc) else ""
        raise Interrupted(f"interrupted{where}; {kept_summary(Path(cfg.out))}") from exc


def _train(
    cfg: TrainConfig, resume: bool, stop_after_steps: int | None, apply: Collection[str]
) -> dict[str, Any]:
    t_start = time.perf_counter()
    run = stage_seeds(cfg, resume, apply)
    run.log = TrainLog(run.out, run.cfg.tensorboard)
    try:
        return _stages(run, t_start, stop_after_steps)
    finally:
        run.log.close()


def _stages(run: Run, t_start: float, stop_after_steps: int | None) -> dict[str, Any]:
    """Every stage after :func:`stage_seeds`, in order; returns the record with its summary."""
    cfg, out, record, resume = run.cfg, run.out, run.record, run.resume
    set_torch_threads(cfg.torch_threads)
    scenarios, oracle_usd = stage_validation(run)
    ckpt = latest_checkpoint(out / "checkpoints") if resume else None
    evaluator = _evaluator(run, scenarios, oracle_usd, ckpt)
    bc_info: dict[str, Any] | None = None
    done_steps, venv_seed = 0, cfg.seed
    # A resumed model continues with the run's hyperparameters as they are now (a changed learning
    # rate applies; a changed ft_log_std below); the network (net_arch, log_std_init) is the saved one.
    algo_hp = {k: v for k, v in cfg.hyperparams().items() if k not in POLICY_KEYS}
    if ckpt is not None:
        say(f"resuming from {ckpt['path']} at {ckpt['num_timesteps']} steps")
        done_steps = int(ckpt["num_timesteps"])
        venv_seed = cfg.seed + done_steps
        model = load_model(ckpt["path"], _vec_env(run, venv_seed), trust_pickle=True, overrides=algo_hp)
    elif resume and (out / "bc_model.zip").exists():
        say("resuming from the cloned model (no fine-tuning checkpoint yet)")
        model = load_model(
            out / "bc_model.zip", _vec_env(run, venv_seed), trust_pickle=True, overrides=algo_hp
        )
    else:
        model = make_model(
            cfg.algo,
            _vec_env(run, venv_seed),
            cfg.seed,
            hyperparams=cfg.hyperparams(),
            policy_extra=policy_extra(run.scenarios, cfg.window_features),
        )
        if cfg.bc:
            bc_info = _imitate(run, model, evaluator)
            record["timings_s"] = run.timings
            run.save_record()
        else:
            evaluator.evaluate(model, 0, "init")
        save_model(model, out / "bc_model.zip")
    if resume and "ft_log_std" in (record.get("resumed") or [{}])[-1].get("changed", {}):
        set_log_std(model, cfg.ft_log_std)  # a changed exploration noise applies from here on
    if resume and bc_info is None and (out / "bc_info.json").exists():
        bc_info = json.loads((out / "bc_info.json").read_text())

    model = stage_finetune(run, model, evaluator, done_steps, stop_after_steps)
    timings = run.timings
    ensemble_info = None
    (out / "ensemble.json").unlink(missing_ok=True)  # never leave an earlier run's ensemble deployed
    if cfg.ensemble > 1:
        tick = time.perf_counter()
        ensemble_info = stage_ensemble(run, scenarios, oracle_usd, out / "model.zip")
        timings["ensemble_s"] = time.perf_counter() - tick
    plot_learning_curve(out / "learning_curve.png", bc_info, evaluator.history)
    best_row = max(evaluator.history, key=lambda h: h["pct_of_oracle"])
    all_timings = {**record.get("timings_s", {}), **timings}
    summary = {
        "best_validation_pct_of_oracle": best_row["pct_of_oracle"],
        "best_from": f"{best_row['label']} at {best_row['timesteps']} steps",
        "final_timesteps": int(model.num_timesteps),
        "timings_s": all_timings,
        "total_wall_s": sum(all_timings.values()),
        "wall_s_this_run": time.perf_counter() - t_start,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if bc_info is not None:
        summary["bc"] = {
            "dataset_rows": bc_info.get("dataset_rows"),
            "dataset_wall_s": bc_info.get("dataset_wall_s"),
            "dataset_scenarios_per_s": bc_info.get("dataset_scenarios_per_s"),
            "loss_before": bc_info["rounds"][0]["initial_val"],
            "loss_after": bc_info["rounds"][-1]["final_val"],
        }
    if ensemble_info is not None:
        summary["ensemble"] = ensemble_info["validation"]
    # The deployed policy in the pickle-free format (agents/policy_file.py): what evaluate.py loads.
    trained = out / "ensemble.json" if ensemble_info is not None else out / "model.zip"
    shutil.rmtree(out / "policy", ignore_errors=True)
    export_as = run.scenarios.export_preset()
    if export_as is not None:
        summary["deployed"] = str(export_policy(trained, out / "policy", export_as))
    else:  # agents/policy_file.py rebuilds a network on a preset's spaces only
        summary["deployed"] = str(trained)
        say(f"no preset has this source's sizes: not exported pickle-free, deployed {trained}")
    record["summary"] = summary
    run.save_record()
    say(
        f"done: best single model {summary['best_validation_pct_of_oracle']:.1f} % of oracle on validation "
        f"({summary['best_from']}); deployed policy {summary['deployed']}"
    )
    return record
