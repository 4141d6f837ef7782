"""SB3 models on the flat env: factory, oracle-referenced evaluation, checkpoints, value pre-training,
and :func:`load_policy`, which puts a trained model behind the Dict env's ``predict`` protocol.

- :func:`make_vec_env` / :func:`make_model`: ``ppo`` (default), ``sac`` or ``a2c`` on
  ``CarbonAwareDC-Flat-v0`` behind :class:`~envs.wrappers.ScaleReward` (rewards of order 1).
  No ``VecNormalize``: the env already scales every observation to O(1), and behaviour cloning
  learns on the raw flat observation, so running statistics would only shift the inputs under a
  cloned policy (and would have to be saved beside every checkpoint).
- :class:`OracleEvalCallback`: every ``eval_freq`` steps, the deterministic policy plays a few fixed
  validation scenarios (training seed range, never in the BC dataset); the score is the mean of
  ``benefit / oracle benefit`` in percent; the best model is saved.
- :class:`StateCheckpointCallback`: a checkpoint every ``save_freq`` steps plus a JSON state (steps,
  evaluation history) from which ``train.py --resume`` continues.
- :func:`pretrain_value`: fit the value head to the discounted returns of the (cloned) policy's own
  rollouts before PPO starts, so the first advantages are not the noise of an untrained critic.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.ensemble import EnsembleModel, is_manifest, model_digest, read_manifest, write_manifest
from agents.imitation import (
    BCConfig,
    DemoDataset,
    behaviour_clone,
    build_oracle_dataset,
    dagger_round,
    draw_training_seeds,
    rollout,
    solve_schedules,
    versions,
)
from envs.dc_env import JOB_FEATURES, CarbonAwareDCEnv
from envs.dynamics import battery_power, place_starts
from envs.presets import make_scenario
from envs.scenario import OperatingState, Scenario
from envs.wrappers import DEFAULT_REWARD_SCALE, FlatObsActionWrapper, ScaleReward
from oracle.executor import run_sweep

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "a2c": A2C}
NET_ARCH = [256, 256]
"""Hidden layers of the policy and value (or Q) networks."""

DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    # Fine-tuning a cloned policy: small steps, small clip range, no entropy bonus, early stop on KL.
    "ppo": {
        "learning_rate": 1e-5,
        "n_steps": 480,
        "batch_size": 240,
        "n_epochs": 5,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.1,
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "target_kl": 0.02,
    },
    "a2c": {"learning_rate": 1e-5, "n_steps": 24, "gamma": 0.99, "ent_coef": 0.0},
    "sac": {"learning_rate": 3e-5, "buffer_size": 100_000, "learning_starts": 480, "batch_size": 256},
}


def set_torch_threads(n: int) -> None:
    """Set torch's intra-op threads explicitly (default 1 per process; see docs/training.md)."""
    th.set_num_threads(max(1, int(n)))


def make_vec_env(
    preset: str = "paper",
    n_envs: int = 1,
    seed: int = 0,
    reward_scale: float = DEFAULT_REWARD_SCALE,
    forecast_horizon: int = 24,
) -> VecEnv:
    """``n_envs`` copies of the flat env (``ScaleReward``, ``Monitor``) in a ``DummyVecEnv``.

    Each env draws its scenarios from the training seeds (1000..999999). A ``DummyVecEnv``, not a
    subprocess one: an env step costs tens of microseconds, less than the IPC would.
    """

    def factory(rank: int):
        def make() -> gym.Env:
            return Monitor(safe_flat_env(preset, None, forecast_horizon, reward_scale))

        return make

    venv = DummyVecEnv([factory(i) for i in range(n_envs)])
    venv.seed(seed)
    return venv


def make_model(
    algo: str,
    env: VecEnv,
    seed: int = 0,
    *,
    log_std_init: float = -1.0,
    hyperparams: dict[str, Any] | None = None,
    verbose: int = 0,
    policy_extra: dict[str, Any] | None = None,
) -> BaseAlgorithm:
    """A fresh SB3 model of ``algo`` with :data:`NET_ARCH` ReLU networks on the flat env (CPU).

    ``policy_extra`` adds policy keyword arguments (e.g. :func:`agents.features.window_features_kwargs`).
    """
    if algo not in ALGOS:
        raise ValueError(f"algo: choose one of {sorted(ALGOS)} (got {algo!r})")
    params = {**DEFAULT_HYPERPARAMS[algo], **(hyperparams or {})}
    if algo == "sac":
        policy_kwargs = {
            "net_arch": list(NET_ARCH),
            "activation_fn": th.nn.ReLU,
            "log_std_init": log_std_init,
        }
    else:
        policy_kwargs = {
            "net_arch": {"pi": list(NET_ARCH), "vf": list(NET_ARCH)},
            "activation_fn": th.nn.ReLU,
            "log_std_init": log_std_init,
        }
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


# ----------------------------------------------------------------------------------- evaluation
def flat_predictor(model: Any) -> Any:
    """``obs -> action`` with the model's deterministic action."""
    return lambda obs: model.predict(obs, deterministic=True)[0]


