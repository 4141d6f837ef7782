"""SB3 glue: the model factory, the training callbacks and loading a trained model as a Dict policy.

- :func:`make_vec_env` / :func:`make_model`: ``ppo`` (default), ``sac`` or ``a2c`` on the flat env
  with the safety layer (:func:`agents.safety.safe_flat_env`) behind
  :class:`~envs.wrappers.ScaleReward` (rewards of order 1). No ``VecNormalize``: the env already
  scales every observation to O(1), and behaviour cloning learns on the raw flat observation, so
  running statistics would only shift the inputs under a cloned policy (and would have to be saved
  beside every checkpoint).
- :func:`load_hyperparams` / :func:`resolve_hyperparams`: the hyperparameters are data,
  ``agents/hyperparams/<algo>.yml`` (rl-baselines3-zoo's shape), a ``finetune`` and a ``scratch``
  setting per preset block; ``train.py --hyperparams FILE --hp key=value`` replace and override them.
- :class:`OracleEvalCallback`: every ``eval_freq`` steps, the deterministic policy plays a few fixed
  validation scenarios (training seed range, never in the BC dataset); the score is the mean of
  ``benefit / oracle benefit`` in percent; the best model is saved.
- :class:`StateCheckpointCallback`: a checkpoint every ``save_freq`` steps plus a JSON state (steps,
  evaluation history) from which ``train.py --resume`` continues; :class:`StopAfterCallback` stops
  a run as Ctrl-C would (:class:`Interrupted`).
- :func:`load_model` / :func:`load_policy` / :class:`DictPolicy` / :func:`algo_of`: loading a saved
  model (any SB3 / sb3-contrib zip by its own class, a policy file, an ensemble) as a Dict-env
  policy, the safety layer only when asked; they live in :mod:`agents.loading` and are re-exported.

The training stages that use these live in :mod:`agents.pipeline`.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents import safety
from agents.imitation import rollout
from agents.loading import DictPolicy, UntrustedModelError, algo_of, load_model, load_policy
from envs.atomic import atomic_path, atomic_write_json
from envs.presets import make_scenario
from envs.scenario import Scenario
from envs.wrappers import DEFAULT_REWARD_SCALE

__all__ = [
    "ALGOS",
    "BCAnchorCallback",
    "DictPolicy",
    "OracleEvalCallback",
    "StateCheckpointCallback",
    "UntrustedModelError",
    "algo_of",
    "load_model",
    "load_policy",
    "make_model",
    "make_vec_env",
]

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "a2c": A2C}
"""The algorithms the project trains (and writes as policy files); :mod:`agents.loading` loads more."""
HYPERPARAMS_DIR = Path(__file__).with_name("hyperparams")
"""``<algo>.yml`` here holds the package's hyperparameters (see :func:`load_hyperparams`)."""
SETTINGS = ("finetune", "scratch")
"""The named settings of every preset block: after behaviour cloning, and from a random policy."""
POLICY_KEYS = ("net_arch", "log_std_init")
"""Keys of a hyperparameter block that go to the policy (``policy_kwargs``), not the algorithm."""
_NOT_HYPERPARAMS = {
    "self",
    "policy",
    "env",
    "policy_kwargs",
    "verbose",
    "seed",
    "device",
    "_init_setup_model",
}


def hyperparam_keys(algo: str) -> set[str]:
    """The keys a block of ``algo`` may hold: its constructor's arguments and :data:`POLICY_KEYS`."""
    if algo not in ALGOS:
        raise ValueError(f"algo: choose one of {sorted(ALGOS)} (got {algo!r})")
    return (set(inspect.signature(ALGOS[algo].__init__).parameters) - _NOT_HYPERPARAMS) | set(POLICY_KEYS)


