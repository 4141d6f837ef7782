"""Demonstrations from the MILP oracle, behaviour cloning on an SB3 policy, and DAgger.

Three pieces, used in this order by ``train.py``:

1. **Oracle dataset** (:func:`build_oracle_dataset`): training scenario seeds are drawn from a
   recorded base seed in ``1000 .. 999999`` (0..999 are held out for evaluation); each scenario is
   solved by the oracle (``joint``, full horizon) in parallel with :func:`oracle.executor.run_sweep`
   (one spawned process per core, progress bar, resumable JSON cache of the schedules); every
   schedule is then replayed through the Dict env built from ``schedule.scenario`` and each period
   gives one pair *(flat observation, flat action)*, the flat action being
   ``FlatObsActionWrapper.encode_action`` of the oracle's Dict action.
2. **Behaviour cloning** (:func:`behaviour_clone`): minimise the negative log-likelihood
   ``-log pi(a|s)`` of the demonstrated flat actions through ``policy.evaluate_actions``, plus an
   optional MSE term between the Gaussian mean and the action (see :class:`BCConfig`), with Adam in
   minibatches, a validation split by scenario (never by row: the periods of one scenario are
   strongly correlated) and the epoch with the lowest validation loss restored at the end.
3. **DAgger** (:func:`dagger_round`): roll the current policy on fresh training scenarios; at every
   visited state the expert is the oracle solved from ``env.unwrapped.state_snapshot()`` over the
   remaining horizon (exact: it sees the same scenario), and its action for that period labels the
   state. The new pairs are aggregated with the old ones and the policy is retrained.

Datasets are ``.npz`` files readable with ``allow_pickle=False``: arrays ``obs`` (N, obs_dim)
float32, ``actions`` (N, act_dim) float32, ``seed``, ``period``, ``round`` (N,) int64 (round 0 =
oracle replay, r >= 1 = DAgger round r) and ``meta``, a JSON string (preset, seeds, base seed,
layout sizes, versions, oracle settings, ...).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from agents.replay import schedule_action
from agents.training_scenarios import item_scenario, scenario_item
from envs.dc_env import JOB_FEATURES, CarbonAwareDCEnv
from envs.presets import PRESETS, make_scenario
from envs.scenario import OperatingState, Scenario
from envs.wrappers import FlatObsActionWrapper
from oracle.executor import ItemResult, run_sweep

TRAIN_SEED_LOW = 1000
"""Training scenario seeds are drawn from ``TRAIN_SEED_LOW .. TRAIN_SEED_HIGH - 1``; below are held out."""
TRAIN_SEED_HIGH = 1_000_000
DATASET_FORMAT = 1
"""Version of the ``.npz`` layout written by :meth:`DemoDataset.save`."""

EnvFactory = Callable[[str, Scenario | None, int], Any]
"""``(preset, scenario, forecast_horizon) -> flat env`` (see :func:`flat_env`)."""
PredictFn = Callable[[np.ndarray], np.ndarray]
"""A flat observation -> flat action function (e.g. ``lambda o: model.predict(o, deterministic=True)[0]``)."""


# ------------------------------------------------------------------------------------------ seeds
def draw_training_seeds(base_seed: int, n: int, exclude: Iterable[int] = ()) -> list[int]:
    """``n`` distinct scenario seeds in ``TRAIN_SEED_LOW .. TRAIN_SEED_HIGH - 1`` drawn from ``base_seed``.

    Deterministic for a given ``(base_seed, n, exclude)``; never returns a held-out seed (< 1000) or
    one in ``exclude`` (e.g. the validation seeds). The first seeds do not depend on ``n``, so a
    larger dataset extends a smaller one with the same base seed.
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0 (got {n})")
    banned = set(int(s) for s in exclude)
    rng = np.random.default_rng(np.random.SeedSequence(int(base_seed), spawn_key=(0x1D,)))
    seeds: list[int] = []
    seen: set[int] = set()
    while len(seeds) < n:
        s = int(rng.integers(TRAIN_SEED_LOW, TRAIN_SEED_HIGH))
        if s not in seen and s not in banned:
            seen.add(s)
            seeds.append(s)
    return seeds


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a dataset or a trained model depends on."""
    out = {"python": platform.python_version()}
    for name in ("carbon-aware-dc", "numpy", "torch", "stable-baselines3", "gymnasium", "highspy", "pulp"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


# --------------------------------------------------------------------------------------- dataset
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
        """Write a compressed ``.npz`` (no pickled objects; ``meta`` as a JSON string)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": DATASET_FORMAT, "rows": len(self)}
        with path.open("wb") as f:
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


