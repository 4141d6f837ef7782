"""The demonstration dataset: (flat observation, flat action) pairs in an ``.npz`` file.

:class:`DemoDataset` holds the pairs with their scenario key (``seed``: a preset seed, or a source
run's key, :mod:`agents.training_scenarios`), period and round (0 = oracle replay, r >= 1 = DAgger
round r); :func:`layout_meta` / :func:`flat_env_sizes` record and read where each observation key
sits in the flat vector, checked when a dataset meets a policy.

Files are readable with ``allow_pickle=False``: arrays ``obs`` (N, obs_dim) float32, ``actions``
(N, act_dim) float32, ``seed``, ``period``, ``round`` (N,) int64 and ``meta``, a JSON string
(preset, seeds, base seed, layout sizes, versions, oracle settings, ...).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.atomic import atomic_path
from envs.dc_env import JOB_FEATURES
from envs.wrappers import FlatObsActionWrapper

DATASET_FORMAT = 1
"""Version of the ``.npz`` layout written by :meth:`DemoDataset.save`."""


@dataclass
class DemoDataset:
    """(flat observation, flat action) pairs with their scenario seed, period and DAgger round."""

    obs: np.ndarray
    actions: np.ndarray
    seed: np.ndarray
    period: np.ndarray
    round: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.seed = np.asarray(self.seed, dtype=np.int64)
        self.period = np.asarray(self.period, dtype=np.int64)
        self.round = np.asarray(self.round, dtype=np.int64)
        n = len(self.obs)
        if self.obs.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(f"obs and actions must be 2-D (got {self.obs.shape}, {self.actions.shape})")
        for name in ("actions", "seed", "period", "round"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} rows, obs has {n}")

    @classmethod
    def from_episodes(
        cls,
        obs: Sequence[np.ndarray],
        actions: Sequence[np.ndarray],
        seeds: Sequence[np.ndarray],
        periods: Sequence[np.ndarray],
        meta: dict[str, Any],
    ) -> DemoDataset:
        """A round-0 dataset from per-episode row blocks (concatenated in order)."""
        n = sum(len(o) for o in obs)
        return cls(
            np.concatenate(obs),
            np.concatenate(actions),
            np.concatenate(seeds),
            np.concatenate(periods),
            np.zeros(n, dtype=np.int64),
            meta,
        )

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def seeds(self) -> list[int]:
        """The distinct scenario seeds, in first-appearance order."""
        return list(dict.fromkeys(self.seed.tolist()))

    def subset(self, rows: np.ndarray) -> DemoDataset:
        """The rows selected by an index or boolean array (same metadata)."""
        return DemoDataset(
            self.obs[rows],
            self.actions[rows],
            self.seed[rows],
            self.period[rows],
            self.round[rows],
            self.meta,
        )

    def concat(self, other: DemoDataset) -> DemoDataset:
        """This dataset followed by ``other`` (DAgger aggregation); metadata merged, ``other`` wins."""
        if other.obs.shape[1:] != self.obs.shape[1:] or other.actions.shape[1:] != self.actions.shape[1:]:
            raise ValueError("datasets have different observation or action sizes")
        meta = {**self.meta, **other.meta}
        return DemoDataset(
            np.concatenate([self.obs, other.obs]),
            np.concatenate([self.actions, other.actions]),
            np.concatenate([self.seed, other.seed]),
            np.concatenate([self.period, other.period]),
            np.concatenate([self.round, other.round]),
            meta,
        )

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (no pickled objects; ``meta`` as a JSON string), atomically
        (:mod:`envs.atomic`: an interrupted save leaves the previous file, never a truncated one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": DATASET_FORMAT, "rows": len(self)}
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez_compressed(
                f,
                obs=self.obs,
                actions=self.actions,
                seed=self.seed,
                period=self.period,
                round=self.round,
                meta=np.array(json.dumps(meta, sort_keys=True)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> DemoDataset:
        """Read a dataset written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != DATASET_FORMAT:
                raise ValueError(f"{path}: dataset format {meta.get('format')!r}, expected {DATASET_FORMAT}")
            return cls(data["obs"], data["actions"], data["seed"], data["period"], data["round"], meta)


def layout_meta(flat: FlatObsActionWrapper) -> dict[str, Any]:
    """Sizes of the flat observation and action (checked when a dataset meets a policy)."""
    return {
        "obs_dim": int(flat.observation_space.shape[0]),
        "act_dim": int(flat.action_space.shape[0]),
        "obs_keys": list(flat.obs_keys),
        "action_layout": {k: list(shape) for k, (_, shape) in flat.action_layout.items()},
        "S": flat.S,
        "K": flat.K,
        "slots": flat.n_slots,
    }


def flat_env_sizes(meta: dict[str, Any]) -> list[int]:
    """Offsets of each observation key in the flat observation, in ``meta["obs_keys"]`` order."""
    S, K, slots, H1 = int(meta["S"]), int(meta["K"]), int(meta["slots"]), int(meta["forecast_horizon"]) + 1
    sizes = {
        "time": 3,
        "soc": S,
        "free_gpus": S,
        "jobs": slots * (len(JOB_FEATURES) + S),
        "carbon": 3,
        "demand": K * H1,
    }
    offsets, off = [], 0
    for key in meta["obs_keys"]:
        offsets.append(off)
        off += sizes.get(key, S * H1)
    if off != int(meta["obs_dim"]):
        raise ValueError(f"observation layout adds up to {off}, the dataset says {meta['obs_dim']}")
    return offsets