def check_hyperparams(algo: str, params: dict[str, Any], source: str) -> dict[str, Any]:
    """``params``, if every key is a hyperparameter of ``algo``; else ``ValueError`` naming the key
    and ``source`` (the file and block, or the flag, it came from)."""
    known = hyperparam_keys(algo)
    for key in params:
        if key not in known:
            raise ValueError(
                f"{source}: unknown {algo} hyperparameter {key!r} (known: {', '.join(sorted(known))})"
            )
    return params


def load_hyperparams(
    algo: str, preset: str | None = None, setting: str = "finetune", path: str | Path | None = None
) -> dict[str, Any]:
    """The ``setting`` (``finetune`` or ``scratch``) of ``preset``'s block in ``path``.

    ``path`` defaults to ``agents/hyperparams/<algo>.yml``; a file has rl-baselines3-zoo's shape,
    one block per preset, ``default`` serving every preset without a block of its own::

        default:
          finetune: {learning_rate: 1.0e-5, clip_range: 0.1, ...}
          scratch: {learning_rate: 3.0e-4, clip_range: 0.2, ...}

    Read with ``yaml.safe_load``; an unknown key raises ``ValueError`` naming it and the file.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting: choose one of {SETTINGS} (got {setting!r})")
    path = Path(path) if path is not None else HYPERPARAMS_DIR / f"{algo}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"hyperparameters: no file {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected one block per preset (a mapping), got {type(data).__name__}")
    name = preset if preset in data else "default"
    block = data.get(name)
    if not isinstance(block, dict):
        raise ValueError(f"{path}: no block {preset!r} and no 'default' block")
    for key in block:
        if key not in SETTINGS:
            raise ValueError(f"{path}: block {name!r}: unknown setting {key!r} (choose from {SETTINGS})")
    params = block.get(setting)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: block {name!r} has no {setting!r} mapping")
    return check_hyperparams(algo, dict(params), f"{path} [{name}.{setting}]")


def parse_hp(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (``train.py --hp``) as a dict, each value read as a YAML scalar
    (``0.2``, ``null``, ``true``, ``[64, 64]``); a number in exponent form (``3e-4``) is a float."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--hp: expected key=value (got {item!r})")
        value = yaml.safe_load(text)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def resolve_hyperparams(
    algo: str,
    preset: str | None = None,
    setting: str = "finetune",
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The effective hyperparameters: :func:`load_hyperparams`, then ``overrides`` (checked too)."""
    params = load_hyperparams(algo, preset, setting, path)
    return {**params, **check_hyperparams(algo, dict(overrides or {}), "--hp")}


def set_torch_threads(n: int) -> None:
    """Set torch's intra-op threads explicitly (default 1 per process; see docs/training.md)."""
    th.set_num_threads(max(1, int(n)))


def make_vec_env(
    preset: str = "paper",
    n_envs: int = 1,
    seed: int = 0,
    reward_scale: float = DEFAULT_REWARD_SCALE,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
) -> VecEnv:
    """``n_envs`` copies of the flat env (``ScaleReward``, ``Monitor``) in a ``DummyVecEnv``.

    Each env draws its scenarios from the training seeds (1000..999999). A ``DummyVecEnv``, not a
    subprocess one: an env step costs tens of microseconds, less than the IPC would.
    """

    def factory(rank: int):
        def make() -> gym.Env:
            return Monitor(
                safety.safe_flat_env(
                    preset, None, forecast_horizon, forecast_level, reward_scale=reward_scale
                )
            )

        return make

    venv = DummyVecEnv([factory(i) for i in range(n_envs)])
    venv.seed(seed)
    return venv


