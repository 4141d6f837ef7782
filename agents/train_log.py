"""The training log: BC/DAgger losses per epoch, validation scores, SB3's fine-tuning metrics.

One SB3 :class:`~stable_baselines3.common.logger.Logger` per run, with two outputs:

- ``train_log.csv`` in the run folder, always: one row per scalar, columns :data:`CSV_COLUMNS`
  (``wall_s`` since the log was opened in this process, ``stage``, ``step``, ``key``, ``value``).
  It is **appended line by line** (flushed after every row) with the header written once, when the
  file is created: a crash or Ctrl-C loses at most the row being written, and a resumed run
  continues the same file. (Long format, because the keys differ by stage: BC epochs, validation
  rows and SB3's ``train/*``/``rollout/*`` keys share one file; ``pandas.read_csv`` + ``pivot``
  gives the wide table.)
- TensorBoard event files in ``<tensorboard_dir>/<run folder name>/`` with ``--tensorboard DIR``
  (SB3's own :class:`~stable_baselines3.common.logger.TensorBoardOutputFormat`; needs the
  ``tensorboard`` package).

Keys: ``<stage>/train_loss`` ... ``<stage>/val_start_acc`` per BC epoch (``stage`` = ``bc``,
``dagger1``, ...; ``step`` = the epoch), ``validation/pct_of_oracle`` and
``validation/mean_benefit_usd`` per validation (``step`` = the evaluation's index in
``eval_history.json``, ``stage`` = the scored model's label), and during fine-tuning every key SB3
logs (``step`` = environment steps, ``stage`` = ``finetune``).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import KVWriter, Logger

from agents.sb3 import OracleEvalCallback

CSV_NAME = "train_log.csv"
CSV_COLUMNS = ("wall_s", "stage", "step", "key", "value")
EPOCH_KEYS = (
    "train_loss",
    "train_nll",
    "train_mse",
    "val_loss",
    "val_nll",
    "val_mse",
    "val_start_ce",
    "val_start_acc",
)
"""The per-epoch keys of :func:`agents.imitation.behaviour_clone`'s rows that are logged."""


def tensorboard_problem() -> str | None:
    """Why ``--tensorboard`` cannot work here (the package is missing), or None."""
    if importlib.util.find_spec("tensorboard") is None:
        return "needs the tensorboard package, which is not installed (pip install tensorboard)"
    return None


class LongCSVFormat(KVWriter):
    """An SB3 logger output: each scalar of a dump as one ``(wall_s, stage, step, key, value)`` row
    appended to ``path`` and flushed (see the module docstring)."""

    def __init__(self, path: Path, log: TrainLog) -> None:
        new = not path.exists() or path.stat().st_size == 0
        self.file: IO[str] = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        self.log = log
        if new:
            self.writer.writerow(CSV_COLUMNS)
            self.file.flush()

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        wall = f"{time.perf_counter() - self.log.t0:.3f}"
        for key in sorted(key_values):
            value = key_values[key]
            scalar = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if not scalar or "csv" in (key_excluded.get(key) or ()):
                continue
            self.writer.writerow((wall, self.log.stage, int(step), key, repr(float(value))))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TrainLog:
    """The run's log (see the module docstring). ``sb3`` is the logger handed to the SB3 model
    (``model.set_logger``); the pipeline's own rows go through a second logger on the same outputs,
    so that a dump of ours never flushes SB3's half-collected values."""

    def __init__(self, out: Path, tensorboard_dir: str | Path | None = None) -> None:
        self.t0 = time.perf_counter()
        self.stage = "setup"
        self.csv_path = Path(out) / CSV_NAME
        formats: list[KVWriter] = [LongCSVFormat(self.csv_path, self)]
        self.tensorboard_path: Path | None = None
        if tensorboard_dir is not None:
            from stable_baselines3.common.logger import TensorBoardOutputFormat

            self.tensorboard_path = Path(tensorboard_dir) / Path(out).resolve().name
            self.tensorboard_path.mkdir(parents=True, exist_ok=True)
            formats.append(TensorBoardOutputFormat(str(self.tensorboard_path)))
        self.formats = formats
        self.sb3 = Logger(folder=None, output_formats=formats)
        self.own = Logger(folder=None, output_formats=formats)

    def epoch_logger(self, stage: str) -> Any:
        """The ``log`` callback of :func:`agents.imitation.behaviour_clone` for stage ``stage``."""

        def log(row: dict[str, float]) -> None:
            self.stage = stage
            for key in EPOCH_KEYS:
                if key in row and math.isfinite(row[key]):
                    self.own.record(f"{stage}/{key}", float(row[key]))
            self.own.dump(step=int(row["epoch"]))

        return log

    def validation(self, row: dict[str, Any], index: int) -> None:
        """One validation row of :class:`agents.sb3.OracleEvalCallback`'s history (its ``index``)."""
        stage, self.stage = self.stage, str(row["label"])
        self.own.record("validation/pct_of_oracle", float(row["pct_of_oracle"]))
        self.own.record("validation/mean_benefit_usd", float(row["mean_benefit_usd"]))
        self.own.record("validation/timesteps", int(row["timesteps"]))
        self.own.dump(step=int(index))
        self.stage = stage

    def scalars(self, stage: str, values: dict[str, float], step: int = 0) -> None:
        """Rows of the pipeline's own (e.g. the ensemble's validation scores)."""
        previous, self.stage = self.stage, stage
        for key, value in values.items():
            self.own.record(key, float(value))
        self.own.dump(step=int(step))
        self.stage = previous

    def close(self) -> None:
        for fmt in self.formats:
            fmt.close()


class LoggedEvalCallback(OracleEvalCallback):
    """:class:`~agents.sb3.OracleEvalCallback` whose every validation row also goes to a
    :class:`TrainLog` (``validation/*`` keys, step = the row's index in the history)."""

    def __init__(self, *args: Any, train_log: TrainLog | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_log = train_log

    def evaluate(self, model: BaseAlgorithm, timesteps: int, label: str = "ppo") -> dict[str, Any]:
        row = super().evaluate(model, timesteps, label)
        if self.train_log is not None:
            self.train_log.validation(row, len(self.history) - 1)
        return row

    def _on_step(self) -> bool:
        # the parent's schedule, without its own ``eval/`` record: the ``validation/`` rows carry it
        if self.eval_freq > 0 and self.num_timesteps - (self._last_eval or 0) >= self.eval_freq:
            self._last_eval = self.num_timesteps
            self.evaluate(self.model, self.num_timesteps)
        return True