def flat_env(
    preset: str,
    scenario: Scenario | None = None,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
) -> FlatObsActionWrapper:
    """The flat interface over a Dict env of ``preset`` (optionally pinned to ``scenario``), with the
    forecast errors of ``forecast_level`` (:mod:`envs.forecast`; None = exact)."""
    return FlatObsActionWrapper(
        CarbonAwareDCEnv(
            scenario=scenario, preset=preset, forecast_horizon=forecast_horizon, forecast_level=forecast_level
        )
    )


def noise_seed(scenario: Scenario, draw: int = 0) -> int:
    """The ``reset`` seed of episode ``draw`` on ``scenario``: its forecast errors are a function of the
    scenario's name and the draw only, so a dataset, a DAgger round and a validation score are
    reproducible, and different scenarios do not share one error sequence."""
    return zlib.crc32(f"{scenario.name}#{draw}".encode())


# ------------------------------------------------------------------------------ oracle workers
def solve_full_horizon(item: dict[str, Any]) -> dict[str, Any]:
    """Sweep worker: the ``joint`` full-horizon schedule of the item's scenario (``make_scenario(preset,
    seed)``, or a source's scenario in the item, :func:`agents.training_scenarios.item_scenario`)."""
    from oracle.solve import solve

    sc = item_scenario(item)
    sched = solve(sc, "joint", time_limit_s=item["time_limit_s"], mip_gap=item["mip_gap"], threads=1)
    if not sched.has_solution:
        raise RuntimeError(f"no oracle schedule for seed {item['seed']}: {sched.status} {sched.diagnosis}")
    return {"schedule": sched.to_dict()}


def state_to_json(state: OperatingState) -> dict[str, Any]:
    """An :class:`OperatingState` as a JSON-ready dict (floats kept exactly)."""
    return {
        "period": int(state.period),
        "soc_mwh": [float(x) for x in state.soc_mwh],
        "job_starts": [[int(j), int(s), int(t)] for j, s, t in state.job_starts],
        "emissions_t": float(state.emissions_t),
    }


def state_from_json(data: dict[str, Any]) -> OperatingState:
    """Inverse of :func:`state_to_json`."""
    return OperatingState(
        period=int(data["period"]),
        soc_mwh=tuple(float(x) for x in data["soc_mwh"]),
        job_starts=tuple((int(j), int(s), int(t)) for j, s, t in data["job_starts"]),
        emissions_t=float(data["emissions_t"]),
    )


def solve_from_state(item: dict[str, Any]) -> dict[str, Any]:
    """Sweep worker (DAgger expert): the oracle's action for the current period of a visited state.

    Solves ``joint`` from ``item["state"]`` over the remaining horizon. When the state's emissions
    already make the carbon budget infeasible, the budget is dropped (the env charges an overrun
    penalty instead) and ``relaxed`` is True.
    """
    from oracle.solve import solve

    sc = item_scenario(item)
    state = state_from_json(item["state"])
    kwargs = {"time_limit_s": item["time_limit_s"], "mip_gap": item["mip_gap"], "threads": 1}
    sched = solve(sc, "joint", initial_state=state, **kwargs)
    relaxed = False
    if not sched.has_solution and sc.carbon_budget_t is not None:
        relaxed = True
        sched = solve(sc.replace(carbon_budget_t=None), "joint", initial_state=state, **kwargs)
    if not sched.has_solution:
        raise RuntimeError(f"oracle found no schedule from period {state.period}: {sched.diagnosis}")
    slots = item["slots"] if "slots" in item else PRESETS[item["preset"]]["J"]
    action = schedule_action(sched, state.period, slots)
    return {
        "action": {key: value.tolist() for key, value in action.items()},
        "status": sched.status,
        "objective_usd": sched.objective_usd,
        "relaxed": relaxed,
    }


