"""Rule-based and optimisation-based controllers, all speaking SB3's ``predict`` protocol.

Every controller here takes the Dict observation of :class:`~envs.dc_env.CarbonAwareDCEnv` and
returns its Dict action: ``predict(obs, state=None, episode_start=None, deterministic=True) ->
(action, state)``. Controllers are built with the env (``Policy(env)``) and read only its public
surface: ``env.unwrapped.scenario`` (the static description: sites, jobs, classes, budget; agents
act on the scenario), ``env.unwrapped.forecast()`` (the exogenous series as the operator sees them,
exact or noisy) and ``env.unwrapped.state_snapshot()`` (state of charge, started jobs, emissions).
None of them reads the scenario's future series directly, except :class:`OraclePolicy`, the
clairvoyant upper bound.

- :class:`GreedyPolicy` (``greedy``): the carbon-agnostic operator of :mod:`envs.rules`, online.
- :class:`CarbonGreedyPolicy` (``carbon_greedy``): a hand-written carbon- and price-aware rule.
- :class:`MPCPolicy` (``mpc``): rolling-horizon MILP on the forecasts, first period applied.
- :class:`agents.mpc.MPCStochasticPolicy` (``mpc_stochastic``): the same over sampled forecast
  scenarios (sample average, first period shared).
- :class:`OraclePolicy` (``oracle``): the full-horizon MILP solved once per episode, replayed.

:func:`make_policy` builds any of them by name, or loads a trained SB3 model from a path.

The shared plumbing is :mod:`agents.policy_base`; the carbon-greedy rule is
:mod:`agents.carbon_greedy` (its names are re-exported here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.carbon_greedy import CarbonGreedyParams, CarbonGreedyPolicy
from agents.policy_base import FORECAST_SERIES, EnvPolicy, held_gpus, route_fractions
from agents.replay import OracleReplayPolicy, schedule_action
from envs.forecast import forecast_model
from envs.rules import route_order
from envs.scenario import OperatingState, Scenario

__all__ = [
    "PLAN_ON",
    "POLICY_NAMES",
    "SOLVED",
    "CarbonGreedyParams",
    "CarbonGreedyPolicy",
    "GreedyPolicy",
    "MPCPolicy",
    "OraclePolicy",
    "check_plan_on",
    "forecast_scenario",
    "greedy_action",
    "make_policy",
    "planned_forecast",
]

POLICY_NAMES = (
    "greedy",
    "carbon_greedy",
    "mpc",
    "mpc_posterior",
    "mpc_stochastic",
    "oracle",
    "hybrid",
    "agent_lp",
    "mpc_lp",
)
"""Names accepted by :func:`make_policy` (anything else is read as a path to a trained model)."""
PLAN_ON = ("forecast", "posterior_mean")
"""What a window planner (:class:`MPCPolicy`, the hybrid) plans on (its ``plan_on``)."""

SOLVED = ("optimal", "time_limit")
"""Solver statuses that come with a usable schedule."""


# ------------------------------------------------------------------------------------------ greedy
def greedy_action(sc: Scenario, state: OperatingState, demand_now: np.ndarray, n_slots: int) -> dict:
    """The carbon-agnostic rule's action for the period ``state.period`` (MODEL.md §6, ``energy_only``).

    Jobs in slot order start at the first eligible site whose GPUs not held by running jobs (nor by
    jobs started earlier in this period) can hold them; each class in order is served at its routes
    by increasing latency up to the GPUs left free; battery idle, generator off.
    """
    t = state.period
    free = sc.site_array("gpu_capacity") - held_gpus(sc, state, 1)[:, 0]
    started = {j for j, _, _ in state.job_starts}
    start = np.zeros(n_slots, dtype=np.int64)
    for j, job in enumerate(sc.jobs):
        if j in started or not job.release <= t <= job.latest_start:
            continue
        for s in range(sc.S):
            if job.eligible[s] and free[s] >= job.gpus:
                free[s] -= job.gpus
                start[j] = 1 + s
                break
    serve = np.zeros((sc.K, sc.S))
    for k in range(sc.K):
        left = float(demand_now[k])
        for s in route_order(sc, k):
            if left <= 0:
                break
            amount = min(left, max(free[s], 0.0))
            serve[k, s] = amount
            free[s] -= amount
            left -= amount
    return {
        "start": start,
        "route": route_fractions(serve, np.asarray(demand_now, dtype=np.float64)),
        "battery": np.zeros(sc.S),
        "generator": np.zeros(sc.S),
    }


class GreedyPolicy(EnvPolicy):
    """The carbon-agnostic operator of :mod:`envs.rules`, played online.

    Jobs start as soon as they are released and fit, at the first eligible site with room, in slot
    order; inference is served at its lowest-latency site up to the free GPUs, then the next; the
    battery stays idle and the generator off. Its workload equals :func:`envs.rules.greedy_workload`.
    """

    name = "greedy"

    def act(self, period: int) -> dict[str, np.ndarray]:
        demand = self.base.forecast()["demand_gpus"][:, 0]
        return greedy_action(self.scenario, self.base.state_snapshot(), demand, self.n_slots)


# ---------------------------------------------------------------------------------------- MILP based
def forecast_scenario(sc: Scenario, forecast: dict[str, np.ndarray], period: int) -> Scenario:
    """``sc`` with its series from ``period`` on replaced by ``forecast`` (column 0 = ``period``).

    Periods beyond the forecast repeat its last column; periods before ``period`` keep the scenario's
    values (they are history, and no model reads them)."""
    changes = {}
    for key in FORECAST_SERIES:
        win = np.asarray(forecast[key], dtype=np.float64)
        arr = np.array(getattr(sc, key), dtype=np.float64)
        L = min(win.shape[1], sc.T - period)
        arr[:, period : period + L] = win[:, :L]
        arr[:, period + L :] = win[:, L - 1 : L]
        changes[key] = arr
    return sc.replace(**changes)


def check_plan_on(plan_on: str) -> str:
    """``plan_on`` if it is one of :data:`PLAN_ON`, else a ValueError naming the argument."""
    if plan_on not in PLAN_ON:
        raise ValueError(f"plan_on: must be one of {PLAN_ON} (got {plan_on!r})")
    return plan_on


def planned_forecast(
    env: gym.Env, sc: Scenario, forecast: dict[str, np.ndarray], period: int, plan_on: str = "forecast"
) -> dict[str, np.ndarray]:
    """The forecast a planner plans on at ``period`` (:data:`PLAN_ON`): ``"forecast"`` as observed;
    ``"posterior_mean"`` the posterior mean of the env's error model given it
    (:meth:`envs.forecast.ForecastModel.posterior`), the forecast itself when forecasts are exact."""
    if check_plan_on(plan_on) == "posterior_mean":
        model = forecast_model(getattr(env, "forecast_model", None))
        if not model.is_exact:
            return model.posterior(forecast, sc.dt_h, horizon=sc.T - period).mean()
    return forecast


class WindowPlanner:
    """The rolling window solve shared by :class:`MPCPolicy` and :class:`agents.hybrid.HybridPolicy`:
    the joint MILP over ``window`` periods from ``state``, warm-started from the previous period's
    plan, with the pro-rated carbon budget first and the whole budget left as the retry.

    Needs the attributes both set: ``scenario``, ``n_slots``, ``window``, ``time_limit_s``,
    ``mip_gap``, ``threads``, ``warm``, ``solves``, ``last_schedule``, ``_plan_period``."""

    def solve_window(
        self, period: int, members: list[Scenario], state: OperatingState, **solve_kw: Any
    ) -> dict[str, np.ndarray] | None:
        """The period-``period`` action of the first window solve with a schedule (None: none had).

        ``members``: the scenario(s) the window plans on (several: a scenario dimension, first
        period shared); when the window ends before the horizon, the window first gets a share of
        the carbon budget left proportional to its length (else the first windows would spend the
        whole budget). ``solve_kw`` go to :func:`oracle.solve.solve` (``fixed_starts`` etc.)."""
        from oracle.solve import ROLLING_HIGHS_OPTIONS, solve

        previous = self.last_schedule if self.warm and self._plan_period == period - 1 else None
        model_sc = members[0]
        remaining = self.scenario.T - period
        budgets = [model_sc.carbon_budget_t]
        if model_sc.carbon_budget_t is not None and self.window < remaining:
            left = max(0.0, model_sc.carbon_budget_t - state.emissions_t)
            budgets.insert(0, state.emissions_t + left * self.window / remaining)
        for budget in budgets:
            self.solves += 1
            scenarios = [member.replace(carbon_budget_t=budget) for member in members]
            sched = solve(
                scenarios[0],
                "joint",
                time_limit_s=self.time_limit_s,
                mip_gap=self.mip_gap,
                threads=self.threads,
                initial_state=state,
                window=self.window,
                previous_plan=previous,
                highs_options=ROLLING_HIGHS_OPTIONS if self.warm else None,
                **({"scenarios": scenarios} if len(scenarios) > 1 else {}),
                **solve_kw,
            )
            if sched.status in SOLVED and sched.has_solution:
                self.last_schedule, self._plan_period = sched, period
                return schedule_action(sched, period, self.n_slots)
        self._plan_period = -1
        return None


class MPCPolicy(WindowPlanner, EnvPolicy):
    """Rolling-horizon MILP (model predictive control) on the env's forecasts.

    At each period t: build a scenario whose series from t on are ``env.unwrapped.forecast()`` (exact
    when ``forecast_noise = 0``), solve the joint MILP from ``env.unwrapped.state_snapshot()`` over
    periods ``t .. t + window - 1`` and apply its period-t decisions. With exact forecasts and a window
    reaching the end of the horizon, the first solve is the oracle's problem and every later one is its
    restriction to the state reached, so the episode earns the oracle's benefit up to the MIP gap.

    Default ``window=24``: the whole ``paper`` day (T = 24) at every step, one day ahead on ``week``
    (beyond the forecast horizon ``H`` the last forecast value is repeated). When the window ends before
    the horizon, the window gets a share of the carbon budget left proportional to its length (else
    the first windows would spend the whole budget), and its terminal state of charge must reach the
    initial one (the model's default, capped at what charging can reach). A solve without a schedule
    (infeasible, error) is retried with the whole budget left; if that fails too, the period falls back
    to :func:`greedy_action` and ``fallbacks`` counts it.

    With ``warm=True`` (default) each solve starts from the previous period's plan shifted by one
    period (:func:`oracle.warm_start.shifted_plan_start`) and runs HiGHS with
    :data:`oracle.warm_start.ROLLING_HIGHS_OPTIONS` (no RINS/RENS sub-MIPs, no root restarts): same
    optimum within the MIP gap, and noisy-forecast solves no longer spend seconds in sub-MIPs.

    ``plan_on="forecast"`` (default) plans on the forecast as observed; ``"posterior_mean"`` on the
    error model's posterior mean of the truth given that forecast
    (:meth:`envs.forecast.ForecastModel.posterior`: each lead shrunk toward the row's mean by how
    unreliable it is); with exact forecasts both are the forecast.
    """

    name = "mpc"

    def __init__(
        self,
        env: gym.Env,
        window: int = 24,
        exact: bool = True,
        time_limit_s: float = 10.0,
        mip_gap: float = 1e-4,
        threads: int | None = 1,
        warm: bool = True,
        plan_on: str = "forecast",
    ) -> None:
        super().__init__(env)
        if window < 1:
            raise ValueError(f"window: must be >= 1 (got {window})")
        self.plan_on = check_plan_on(plan_on)
        self.window = int(window)
        self.warm = bool(warm)
        self._plan_period = -1
        self.exact = bool(exact)
        self.time_limit_s = float(time_limit_s)
        self.mip_gap = float(mip_gap)
        self.threads = threads
        self.fallbacks = 0
        self.solves = 0
        self.last_schedule: Any = None

    def act(self, period: int) -> dict[str, np.ndarray]:
        sc = self.scenario
        state = self.base.state_snapshot()
        fc = self.base.forecast()
        if self.exact and getattr(self.base, "forecast_noise", 0.0) > 0:
            raise ValueError("MPCPolicy(exact=True) needs an env with forecast_noise=0")
        members = self.model_scenarios(sc, fc, period)
        shared = getattr(self, "shared_starts", False)
        action = self.solve_window(period, members, state, shared_starts=shared)
        if action is not None:
            return action
        self.fallbacks += 1
        return greedy_action(sc, state, fc["demand_gpus"][:, 0], self.n_slots)

    def model_scenarios(self, sc: Scenario, forecast: dict[str, np.ndarray], period: int) -> list[Scenario]:
        """The scenarios the period's MILP plans on: here the one forecast scenario (a stochastic
        MPC returns several; all share the first period's decisions)."""
        return [
            forecast_scenario(sc, planned_forecast(self.base, sc, forecast, period, self.plan_on), period)
        ]


class OraclePolicy(EnvPolicy):
    """The clairvoyant upper bound: the full-horizon MILP of the episode's scenario, solved once when
    the episode starts (period 0 or a new scenario) and replayed with
    :class:`~agents.replay.OracleReplayPolicy`. If the solve has no schedule, every period of that
    episode falls back to :func:`greedy_action` and ``fallbacks`` counts the episode."""

    name = "oracle"

    def __init__(
        self, env: gym.Env, time_limit_s: float = 60.0, mip_gap: float = 1e-4, threads: int | None = 1
    ) -> None:
        super().__init__(env)
        self.time_limit_s = float(time_limit_s)
        self.mip_gap = float(mip_gap)
        self.threads = threads
        self.schedule: Any = None
        self.fallbacks = 0
        self._replay: OracleReplayPolicy | None = None
        self._for: Scenario | None = None

    def act(self, period: int) -> dict[str, np.ndarray]:
        from oracle.solve import solve

        sc = self.scenario
        if self._for is not sc or (period == 0 and self._replay is None):
            self._for = sc
            self.schedule = solve(
                sc, "joint", time_limit_s=self.time_limit_s, mip_gap=self.mip_gap, threads=self.threads
            )
            self._replay = None
            if self.schedule.status in SOLVED and self.schedule.has_solution:
                self._replay = OracleReplayPolicy(self.schedule)
            else:
                self.fallbacks += 1
        if self._replay is None:
            state = self.base.state_snapshot()
            return greedy_action(sc, state, self.base.forecast()["demand_gpus"][:, 0], self.n_slots)
        return self._replay.action(period, self.n_slots)


# -------------------------------------------------------------------------------------------- factory
def make_policy(name: str, env: gym.Env, **kw: Any) -> Any:
    """Build the controller ``name`` for ``env``: ``greedy``, ``carbon_greedy``, ``mpc``,
    ``mpc_stochastic``, ``oracle``, ``hybrid`` (:class:`agents.hybrid.HybridPolicy`: the trained agent's
    starts, the rest by a window MILP), ``agent_lp``, ``mpc_lp`` (:class:`agents.window_lp.MPCLPPolicy`:
    rolling control on the LP relaxation of ``mpc``'s model), or a path to a trained SB3 model (loaded by
    ``agents.sb3.load_policy(path, env)``). Keyword arguments go to the constructor (e.g.
    ``window=12`` for ``mpc``, ``model=PATH`` for ``hybrid``)."""
    if name == "greedy":
        return GreedyPolicy(env, **kw)
    if name == "carbon_greedy":
        return CarbonGreedyPolicy(env, **kw)
    if name == "mpc":
        return MPCPolicy(env, **kw)
    if name == "mpc_posterior":
        policy = MPCPolicy(env, **{"exact": False, **kw, "plan_on": "posterior_mean"})
        policy.name = "mpc_posterior"
        return policy
    if name == "mpc_stochastic":
        from agents.mpc import MPCStochasticPolicy

        return MPCStochasticPolicy(env, **kw)
    if name == "oracle":
        return OraclePolicy(env, **kw)
    if name == "hybrid":
        from agents.hybrid import HybridPolicy

        return HybridPolicy(env, **kw)
    if name == "agent_lp":
        from agents.period_lp import AgentLPPolicy

        return AgentLPPolicy(env, **kw)
    if name == "mpc_lp":
        from agents.window_lp import MPCLPPolicy

        return MPCLPPolicy(env, **kw)
    path = Path(name)
    if path.suffix == ".zip" or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"policy: no trained model at {path}")
        from agents.sb3 import load_policy

        policy = load_policy(str(path), env, **kw)
        if not hasattr(policy, "name"):
            try:
                policy.name = path.stem
            except AttributeError:
                pass
        return policy
    raise ValueError(f"policy: unknown policy {name!r}; choose one of {POLICY_NAMES} or a model path")
