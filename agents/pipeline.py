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
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.ensemble import EnsembleModel, write_manifest
from agents.imitation import (
    BCConfig,
    DemoDataset,
    behaviour_clone,
    build_oracle_dataset,
    dagger_round,
    dagger_validation_seeds,
    draw_training_seeds,
    rollout,
    solve_schedules,
    versions,
)
from agents.members import clone_members
from agents.plots import plot_learning_curve
from agents.policy_file import export as export_policy
from agents.safety import safe_flat_env
from agents.sb3 import (
    HYPERPARAMS_DIR,
    Interrupted,
    OracleEvalCallback,
    StateCheckpointCallback,
    StopAfterCallback,
    evaluate_vs_oracle,
    flat_predictor,
    latest_checkpoint,
    load_model,
    make_model,
    resolve_hyperparams,
    set_log_std,
    set_torch_threads,
)
from agents.train_log import CSV_NAME, LoggedEvalCallback, TrainLog, tensorboard_problem
from agents.training_scenarios import (
    TrainingScenarios,
    make_train_vec_env,
    policy_extra,
    source_plan,
    source_record,
)
from envs.forecast import LEVELS
from envs.presets import PRESETS
from envs.scenario import Scenario
from envs.wrappers import DEFAULT_REWARD_SCALE

__all__ = ["Interrupted", "TrainConfig", "config_changes", "kept_summary", "train_agent"]

MAX_SEED = 2**32 - 1
"""numpy's legacy seed range (``np.random.seed``, which SB3's ``set_random_seed`` calls) ends here."""
RUNTIME_FIELDS = frozenset(
    {"progress_bar", "backend", "ray_address", "workers", "torch_threads", "tensorboard"}
)
"""Config fields that change how a run is executed, not what it computes: a resumed run takes the
new values without asking (the others must match ``config.json``, see :func:`config_changes`)."""