def make_model(
    algo: str,
    env: VecEnv,
    seed: int = 0,
    *,
    hyperparams: dict[str, Any] | None = None,
    verbose: int = 0,
    policy_extra: dict[str, Any] | None = None,
) -> BaseAlgorithm:
    """A fresh SB3 model of ``algo`` with ReLU networks on the flat env (CPU).

    ``hyperparams``: the complete set (:func:`resolve_hyperparams`); default the package's
    ``finetune`` setting of ``algo``. ``net_arch`` and ``log_std_init`` go to the policy (PPO/A2C:
    the same hidden layers for the policy and the value network), ``policy_extra`` adds policy
    keyword arguments (e.g. :func:`agents.features.window_features_kwargs`).
    """
    params = dict(resolve_hyperparams(algo) if hyperparams is None else hyperparams)
    check_hyperparams(algo, params, "hyperparams")
    net_arch = list(params.pop("net_arch", [256, 256]))
    policy_kwargs: dict[str, Any] = {
        "net_arch": net_arch if algo == "sac" else {"pi": net_arch, "vf": list(net_arch)},
        "activation_fn": th.nn.ReLU,
    }
    if "log_std_init" in params:
        policy_kwargs["log_std_init"] = params.pop("log_std_init")
    policy_kwargs.update(policy_extra or {})
    return ALGOS[algo](
        "MlpPolicy", env, policy_kwargs=policy_kwargs, seed=seed, device="cpu", verbose=verbose, **params
    )


def set_log_std(model: BaseAlgorithm, value: float) -> None:
    """Set the state-independent exploration ``log_std`` of a PPO/A2C policy (no-op for SAC)."""
    log_std = getattr(model.policy, "log_std", None)
    if isinstance(log_std, th.nn.Parameter):
        with th.no_grad():
            log_std.fill_(value)


def policy_features(preset: str, window_features: bool) -> dict[str, Any] | None:
    """The ``policy_extra`` of :func:`make_model` for ``preset``: the start-window features
    extractor (:mod:`agents.features`) or ``None`` for the plain MLP."""
    if not window_features:
        return None
    from agents.features import window_features_kwargs
    from agents.imitation import flat_env

    return window_features_kwargs(flat_env(preset), make_scenario(preset, 1000).T)


# ----------------------------------------------------------------------------------- evaluation
def flat_predictor(model: Any) -> Any:
    """``obs -> action`` with the model's deterministic action."""
    return lambda obs: model.predict(obs, deterministic=True)[0]


def evaluate_vs_oracle(
    model: Any,
    scenarios: Sequence[Scenario],
    oracle_usd: Sequence[float],
    preset: str,
    forecast_level: str | float | None = None,
) -> dict[str, Any]:
    """Deterministic episodes of ``model`` on ``scenarios`` (with the forecast errors of
    ``forecast_level``, a fixed draw per scenario); benefit in USD and in % of the oracle's.

    ``pct_of_oracle`` is the mean over scenarios of ``100 * benefit / oracle benefit``.
    """
    predict = flat_predictor(model)
    benefits = [
        rollout(predict, sc, preset, make_env=safety.safe_flat_env, forecast_level=forecast_level).return_usd
        for sc in scenarios
    ]
    pcts = [100.0 * b / o for b, o in zip(benefits, oracle_usd, strict=True)]
    return {
        "pct_of_oracle": float(np.mean(pcts)),
        "mean_benefit_usd": float(np.mean(benefits)),
        "mean_oracle_usd": float(np.mean(oracle_usd)),
        "benefit_usd": [float(b) for b in benefits],
    }


