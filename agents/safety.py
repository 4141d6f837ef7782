"""The safety layer: a Dict action moved to where the env will not have to repair it.

Opt-in: :func:`safe_flat_env` (the flat env the agents train and are evaluated on) and
:class:`agents.sb3.DictPolicy` call :func:`project_action` on every decision; the env itself never
does, and oracle demonstrations are recorded without it. Only what the operator knows at period t
is used (the observation, its own hardware, and with ``state``/``forecast`` the env's
``state_snapshot()`` and ``forecast()``). The rules, in the order they are applied:

1. **Start placement** -- starts are placed in slot order as the env does
   (:func:`envs.dynamics.place_starts` on the mask of :func:`action_mask_from_obs`); a start the
   env would ignore (not allowed now, or no GPUs left after earlier slots) becomes a hold. Why: so
   the env reports no ``start_ignored`` repair and the GPUs left for inference are known.
2. **Routing overflow** -- inference sent to a site beyond its free GPUs would be cut by the env and
   go unserved (penalised); each class's overflow is moved to its other routes with free GPUs,
   lowest latency first.
3. **Carbon guard** (needs ``state`` and ``forecast``) -- a start whose estimated day's emissions
   (:func:`estimated_emissions_t`, grid-only, no battery or generator) would exceed the budget by
   more than :data:`CARBON_GUARD_TOLERANCE` becomes a hold. Why: the env charges 1,000 USD per ton
   above the budget, far more than any job is worth per ton.
4. **Terminal state of charge** -- the env charges 1,000 USD per MWh below the initial SoC at the
   end; discharging is limited (and charging forced) so that the initial SoC stays reachable
   charging at :data:`TERMINAL_SOC_MARGIN` of full power in the periods left, and in the last period
   the battery is brought to exactly its initial SoC (the objective has no terminal value, so any
   excess is discharged rather than bought).
5. **No energy sold below its cost** (needs ``state`` and ``forecast``) -- at a site whose export
   price is below its import price, the generator and then the battery discharge are cut to the
   period's own deficit (facility load of this action + charging - renewables): beyond it their
   energy would be exported below what it cost.
6. **SoC bounds** -- the battery set point is clipped to what the SoC allows
   (:func:`envs.dynamics.battery_power`), as the env would, so that the env reports no repair.

Cost: about 0.25 ms of decision time per call of :func:`project_action` on ``paper`` with all six
rules (around 6 ms per 24-period episode; several times an env step, so the layer is opt-in and
not part of the env). The oracle's own actions pass the layer almost unchanged (its
replayed benefit moves by well under 1 %, ``tests/test_train.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.dc_env import JOB_FEATURES, CarbonAwareDCEnv
from envs.dynamics import battery_power, place_starts
from envs.scenario import OperatingState, Scenario
from envs.wrappers import FlatObsActionWrapper, ScaleReward

__all__ = [
    "CARBON_GUARD_TOLERANCE",
    "TERMINAL_SOC_MARGIN",
    "SafeFlatWrapper",
    "action_mask_from_obs",
    "estimated_emissions_t",
    "project_action",
    "safe_flat_env",
]


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

    @property
    def dict_obs(self) -> dict[str, np.ndarray]:
        """The last Dict observation (what a Dict policy would act on here: e.g. a planner labelling
        the state a DAgger rollout visits)."""
        return self._obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        base = self.unwrapped
        decoded = self.decode_action(action, self._mask)
        decoded = project_action(decoded, self._obs, base.scenario, base.state_snapshot(), base.forecast())
        obs, reward, terminated, truncated, info = self.env.step(decoded)
        self._mask = info["action_mask"]
        self._obs = obs
        return self.flatten_obs(obs), reward, terminated, truncated, info


def safe_flat_env(
    preset: str,
    scenario: Scenario | None = None,
    forecast_horizon: int = 24,
    forecast_level: str | float | None = None,
    reward_scale: float = 1.0,
) -> gym.Env:
    """The flat env with the safety layer (and ``ScaleReward`` unless ``reward_scale == 1``), with the
    forecast errors of ``forecast_level`` (None = exact)."""
    env: gym.Env = SafeFlatWrapper(
        CarbonAwareDCEnv(
            scenario=scenario, preset=preset, forecast_horizon=forecast_horizon, forecast_level=forecast_level
        )
    )
    if reward_scale != 1.0:
        env = ScaleReward(env, reward_scale)
    return env
