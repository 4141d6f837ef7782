"""Loading a trained model as a policy: the project's own files and any SB3 / sb3-contrib zip.

- :func:`load_model` reads a pickle-free policy file (:mod:`agents.policy_file`), an ensemble
  manifest (:mod:`agents.ensemble`), or an SB3 ``.zip`` -- the last only with ``trust_pickle=True``,
  since a zip holds pickles that run code when loaded. A zip is loaded by **its own class**
  (:func:`algo_of` reads the algorithm from the zip's JSON ``data`` entry without unpickling it):
  PPO, A2C, SAC, TD3, DDPG from stable-baselines3, and TQC, RecurrentPPO, TRPO, ARS, CrossQ from
  sb3-contrib (:data:`ALGORITHMS`). Discrete-action algorithms (DQN, QR-DQN, MaskablePPO) cannot
  act on the flat env's ``Box`` action and are refused with that reason.
- :class:`DictPolicy` puts a flat-env model behind the Dict env's ``predict``: the Dict observation
  is flattened (and normalized with VecNormalize statistics if given), the model's ``state`` and
  ``episode_start`` are passed through (a RecurrentPPO keeps its LSTM state within the episode and
  resets it at the episode's start), and the flat action is decoded with the start mask as the flat
  env decodes it. The project's safety layer (:func:`agents.safety.project_action`) is applied only
  when asked (``safety_layer=True``).
- :func:`load_policy` is both together, with the safety layer's default from the file
  (:func:`default_safety_layer`): **on** for the project's policy files and ensemble manifests (they
  record ``"safety_layer"``; files written before that field existed were all trained with the
  layer, so a missing field means on), **off** for an SB3 zip (a foreign model never saw it).
- :func:`add_loading_args` / :func:`check_loading_args` / :func:`loading_kwargs` give the CLIs
  (``evaluate.py``, ``python -m agents.diagnose``) the same ``--trust-pickle``, ``--vecnormalize``
  and ``--safety-layer`` flags, checked before any work.
"""

from __future__ import annotations

import argparse
import importlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents import safety
from agents.ensemble import EnsembleModel, is_manifest, read_manifest
from envs.dc_env import CarbonAwareDCEnv
from envs.wrappers import FlatObsActionWrapper

ALGORITHMS: dict[str, str] = {
    "ppo": "stable_baselines3:PPO",
    "a2c": "stable_baselines3:A2C",
    "sac": "stable_baselines3:SAC",
    "td3": "stable_baselines3:TD3",
    "ddpg": "stable_baselines3:DDPG",
    "tqc": "sb3_contrib:TQC",
    "recurrentppo": "sb3_contrib:RecurrentPPO",
    "trpo": "sb3_contrib:TRPO",
    "ars": "sb3_contrib:ARS",
    "crossq": "sb3_contrib:CrossQ",
}
"""Algorithms :func:`load_model` can load from a zip: name -> ``module:Class``."""

_BY_POLICY_MODULE = {
    "stable_baselines3.sac.policies": "sac",
    "sb3_contrib.tqc.policies": "tqc",
    "sb3_contrib.common.recurrent.policies": "recurrentppo",
    "sb3_contrib.ars.policies": "ars",
    "sb3_contrib.crossq.policies": "crossq",
}
_DISCRETE = {
    "stable_baselines3.dqn.policies": "DQN",
    "sb3_contrib.qrdqn.policies": "QR-DQN",
    "sb3_contrib.common.maskable.policies": "MaskablePPO",
}


class UntrustedModelError(ValueError):
    """An SB3 ``.zip`` was to be loaded without ``trust_pickle=True`` (it could run code)."""


def algorithm_class(algo: str) -> type:
    """The SB3 / sb3-contrib class of ``algo`` (a key of :data:`ALGORITHMS`), imported on demand."""
    if algo not in ALGORITHMS:
        raise ValueError(f"algo: {algo!r} is not one of {sorted(ALGORITHMS)}")
    module, name = ALGORITHMS[algo].split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        package = module.replace("_", "-")
        raise ImportError(f"{name} needs the {package} package: pip install {package}") from exc


def _zip_data(path: str | Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("data").decode())
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not an SB3 model zip (no readable 'data' entry: {exc})") from exc


