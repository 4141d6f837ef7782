"""Ensembles of trained models: several SB3 models acting as one policy.

An ensemble plays the **mean of its members' deterministic flat actions** (each in [-1, 1] after SB3's
clipping), decoded as one action: route weights, battery and generator set-points are averaged, and
each job slot starts where the averaged start scores are highest. Independently cloned networks
disagree mostly on the rare, discrete start decisions and on small set-point offsets; averaging
cancels part of each member's error (on ``paper`` two models scored 88.7 and 87.1 % of the oracle
alone and 89.8 % averaged, docs/training.md).

On disk an ensemble is a JSON manifest (``runs/default/ensemble.json``)::

    {"kind": "carbon-aware-dc-ensemble", "combine": "mean",
     "members": ["model.zip", "ensemble/member_1.zip", ...],   # relative to the manifest's folder
     "validation": {...}}                                     # scores recorded by train.py

:func:`agents.sb3.load_model` and :func:`agents.sb3.load_policy` accept a manifest wherever they
accept a model zip, so ``python evaluate.py --model runs/default/ensemble.json`` works as for one
model. This module reads and writes manifests without importing torch (``evaluate.py`` fingerprints
members with :func:`model_digest` before any model is loaded).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.atomic import atomic_write_json

MANIFEST_KIND = "carbon-aware-dc-ensemble"
"""The ``kind`` field every ensemble manifest carries."""


def is_manifest(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an ensemble manifest (a ``.json`` file) rather than a model zip."""
    return Path(path).suffix.lower() == ".json"