class OracleEvalCallback(BaseCallback):
    """Every ``eval_freq`` environment steps, score the policy against the oracle and keep the best.

    ``history`` holds one row per evaluation (``timesteps``, ``pct_of_oracle``,
    ``mean_benefit_usd``, ``label``); ``best_pct`` the best score so far, whose model is saved at
    ``best_path``. Pass ``history``/``best_pct`` of an earlier run to continue it (resume).
    """

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        oracle_usd: Sequence[float],
        preset: str,
        eval_freq: int,
        best_path: str | Path,
        history: list[dict[str, Any]] | None = None,
        best_pct: float = -math.inf,
        history_path: str | Path | None = None,
        verbose: int = 0,
        forecast_level: str | float | None = None,
    ) -> None:
        super().__init__(verbose)
        self.forecast_level = forecast_level
        self.scenarios = list(scenarios)
        self.oracle_usd = list(oracle_usd)
        self.preset = preset
        self.eval_freq = int(eval_freq)
        self.best_path = Path(best_path)
        self.history = list(history or [])
        self.best_pct = best_pct
        self.history_path = Path(history_path) if history_path is not None else None
        self._last_eval = None

    def evaluate(self, model: BaseAlgorithm, timesteps: int, label: str = "ppo") -> dict[str, Any]:
        """Score ``model`` now, record the row, save it at ``best_path`` if it is the best so far."""
        res = evaluate_vs_oracle(model, self.scenarios, self.oracle_usd, self.preset, self.forecast_level)
        row = {
            "timesteps": int(timesteps),
            "label": label,
            "pct_of_oracle": res["pct_of_oracle"],
            "mean_benefit_usd": res["mean_benefit_usd"],
        }
        row["best"] = res["pct_of_oracle"] > self.best_pct
        if row["best"]:
            self.best_pct = res["pct_of_oracle"]
            with atomic_path(self.best_path) as tmp:
                model.save(tmp)
        self.history.append(row)
        if self.history_path is not None:
            atomic_write_json(self.history_path, self.history)
        if self.verbose:
            mark = " (best)" if row["best"] else ""
            print(f"[eval] {label} {timesteps} steps: {row['pct_of_oracle']:.1f} % of oracle{mark}")
        return row

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps - (self._last_eval or 0) >= self.eval_freq:
            self._last_eval = self.num_timesteps
            self.evaluate(self.model, self.num_timesteps)
            self.logger.record("eval/pct_of_oracle", self.history[-1]["pct_of_oracle"])
        return True

    def _on_training_start(self) -> None:
        if self._last_eval is None:
            self._last_eval = self.num_timesteps


