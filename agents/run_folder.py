"""The run folder: opening or resuming it (``config.json``, the checks of ``--resume``), the
:class:`Run` every stage shares, and what an interrupted run leaves behind.

:func:`stage_seeds` (the first stage) opens the folder: a fresh run clears the outputs of an earlier
one; a resumed run continues with the saved config (:func:`resumed_config`; flags that differ are
listed by :func:`config_changes`). Files are written whole or not at all (:func:`write_json`,
:func:`save_model`). :func:`kept_summary` says in one line what ``--resume`` will reuse.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.imitation import (
    versions,
)
from agents.sb3 import (
    HYPERPARAMS_DIR,
    POLICY_KEYS,
    latest_checkpoint,
)
from agents.train_config import RUNTIME_FIELDS, TrainConfig
from agents.train_log import CSV_NAME, TrainLog
from agents.training_scenarios import (
    TrainingScenarios,
    source_record,
)
from envs.atomic import atomic_path, atomic_write_json


@dataclass
class Run:
    """The run folder and what every stage shares: the config, the seed plan, ``config.json``'s
    record and the wall times (s) of the stages run in this process."""

    cfg: TrainConfig
    out: Path
    resume: bool
    record: dict[str, Any]
    plan: dict[str, Any]
    scenarios: TrainingScenarios
    timings: dict[str, float] = field(default_factory=dict)
    log: TrainLog | None = None

    def stage_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.json"

    def done(self, name: str) -> bool:
        """True when resuming and stage ``name`` has recorded its result."""
        return self.resume and self.stage_path(name).is_file()

    def stage_info(self, name: str) -> dict[str, Any]:
        return json.loads(self.stage_path(name).read_text())

    def finish(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        """Record stage ``name`` as done (after its outputs are written)."""
        write_json(self.stage_path(name), info)
        return info

    def epochs(self, stage: str) -> Any:
        """The per-epoch log callback of ``behaviour_clone`` for ``stage`` (None without a log)."""
        return None if self.log is None else self.log.epoch_logger(stage)

    def save_record(self) -> None:
        write_json(self.out / "config.json", self.record)


def say(msg: str) -> None:
    """One console line of the run, time-stamped."""
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data, default=str)


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """``model.save`` to a temporary file, then renamed (:mod:`envs.atomic`): a stage output is whole
    or absent."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def writable_problem(path: Path) -> str | None:
    """Why a run folder could not be created or written at ``path``, or None.

    Probes for real (permission bits say little to root or on a read-only mount): the missing
    folders are created, a temporary file is written in ``path``, and both are removed again."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    missing, existing = [], path
    while not existing.exists():
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, so {path} cannot be created"
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"cannot create or write {path} ({exc.strerror or exc})"
    finally:
        for folder in reversed(created):
            folder.rmdir()
    return None


def saved_config(out: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and ``config.json`` record of the run in ``out``; ``FileNotFoundError`` with a
    one-line reason when ``out`` is not a run folder (missing, empty, or never started)."""
    path = Path(out) / "config.json"
    if not path.is_file():
        what = "does not exist" if not Path(out).exists() else "has no config.json (no run was started there)"
        raise FileNotFoundError(f"--resume: {out} {what}; start the run without --resume")
    try:
        record = json.loads(path.read_text())
        names = {f.name for f in fields(TrainConfig)}
        saved = TrainConfig(**{k: v for k, v in record["config"].items() if k in names})
    except (ValueError, KeyError, TypeError) as exc:
        raise FileNotFoundError(f"--resume: {path} is not a training record ({exc})") from exc
    return saved, record


def config_changes(
    saved: TrainConfig, cfg: TrainConfig, given: Collection[str]
) -> list[tuple[str, Any, Any]]:
    """``(field, saved value, new value)`` for every field in ``given`` (the ones the user set)
    whose value differs from the saved run's. Runtime fields (:data:`RUNTIME_FIELDS`) and ``out``
    never count; a larger ``timesteps`` continues fine-tuning and does not count either."""
    old, new = asdict(saved.effective()), asdict(cfg.effective())
    changes = []
    for name in given:
        if name in RUNTIME_FIELDS or name == "out" or name not in old:
            continue
        if name == "timesteps" and new[name] >= old[name]:
            continue
        if old[name] != new[name]:
            changes.append((name, old[name], new[name]))
    return sorted(changes)