def evaluate_vs_oracle(
    model: Any, scenarios: Sequence[Scenario], oracle_usd: Sequence[float], preset: str
) -> dict[str, Any]:
    """Deterministic episodes of ``model`` on ``scenarios``; benefit in USD and in % of the oracle's.

    ``pct_of_oracle`` is the mean over scenarios of ``100 * benefit / oracle benefit``.
    """
    predict = flat_predictor(model)
    benefits = [rollout(predict, sc, preset, make_env=safe_flat_env).return_usd for sc in scenarios]
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
    ) -> None:
        super().__init__(verbose)
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
        res = evaluate_vs_oracle(model, self.scenarios, self.oracle_usd, self.preset)
        row = {
            "timesteps": int(timesteps),
            "label": label,
            "pct_of_oracle": res["pct_of_oracle"],
            "mean_benefit_usd": res["mean_benefit_usd"],
        }
        row["best"] = res["pct_of_oracle"] > self.best_pct
        if row["best"]:
            self.best_pct = res["pct_of_oracle"]
            model.save(self.best_path)
        self.history.append(row)
        if self.history_path is not None:
            self.history_path.write_text(json.dumps(self.history, indent=1))
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
        self.model.save(path)
        state = {"path": path.name, "num_timesteps": int(self.num_timesteps)}
        if self.extra is not None:
            state.update(self.extra())
        tmp = self.save_dir / "latest.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.save_dir / "latest.json")
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


# ------------------------------------------------------------------------------ value pre-training
def pretrain_value(
    model: BaseAlgorithm,
    scenarios: Sequence[Scenario],
    preset: str,
    *,
    reward_scale: float = DEFAULT_REWARD_SCALE,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
) -> dict[str, float]:
    """Fit a PPO/A2C value head to the discounted (scaled) returns of the policy's own rollouts.

    The policy plays each scenario deterministically; the targets are ``sum_k gamma^k r_{t+k}`` with
    the model's ``gamma`` and the training reward scale. Only the value network is updated. Returns
    the value loss before and after (mean squared error, reward-scale units).
    """
    if not hasattr(model.policy, "predict_values"):
        return {}
    gamma = float(model.gamma)
    obs_rows, targets = [], []
    predict = flat_predictor(model)
    for sc in scenarios:
        ep = rollout(predict, sc, preset, make_env=safe_flat_env)
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


# ------------------------------------------------------------------------------------ load_policy
def algo_of(path: str | Path) -> str:
    """The algorithm (``ppo``, ``a2c`` or ``sac``) of a saved SB3 model zip."""
    with zipfile.ZipFile(path) as zf:
        data = json.loads(zf.read("data").decode())
    module = str(data.get("policy_class", {}).get("__module__", ""))
    if "sac" in module or ("replay_buffer_class" in data and "clip_range" not in data):
        return "sac"
    return "ppo" if "clip_range" in data else "a2c"


def action_mask_from_obs(obs: dict[str, np.ndarray], gpu_capacity: np.ndarray) -> np.ndarray:
    """(slots, S+1) bool: the env's start mask rebuilt from a Dict observation.

    A start at site s is allowed iff the job is waiting and released, s is eligible, and its GPUs
    fit in the GPUs not held by running jobs (``info["action_mask"]`` of the env). Job GPUs and free
    GPUs are scaled by the largest capacity and by each site's capacity, and rounded back to whole
    GPUs, so the float32 observation gives the exact mask.
    """
    jobs = np.asarray(obs["jobs"], dtype=np.float64)
    cap = np.asarray(gpu_capacity, dtype=np.float64)
    S = cap.shape[0]
    gpu_scale = max(float(cap.max()), 1.0)
    waiting = jobs[:, JOB_FEATURES.index("waiting")] > 0.5
    released = jobs[:, JOB_FEATURES.index("until_release")] <= 1e-9
    eligible = jobs[:, len(JOB_FEATURES) : len(JOB_FEATURES) + S] > 0.5
    gpus = np.rint(jobs[:, JOB_FEATURES.index("gpus")] * gpu_scale)
    free = np.rint(np.asarray(obs["free_gpus"], dtype=np.float64) * np.where(cap > 0, cap, 1.0))
    mask = np.zeros((jobs.shape[0], S + 1), dtype=bool)
    mask[:, 0] = True
    mask[:, 1:] = (waiting & released)[:, None] & eligible & (gpus[:, None] <= free[None, :])
    return mask


TERMINAL_SOC_MARGIN = 0.8
"""The terminal-SoC guard counts on recharging at only this share of full charging power."""


CARBON_GUARD_TOLERANCE = 0.0
"""A start is blocked when the estimated day's emissions with it exceed the budget by more than this share."""


def estimated_emissions_t(
    sc: Scenario,
    state: OperatingState,
    forecast: dict[str, np.ndarray],
    route: np.ndarray,
    starts: Sequence[tuple[int, int]] = (),
) -> float:
    """A cheap estimate of the day's total emissions (t) given the commitments at ``state.period``.

    Emitted so far, plus, for the periods left (from the forecast), the grid-only emissions of the
    running jobs, the jobs in ``starts`` (``(job, site)`` starting now) and inference routed as
    ``route`` (K, S) throughout: ``sum ci * max(0, (1 + cooling) * it - renewables) * dt_h`` with no
    battery or generator (as :func:`envs.rules.grid_only_emissions_t`).
    """
    t0 = state.period
    n = min(sc.T - t0, forecast["carbon_intensity"].shape[1])  # periods beyond the forecast are unknown
    ci = forecast["carbon_intensity"][:, :n]
    cool = forecast["cooling"][:, :n]
    ren = forecast["renewable_mw"][:, :n]
    demand = forecast["demand_gpus"][:, :n]
    it = np.repeat(sc.site_array("base_it_mw")[:, None], n, axis=1)
    for j, site, tau in [*state.job_starts, *((j, site, t0) for j, site in starts)]:
        lo, hi = max(tau, t0), min(tau + sc.jobs[j].duration, t0 + n)
        if lo < hi:
            it[site, lo - t0 : hi - t0] += sc.job_power_mw[j, site]
    it += (np.asarray(route)[:, :, None] * demand[:, None, :]).sum(axis=0) * sc.gpu_mw[:, None]
    net = np.maximum(0.0, (1.0 + cool) * it - ren)
    return float(state.emissions_t + (ci * net).sum() * sc.dt_h)