def _results_or_raise(results: list[ItemResult], what: str, allowed_failures: float) -> list[ItemResult]:
    failed = [r for r in results if not r.ok]
    if len(failed) > allowed_failures * max(len(results), 1):
        first = failed[0]
        raise RuntimeError(
            f"{len(failed)} of {len(results)} {what} failed; first: {first.key} {first.status} {first.error}"
        )
    return [r for r in results if r.ok]


def solve_schedules(
    preset: str,
    seeds: Sequence[int],
    *,
    cache_dir: str | Path | None = None,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    progress: bool = True,
    scenarios: Mapping[int, Scenario] | None = None,
    **sweep_kwargs: Any,
) -> dict[int, Any]:
    """Full-horizon ``joint`` oracle schedules of ``preset`` for ``seeds``, solved in parallel.

    ``scenarios`` (a source run, :mod:`agents.training_scenarios`): the scenario of each key in
    ``seeds`` instead of ``make_scenario(preset, seed)``; its cache key is its content digest.
    ``cache_dir`` makes the sweep resumable (solved seeds are loaded, not re-solved). Returns
    ``{seed: Schedule}``; seeds whose solve failed are left out (at most 5 % may fail).
    ``sweep_kwargs`` go to :func:`oracle.executor.run_sweep` (``backend``, ``max_workers``, ...).
    """
    from oracle.solve import Schedule

    items = []
    for seed in seeds:
        item = scenario_item(preset, seed, scenarios)
        prefix = item.pop("prefix")
        key = {"key": f"{prefix}-joint-full-gap{mip_gap:g}"}
        items.append({**key, **item, "time_limit_s": float(time_limit_s), "mip_gap": float(mip_gap)})
    results = run_sweep(
        solve_full_horizon, items, out_dir=cache_dir, progress=progress, desc="oracle solves", **sweep_kwargs
    )
    ok = _results_or_raise(results, "oracle solves", 0.05)
    by_key = {r.key: r for r in ok}
    return {
        item["seed"]: Schedule.from_dict(by_key[item["key"]].result["schedule"])
        for item in items
        if item["key"] in by_key
    }


# ------------------------------------------------------------------------------------- replay
@dataclass
class Episode:
    """One episode's flat observations and actions, periods and return (USD)."""

    obs: np.ndarray
    actions: np.ndarray
    periods: np.ndarray
    return_usd: float
    states: list[OperatingState] = field(default_factory=list)
    rewards_usd: np.ndarray | None = None


def replay_schedule(
    schedule: Any,
    preset: str,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
    draw: int = 0,
) -> Episode:
    """Replay an oracle schedule in an env built from ``schedule.scenario`` and record the pairs.

    The env is stepped with the schedule's exact Dict action; the recorded flat action is its
    ``encode_action``. ``return_usd`` equals ``schedule.objective_usd`` (the replay identity).
    With ``forecast_level`` the observations carry forecast errors (draw ``draw`` of
    :func:`noise_seed`) while the actions stay the clairvoyant oracle's (a privileged expert).
    """
    from agents.replay import OracleReplayPolicy

    flat = flat_env(preset, schedule.scenario, forecast_horizon, forecast_level)
    base = flat.unwrapped
    replay = OracleReplayPolicy(schedule)
    obs, _ = base.reset(seed=noise_seed(schedule.scenario, draw) if forecast_level else 0)
    obs_rows, act_rows, rewards = [], [], []
    done = False
    while not done:
        action, _ = replay.predict(obs)
        obs_rows.append(flat.flatten_obs(obs))
        act_rows.append(flat.encode_action(action))
        obs, reward, done, _, _ = base.step(action)
        rewards.append(reward)
    rewards_arr = np.asarray(rewards)
    return Episode(
        np.stack(obs_rows),
        np.stack(act_rows),
        np.arange(len(obs_rows)),
        float(rewards_arr.sum()),
        rewards_usd=rewards_arr,
    )