def algo_of(path: str | Path) -> str:
    """The algorithm (a key of :data:`ALGORITHMS`) of a saved SB3 model zip.

    Read from the zip's JSON ``data`` entry, nothing unpickled: the policy class's module names the
    algorithm for SAC, TD3/DDPG, TQC, RecurrentPPO, ARS and CrossQ; the actor-critic algorithms share
    one policy class and are told apart by their own hyperparameters (TRPO ``cg_max_steps``, PPO
    ``clip_range``, else A2C); DDPG is TD3 with ``policy_delay`` 1 and no target noise clipping."""
    data = _zip_data(path)
    module = str((data.get("policy_class") or {}).get("__module__", ""))
    if module in _DISCRETE:
        raise ValueError(
            f"{path}: a {_DISCRETE[module]} model has discrete actions; the flat env's action is a Box"
        )
    if module in _BY_POLICY_MODULE:
        return _BY_POLICY_MODULE[module]
    td3_like = "policy_delay" in data and "target_entropy" not in data
    if module == "stable_baselines3.td3.policies" or td3_like:
        ddpg = data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0
        return "ddpg" if ddpg else "td3"
    if "target_entropy" in data:
        return "crossq" if "policy_delay" in data else "sac"
    if "cg_max_steps" in data:
        return "trpo"
    if "clip_range" in data:
        return "ppo"
    if "rollout_buffer_class" in data or "vf_coef" in data:
        return "a2c"
    raise ValueError(f"{path}: cannot tell the algorithm of this SB3 zip (policy class module {module!r})")


def load_model(
    path: str | Path, env: Any = None, trust_pickle: bool = False, overrides: dict[str, Any] | None = None
) -> Any:
    """Load a trained model (CPU): a pickle-free policy file (``.json`` + ``.safetensors``,
    :mod:`agents.policy_file`), an ensemble manifest (:mod:`agents.ensemble`) as an
    :class:`~agents.ensemble.EnsembleModel` of its members, or an SB3 ``.zip`` of any algorithm of
    :data:`ALGORITHMS`, loaded by its own class (:func:`algo_of`).

    A ``.zip`` holds pickles and can execute code when loaded, so it is refused unless
    ``trust_pickle=True`` (the training pipeline's own checkpoints; ``evaluate.py --trust-pickle``).
    ``env`` is attached to a zip's model (to continue training); without it the model only acts.
    ``overrides``: algorithm attributes to set on a zip's model before SB3 rebuilds its schedules and
    buffers (``learning_rate``, ``clip_range``, ``n_steps``, ...: a resumed run's changed
    hyperparameters; SB3's ``load(**kwargs)``); refused for the other formats, which do not train.
    """
    from agents.policy_file import is_policy_file, load_policy_file

    if overrides and (is_policy_file(path) or is_manifest(path)):
        raise ValueError(
            f"{path}: overrides apply to an SB3 .zip being trained further, not to {Path(path).suffix}"
        )
    if is_policy_file(path):
        return load_policy_file(path, env)
    if is_manifest(path):
        return EnsembleModel([load_model(m, env, trust_pickle) for m in read_manifest(path)["members"]])
    if not Path(path).is_file():
        raise FileNotFoundError(f"no trained model at {path}")
    if not trust_pickle:
        raise UntrustedModelError(
            f"{path}: an SB3 .zip holds pickles and can run code when loaded; load only files you trust, "
            "with trust_pickle=True (evaluate.py --trust-pickle), or convert it once with "
            "`python -m agents.policy_file export`"
        )
    return algorithm_class(algo_of(path)).load(str(path), env=env, device="cpu", **(overrides or {}))