def network_changes(saved: TrainConfig, changes: list[tuple[str, Any, Any]]) -> list[str]:
    """The settings among ``changes`` (:func:`config_changes`) that would reshape the saved networks:
    ``algo``, ``window_features``, or a policy key (``net_arch``, ``log_std_init``) of the effective
    hyperparameters. A resumed run loads its checkpoint as saved, so these cannot apply."""
    after = replace(saved, **{name: new for name, _, new in changes})
    moved = [name for name in ("algo", "window_features") if getattr(saved, name) != getattr(after, name)]
    before_hp, after_hp = saved.hyperparams(), after.hyperparams()
    return moved + [key for key in POLICY_KEYS if before_hp.get(key) != after_hp.get(key)]


def resumed_config(cfg: TrainConfig, apply: Collection[str] = ()) -> tuple[TrainConfig, dict[str, Any]]:
    """The config a resumed run in ``cfg.out`` continues with: the saved one, with ``cfg``'s
    runtime fields, the larger ``timesteps`` and the fields in ``apply`` taken from ``cfg``."""
    saved, record = saved_config(cfg.out)
    keep = {name: getattr(cfg, name) for name in RUNTIME_FIELDS | set(apply)}
    keep["timesteps"] = max(cfg.timesteps, saved.timesteps) if "timesteps" not in apply else cfg.timesteps
    return replace(saved, out=cfg.out, **keep), record


def stage_seeds(cfg: TrainConfig, resume: bool, apply: Collection[str] = ()) -> Run:
    """Open the run folder: the config (on resume the saved one, see :func:`resumed_config`; the
    fields in ``apply`` changed as asked), the seed plan, versions and machine facts, written to
    ``config.json``."""
    cfg.check()  # a bad value or hyperparameter key fails here, before any work
    out = Path(cfg.out)
    record: dict[str, Any]
    if resume:
        saved = saved_config(cfg.out)[0]
        changes = config_changes(saved, cfg, apply)
        cfg, record = resumed_config(cfg, apply)
        entry: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if changes:
            entry["changed"] = {name: [old, new] for name, old, new in changes}
            say(
                "resuming with changed settings (finished stages keep their outputs): "
                + ", ".join(f"{name} {old!r} -> {new!r}" for name, old, new in changes)
            )
        record["resumed"] = [*record.get("resumed", []), entry]
    else:
        out.mkdir(parents=True, exist_ok=True)
        record = {}
        for stale in ("stages", "datasets", "checkpoints"):
            shutil.rmtree(out / stale, ignore_errors=True)
        (out / "bc_model.zip").unlink(missing_ok=True)
        (out / CSV_NAME).unlink(missing_ok=True)
    if cfg.effective().ensemble != cfg.ensemble:
        say(f"--ensemble {cfg.ensemble} needs the oracle dataset of --bc: deploying the single model")
    cfg = cfg.effective()
    scenarios, plan = cfg.scenario_plan()
    for warning in scenarios.warnings:
        say(f"warning: {warning}")
    if scenarios.is_source:
        drawn = source_record(scenarios, plan)
        recorded = record.get("scenarios", {}).get("digest")
        if resume and recorded is not None and recorded != drawn["digest"]:
            raise ValueError(
                f"scenario: {cfg.scenario} no longer gives the scenarios this run was started with "
                "(its files changed); start a new run in another --out"
            )
        record["scenarios"] = drawn
    record.update(
        {
            "config": asdict(cfg),
            "hyperparams": {
                "file": str(cfg.hyperparams_file or HYPERPARAMS_DIR / f"{cfg.algo}.yml"),
                "setting": cfg.setting,
                "values": cfg.hyperparams(),
            },
            "seeds": plan,
            "versions": versions(),
            "torch_threads": th.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        }
    )
    record.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
    run = Run(cfg, out, resume, record, plan, scenarios)
    run.save_record()
    return run


def kept_summary(out: Path) -> str:
    """One line: what an interrupted run left in ``out`` that ``--resume`` will reuse."""
    if not (out / "config.json").is_file():
        return f"nothing kept in {out} (the run had not started)"
    kept = ["config.json"]
    solves = sum(1 for _ in (out / "oracle_cache").glob("*/*.json"))  # a missing folder globs nothing
    if solves:
        kept.append(f"{solves} cached oracle solves")
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    if stages:
        kept.append("finished stages " + ", ".join(stages))
    ckpt = latest_checkpoint(out / "checkpoints")
    if ckpt is not None:
        kept.append(f"fine-tuning checkpoint at {ckpt['num_timesteps']} steps")
    members = list((out / "ensemble" / "items").glob("*.json"))
    if members:
        kept.append(f"{len(members)} ensemble members")
    return f"kept in {out}: " + "; ".join(kept)