def rollout(
    predict: PredictFn,
    scenario: Scenario,
    preset: str,
    forecast_horizon: int = 24,
    record_states: bool = False,
    make_env: EnvFactory | None = None,
    forecast_level: str | float | None = None,
) -> Episode:
    """Run a flat policy for one episode of ``scenario``; record observations, actions and rewards (USD).

    ``record_states`` also keeps ``state_snapshot()`` at the start of every period (for DAgger).
    ``make_env(preset, scenario, forecast_horizon, forecast_level)`` builds the flat env (default
    :func:`flat_env`; ``agents.safety.safe_flat_env`` adds the safety layer); its reward must be in
    USD. With ``forecast_level`` the episode's forecast errors are those of :func:`noise_seed`.
    """
    flat = (make_env or flat_env)(preset, scenario, forecast_horizon, forecast_level)
    obs, _ = flat.reset(seed=noise_seed(scenario) if forecast_level else 0)
    obs_rows, act_rows, rewards, states = [], [], [], []
    done = False
    while not done:
        if record_states:
            states.append(flat.unwrapped.state_snapshot())
        action = np.asarray(predict(obs), dtype=np.float32)
        obs_rows.append(obs)
        act_rows.append(action)
        obs, reward, done, _, _ = flat.step(action)
        rewards.append(reward)
    rewards_arr = np.asarray(rewards)
    return Episode(
        np.stack(obs_rows),
        np.stack(act_rows),
        np.arange(len(obs_rows)),
        float(rewards_arr.sum()),
        states,
        rewards_arr,
    )


def build_oracle_dataset(
    preset: str,
    seeds: Sequence[int],
    *,
    base_seed: int | None = None,
    cache_dir: str | Path | None = None,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    forecast_horizon: int = 24,
    progress: bool = True,
    forecast_level: str | float | None = None,
    noise_draws: int = 1,
    scenarios: Mapping[int, Scenario] | None = None,
    **sweep_kwargs: Any,
) -> DemoDataset:
    """Solve the oracle on ``seeds`` (in parallel) and replay each schedule into (obs, action) pairs.

    ``scenarios``: a source run's scenarios by key (``preset`` None; see :func:`solve_schedules`);
    the ``seed`` column then holds the keys and the metadata their names (``scenario_names``).

    With ``forecast_level`` each schedule is replayed ``noise_draws`` times, each time with other
    forecast errors in the observations (the labels stay the clairvoyant oracle's). The metadata
    records the preset, seeds, base seed, oracle settings, forecast level and draws, layout sizes,
    per-seed oracle objectives, timings and package versions.
    """
    if int(noise_draws) < 1:
        raise ValueError(f"noise_draws: must be >= 1 (got {noise_draws!r})")
    draws = int(noise_draws) if forecast_level else 1
    tick = time.perf_counter()
    schedules = solve_schedules(
        preset,
        seeds,
        cache_dir=cache_dir,
        time_limit_s=time_limit_s,
        mip_gap=mip_gap,
        progress=progress,
        scenarios=scenarios,
        **sweep_kwargs,
    )
    solve_s = time.perf_counter() - tick
    obs, actions, seed_col, period_col = [], [], [], []
    objectives: dict[str, float] = {}
    worst = 0.0
    for seed, sched in schedules.items():
        for draw in range(draws):
            ep = replay_schedule(sched, preset, forecast_horizon, forecast_level, draw)
            worst = max(worst, abs(ep.return_usd - sched.objective_usd) / max(1.0, abs(sched.objective_usd)))
            obs.append(ep.obs)
            actions.append(ep.actions)
            seed_col.append(np.full(len(ep.obs), seed))
            period_col.append(ep.periods)
        objectives[str(seed)] = float(sched.objective_usd)
    if not obs:
        raise RuntimeError("no oracle schedule: the dataset is empty")
    shape = None if scenarios is None else next(iter(schedules.values())).scenario
    flat = flat_env(preset, shape, forecast_horizon=forecast_horizon)
    names = {} if scenarios is None else {"scenario_names": {str(s): scenarios[s].name for s in schedules}}
    meta = {
        **names,
        "preset": preset,
        "base_seed": base_seed,
        "seeds": [int(s) for s in schedules],
        "oracle": {"config": "joint", "window": None, "time_limit_s": time_limit_s, "mip_gap": mip_gap},
        "oracle_objective_usd": objectives,
        "forecast_horizon": forecast_horizon,
        "forecast_level": None if not forecast_level else forecast_level,
        "noise_draws": draws,
        "replay_max_rel_error": worst,
        "solve_wall_s": solve_s,
        "build_wall_s": time.perf_counter() - tick,
        "dagger_rounds": 0,
        "versions": versions(),
        **layout_meta(flat),
    }
    n = sum(len(o) for o in obs)
    return DemoDataset(
        np.concatenate(obs),
        np.concatenate(actions),
        np.concatenate(seed_col),
        np.concatenate(period_col),
        np.zeros(n, dtype=np.int64),
        meta,
    )