def _facility_load_mw(
    sc: Scenario,
    state: OperatingState,
    forecast: dict[str, np.ndarray],
    start: np.ndarray,
    served_gpus: np.ndarray,
) -> np.ndarray:
    """Each site's facility load this period (S,) MW, as the env will compute it for this action
    (``start`` holding only starts the env places): ``(1 + cooling) * (base IT + running and
    starting jobs + served_gpus * gpu_mw)``."""
    t = state.period
    it = sc.site_array("base_it_mw").copy()
    for j, s, tau in state.job_starts:
        if tau <= t < tau + sc.jobs[j].duration:
            it[s] += sc.job_power_mw[j, s]
    for j in np.flatnonzero(start[: sc.J] > 0):
        it[int(start[j]) - 1] += sc.job_power_mw[j, int(start[j]) - 1]
    it += served_gpus * sc.gpu_mw
    return (1.0 + forecast["cooling"][:, 0]) * it


def project_action(
    action: dict[str, np.ndarray],
    obs: dict[str, np.ndarray],
    sc: Scenario,
    state: OperatingState | None = None,
    forecast: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The safety layer: a Dict action moved to where the env will not have to repair it.

    Uses only what the operator knows at period t (the observation and its own hardware):

    - **routing**: inference sent to a site beyond its free GPUs would be cut by the env and go
      unserved (penalised); the overflow of each class is instead moved to its other routes with
      free GPUs (lowest latency first). Starts are placed first, in slot order, as the env does;
      a start the env would ignore (not allowed now, or no room left) becomes a hold.
    - **carbon budget** (with ``state`` and ``forecast``: ``env.state_snapshot()`` and
      ``env.forecast()``): a start whose estimated day's emissions
      (:func:`estimated_emissions_t`) would exceed the budget becomes a hold; the env charges
      1,000 USD per ton above the budget, far more than any job is worth per ton.
    - **terminal state of charge**: the env charges 1,000 USD per MWh below the initial SoC at the
      end; discharging is limited (and charging forced) so that the initial SoC stays reachable
      charging at ``TERMINAL_SOC_MARGIN`` of full power in the periods left; in the last period
      the battery is brought to exactly its initial SoC (more is worth nothing at the end, the
      objective has no terminal value: the excess is discharged instead of being bought);
    - **no energy sold below its cost** (with ``state`` and ``forecast``): at a site whose export
      price is below its import price, the generator and then the battery discharge are cut to the
      period's own deficit (facility load of this action + charging - renewables): beyond it their
      energy would be exported below what it cost;
    - **SoC bounds**: the battery set point is clipped to what the SoC allows, as the env would
      (so that the env reports no repair for it).

    Oracle routes pass unchanged; the oracle sometimes plans to recharge at full power in the last
    periods, which the guard (counting on ``TERMINAL_SOC_MARGIN`` of it) pre-empts by charging a
    little earlier: its replayed benefit moves by well under 1 %. Demonstrations are recorded
    without the projection.
    """
    start = np.asarray(action["start"], dtype=np.int64)
    route = np.array(action["route"], dtype=np.float64)
    battery = np.array(action["battery"], dtype=np.float64)
    S, K = sc.S, sc.K
    cap = sc.site_array("gpu_capacity")
    gpu_scale = max(float(cap.max()), 1.0)
    mask = action_mask_from_obs(obs, cap)
    jobs = np.asarray(obs["jobs"], dtype=np.float64)
    free = np.rint(np.asarray(obs["free_gpus"], dtype=np.float64) * np.where(cap > 0, cap, 1.0))
    gpus = np.rint(jobs[:, JOB_FEATURES.index("gpus")] * gpu_scale)
    _, ignored, free = place_starts(start, mask, gpus, free)
    if ignored:  # not allowed, or no room after earlier slots: the env would drop them
        start = start.copy()
        start[ignored] = 0
    demand = np.rint(np.asarray(obs["demand"], dtype=np.float64)[:, 0] * gpu_scale)
    routes = np.asarray(sc.routes, dtype=bool)
    frac = np.clip(route, 0.0, 1.0) * routes
    frac = frac / np.maximum(frac.sum(axis=1, keepdims=True), 1.0)
    serve = frac * demand[:, None]
    load = serve.sum(axis=0)
    room = np.maximum(free, 0.0)
    over = load > room + 1e-6  # GPUs: float dust is not overflow (the env ignores it too)
    if over.any():
        keep = np.where(over, room / np.where(load > 0, load, 1.0), 1.0)
        moved = (serve * (1.0 - keep)[None, :]).sum(axis=1)
        serve = serve * keep[None, :]
        spare = room - serve.sum(axis=0)
        for k in range(K):
            lat = sc.classes[k].latency_ms
            for s in sorted(np.flatnonzero(routes[k]), key=lambda s: (lat[s], s)):
                if moved[k] <= 0:
                    break
                add = min(moved[k], max(spare[s], 0.0))
                serve[k, s] += add
                spare[s] -= add
                moved[k] -= add
        route = np.divide(serve, demand[:, None], out=np.zeros((K, S)), where=demand[:, None] > 0)
    if state is not None and forecast is not None and sc.carbon_budget_t is not None:
        start = start.copy()
        limit = sc.carbon_budget_t * (1.0 + CARBON_GUARD_TOLERANCE)
        accepted: list[tuple[int, int]] = []
        for j in np.flatnonzero(start > 0):
            if j >= sc.J:
                continue
            trial = [*accepted, (int(j), int(start[j]) - 1)]
            if estimated_emissions_t(sc, state, forecast, route, trial) > limit:
                start[j] = 0
            else:
                accepted = trial
    t = int(np.asarray(obs["period"]).ravel()[0])
    left = sc.T - t - 1  # periods after this one
    site = sc.site_array
    cap_mwh, c_lim, d_lim = site("capacity_mwh"), site("charge_mw"), site("discharge_mw")
    eta_c, eta_d, dt = site("eta_charge"), site("eta_discharge"), sc.dt_h
    soc = (
        np.asarray(state.soc_mwh, dtype=np.float64)
        if state is not None
        else np.asarray(obs["soc"], dtype=np.float64) * cap_mwh
    )
    floor = np.array([x.soc_init_mwh for x in sc.sites]) - TERMINAL_SOC_MARGIN * left * c_lim * eta_c * dt
    for s in range(S):
        if cap_mwh[s] <= 0:
            continue
        b = float(np.clip(battery[s], -1.0, 1.0))
        after = soc[s] + (eta_c[s] * max(b, 0.0) * c_lim[s] - max(-b, 0.0) * d_lim[s] / eta_d[s]) * dt
        if after < floor[s] + 1e-6:
            need = (floor[s] + 1e-6 - soc[s]) / dt
            if need <= 0:
                b = -min(-need * eta_d[s] / d_lim[s], 1.0) if d_lim[s] > 0 else 0.0
            else:
                b = min(need / (eta_c[s] * c_lim[s]), 1.0) if c_lim[s] > 0 else 0.0
        elif left == 0 and after > floor[s] + 1e-6:
            spare = (soc[s] - floor[s] - 1e-6) / dt  # MW that would bring the SoC to the target
            if spare >= 0:
                b = -min(spare * eta_d[s] / d_lim[s], 1.0) if d_lim[s] > 0 else 0.0
            else:
                b = min(-spare / (eta_c[s] * c_lim[s]), 1.0) if c_lim[s] > 0 else 0.0
        battery[s] = b
    generator = np.array(action["generator"], dtype=np.float64)
    if state is not None and forecast is not None:
        load = _facility_load_mw(sc, state, forecast, start, serve.sum(axis=0))
        deficit = load + np.maximum(battery, 0.0) * c_lim - forecast["renewable_mw"][:, 0]
        gen_cap = site("gen_capacity_mw")
        dear = forecast["price_export"][:, 0] < forecast["price_import"][:, 0]
        for s in np.flatnonzero(dear):
            discharge = max(-battery[s], 0.0) * d_lim[s]
            gen = float(np.clip(generator[s], 0.0, 1.0)) * gen_cap[s]
            if gen > 0:
                gen = min(gen, max(deficit[s] - discharge, 0.0))
                generator[s] = gen / gen_cap[s]
            if discharge > 0:
                battery[s] = -min(discharge, max(deficit[s] - gen, 0.0)) / d_lim[s]
    for s in np.flatnonzero(cap_mwh > 0):  # within the SoC bounds, as the env would clip it
        x = sc.sites[s]
        charge, discharge, _ = battery_power(
            float(battery[s]),
            soc[s],
            c_lim[s],
            d_lim[s],
            x.soc_min_mwh,
            x.soc_max_mwh,
            eta_c[s],
            eta_d[s],
            dt,
        )
        battery[s] = charge / c_lim[s] if charge > 0 else (-discharge / d_lim[s] if discharge > 0 else 0.0)
    return {**action, "start": start, "route": route, "battery": battery, "generator": generator}


class SafeFlatWrapper(FlatObsActionWrapper):
    """:class:`~envs.wrappers.FlatObsActionWrapper` whose decoded action goes through
    :func:`project_action` before the env steps (the policy is trained and evaluated this way)."""

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._mask = info["action_mask"]
        self._obs = obs
        return self.flatten_obs(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        base = self.unwrapped
        decoded = self.decode_action(action, self._mask)
        decoded = project_action(decoded, self._obs, base.scenario, base.state_snapshot(), base.forecast())
        obs, reward, terminated, truncated, info = self.env.step(decoded)
        self._mask = info["action_mask"]
        self._obs = obs
        return self.flatten_obs(obs), reward, terminated, truncated, info


def safe_flat_env(
    preset: str, scenario: Scenario | None = None, forecast_horizon: int = 24, reward_scale: float = 1.0
) -> gym.Env:
    """The flat env with the safety layer (and ``ScaleReward`` unless ``reward_scale == 1``)."""
    env: gym.Env = SafeFlatWrapper(
        CarbonAwareDCEnv(scenario=scenario, preset=preset, forecast_horizon=forecast_horizon)
    )
    if reward_scale != 1.0:
        env = ScaleReward(env, reward_scale)
    return env


class DictPolicy:
    """A trained flat-env SB3 model behind SB3's ``predict`` for the Dict env.

    ``predict(obs)`` flattens the Dict observation (``FlatObsActionWrapper.flatten_obs``), asks the
    model for its action and decodes it (``decode_action``) with the start mask rebuilt from the
    observation, so a forbidden start becomes a hold exactly as the flat env would make it.
    """

    def __init__(self, model: Any, env: gym.Env) -> None:
        base = env.unwrapped
        if not isinstance(base, CarbonAwareDCEnv):
            raise TypeError(f"load_policy needs a CarbonAwareDCEnv (got {type(base).__name__})")
        self.model = model
        self.env = base
        self.flat = FlatObsActionWrapper(base)
        if model.observation_space.shape != self.flat.observation_space.shape:
            raise ValueError(
                f"model observation size {model.observation_space.shape} does not match the env's "
                f"{self.flat.observation_space.shape} (another preset or forecast horizon?)"
            )

    def predict(
        self,
        obs: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, np.ndarray], Any]:
        """SB3's protocol for one Dict observation: ``(Dict action, state)``."""
        flat_obs = self.flat.flatten_obs(obs)
        action, _ = self.model.predict(flat_obs, deterministic=deterministic)
        sc = self.env.scenario
        if sc is None:
            return self.flat.decode_action(action), state
        decoded = self.flat.decode_action(action, action_mask_from_obs(obs, sc.site_array("gpu_capacity")))
        return project_action(decoded, obs, sc, self.env.state_snapshot(), self.env.forecast()), state


def load_model(path: str | Path, env: Any = None) -> Any:
    """Load a saved model zip with the right algorithm class (CPU), or an ensemble manifest
    (``.json``, :mod:`agents.ensemble`) as an :class:`~agents.ensemble.EnsembleModel` of its members."""
    if is_manifest(path):
        return EnsembleModel([load_model(m, env) for m in read_manifest(path)["members"]])
    if not Path(path).is_file():
        raise FileNotFoundError(f"no trained model at {path}")
    return ALGOS[algo_of(path)].load(str(path), env=env, device="cpu")


def load_policy(path: str | Path, env: gym.Env) -> DictPolicy:
    """A saved model (``runs/default/model.zip``) or ensemble (``runs/default/ensemble.json``) as a
    Dict-env policy with SB3's ``predict``."""
    return DictPolicy(load_model(path), env)


# ------------------------------------------------------------------------------- the pipeline
@dataclass
class TrainConfig:
    """Everything ``train.py`` needs; saved as ``config.json`` beside the model.

    Demonstrations (dataset and DAgger labels) are solved to a relative MIP gap of ``demo_mip_gap``
    (5e-3: three times faster than 1e-4 on ``paper``, and 0.04 % below it on average); the
    validation oracle, the reference of every score, to 1e-4.

    Scenario seeds all come from ``seed`` (:func:`agents.imitation.draw_training_seeds`): the first
    ``eval_scenarios`` are the validation scenarios, the next ``bc_scenarios`` the oracle dataset,
    then ``dagger_scenarios`` per DAgger round; all >= 1000 and mutually disjoint.

    ``ensemble``: the number of models in the deployed policy. Besides the main model (BC, DAgger,
    fine-tuning), ``ensemble - 1`` members are cloned from the final aggregated dataset (oracle
    demonstrations and DAgger labels) with their own seeds and validation splits, in parallel on the
    local cores (:func:`train_ensemble`); ``ensemble.json`` plays the mean of their actions
    (:mod:`agents.ensemble`). ``1`` = the main model alone.

    ``window_features``: the networks see the start-window features of
    :class:`agents.features.WindowFeatures` beside the flat observation (computed inside the model,
    so the env and the datasets are unchanged).
    """

    algo: str = "ppo"
    preset: str = "paper"
    timesteps: int = 100_000
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

    def sweep_kwargs(self) -> dict[str, Any]:
        """The executor arguments (``oracle.executor.backend_kwargs``'s keys)."""
        return {"backend": self.backend, "ray_address": self.ray_address, "max_workers": self.workers}

    def seed_plan(self) -> dict[str, Any]:
        """The validation, dataset and DAgger scenario seeds."""
        n_val, n_bc = self.eval_scenarios, self.bc_scenarios if self.bc else 0
        rounds = self.dagger_rounds if self.bc else 0
        seeds = draw_training_seeds(self.seed, n_val + n_bc + rounds * self.dagger_scenarios)
        dagger = [
            seeds[n_val + n_bc + r * self.dagger_scenarios : n_val + n_bc + (r + 1) * self.dagger_scenarios]
            for r in range(rounds)
        ]
        return {"validation": seeds[:n_val], "bc": seeds[n_val : n_val + n_bc], "dagger": dagger}


class Interrupted(Exception):
    """Training stopped before the end (Ctrl-C or ``stop_after_steps``); resume with ``--resume``."""


class _StopAfter(BaseCallback):
    """Raise :class:`Interrupted` once ``num_timesteps`` reaches ``steps`` (simulates Ctrl-C in tests)."""

    def __init__(self, steps: int) -> None:
        super().__init__(0)
        self.steps = steps

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.steps:
            raise Interrupted(f"stopped after {self.num_timesteps} steps")
        return True


def _log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def policy_features(preset: str, window_features: bool) -> dict[str, Any] | None:
    """The ``policy_extra`` of :func:`make_model` for ``preset``: the start-window features
    extractor (:mod:`agents.features`) or ``None`` for the plain MLP."""
    if not window_features:
        return None
    from agents.features import window_features_kwargs
    from agents.imitation import flat_env

    return window_features_kwargs(flat_env(preset), make_scenario(preset, 1000).T)


def dagger_validation_seeds(round_seeds: Sequence[int]) -> list[int]:
    """The share of a DAgger round's scenarios (the first tenth, at least one) kept for validation
    when the policy is retrained on the aggregated dataset."""
    return list(round_seeds[: max(1, len(round_seeds) // 10)])


def run_behaviour_cloning(
    model: BaseAlgorithm,
    cfg: TrainConfig,
    plan: dict[str, Any],
    out: Path,
    evaluator: OracleEvalCallback | None = None,
) -> dict[str, Any]:
    """Oracle dataset -> BC -> DAgger rounds on ``model.policy``; writes ``bc_dataset.npz``.

    The validation scenarios of BC stay the validation scenarios of every DAgger retraining (plus a
    tenth of each round's new scenarios). With an ``evaluator``, the policy after BC and after each
    round is scored against the oracle (labels ``bc``, ``dagger1``, ...) and the best is kept in
    ``model`` at the end.
    """
    info: dict[str, Any] = {"rounds": []}
    cache = out / "oracle_cache"
    tick = time.perf_counter()
    data = build_oracle_dataset(
        cfg.preset,
        plan["bc"],
        base_seed=cfg.seed,
        cache_dir=cache / "full",
        time_limit_s=cfg.oracle_time_limit_s,
        mip_gap=cfg.demo_mip_gap,
        progress=cfg.progress_bar,
        **cfg.sweep_kwargs(),
    )
    info["dataset_wall_s"] = time.perf_counter() - tick
    info["dataset_rows"] = len(data)
    info["dataset_scenarios_per_s"] = len(data.seeds) / max(info["dataset_wall_s"], 1e-9)
    data.save(out / "bc_dataset.npz")
    _log(
        f"oracle dataset: {len(data.seeds)} scenarios, {len(data)} pairs in {info['dataset_wall_s']:.1f} s "
        f"({info['dataset_scenarios_per_s']:.2f} scenarios/s)"
    )
    bc_cfg = BCConfig(epochs=cfg.bc_epochs, seed=cfg.seed)
    hist = behaviour_clone(model.policy, data, bc_cfg)
    info["rounds"].append({"round": 0, **hist.to_dict()})
    _log(
        f"BC: validation loss {hist.initial_val['loss']:.3f} -> {hist.final_val['loss']:.3f} "
        f"(start accuracy {hist.final_val['start_acc']:.2f}) in {hist.wall_s:.1f} s"
    )
    val_seeds = list(hist.val_seeds)
    best_label = "bc"
    if evaluator is not None:
        set_log_std(model, cfg.ft_log_std)
        evaluator.evaluate(model, 0, "bc")
    for r, seeds in enumerate(plan["dagger"], start=1):
        new, stats = dagger_round(
            flat_predictor(model),
            cfg.preset,
            seeds,
            r,
            cache_dir=cache / "dagger",
            time_limit_s=cfg.oracle_time_limit_s,
            mip_gap=cfg.demo_mip_gap,
            progress=cfg.progress_bar,
            make_env=safe_flat_env,
            **cfg.sweep_kwargs(),
        )
        data = data.concat(new)
        data.meta["dagger_rounds"] = r
        data.meta.setdefault("dagger", []).append(stats)
        data.save(out / "bc_dataset.npz")
        val_seeds += dagger_validation_seeds(seeds)
        round_cfg = replace(
            bc_cfg, epochs=cfg.dagger_epochs, lr=cfg.dagger_lr, patience=None, val_seeds=val_seeds
        )
        hist = behaviour_clone(model.policy, data, round_cfg)
        info["rounds"].append({"round": r, "stats": stats, **hist.to_dict()})
        _log(
            f"DAgger round {r}: {stats['labels']} labels in {stats['relabel_wall_s']:.1f} s, "
            f"validation loss {hist.initial_val['loss']:.3f} -> {hist.final_val['loss']:.3f}"
        )
        if evaluator is not None:
            set_log_std(model, cfg.ft_log_std)
            if evaluator.evaluate(model, 0, f"dagger{r}")["best"]:
                best_label = f"dagger{r}"
    if evaluator is not None and evaluator.history and not evaluator.history[-1]["best"]:
        # The last round did not improve on validation: continue from the best cloned policy.
        best = load_model(evaluator.best_path)
        model.policy.load_state_dict(best.policy.state_dict())
    info["best_cloned"] = best_label
    return info


def train_member(item: dict[str, Any]) -> dict[str, Any]:
    """Executor work item: clone one ensemble member from the saved dataset and save it.

    ``item``: ``dataset`` (``.npz``), ``path`` (the member zip to write), ``algo``, ``preset``,
    ``seed`` (network initialisation, minibatch order and validation split), ``epochs``,
    ``window_features``, ``ft_log_std``, ``torch_threads``, and ``two_stage``: ``None`` (one BC
    pass over everything) or ``{"epochs", "lr"}`` of the second stage (see below).
    """
    set_torch_threads(item["torch_threads"])
    data = DemoDataset.load(item["dataset"])
    model = make_model(
        item["algo"],
        make_vec_env(item["preset"], 1, item["seed"]),
        item["seed"],
        policy_extra=policy_features(item["preset"], item["window_features"]),
    )
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
    model.save(item["path"])
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


def train_ensemble(
    cfg: TrainConfig,
    out: Path,
    scenarios: Sequence[Scenario],
    oracle_usd: Sequence[float],
    main_model: str | Path,
) -> dict[str, Any]:
    """Clone ``cfg.ensemble - 1`` members from ``out/bc_dataset.npz`` in parallel, score every member
    and the ensemble on the validation scenarios, and write ``out/ensemble.json``.

    Member ``m`` uses seed ``cfg.seed + m`` (initialisation, minibatch order, validation split), so
    members differ from each other and from the main model. With DAgger rounds, a member learns as
    the main model did: first the oracle's own demonstrations, then all pairs (DAgger labels
    included) for ``dagger_epochs`` at ``dagger_lr`` (0.9 points of held-out benefit better per
    member than one pass over everything, docs/training.md). Finished members are kept as JSON
    records in ``out/ensemble/items`` and not trained again by ``--resume``.
    """
    ens_dir = out / "ensemble"
    ens_dir.mkdir(exist_ok=True)
    dataset = out / "bc_dataset.npz"
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
            "two_stage": {"epochs": cfg.dagger_epochs, "lr": cfg.dagger_lr}
            if cfg.dagger_rounds > 0
            else None,
        }
        for m in range(1, cfg.ensemble)
    ]
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
    if reused:
        _log(f"ensemble: {reused} of {len(items)} members already trained (reused)")
    tick = time.perf_counter()
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
    wall = time.perf_counter() - tick
    members = [Path(main_model)] + [Path(item["path"]) for item in items]
    models = [load_model(m) for m in members]
    scores = [evaluate_vs_oracle(m, scenarios, oracle_usd, cfg.preset)["pct_of_oracle"] for m in models]
    ens = evaluate_vs_oracle(EnsembleModel(models), scenarios, oracle_usd, cfg.preset)
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
    _log(
        f"ensemble of {len(members)}: {ens['pct_of_oracle']:.1f} % of the oracle on validation "
        f"(members {', '.join(f'{s:.1f}' for s in scores)}); members cloned in {wall:.0f} s"
    )
    return info


def plot_learning_curve(path: Path, bc_info: dict[str, Any] | None, history: list[dict[str, Any]]) -> None:
    """Two panels: BC losses per epoch (all rounds), validation % of oracle per training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if bc_info:
        offset = 0
        for rnd in bc_info["rounds"]:
            epochs = rnd["epochs"]
            x = [offset + e["epoch"] + 1 for e in epochs]
            label = "BC" if rnd["round"] == 0 else f"DAgger {rnd['round']}"
            ax.plot(x, [e["train_loss"] for e in epochs], lw=1, label=f"{label} train")
            ax.plot(x, [e["val_loss"] for e in epochs], lw=1, ls="--", label=f"{label} validation")
            offset = x[-1] if x else offset
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title("imitation loss")
    ax = axes[1]
    if history:
        ax.plot([h["timesteps"] for h in history], [h["pct_of_oracle"] for h in history], "o-")
    ax.axhline(100.0, color="k", lw=0.5)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("% of oracle benefit (validation)")
    ax.set_title("fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_agent(
    cfg: TrainConfig, resume: bool = False, stop_after_steps: int | None = None
) -> dict[str, Any]:
    """BC from the oracle (optional, with DAgger), then RL fine-tuning; the best validated model wins.

    Writes into ``cfg.out``: ``model.zip`` (best by validation, the cloned policy included as a
    candidate), ``config.json`` (the config, seeds, versions and, at the end, a summary),
    ``checkpoints/``, ``bc_dataset.npz``, ``bc_model.zip``, ``eval_history.json`` and
    ``learning_curve.png``. ``resume`` continues from the last checkpoint (or from the cloned
    model if fine-tuning had not checkpointed yet). Raises :class:`Interrupted` on Ctrl-C.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    t_start = time.perf_counter()
    record: dict[str, Any]
    if resume:
        if not cfg_path.exists():
            raise FileNotFoundError(f"--resume: no {cfg_path}; start the run without --resume")
        record = json.loads(cfg_path.read_text())
        saved = TrainConfig(**record["config"])
        cfg = replace(saved, progress_bar=cfg.progress_bar, timesteps=max(cfg.timesteps, saved.timesteps))
        record["resumed"] = [*record.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S")]
    else:
        record = {}
    if cfg.ensemble > 1 and not cfg.bc:
        _log(f"--ensemble {cfg.ensemble} needs the oracle dataset of --bc: deploying the single model")
        cfg = replace(cfg, ensemble=1)
    plan = cfg.seed_plan()
    record.update(
        {
            "config": asdict(cfg),
            "seeds": plan,
            "versions": versions(),
            "torch_threads": th.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        }
    )
    record.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
    _write_json(cfg_path, record)
    set_torch_threads(cfg.torch_threads)

    tick = time.perf_counter()
    val_scheds = solve_schedules(
        cfg.preset,
        plan["validation"],
        cache_dir=out / "oracle_cache" / "full",
        time_limit_s=cfg.oracle_time_limit_s,
        mip_gap=1e-4,
        progress=cfg.progress_bar,
        **cfg.sweep_kwargs(),
    )
    val_seeds = [s for s in plan["validation"] if s in val_scheds]
    scenarios = [val_scheds[s].scenario for s in val_seeds]
    oracle_usd = [val_scheds[s].objective_usd for s in val_seeds]
    timings = {"validation_oracle_s": time.perf_counter() - tick}

    ckpt_dir = out / "checkpoints"
    ckpt = latest_checkpoint(ckpt_dir) if resume else None
    history: list[dict[str, Any]] = []
    history_path = out / "eval_history.json"
    bc_info: dict[str, Any] | None = None
    if resume and history_path.exists():
        history = json.loads(history_path.read_text())
    if ckpt is not None:
        history = ckpt.get("history", history)
    best = max((h["pct_of_oracle"] for h in history), default=-math.inf)
    evaluator = OracleEvalCallback(
        scenarios, oracle_usd, cfg.preset, cfg.eval_freq, out / "model.zip", history, best, history_path, 1
    )
    done_steps = 0
    venv_seed = cfg.seed
    if ckpt is not None:
        _log(f"resuming from {ckpt['path']} at {ckpt['num_timesteps']} steps")
        done_steps = int(ckpt["num_timesteps"])
        venv_seed = cfg.seed + done_steps
        model = load_model(ckpt["path"], make_vec_env(cfg.preset, cfg.n_envs, venv_seed))
        if (out / "bc_info.json").exists():
            bc_info = json.loads((out / "bc_info.json").read_text())
    elif resume and (out / "bc_model.zip").exists():
        _log("resuming from the cloned model (no fine-tuning checkpoint yet)")
        model = load_model(out / "bc_model.zip", make_vec_env(cfg.preset, cfg.n_envs, venv_seed))
        if (out / "bc_info.json").exists():
            bc_info = json.loads((out / "bc_info.json").read_text())
    else:
        hyper = {"learning_rate": cfg.learning_rate} if cfg.learning_rate is not None else {}
        model = make_model(
            cfg.algo,
            make_vec_env(cfg.preset, cfg.n_envs, venv_seed),
            cfg.seed,
            hyperparams=hyper,
            policy_extra=policy_features(cfg.preset, cfg.window_features),
        )
        if cfg.bc:
            tick = time.perf_counter()
            bc_info = run_behaviour_cloning(model, cfg, plan, out, evaluator)
            timings["bc_total_s"] = time.perf_counter() - tick
            set_log_std(model, cfg.ft_log_std)
            _log(
                f"cloned policy ({bc_info['best_cloned']}): {evaluator.best_pct:.1f} % of the oracle "
                "on validation"
            )
            if cfg.value_pretrain_scenarios > 0:
                tick = time.perf_counter()
                vseeds = plan["bc"][: cfg.value_pretrain_scenarios]
                vinfo = pretrain_value(model, [make_scenario(cfg.preset, s) for s in vseeds], cfg.preset)
                bc_info["value_pretrain"] = vinfo
                timings["value_pretrain_s"] = time.perf_counter() - tick
                if vinfo:
                    _log(f"value head: MSE {vinfo['value_mse_before']:.4f} -> {vinfo['value_mse_after']:.4f}")
            _write_json(out / "bc_info.json", bc_info)
            record["timings_s"] = timings
            _write_json(cfg_path, record)
        else:
            evaluator.evaluate(model, 0, "init")
        model.save(out / "bc_model.zip")

    remaining = cfg.timesteps - done_steps
    tick = time.perf_counter()
    if remaining > 0:
        checkpointer = StateCheckpointCallback(
            ckpt_dir,
            cfg.checkpoint_freq,
            extra=lambda: {"history": evaluator.history, "best_pct": evaluator.best_pct},
        )
        callbacks: list[BaseCallback] = [evaluator, checkpointer]
        if stop_after_steps is not None:
            callbacks.append(_StopAfter(stop_after_steps))
        try:
            model.learn(
                remaining,
                callback=callbacks,
                progress_bar=cfg.progress_bar,
                reset_num_timesteps=False,
            )
        except (KeyboardInterrupt, Interrupted) as exc:
            spent = time.perf_counter() - tick + record.get("timings_s", {}).get("finetune_s", 0.0)
            record["timings_s"] = {**record.get("timings_s", {}), **timings, "finetune_s": spent}
            _write_json(cfg_path, record)
            raise Interrupted(f"interrupted at {model.num_timesteps} steps ({exc})") from exc
        checkpointer.save_now()
        if evaluator.history[-1]["timesteps"] != model.num_timesteps:
            evaluator.evaluate(model, model.num_timesteps)
    timings["finetune_s"] = time.perf_counter() - tick + record.get("timings_s", {}).get("finetune_s", 0.0)
    ensemble_info = None
    (out / "ensemble.json").unlink(missing_ok=True)  # never leave an earlier run's ensemble deployed
    if cfg.ensemble > 1:
        if not (out / "bc_dataset.npz").exists():
            raise FileNotFoundError(
                f"ensemble: no oracle dataset at {out / 'bc_dataset.npz'} to clone members from"
            )
        tick = time.perf_counter()
        ensemble_info = train_ensemble(cfg, out, scenarios, oracle_usd, out / "model.zip")
        timings["ensemble_s"] = time.perf_counter() - tick
    plot_learning_curve(out / "learning_curve.png", bc_info, evaluator.history)
    best_row = max(evaluator.history, key=lambda h: h["pct_of_oracle"])
    summary = {
        "best_validation_pct_of_oracle": best_row["pct_of_oracle"],
        "best_from": f"{best_row['label']} at {best_row['timesteps']} steps",
        "final_timesteps": int(model.num_timesteps),
        "timings_s": {**record.get("timings_s", {}), **timings},
        "total_wall_s": sum(v for k, v in {**record.get("timings_s", {}), **timings}.items()),
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
        summary["deployed"] = str(out / "ensemble.json")
    else:
        summary["deployed"] = str(out / "model.zip")
    record["summary"] = summary
    _write_json(cfg_path, record)
    _log(
        f"done: best single model {summary['best_validation_pct_of_oracle']:.1f} % of oracle on validation "
        f"({summary['best_from']}); deployed policy {summary['deployed']}"
    )
    return record
