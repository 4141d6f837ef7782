"""``TrainConfig``: every setting of a training run, checked before any work, saved as ``config.json``.

Besides the fields, the config knows its plan: :meth:`TrainConfig.scenario_plan` draws the run's
validation, dataset and DAgger scenarios (preset seeds, or a ``scenario`` source's splits,
:mod:`agents.training_scenarios`), and :meth:`TrainConfig.hyperparams` resolves the RL model's
hyperparameters from ``agents/hyperparams/<algo>.yml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.imitation import (
    draw_training_seeds,
)
from agents.sb3 import (
    ANCHOR_TARGETS,
    resolve_hyperparams,
)
from agents.train_log import tensorboard_problem
from agents.training_scenarios import (
    TrainingScenarios,
    source_plan,
)
from envs.forecast import LEVELS, forecast_model
from envs.presets import PRESETS

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
    without behaviour cloning (``bc=False``) needs ``timesteps > 0``. ``ft_bc_steps``: a
    behaviour-cloning anchor during fine-tuning, that many imitation-loss minibatch steps (Adam,
    ``ft_bc_lr``) on the run's dataset after every RL update (:class:`agents.sb3.BCAnchorCallback`;
    0 = off, needs ``bc``), toward the demonstrated actions (``ft_bc_target="data"``) or toward the
    cloned policy fine-tuning started from (``"policy"``: a KL penalty).

    ``forecast_level`` (:mod:`envs.forecast`; default ``typical``, ordinary day-ahead skill, as
    operators decide; None = exact): the forecast errors of every env the
    pipeline builds (dataset replays, DAgger rollouts, validation, fine-tuning). The labels stay the
    clairvoyant oracle's on the true scenario (a privileged expert); each oracle schedule is replayed
    ``noise_draws`` times with other forecast errors in the observations, the first
    ``exact_draws`` of them with exact forecasts.

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
    ft_bc_steps: int = 0
    ft_bc_lr: float = 1e-4
    ft_bc_target: str = "data"
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
    exact_draws: int = 0
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
        if self.forecast_level is not None:
            try:
                forecast_model(self.forecast_level)
            except ValueError as exc:
                problem = str(exc).removeprefix("forecast_level: ")
                fail("forecast_level", f"{problem}; choose one of {list(LEVELS)}, LEVEL*FACTOR or None")
        whole("seed", 0)
        for name in ("timesteps", "dagger_rounds", "value_pretrain_scenarios"):
            whole(name, 0)
        for name in ("n_envs", "torch_threads", "eval_freq", "checkpoint_freq", "eval_scenarios"):
            whole(name, 1)
        for name in ("ensemble", "noise_draws"):
            whole(name, 1)
        whole("exact_draws", 0)
        if self.forecast_level is not None and self.exact_draws > self.noise_draws:
            fail("exact_draws", f"must be at most noise_draws ({self.noise_draws})")
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
        whole("ft_bc_steps", 0)
        positive("ft_bc_lr")
        if self.ft_bc_target not in ANCHOR_TARGETS:
            fail("ft_bc_target", "choose 'data' (the imitation loss) or 'policy' (toward the cloned policy)")
        if self.ft_bc_steps > 0 and not self.bc:
            fail("ft_bc_steps", "the anchor clones the oracle dataset: it needs bc")
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
        train = drawn["train"]
        dagger = [
            train[n_bc + r * self.dagger_scenarios : n_bc + (r + 1) * self.dagger_scenarios]
            for r in range(rounds)
        ]
        scenarios.warnings = warnings
        return scenarios, {"validation": drawn["validation"], "bc": train[:n_bc], "dagger": dagger}