def default_safety_layer(path: str | Path) -> bool:
    """Whether the model at ``path`` was trained behind the safety layer, so plays with it by default.

    A policy file or an ensemble manifest says so in its ``safety_layer`` field (absent in files
    written before the field existed: those were all trained with the layer, so ``True``); an SB3
    zip is a foreign model: ``False``."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return True  # the loader reports the broken file with its own message
    flag = data.get("safety_layer", True) if isinstance(data, dict) else True
    if not isinstance(flag, bool):
        raise ValueError(f"{path}: safety_layer must be true or false (got {flag!r})")
    return flag


def load_vecnormalize(path: str | Path, observation_space: gym.Space, trust_pickle: bool = False) -> Any:
    """SB3 ``VecNormalize`` statistics saved with ``VecNormalize.save`` (a pickle: refused unless
    ``trust_pickle=True``), checked against ``observation_space`` and frozen (``training=False``)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vecnormalize: no file at {path}")
    if not trust_pickle:
        raise UntrustedModelError(
            f"{path}: VecNormalize statistics are a pickle and can run code when loaded; pass "
            "trust_pickle=True (evaluate.py --trust-pickle) for your own files"
        )
    venv = DummyVecEnv([lambda: _SpaceOnly(observation_space)])
    try:
        stats = VecNormalize.load(str(path), venv)
    except ValueError as exc:
        raise ValueError(f"vecnormalize: {path} does not fit this env's observation ({exc})") from exc
    stats.training = False
    return stats


class _SpaceOnly(gym.Env):
    """A stand-in env with only an observation space (``VecNormalize.load`` checks it)."""

    def __init__(self, observation_space: gym.Space) -> None:
        self.observation_space = observation_space
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)


class DictPolicy:
    """A trained flat-env model behind SB3's ``predict`` for the Dict env (see the module docstring).

    ``safety_layer``: apply :func:`agents.safety.project_action` to every decoded action (as the
    project's training env does). ``obs_normalizer``: an object with ``normalize_obs`` (SB3's
    ``VecNormalize``) applied to the flat observation before the model sees it.
    """

    def __init__(
        self, model: Any, env: gym.Env, safety_layer: bool = False, obs_normalizer: Any = None
    ) -> None:
        base = env.unwrapped
        if not isinstance(base, CarbonAwareDCEnv):
            raise TypeError(f"load_policy needs a CarbonAwareDCEnv (got {type(base).__name__})")
        self.model = model
        self.env = base
        self.flat = FlatObsActionWrapper(base)
        self.safety_layer = bool(safety_layer)
        self.obs_normalizer = obs_normalizer
        if model.observation_space.shape != self.flat.observation_space.shape:
            raise ValueError(
                f"model observation size {model.observation_space.shape} does not match the env's "
                f"{self.flat.observation_space.shape} (another preset, scenario shape or forecast horizon?)"
            )

    def predict(
        self,
        obs: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, np.ndarray], Any]:
        """SB3's protocol for one Dict observation: ``(Dict action, the model's next state)``."""
        flat_obs = self.flat.flatten_obs(obs)
        if self.obs_normalizer is not None:
            flat_obs = self.obs_normalizer.normalize_obs(flat_obs).astype(np.float32)
        action, state = self.model.predict(
            flat_obs, state=state, episode_start=episode_start, deterministic=deterministic
        )
        sc = self.env.scenario
        if sc is None:
            return self.flat.decode_action(action), state
        decoded = self.flat.decode_action(
            action, safety.action_mask_from_obs(obs, sc.site_array("gpu_capacity"))
        )
        if not self.safety_layer:
            return decoded, state
        return safety.project_action(decoded, obs, sc, self.env.state_snapshot(), self.env.forecast()), state


def load_policy(
    path: str | Path,
    env: gym.Env,
    trust_pickle: bool = False,
    vecnormalize: str | Path | None = None,
    safety_layer: bool | None = None,
) -> DictPolicy:
    """A saved model or ensemble (see :func:`load_model`) as a Dict-env policy with SB3's ``predict``.

    ``vecnormalize``: a ``VecNormalize.save`` file whose observation statistics the model was
    trained with (a pickle: needs ``trust_pickle``). ``safety_layer``: ``None`` takes the file's
    default (:func:`default_safety_layer`: on for the project's policy files and manifests, off for a
    zip); ``True``/``False`` force it."""
    model = load_model(path, trust_pickle=trust_pickle)
    flag = default_safety_layer(path) if safety_layer is None else bool(safety_layer)
    normalizer = None
    if vecnormalize is not None:
        normalizer = load_vecnormalize(vecnormalize, model.observation_space, trust_pickle)
    return DictPolicy(model, env, safety_layer=flag, obs_normalizer=normalizer)