@dataclass
class TrainConfig:
    """Everything ``train.py`` needs; saved as ``config.json`` beside the model.

    Demonstrations (dataset and DAgger labels) are solved to a relative MIP gap of ``demo_mip_gap``
    (5e-3: three times faster than 1e-4 on ``paper``, and 0.04 % below it on average); the
    validation oracle, the reference of every score, to 1e-4.

    Scenario seeds all come from ``seed`` (:func:`agents.imitation.draw_training_seeds`): the first
    ``eval_scenarios`` are the validation scenarios, the next ``bc_scenarios`` the oracle dataset,
    then ``dagger_scenarios`` per DAgger round; all >= 1000 and mutually disjoint.

    ``scenario`` (a scenario JSON, a folder of them or a data spec YAML; :mod:`envs.sources`)
    replaces the preset: validation on the source's validation split, the dataset and DAgger
    scenarios drawn from its train split with ``seed``, its held-out split never used
    (:mod:`agents.training_scenarios`); ``preset`` is then ignored (recorded as None).

    ``ensemble``: the number of models in the deployed policy. Besides the main model (BC, DAgger,
    fine-tuning), ``ensemble - 1`` members are cloned from the final aggregated dataset (oracle
    demonstrations and DAgger labels) with their own seeds and validation splits, in parallel on the
    local cores (:func:`stage_ensemble`); ``ensemble.json`` plays the mean of their actions
    (:mod:`agents.ensemble`). ``1`` = the main model alone.

    ``window_features``: the networks see the start-window features of
    :class:`agents.features.WindowFeatures` beside the flat observation (computed inside the model,
    so the env and the datasets are unchanged).

    ``timesteps``: fine-tuning environment steps; ``0`` (the default) switches the fine-tuning stage
    off and the best cloned policy is deployed. Off by default because it never raised the cloned
    policy's validation score in four measured runs (docs/training.md, "Fine-tuning"); a run
    without behaviour cloning (``bc=False``) needs ``timesteps > 0``.

    ``forecast_level`` (:mod:`envs.forecast`; default ``typical``, ordinary day-ahead skill, as
    operators decide; None = exact): the forecast errors of every env the
    pipeline builds (dataset replays, DAgger rollouts, validation, fine-tuning). The labels stay the
    clairvoyant oracle's on the true scenario (a privileged expert); each oracle schedule is replayed
    ``noise_draws`` times with other forecast errors in the observations.

    ``tensorboard``: a folder for TensorBoard event files (SB3's logger during fine-tuning, plus the
    validation scores and BC/DAgger losses; :mod:`agents.train_log`); ``train_log.csv`` in the run
    folder has the same rows either way.

    ``hyperparams_file`` (default ``agents/hyperparams/<algo>.yml``) and ``hp`` (overrides, applied
    after ``learning_rate``) give the RL model's hyperparameters: the ``finetune`` setting with
    ``bc``, the ``scratch`` setting without (:meth:`hyperparams`).
    """

    algo: str = "ppo"
    preset: str | None = "paper"
    timesteps: int = 0
    seed: int = 0
    bc: bool = True
    bc_scenarios: int = 1000
    bc_epochs: int = 100
    dagger_rounds: int = 2
    dagger_scenarios: int = 40
    dagger_epochs: int = 40
    dagger_lr: float = 1e-4
    value_pretrain_scenarios: int = 40
    n_envs: int = 1
    out: str = "runs/default"
    torch_threads: int = 1
    eval_freq: int = 10_000
    eval_scenarios: int = 16
    checkpoint_freq: int = 20_000
    ft_log_std: float = -2.5
    learning_rate: float | None = None
    oracle_time_limit_s: float = 60.0
    demo_mip_gap: float = 5e-3
    window_features: bool = True
    ensemble: int = 5
    progress_bar: bool = True
    backend: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    hyperparams_file: str | None = None
    hp: dict[str, Any] = field(default_factory=dict)
    forecast_level: str | None = "typical"
    noise_draws: int = 3
    scenario: str | None = None
    tensorboard: str | None = None

    def check(self) -> None:
        """Raise ``ValueError`` naming the field for a value out of range (before any work).

        Counts: ``n_envs``, ``torch_threads``, ``eval_freq``, ``checkpoint_freq``, ``eval_scenarios``,
        ``ensemble``, ``noise_draws`` >= 1; with ``bc`` also ``bc_scenarios`` and ``bc_epochs`` >= 1,
        with DAgger rounds ``dagger_scenarios`` and ``dagger_epochs`` >= 1; the others >= 0.
        ``seed``: an integer with ``seed + ensemble - 1 <= 2**32 - 1`` (members use ``seed + m``,
        and numpy's legacy seeding, which SB3 calls, takes at most 32 bits). Solver settings:
        ``oracle_time_limit_s`` finite and > 0, ``demo_mip_gap`` in [0, 1)."""
        from agents.sb3 import ALGOS

        def fail(name: str, problem: str) -> None:
            raise ValueError(f"{name}: {problem} (got {getattr(self, name)!r})")

        def whole(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                fail(name, f"must be an integer >= {low}")

        def positive(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(name, "must be a finite number")
            if value <= 0:
                fail(name, "must be > 0")

        if self.algo not in ALGOS:
            fail("algo", f"choose one of {sorted(ALGOS)}")
        if self.scenario is None and self.preset not in PRESETS:
            fail("preset", f"choose one of {sorted(PRESETS)}")
        if self.tensorboard is not None and tensorboard_problem():
            fail("tensorboard", str(tensorboard_problem()))
        if self.scenario is not None and not Path(self.scenario).exists():
            fail(
                "scenario", "no such file or folder (give a scenario JSON, a folder of them, or a data spec)"
            )
        if self.forecast_level is not None and self.forecast_level not in LEVELS:
            fail("forecast_level", f"choose one of {list(LEVELS)} or None (exact)")
        whole("seed", 0)
        for name in ("timesteps", "dagger_rounds", "value_pretrain_scenarios"):
            whole(name, 0)
        for name in ("n_envs", "torch_threads", "eval_freq", "checkpoint_freq", "eval_scenarios"):
            whole(name, 1)
        for name in ("ensemble", "noise_draws"):
            whole(name, 1)
        whole("bc_scenarios", 1 if self.bc else 0)
        whole("bc_epochs", 1 if self.bc else 0)
        rounds = self.bc and self.dagger_rounds > 0
        whole("dagger_scenarios", 1 if rounds else 0)
        whole("dagger_epochs", 1 if rounds else 0)
        if self.seed + self.ensemble - 1 > MAX_SEED:
            top = MAX_SEED - self.ensemble + 1
            fail("seed", f"must be at most {top} (numpy's seed range; ensemble members use seed + m)")
        if self.workers is not None:
            whole("workers", 1)
        positive("oracle_time_limit_s")
        positive("dagger_lr")
        positive("learning_rate", optional=True)
        if not (isinstance(self.demo_mip_gap, (int, float)) and 0.0 <= self.demo_mip_gap < 1.0):
            fail("demo_mip_gap", "must be a relative gap in [0, 1)")
        if not (isinstance(self.ft_log_std, (int, float)) and math.isfinite(self.ft_log_std)):
            fail("ft_log_std", "must be a finite number")
        if not self.bc and self.timesteps == 0:
            fail("timesteps", "without bc the agent learns only by RL: give timesteps > 0 (e.g. 200000)")
        self.hyperparams()  # an unknown key or a missing file fails here too

    def effective(self) -> TrainConfig:
        """The config a run records: ``ensemble`` is 1 without ``bc`` (members clone the oracle
        dataset, which only behaviour cloning builds); ``preset`` is None with a ``scenario``."""
        cfg = replace(self, ensemble=1) if self.ensemble > 1 and not self.bc else self
        return replace(cfg, preset=None) if cfg.scenario is not None and cfg.preset is not None else cfg

    @property
    def setting(self) -> str:
        """The hyperparameter setting: ``finetune`` after behaviour cloning, else ``scratch``."""
        return "finetune" if self.bc else "scratch"

    def hyperparams(self) -> dict[str, Any]:
        """The effective hyperparameters (:func:`agents.sb3.resolve_hyperparams`); raises
        ``ValueError`` naming an unknown key and where it came from."""
        overrides = {"learning_rate": self.learning_rate} if self.learning_rate is not None else {}
        preset = None if self.scenario is not None else self.preset
        return resolve_hyperparams(
            self.algo, preset, self.setting, self.hyperparams_file, {**overrides, **self.hp}
        )

    def sweep_kwargs(self) -> dict[str, Any]:
        """The executor arguments (``oracle.executor.backend_kwargs``'s keys)."""
        return {"backend": self.backend, "ray_address": self.ray_address, "max_workers": self.workers}

    def seed_plan(self) -> dict[str, Any]:
        """The validation, dataset and DAgger scenario seeds of a preset run (see
        :meth:`scenario_plan` for a source run)."""
        n_val, n_bc = self.eval_scenarios, self.bc_scenarios if self.bc else 0
        rounds = self.dagger_rounds if self.bc else 0
        seeds = draw_training_seeds(self.seed, n_val + n_bc + rounds * self.dagger_scenarios)
        dagger = [
            seeds[n_val + n_bc + r * self.dagger_scenarios : n_val + n_bc + (r + 1) * self.dagger_scenarios]
            for r in range(rounds)
        ]
        return {"validation": seeds[:n_val], "bc": seeds[n_val : n_val + n_bc], "dagger": dagger}

    def scenario_plan(self) -> tuple[TrainingScenarios, dict[str, Any]]:
        """The run's scenarios and the validation, dataset and DAgger keys: :meth:`seed_plan` for a
        preset run, :func:`agents.training_scenarios.source_plan` for a ``scenario`` source."""
        if self.scenario is None:
            return TrainingScenarios(self.preset), self.seed_plan()
        n_bc = self.bc_scenarios if self.bc else 0
        rounds = self.dagger_rounds if self.bc else 0
        scenarios, drawn, warnings = source_plan(
            self.scenario, self.seed, self.eval_scenarios, n_bc + rounds * self.dagger_scenarios
        )
        for warning in warnings:
            _log(f"warning: {warning}")
        train = drawn["train"]
        dagger = [
            train[n_bc + r * self.dagger_scenarios : n_bc + (r + 1) * self.dagger_scenarios]
            for r in range(rounds)
        ]
        return scenarios, {"validation": drawn["validation"], "bc": train[:n_bc], "dagger": dagger}


# ------------------------------------------------------------------------------------ the run folder
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
        _write_json(self.stage_path(name), info)
        return info

    def save_record(self) -> None:
        _write_json(self.out / "config.json", self.record)


def _log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _save_model(model: BaseAlgorithm, path: Path) -> None:
    """``model.save`` to a temporary file, then renamed: a stage output is whole or absent."""
    tmp = path.with_name(path.stem + ".tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)


def _forget(evaluator: OracleEvalCallback, label: str) -> None:
    """Drop validation rows of a stage that is run again on resume (it was interrupted after scoring)."""
    evaluator.history = [h for h in evaluator.history if h["label"] != label]
    evaluator.best_pct = max((h["pct_of_oracle"] for h in evaluator.history), default=-math.inf)


# ----------------------------------------------------------------------------------------- stages
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
            _log(
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
        _log(f"--ensemble {cfg.ensemble} needs the oracle dataset of --bc: deploying the single model")
    cfg = cfg.effective()
    scenarios, plan = cfg.scenario_plan()
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
    _log(
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
        model.policy, data, BCConfig(epochs=cfg.bc_epochs, seed=cfg.seed), _epochs(run, "bc")
    )
    _log(
        f"BC: validation loss {hist.initial_val['loss']:.3f} -> {hist.final_val['loss']:.3f} "
        f"(start accuracy {hist.final_val['start_acc']:.2f}) in {hist.wall_s:.1f} s"
    )
    set_log_std(model, cfg.ft_log_std)
    _forget(evaluator, "bc")
    evaluator.evaluate(model, 0, "bc")
    _save_model(model, path)
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
    hist = behaviour_clone(model.policy, data, bc_cfg, _epochs(run, name))
    _log(
        f"DAgger round {r}: {stats['labels']} labels in {stats['relabel_wall_s']:.1f} s, "
        f"validation loss {hist.initial_val['loss']:.3f} -> {hist.final_val['loss']:.3f}"
    )
    set_log_std(model, cfg.ft_log_std)
    _forget(evaluator, name)
    evaluator.evaluate(model, 0, name)
    _save_model(model, model_path)
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
    _log(f"cloned policy ({bc_info['best_cloned']}): {evaluator.best_pct:.1f} % of the oracle on validation")
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
            _log(f"value head: MSE {vinfo['value_mse_before']:.4f} -> {vinfo['value_mse_after']:.4f}")
    _write_json(run.out / "bc_info.json", bc_info)
    return bc_info


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
        if stop_after_steps is not None:
            callbacks.append(StopAfterCallback(stop_after_steps))
        planned = whole_rollouts(model, remaining)
        if planned != remaining:
            per = rollout_steps(model)
            _log(f"fine-tuning: {remaining} steps rounded up to {planned} (SB3 runs whole rollouts of {per})")
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
        _log(f"ensemble: {reused} of {len(items)} members already trained (reused)")
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
    _log(
        f"ensemble of {len(members)}: {ens['pct_of_oracle']:.1f} % of the oracle on validation "
        f"(members {', '.join(f'{s:.1f}' for s in scores)}); members cloned in {wall:.0f} s"
    )
    return info


# ----------------------------------------------------------------------------------- the pipeline
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


def _epochs(run: Run, stage: str) -> Any:
    """The per-epoch log callback of ``behaviour_clone`` for ``stage`` (None without a log)."""
    return None if run.log is None else run.log.epoch_logger(stage)


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
    if ckpt is not None:
        _log(f"resuming from {ckpt['path']} at {ckpt['num_timesteps']} steps")
        done_steps = int(ckpt["num_timesteps"])
        venv_seed = cfg.seed + done_steps
        model = load_model(ckpt["path"], _vec_env(run, venv_seed), trust_pickle=True)
    elif resume and (out / "bc_model.zip").exists():
        _log("resuming from the cloned model (no fine-tuning checkpoint yet)")
        model = load_model(out / "bc_model.zip", _vec_env(run, venv_seed), trust_pickle=True)
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
        _save_model(model, out / "bc_model.zip")
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
        _log(f"no preset has this source's sizes: not exported pickle-free, deployed {trained}")
    record["summary"] = summary
    run.save_record()
    _log(
        f"done: best single model {summary['best_validation_pct_of_oracle']:.1f} % of oracle on validation "
        f"({summary['best_from']}); deployed policy {summary['deployed']}"
    )
    return record