def write_manifest(
    path: str | os.PathLike[str],
    members: Sequence[str | os.PathLike[str]],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the manifest ``path`` listing ``members`` (stored relative to its folder) and ``info``.

    Raises:
        ValueError: No members, or a member that is not an existing model ``.zip`` or policy
            file (``.json``, :mod:`agents.policy_file`).
    """
    path = Path(path)
    if not members:
        raise ValueError("ensemble: members is empty (an ensemble needs at least one model)")
    rel = []
    for m in members:
        m = Path(m)
        if m.suffix not in (".zip", ".json") or not m.is_file():
            raise ValueError(f"ensemble: member {m} is not an existing model .zip or policy .json")
        rel.append(os.path.relpath(m.resolve(), path.parent.resolve()))
    data = {"kind": MANIFEST_KIND, "combine": "mean", "members": rel, **(info or {})}
    if not path.parent.is_dir():
        raise FileNotFoundError(f"ensemble: the manifest's folder {path.parent} does not exist")
    return atomic_write_json(path, data)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest at ``path`` with ``members`` resolved to absolute paths.

    Raises:
        FileNotFoundError: The manifest or one of its members does not exist.
        ValueError: Not an ensemble manifest (the message names the field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ensemble: no manifest at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"ensemble: {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise ValueError(f"ensemble: {path}: kind must be {MANIFEST_KIND!r} (got {data.get('kind')!r})")
    if data.get("combine", "mean") != "mean":
        raise ValueError(f"ensemble: {path}: combine must be 'mean' (got {data['combine']!r})")
    members = data.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise ValueError(f"ensemble: {path}: members must be a non-empty list of paths (got {members!r})")
    resolved = [(path.parent / m).resolve() for m in members]
    for m in resolved:
        if not m.is_file():
            raise FileNotFoundError(f"ensemble: {path}: member {m} does not exist")
    return {**data, "members": [str(m) for m in resolved]}


def model_digest(path: str | os.PathLike[str]) -> str:
    """A short content hash of a model zip, or of a manifest together with all its members' files."""
    h = hashlib.sha256()
    files = [Path(path)]
    if is_manifest(path):
        files += [Path(m) for m in read_manifest(path)["members"]]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class EnsembleModel:
    """Several trained models with one ``predict``: the mean of the members' flat actions.

    Quacks like the part of an SB3 model that :class:`agents.sb3.DictPolicy` and
    :func:`agents.sb3.evaluate_vs_oracle` use: ``observation_space``, ``action_space`` and
    ``predict(obs, state, episode_start, deterministic)``. With ``deterministic=False`` each member
    samples its own action and the samples are averaged.
    """

    def __init__(self, models: Sequence[Any]) -> None:
        if not models:
            raise ValueError("EnsembleModel: no members")
        first = models[0]
        for i, m in enumerate(models[1:], start=1):
            if m.observation_space.shape != first.observation_space.shape:
                raise ValueError(
                    f"EnsembleModel: member {i} observation size {m.observation_space.shape} differs from "
                    f"member 0's {first.observation_space.shape} (trained on another preset?)"
                )
            if m.action_space.shape != first.action_space.shape:
                raise ValueError(
                    f"EnsembleModel: member {i} action size {m.action_space.shape} differs from "
                    f"member 0's {first.action_space.shape}"
                )
        self.models = list(models)
        self.observation_space = first.observation_space
        self.action_space = first.action_space
        self._groups = _shared_feature_groups(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """SB3's ``predict`` protocol: ``(mean action, state)``.

        Deterministic calls on members that are SB3 actor-critic policies with a Gaussian action
        head take a fast path with the same numbers as the members' own ``predict``: the
        observation is converted once, a parameter-free features extractor that several members
        share (:class:`agents.features.WindowFeatures` of one layout, or SB3's ``FlattenExtractor``)
        runs once for all of them, and the policies are not switched to eval mode on every call
        (they are loaded in it). On ``paper`` that takes the 5-member ensemble from about 2.0 to
        about 0.7 ms per decision (``make bench``, "decisions")."""
        if deterministic and self._groups is not None:
            return self._fast_mean(observation), state
        actions = [m.predict(observation, deterministic=deterministic)[0] for m in self.models]
        return np.mean(np.stack(actions), axis=0).astype(np.float32), state

    def _fast_mean(self, observation: np.ndarray) -> np.ndarray:
        import torch as th

        first = self.models[0].policy
        obs, vectorized = first.obs_to_tensor(observation)
        actions: list[np.ndarray | None] = [None] * len(self.models)
        with th.no_grad():
            for members in self._groups:
                features = None
                for i in members:
                    policy = self.models[i].policy
                    if policy.training:
                        policy.set_training_mode(False)
                    if features is None or len(members) == 1:
                        features = policy.extract_features(obs, policy.pi_features_extractor)
                    latent = policy.mlp_extractor.forward_actor(features)
                    mean = policy.action_net(latent).cpu().numpy().reshape((-1, *self.action_space.shape))
                    mean = np.clip(mean, self.action_space.low, self.action_space.high)
                    actions[i] = mean if vectorized else mean.squeeze(axis=0)
        return np.mean(np.stack(actions), axis=0).astype(np.float32)


def _extractor_key(extractor: Any) -> tuple | None:
    """What makes two members' features extractors compute the same features: the class and layout
    of a parameter-free extractor (None for an extractor with parameters, never shared)."""
    from stable_baselines3.common.torch_layers import FlattenExtractor

    from agents.features import WindowFeatures

    if any(True for _ in extractor.parameters()):
        return None
    if type(extractor) is FlattenExtractor:
        return ("flatten", extractor.features_dim)
    if type(extractor) is WindowFeatures:
        offsets = tuple(sorted(extractor.offsets.items()))
        return ("window", offsets, extractor.S, extractor.slots, extractor.H1, extractor.T, extractor.levels)
    return None


def _shared_feature_groups(models: Sequence[Any]) -> list[list[int]] | None:
    """Members grouped by a shared parameter-free features extractor (singletons otherwise), or None
    when a member is not an SB3 actor-critic policy with an unsquashed Gaussian action head on a Box
    (then every call goes through the members' own ``predict``)."""
    try:
        from gymnasium import spaces
        from stable_baselines3.common.distributions import DiagGaussianDistribution
        from stable_baselines3.common.policies import ActorCriticPolicy
    except ImportError:  # pragma: no cover - SB3 is a dependency
        return None
    groups: dict[Any, list[int]] = {}
    for i, m in enumerate(models):
        policy = getattr(m, "policy", None)
        if (
            type(policy) is not ActorCriticPolicy  # exactly: a recurrent or maskable subclass acts otherwise
            or not isinstance(policy.action_dist, DiagGaussianDistribution)
            or policy.squash_output
            or not isinstance(m.action_space, spaces.Box)
            or policy.observation_space.shape != models[0].policy.observation_space.shape
        ):
            return None
        key = _extractor_key(policy.pi_features_extractor)
        groups.setdefault(key if key is not None else ("own", i), []).append(i)
    return list(groups.values())