# ------------------------------------------------------------------------------------- CLI flags
def add_loading_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--trust-pickle``, ``--vecnormalize PATH`` and ``--safety-layer on|off``."""
    group = parser.add_argument_group("loading models")
    group.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow SB3 .zip models and VecNormalize files: they hold pickles and RUN CODE when loaded "
        "(only your own files)",
    )
    group.add_argument(
        "--vecnormalize",
        metavar="PATH",
        default=None,
        help="SB3 VecNormalize statistics (VecNormalize.save) the model was trained with; applied to "
        "its observations (a pickle: needs --trust-pickle; one model only)",
    )
    group.add_argument(
        "--safety-layer",
        choices=("on", "off"),
        default=None,
        help="the project's action projection (agents/safety.py) on the model's actions; default: on "
        "for the project's policy files and ensembles (as they record), off for SB3 zips",
    )
    return parser


def pickled_files(spec: str) -> list[Path]:
    """The SB3 zips loading ``spec`` would unpickle (itself, or the zip members of a manifest)."""
    path = Path(spec)
    if path.suffix == ".zip":
        return [path]
    if is_manifest(path) and path.is_file():
        try:
            return [Path(m) for m in read_manifest(path)["members"] if m.endswith(".zip")]
        except (ValueError, FileNotFoundError):
            return []  # a policy file, or a manifest the loader will reject with its own message
    return []


def model_observation_shape(spec: str | Path) -> tuple[int, ...] | None:
    """The flat observation shape a model file was trained on, read without loading it (a policy
    file's description, a manifest's first member, a zip's JSON ``data``); None if it does not say."""
    path = Path(spec)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("observation_shape"), list):
                return tuple(int(x) for x in data["observation_shape"])
            if is_manifest(path):
                return model_observation_shape(read_manifest(path)["members"][0])
            return None
        shape = (_zip_data(path).get("observation_space") or {}).get("_shape")
        return tuple(int(x) for x in shape) if isinstance(shape, list) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the loader reports a broken file with its own message


def check_model_shapes(
    parser: argparse.ArgumentParser, models: Sequence[str], env: gym.Env, where: str
) -> None:
    """Fail before any work (``parser.error``) when a model was trained on another observation shape
    than ``env``'s flat one (``where`` names the preset or scenario it comes from)."""
    wanted = FlatObsActionWrapper(env).observation_space.shape
    for spec in models:
        shape = model_observation_shape(spec)
        if shape is not None and shape != wanted:
            parser.error(
                f"{spec}: trained on observations of shape {shape}, but {where} gives {wanted} "
                "(another preset, scenario shape or forecast horizon)"
            )


def check_loading_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, models: Sequence[str]
) -> None:
    """Fail before any work (``parser.error``): a zip or VecNormalize file without ``--trust-pickle``,
    a missing VecNormalize file, or ``--vecnormalize`` with no model or several."""
    if not args.trust_pickle:
        for spec in models:
            if pickled_files(spec):
                parser.error(
                    f"{spec}: SB3 .zip models hold pickles and can run code when loaded; pass --trust-pickle "
                    "for your own files, or convert with `python -m agents.policy_file export`"
                )
    if args.vecnormalize is not None:
        if not Path(args.vecnormalize).is_file():
            parser.error(f"--vecnormalize {args.vecnormalize}: no such file")
        if not args.trust_pickle:
            parser.error(
                f"--vecnormalize {args.vecnormalize}: VecNormalize files are pickles and can run code when "
                "loaded; pass --trust-pickle for your own files"
            )
        if len(models) != 1:
            parser.error(f"--vecnormalize: give exactly one model to apply it to (got {len(models)})")


def loading_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`load_policy` keyword arguments of the parsed flags (only those that were given)."""
    kw: dict[str, Any] = {}
    if args.trust_pickle:
        kw["trust_pickle"] = True
    if args.vecnormalize is not None:
        kw["vecnormalize"] = str(Path(args.vecnormalize).resolve())
    if args.safety_layer is not None:
        kw["safety_layer"] = args.safety_layer == "on"
    return kw