class StateCheckpointCallback(BaseCallback):
    """Save ``ckpt_<steps>.zip`` every ``save_freq`` steps and ``latest.json`` pointing to it.

    ``latest.json`` also carries ``extra()`` (e.g. the evaluation history and best score), so a
    resumed run continues exactly where the checkpoint left off. Keeps the last ``keep`` files.
    """

    def __init__(self, save_dir: str | Path, save_freq: int, extra: Any = None, keep: int = 3) -> None:
        super().__init__(0)
        self.save_dir = Path(save_dir)
        self.save_freq = int(save_freq)
        self.extra = extra
        self.keep = keep
        self._last = None

    def save_now(self) -> Path:
        """Write a checkpoint of the current model and the state file."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        path = self.save_dir / f"ckpt_{self.num_timesteps}.zip"
        with atomic_path(path) as tmp:
            self.model.save(tmp)
        state = {"path": path.name, "num_timesteps": int(self.num_timesteps)}
        if self.extra is not None:
            state.update(self.extra())
        atomic_write_json(self.save_dir / "latest.json", state)
        ckpts = sorted(self.save_dir.glob("ckpt_*.zip"), key=lambda p: int(p.stem.split("_")[1]))
        for old in ckpts[: -self.keep]:
            old.unlink()
        return path

    def _on_training_start(self) -> None:
        if self._last is None:
            self._last = self.num_timesteps

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps - self._last >= self.save_freq:
            self._last = self.num_timesteps
            self.save_now()
        return True


def latest_checkpoint(save_dir: str | Path) -> dict[str, Any] | None:
    """The state written by :class:`StateCheckpointCallback` (with ``path`` made absolute), or None."""
    state_path = Path(save_dir) / "latest.json"
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    state["path"] = str(Path(save_dir) / state["path"])
    return state


class Interrupted(Exception):
    """Training stopped before the end (Ctrl-C or ``stop_after_steps``); resume with ``--resume``."""


class StopAfterCallback(BaseCallback):
    """Raise :class:`Interrupted` once ``num_timesteps`` reaches ``steps`` (simulates Ctrl-C in tests)."""

    def __init__(self, steps: int) -> None:
        super().__init__(0)
        self.steps = steps

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.steps:
            raise Interrupted(f"stopped after {self.num_timesteps} steps")
        return True


ANCHOR_TARGETS = ("data", "policy")
"""What :class:`BCAnchorCallback` pulls toward: the demonstrated actions (the imitation loss) or the
policy fine-tuning started from (the squared distance of the Gaussian means: the KL divergence of
two Gaussians with the same fixed standard deviation, up to its scale)."""


class BCAnchorCallback(BaseCallback):
    """Behaviour-cloning anchor for RL fine-tuning: after every policy update, ``steps`` Adam
    minibatch steps of the imitation loss (:func:`agents.bc.batch_loss`, the cloning stage's loss)
    on the demonstrations ``data``, at learning rate ``lr``.

    Alternating the two is a behaviour-cloning penalty on the RL objective (issue 13's "a KL or
    behaviour-cloning penalty toward the cloned policy"): the RL step moves the policy where its
    advantage estimates point, the anchor pulls it back toward the oracle's actions, with a weight
    set by ``steps x lr``. SB3 has no hook after ``train()``; a rollout's start is right after the
    previous update, so the anchor runs there (not before the first rollout). Minibatches are drawn
    with a generator seeded by ``seed``. ``target`` (:data:`ANCHOR_TARGETS`): ``"data"`` minimises
    the imitation loss on the demonstrations; ``"policy"`` the squared distance between the
    policy's Gaussian mean and ``reference``'s (default: the policy as ``learn`` starts) on the
    demonstrations' observations, a KL penalty toward the cloned policy."""

    def __init__(
        self,
        data: Any,
        steps: int,
        lr: float,
        seed: int,
        target: str = "data",
        reference: Any = None,
        bc_cfg: Any = None,
    ) -> None:
        super().__init__(0)
        from agents.bc import BCConfig, StartLayout

        if target not in ANCHOR_TARGETS:
            raise ValueError(f"BCAnchorCallback: target must be one of {ANCHOR_TARGETS} (got {target!r})")
        self.data, self.steps, self.lr, self.target = data, int(steps), float(lr), target
        self.reference: Any = reference
        self.cfg = bc_cfg or BCConfig()
        self.layout = StartLayout.from_meta(data.meta)
        self.gen = np.random.default_rng(seed)
        self.optimizer: th.optim.Optimizer | None = None
        self.params: list[th.nn.Parameter] = []
        self.rollouts = 0
        self.updates = 0

    def _on_training_start(self) -> None:
        if self.target == "policy" and self.reference is None:  # the policy learn() starts from
            self.reference = copy.deepcopy(self.model.policy)
        if self.reference is not None:
            self.reference.set_training_mode(False)

    def _on_rollout_start(self) -> None:
        self.rollouts += 1
        if self.rollouts == 1 or self.steps <= 0:
            return
        from agents.bc import batch_loss, bc_targets

        policy = self.model.policy
        if self.optimizer is None:  # the exploration noise (log_std) stays the RL stage's
            self.params = [p for name, p in policy.named_parameters() if name != "log_std"]
            self.optimizer = th.optim.Adam(self.params, lr=self.lr)
        policy.set_training_mode(True)
        for _ in range(self.steps):
            rows = self.gen.integers(0, len(self.data), self.cfg.batch_size)
            obs = th.as_tensor(self.data.obs[rows], device=policy.device)
            if self.target == "policy":
                mean = policy.get_distribution(obs).distribution.mean
                with th.no_grad():
                    ref = self.reference.get_distribution(obs).distribution.mean
                loss = ((mean - ref) ** 2).mean()
            else:
                tgt = th.as_tensor(bc_targets(self.data.actions[rows], self.cfg.margin), device=policy.device)
                loss, _, _ = batch_loss(policy, obs, tgt, self.layout, self.cfg)
            self.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.params, 10.0)
            self.optimizer.step()
        policy.set_training_mode(False)
        self.updates += 1

    def _on_step(self) -> bool:
        return True
