"""Ensemble members: each cloned from the run's saved dataset in its own worker process.

:func:`clone_members` builds one executor work item per member (seed ``cfg.seed + m``) and runs
them with :func:`oracle.executor.run_sweep` on the local cores; :func:`train_member` is the work item.
A finished member is kept as a JSON record in ``ensemble/items`` and reused by ``--resume`` only if
its zip is still there and it was cloned from this very dataset (by content) with these settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.ensemble import model_digest
from agents.imitation import BCConfig, DemoDataset, behaviour_clone, dagger_validation_seeds
from agents.sb3 import make_model, make_vec_env, policy_features, set_log_std, set_torch_threads
from agents.training_scenarios import shape_policy_extra, shape_vec_env
from envs.atomic import atomic_path
from envs.scenario import Scenario
from oracle.executor import ItemResult, run_sweep

if TYPE_CHECKING:
    from agents.train_config import TrainConfig


def train_member(item: dict[str, Any]) -> dict[str, Any]:
    """Executor work item: clone one ensemble member from the saved dataset and save it.

    ``item``: ``dataset`` (``.npz``), ``path`` (the member zip to write), ``algo``, ``preset``,
    ``seed`` (network initialisation, minibatch order and validation split), ``epochs``,
    ``window_features``, ``ft_log_std``, ``torch_threads``, ``hyperparams`` (the main model's), and
    ``two_stage``: ``None`` (one BC pass over everything) or ``{"epochs", "lr"}`` of the second
    stage (see below). A source run's item also has ``shape``, the JSON form of a scenario of the
    run's sizes (``preset`` is None): the network's spaces come from it.
    """
    set_torch_threads(item["torch_threads"])
    data = DemoDataset.load(item["dataset"])
    if item.get("shape") is not None:
        shape = Scenario.from_dict(item["shape"])
        venv, extra = shape_vec_env(shape, item["seed"]), shape_policy_extra(shape, item["window_features"])
    else:
        venv = make_vec_env(item["preset"], 1, item["seed"])
        extra = policy_features(item["preset"], item["window_features"])
    model = make_model(item["algo"], venv, item["seed"], hyperparams=item["hyperparams"], policy_extra=extra)
    bc_cfg = BCConfig(epochs=item["epochs"], seed=item["seed"])
    if item.get("two_stage"):
        # As the main model learns: clone the oracle's own demonstrations first, then continue on
        # everything (with the DAgger labels) at the small DAgger learning rate.
        first = data.subset(np.flatnonzero(data.round == 0))
        hist = behaviour_clone(model.policy, first, bc_cfg)
        val_seeds = list(hist.val_seeds)
        for r in sorted(set(data.round.tolist()) - {0}):
            val_seeds += dagger_validation_seeds(sorted(set(data.seed[data.round == r].tolist())))
        two = item["two_stage"]
        bc_cfg = replace(bc_cfg, epochs=two["epochs"], lr=two["lr"], patience=None, val_seeds=val_seeds)
    hist = behaviour_clone(model.policy, data, bc_cfg)
    set_log_std(model, item["ft_log_std"])
    with atomic_path(item["path"]) as tmp:
        model.save(tmp)
    return {
        "path": item["path"],
        "seed": item["seed"],
        "rows": len(data),
        "best_epoch": hist.best_epoch,
        "val_loss_before": hist.initial_val["loss"],
        "val_loss_after": hist.final_val["loss"],
        "start_acc_after": hist.final_val["start_acc"],
        "bc_wall_s": hist.wall_s,
    }


def clone_members(
    cfg: TrainConfig, dataset: Path, ens_dir: Path, shape: Scenario | None = None
) -> tuple[list[dict[str, Any]], list[ItemResult], int]:
    """Clone members ``1 .. cfg.ensemble - 1`` from ``dataset`` into ``ens_dir/member_<m>.zip``.

    ``shape``: a source run's scenario of the run's sizes (None for a preset run).

    Member ``m`` uses seed ``cfg.seed + m``; with DAgger rounds it learns in two stages as the main
    model did (:func:`train_member`). Returns the work items, their results and how many members
    were reused. Raises ``RuntimeError`` naming every member that failed.
    """
    items = [
        {
            "dataset": str(dataset),
            "path": str(ens_dir / f"member_{m}.zip"),
            "algo": cfg.algo,
            "preset": cfg.preset,
            "seed": cfg.seed + m,
            "epochs": cfg.bc_epochs,
            "window_features": cfg.window_features,
            "ft_log_std": cfg.ft_log_std,
            "torch_threads": cfg.torch_threads,
            "hyperparams": cfg.hyperparams(),
            "two_stage": {"epochs": cfg.dagger_epochs, "lr": cfg.dagger_lr}
            if cfg.dagger_rounds > 0
            else None,
        }
        for m in range(1, cfg.ensemble)
    ]
    if shape is not None:  # only then: a preset run's member keys stay what they were
        for item in items:
            item["shape"] = shape.to_dict()
    # A finished member is reused (``--resume``) only if it was cloned from this very dataset (by
    # content, so a copied or moved run folder still counts) with these settings, and its zip is
    # still there: the key carries their hash.
    data_digest = model_digest(dataset)
    for m, item in enumerate(items, start=1):
        settings = {k: v for k, v in item.items() if k not in ("dataset", "path")}
        ident = json.dumps({**settings, "member": m, "dataset_digest": data_digest}, sort_keys=True).encode()
        item["key"] = f"member_{m}-{hashlib.sha256(ident).hexdigest()[:12]}"
        if not Path(item["path"]).is_file():
            (ens_dir / "items" / f"{item['key']}.json").unlink(missing_ok=True)
    reused = sum((ens_dir / "items" / f"{item['key']}.json").is_file() for item in items)
    # Always on this machine's cores, also with --backend ray: a member reads the dataset from and
    # writes its zip to this machine's disk, which a remote Ray node does not share.
    results = run_sweep(
        train_member,
        items,
        out_dir=ens_dir / "items",
        progress=cfg.progress_bar,
        desc="ensemble members",
        backend="local",
        max_workers=cfg.workers,
    )
    failed = [r for r in results if r.status != "ok"]
    if failed:
        raise RuntimeError(
            "ensemble: member training failed: " + "; ".join(f"{r.key}: {r.status} {r.error}" for r in failed)
        )
    return items, results, reused
