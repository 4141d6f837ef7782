"""The stages after cloning: RL fine-tuning (off by default) and the ensemble of cloned members.

:func:`stage_finetune` continues SB3's ``learn`` from the last checkpoint, in whole rollouts
(:func:`whole_rollouts`: what SB3 runs anyway, so that its progress bar ends at its total);
:func:`stage_ensemble` clones the other members in parallel and scores every member and the
ensemble on the validation scenarios.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.demos import DemoDataset
from agents.ensemble import EnsembleModel, write_manifest
from agents.members import clone_members
from agents.run_folder import Run, say
from agents.sb3 import (
    BCAnchorCallback,
    Interrupted,
    OracleEvalCallback,
    StateCheckpointCallback,
    StopAfterCallback,
    evaluate_vs_oracle,
    load_model,
)
from envs.scenario import Scenario


def stage_finetune(
    run: Run,
    model: BaseAlgorithm,
    evaluator: OracleEvalCallback,
    done_steps: int,
    stop_after_steps: int | None = None,
) -> BaseAlgorithm:
    """RL fine-tuning from ``done_steps`` to ``cfg.timesteps`` with validation (``eval_freq``) and
    checkpoints (``checkpoint_freq``) -> ``checkpoints/``, ``model.zip`` (best so far).

    Raises :class:`Interrupted` on Ctrl-C (or at ``stop_after_steps``), with the wall time so far
    recorded in ``config.json``."""
    cfg, record = run.cfg, run.record
    remaining = cfg.timesteps - done_steps
    tick = time.perf_counter()
    spent_before = record.get("timings_s", {}).get("finetune_s", 0.0)
    if remaining > 0:
        checkpointer = StateCheckpointCallback(
            run.out / "checkpoints",
            cfg.checkpoint_freq,
            extra=lambda: {"history": evaluator.history, "best_pct": evaluator.best_pct},
        )
        callbacks: list[BaseCallback] = [evaluator, checkpointer]
        if cfg.ft_bc_steps > 0:
            data = DemoDataset.load(run.out / "bc_dataset.npz")
            reference = None
            if cfg.ft_bc_target == "policy":  # the cloned policy, also after a resume
                reference = load_model(run.out / "bc_model.zip", trust_pickle=True).policy
            say(f"fine-tuning with an anchor toward the {cfg.ft_bc_target}: {cfg.ft_bc_steps} steps/update")
            anchor = BCAnchorCallback(
                data, cfg.ft_bc_steps, cfg.ft_bc_lr, cfg.seed + done_steps, cfg.ft_bc_target, reference
            )
            callbacks.append(anchor)
        if stop_after_steps is not None:
            callbacks.append(StopAfterCallback(stop_after_steps))
        planned = whole_rollouts(model, remaining)
        if planned != remaining:
            per = rollout_steps(model)
            say(f"fine-tuning: {remaining} steps rounded up to {planned} (SB3 runs whole rollouts of {per})")
        if run.log is not None:
            run.log.stage = "finetune"
            model.set_logger(run.log.sb3)
        try:
            model.learn(planned, callback=callbacks, progress_bar=cfg.progress_bar, reset_num_timesteps=False)
        except (KeyboardInterrupt, Interrupted) as exc:
            spent = time.perf_counter() - tick + spent_before
            record["timings_s"] = {**record.get("timings_s", {}), **run.timings, "finetune_s": spent}
            run.save_record()
            raise Interrupted(f"at {model.num_timesteps} fine-tuning steps") from exc
        if run.log is not None:  # SB3 dumps before each update: the last update's train/* values
            run.log.sb3.dump(step=model.num_timesteps)
        checkpointer.save_now()
        if evaluator.history[-1]["timesteps"] != model.num_timesteps:
            evaluator.evaluate(model, model.num_timesteps)
    run.timings["finetune_s"] = time.perf_counter() - tick + spent_before
    return model


def rollout_steps(model: BaseAlgorithm) -> int:
    """Environment steps SB3 collects at a time: ``n_steps * n_envs`` (PPO, A2C), else ``n_envs``
    times the step-based ``train_freq`` (SAC; 1 for an episode-based one)."""
    n_steps = getattr(model, "n_steps", None)
    if n_steps is not None:
        return int(n_steps) * model.n_envs
    freq = getattr(model, "train_freq", None)
    per = int(freq.frequency) if freq is not None and str(freq.unit.value) == "step" else 1
    return per * model.n_envs


def whole_rollouts(model: BaseAlgorithm, steps: int) -> int:
    """``steps`` rounded up to whole rollouts (:func:`rollout_steps`): what SB3's ``learn(steps)``
    runs anyway. Passing this to ``learn`` makes its progress bar end at its total (asked 1,000
    with 480-step rollouts, it ran 1,440 and showed ``1,440/1,000``)."""
    per = rollout_steps(model)
    return -(-int(steps) // per) * per


def stage_ensemble(
    run: Run, scenarios: Sequence[Scenario], oracle_usd: Sequence[float], main_model: str | Path
) -> dict[str, Any]:
    """Clone ``cfg.ensemble - 1`` members from ``bc_dataset.npz`` in parallel, score every member and
    the ensemble on the validation scenarios -> ``ensemble/``, ``ensemble.json``.

    Member ``m`` uses seed ``cfg.seed + m`` (initialisation, minibatch order, validation split), so
    members differ from each other and from the main model. With DAgger rounds, a member learns as
    the main model did: first the oracle's own demonstrations, then all pairs (DAgger labels
    included) for ``dagger_epochs`` at ``dagger_lr`` (0.9 points of held-out benefit better per
    member than one pass over everything, docs/training.md). Finished members are kept as JSON
    records in ``ensemble/items`` and not trained again by ``--resume``.
    """
    cfg, out = run.cfg, run.out
    ens_dir = out / "ensemble"
    ens_dir.mkdir(exist_ok=True)
    dataset = out / "bc_dataset.npz"
    if not dataset.exists():
        raise FileNotFoundError(f"ensemble: no oracle dataset at {dataset} to clone members from")
    tick = time.perf_counter()
    items, results, reused = clone_members(cfg, dataset, ens_dir, run.scenarios.shape())
    if reused:
        say(f"ensemble: {reused} of {len(items)} members already trained (reused)")
    wall = time.perf_counter() - tick
    members = [Path(main_model)] + [Path(item["path"]) for item in items]
    models = [load_model(m, trust_pickle=True) for m in members]
    level = cfg.forecast_level
    scores = [
        evaluate_vs_oracle(m, scenarios, oracle_usd, cfg.preset, level)["pct_of_oracle"] for m in models
    ]
    ens = evaluate_vs_oracle(EnsembleModel(models), scenarios, oracle_usd, cfg.preset, level)
    info = {
        "validation": {
            "scenarios": len(scenarios),
            "ensemble_pct_of_oracle": ens["pct_of_oracle"],
            "member_pct_of_oracle": dict(zip([m.name for m in members], scores, strict=True)),
        },
        "members_info": [r.result for r in results],
        "members_wall_s": wall,
        "safety_layer": True,  # every member was trained and validated behind the safety layer
    }
    write_manifest(out / "ensemble.json", members, info)
    if run.log is not None:
        run.log.scalars(
            "ensemble",
            {
                "ensemble/pct_of_oracle": ens["pct_of_oracle"],
                **{f"ensemble/{m.stem}_pct_of_oracle": v for m, v in zip(members, scores, strict=True)},
            },
        )
    say(
        f"ensemble of {len(members)}: {ens['pct_of_oracle']:.1f} % of the oracle on validation "
        f"(members {', '.join(f'{s:.1f}' for s in scores)}); members cloned in {wall:.0f} s"
    )
    return info