# --------------------------------------------------------------------------------------- DAgger
def dagger_round(
    predict: PredictFn,
    preset: str,
    seeds: Sequence[int],
    round_index: int,
    *,
    cache_dir: str | Path | None = None,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-4,
    forecast_horizon: int = 24,
    progress: bool = True,
    make_env: EnvFactory | None = None,
    forecast_level: str | float | None = None,
    scenarios: Mapping[int, Scenario] | None = None,
    **sweep_kwargs: Any,
) -> tuple[DemoDataset, dict[str, Any]]:
    """One DAgger round: roll ``predict`` on ``seeds`` and label every visited state with the oracle.

    The expert's label at period t is the oracle's period-t action solved from the visited state
    (:func:`solve_from_state`, all solves in one parallel sweep); ``make_env`` is the rollout's env
    factory (the one the policy is deployed in). Returns the new pairs (``round``
    column = ``round_index``) and statistics: the policy's mean return and how many labels needed the
    carbon budget relaxed. ``scenarios``: a source run's scenarios by key (``preset`` None).
    """
    shape = None if scenarios is None else scenarios[int(seeds[0])]
    flat = flat_env(preset, shape, forecast_horizon=forecast_horizon)
    items, rows, returns = [], [], []
    for seed in seeds:
        sc = make_scenario(preset, int(seed)) if scenarios is None else scenarios[int(seed)]
        where = scenario_item(preset, seed, scenarios)
        prefix = where.pop("prefix")
        if scenarios is not None:
            where["slots"] = flat.n_slots
        ep = rollout(
            predict,
            sc,
            preset,
            forecast_horizon,
            record_states=True,
            make_env=make_env,
            forecast_level=forecast_level,
        )
        returns.append(ep.return_usd)
        for t, state in enumerate(ep.states):
            state_json = state_to_json(state)
            digest = hashlib.sha1(json.dumps(state_json, sort_keys=True).encode()).hexdigest()[:16]
            items.append(
                {
                    "key": f"{prefix}-t{t:03d}-{digest}-gap{mip_gap:g}",
                    **where,
                    "state": state_json,
                    "time_limit_s": float(time_limit_s),
                    "mip_gap": float(mip_gap),
                }
            )
            rows.append((ep.obs[t], int(seed), t))
    tick = time.perf_counter()
    results = run_sweep(
        solve_from_state,
        items,
        out_dir=cache_dir,
        progress=progress,
        desc=f"DAgger {round_index} relabel",
        **sweep_kwargs,
    )
    solve_s = time.perf_counter() - tick
    _results_or_raise(results, "DAgger relabels", 0.05)
    obs, actions, seed_col, period_col = [], [], [], []
    relaxed = 0
    for (o, seed, t), res in zip(rows, results, strict=True):
        if not res.ok:
            continue
        act = {key: np.asarray(value) for key, value in res.result["action"].items()}
        relaxed += bool(res.result["relaxed"])
        obs.append(o)
        actions.append(flat.encode_action(act))
        seed_col.append(seed)
        period_col.append(t)
    stats = {
        "round": round_index,
        "seeds": [int(s) for s in seeds],
        "labels": len(obs),
        "relaxed_budget_labels": relaxed,
        "policy_mean_return_usd": float(np.mean(returns)) if returns else math.nan,
        "relabel_wall_s": solve_s,
    }
    data = DemoDataset(
        np.stack(obs),
        np.stack(actions),
        np.asarray(seed_col),
        np.asarray(period_col),
        np.full(len(obs), round_index),
    )
    return data, stats


def dagger_validation_seeds(round_seeds: Sequence[int]) -> list[int]:
    """The share of a DAgger round's scenarios (the first tenth, at least one) kept for validation
    when the policy is retrained on the aggregated dataset."""
    return list(round_seeds[: max(1, len(round_seeds) // 10)])


# ----------------------------------------------------------------------------- behaviour cloning
@dataclass
class BCConfig:
    """Behaviour-cloning settings.

    The loss per minibatch is ``nll / act_dim + mse_coef * mse``, where ``nll = -log pi(a'|s)`` from
    ``policy.evaluate_actions`` and ``mse`` is the mean squared error between the policy's
    deterministic action (the Gaussian mean; ``tanh`` of it for SAC) and ``a'``. ``a'`` is the
    demonstrated action with the values on the box boundary (+-1) pushed ``margin`` further out:
    the env clips the action to [-1, 1], so a mean beyond the boundary decodes to exactly the
    boundary (a route weight of exactly 0, i.e. nothing left unserved; generator exactly off),
    while a mean that falls just short of -1 would leave a little demand unserved in every
    period. The Gaussian's state-independent ``log_std`` (PPO/A2C) is kept within
    ``[log_std_min, log_std_max]`` so the NLL cannot run away to ``-inf`` on near-deterministic
    demonstrations. (SAC's tanh squashing bounds its mean already: no margin there.)

    Starting a job is a rare, discrete event (about one ready slot-period in ten), and regressing
    the start scores alone makes "hold" win every argmax: the policy then never starts a job. So
    ``start_ce_coef`` adds a cross-entropy term on the start choice, with logits
    ``start_logit_scale * mean score`` of each job slot that is waiting and released in that
    period (the only rows where the choice matters), averaged over those rows. The learning rate
    decays by a cosine to ``lr_final_frac * lr`` over the epochs.

    ``val_seeds`` fixes the validation scenarios (default: ``val_frac`` of the scenarios drawn with
    ``seed``). Retraining on an aggregated dataset must keep the earlier validation scenarios out of
    training: a fresh split would validate on scenarios the policy was just trained on.
    """

    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    lr_final_frac: float = 0.05
    weight_decay: float = 0.0
    val_frac: float = 0.1
    mse_coef: float = 1.0
    start_ce_coef: float = 1.0
    start_logit_scale: float = 5.0
    margin: float = 0.2
    log_std_min: float = -2.5
    log_std_max: float = 0.0
    seed: int = 0
    patience: int | None = 15
    val_seeds: Sequence[int] | None = None


@dataclass
class BCHistory:
    """Per-epoch losses (validation on held-out scenarios) and the epoch restored at the end."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    initial_val: dict[str, float] = field(default_factory=dict)
    final_val: dict[str, float] = field(default_factory=dict)
    train_seeds: list[int] = field(default_factory=list)
    val_seeds: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "initial_val": self.initial_val,
            "final_val": self.final_val,
            "train_seeds": self.train_seeds,
            "val_seeds": self.val_seeds,
            "wall_s": self.wall_s,
        }


def bc_targets(actions: np.ndarray, margin: float) -> np.ndarray:
    """Demonstrated actions with boundary values (|a| = 1) pushed ``margin`` outside the box."""
    a = np.asarray(actions, dtype=np.float32)
    edge = np.abs(a) >= 1.0 - 1e-6
    return np.where(edge, np.sign(a) * (1.0 + margin), a).astype(np.float32)


def _is_sac(policy: Any) -> bool:
    return hasattr(policy, "actor") and not hasattr(policy, "evaluate_actions")


def policy_loss_terms(policy: Any, obs: th.Tensor, targets: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``(nll, deterministic action)`` of an SB3 policy: ``-log pi(targets|obs)`` per row, and the mean.

    Actor-critic policies (PPO, A2C) go through ``policy.evaluate_actions``; SAC's squashed Gaussian
    actor through its action distribution (targets clipped inside (-1, 1), where tanh is invertible).
    """
    if _is_sac(policy):
        actor = policy.actor
        mean, log_std, kwargs = actor.get_action_dist_params(obs)
        dist = actor.action_dist.proba_distribution(mean, log_std, **kwargs)
        inside = targets.clamp(-1.0 + 1e-3, 1.0 - 1e-3)
        return -dist.log_prob(inside), th.tanh(mean)
    _, log_prob, _ = policy.evaluate_actions(obs, targets)
    mean = policy.get_distribution(obs).distribution.mean
    return -log_prob, mean


@dataclass(frozen=True)
class StartLayout:
    """Where the start scores sit in the flat action and the job table in the flat observation."""

    slots: int
    n_choices: int
    jobs_offset: int
    job_width: int

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> StartLayout:
        """From a dataset's layout metadata (:func:`layout_meta`)."""
        slots, n_choices = meta["action_layout"]["start"]
        keys = meta["obs_keys"]
        flat = flat_env_sizes(meta)
        return cls(int(slots), int(n_choices), flat[keys.index("jobs")], len(JOB_FEATURES) + int(meta["S"]))

    def ready(self, obs: th.Tensor) -> th.Tensor:
        """(N, slots) bool: the slot's job is waiting and released (its start choice matters)."""
        jobs = obs[:, self.jobs_offset : self.jobs_offset + self.slots * self.job_width]
        jobs = jobs.reshape(-1, self.slots, self.job_width)
        waiting = jobs[:, :, JOB_FEATURES.index("waiting")] > 0.5
        released = jobs[:, :, JOB_FEATURES.index("until_release")] <= 1e-6
        return waiting & released

    def start_terms(self, mean: th.Tensor, targets: th.Tensor, obs: th.Tensor, scale: float) -> tuple:
        """Per-row summed cross-entropy, number of ready slots and of correct argmax choices."""
        n = self.slots * self.n_choices
        logits = mean[:, :n].reshape(-1, self.slots, self.n_choices) * scale
        label = targets[:, :n].reshape(-1, self.slots, self.n_choices).argmax(dim=2)
        ready = self.ready(obs).float()
        ce = th.nn.functional.cross_entropy(logits.transpose(1, 2), label, reduction="none")
        correct = (logits.argmax(dim=2) == label).float()
        return (ce * ready).sum(dim=1), ready.sum(dim=1), (correct * ready).sum(dim=1)


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


def _clamp_log_std(policy: Any, cfg: BCConfig) -> None:
    log_std = getattr(policy, "log_std", None)
    if isinstance(log_std, th.nn.Parameter):
        with th.no_grad():
            log_std.clamp_(cfg.log_std_min, cfg.log_std_max)


def split_by_seed(data: DemoDataset, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a train/validation split that keeps each scenario seed on one side."""
    seeds = np.array(data.seeds)
    rng = np.random.default_rng(seed)
    n_val = 0 if val_frac <= 0 or len(seeds) < 2 else max(1, round(val_frac * len(seeds)))
    val_seeds = set(rng.permutation(seeds)[:n_val].tolist())
    is_val = np.isin(data.seed, list(val_seeds))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def imitation_loss(
    policy: Any, data: DemoDataset, cfg: BCConfig | None = None, rows: np.ndarray | None = None
) -> dict[str, float]:
    """Mean ``loss``, ``nll`` (per action dimension), ``mse``, start cross-entropy ``start_ce`` and
    ``start_acc`` (share of ready job slots whose start choice matches) on (some rows of) ``data``."""
    cfg = cfg or BCConfig()
    rows = np.arange(len(data)) if rows is None else rows
    keys = ("loss", "nll", "mse", "start_ce", "start_acc")
    if len(rows) == 0:
        return dict.fromkeys(keys, math.nan)
    layout = StartLayout.from_meta(data.meta)
    device = policy.device
    act_dim = data.actions.shape[1]
    sac = _is_sac(policy)
    totals = np.zeros(6)
    policy.set_training_mode(False)
    with th.no_grad():
        for chunk in np.array_split(rows, max(1, math.ceil(len(rows) / 4096))):
            obs = th.as_tensor(data.obs[chunk], device=device)
            tgt = th.as_tensor(bc_targets(data.actions[chunk], 0.0 if sac else cfg.margin), device=device)
            nll, mean = policy_loss_terms(policy, obs, tgt)
            mse = ((mean - tgt) ** 2).mean(dim=1)
            ce, n_ready, correct = layout.start_terms(mean, tgt, obs, cfg.start_logit_scale)
            totals += [
                nll.sum().item() / act_dim,
                mse.sum().item(),
                ce.sum().item(),
                n_ready.sum().item(),
                correct.sum().item(),
                0.0,
            ]
    nll, mse = totals[0] / len(rows), totals[1] / len(rows)
    n_ready = max(totals[3], 1.0)
    start_ce = totals[2] / n_ready
    return {
        "loss": float(nll + cfg.mse_coef * mse + cfg.start_ce_coef * start_ce),
        "nll": float(nll),
        "mse": float(mse),
        "start_ce": float(start_ce),
        "start_acc": float(totals[4] / n_ready),
    }


def behaviour_clone(
    policy: Any,
    data: DemoDataset,
    cfg: BCConfig | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> BCHistory:
    """Fit ``policy`` (an SB3 policy: PPO/A2C ``ActorCriticPolicy`` or SAC) to ``data`` by behaviour cloning.

    Adam on the loss of :class:`BCConfig` in shuffled minibatches; after every epoch the loss on the
    held-out scenarios is computed, and the parameters of the best epoch are restored at the end
    (early stop after ``patience`` epochs without improvement). ``log`` receives each epoch's row.
    """
    cfg = cfg or BCConfig()
    tick = time.perf_counter()
    obs_dim = int(np.prod(policy.observation_space.shape))
    act_dim = int(np.prod(policy.action_space.shape))
    if data.obs.shape[1] != obs_dim or data.actions.shape[1] != act_dim:
        raise ValueError(
            f"dataset sizes obs {data.obs.shape[1]}, action {data.actions.shape[1]} do not match the "
            f"policy's {obs_dim}, {act_dim} (another preset?)"
        )
    if cfg.val_seeds is not None:
        is_val = np.isin(data.seed, np.asarray(list(cfg.val_seeds), dtype=np.int64))
        train_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    else:
        train_rows, val_rows = split_by_seed(data, cfg.val_frac, cfg.seed)
    hist = BCHistory(
        train_seeds=sorted(set(data.seed[train_rows].tolist())),
        val_seeds=sorted(set(data.seed[val_rows].tolist())),
    )
    sac = _is_sac(policy)
    params = list(policy.actor.parameters()) if sac else list(policy.parameters())
    optimizer = th.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = th.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(cfg.epochs, 1), eta_min=cfg.lr * cfg.lr_final_frac
    )
    layout = StartLayout.from_meta(data.meta)
    gen = th.Generator().manual_seed(cfg.seed)
    device = policy.device
    obs_all = th.as_tensor(data.obs, device=device)
    tgt_all = th.as_tensor(bc_targets(data.actions, 0.0 if sac else cfg.margin), device=device)
    monitor = val_rows if len(val_rows) else train_rows
    hist.initial_val = imitation_loss(policy, data, cfg, monitor)
    best = hist.initial_val["loss"]
    best_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    since_best = 0
    for epoch in range(cfg.epochs):
        policy.set_training_mode(True)
        perm = th.as_tensor(train_rows)[th.randperm(len(train_rows), generator=gen)]
        sums, count = np.zeros(3), 0
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            obs, tgt = obs_all[idx], tgt_all[idx]
            nll, mean = policy_loss_terms(policy, obs, tgt)
            nll = nll.mean() / act_dim
            mse = ((mean - tgt) ** 2).mean()
            ce, n_ready, _ = layout.start_terms(mean, tgt, obs, cfg.start_logit_scale)
            start_ce = ce.sum() / n_ready.sum().clamp(min=1.0)
            loss = nll + cfg.mse_coef * mse + cfg.start_ce_coef * start_ce
            optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            _clamp_log_std(policy, cfg)
            sums += [loss.item() * len(idx), nll.item() * len(idx), mse.item() * len(idx)]
            count += len(idx)
        scheduler.step()
        val = imitation_loss(policy, data, cfg, monitor)
        row = {
            "epoch": epoch,
            "train_loss": float(sums[0] / max(count, 1)),
            "train_nll": float(sums[1] / max(count, 1)),
            "train_mse": float(sums[2] / max(count, 1)),
            "val_loss": val["loss"],
            "val_nll": val["nll"],
            "val_mse": val["mse"],
            "val_start_ce": val["start_ce"],
            "val_start_acc": val["start_acc"],
        }
        hist.epochs.append(row)
        if log is not None:
            log(row)
        if val["loss"] < best:
            best, hist.best_epoch, since_best = val["loss"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        else:
            since_best += 1
            if cfg.patience is not None and since_best >= cfg.patience:
                break
    policy.load_state_dict(best_state)
    policy.set_training_mode(False)
    hist.final_val = imitation_loss(policy, data, cfg, monitor)
    hist.wall_s = time.perf_counter() - tick
    return hist
