"""The safety layer on the batch (agents/safety_vector.py) is the single one (agents/safety.py), lane by lane.

(a) The vector env's batched accessors (``forecasts()``, ``state_snapshots()``, ``state_snapshot(i)``)
equal each lane's single-env ``forecast()`` / ``state_snapshot()`` exactly, mid-episode with running
jobs, exact and noisy forecasts. (b) ``project_actions`` on random and adversarial actions equals
``project_action`` on single envs stepped in lockstep (their own obs, state and forecast), to 1e-9,
with counters asserting that every rule fired. (c) Rollouts of ``SafeFlatVectorEnv`` equal per-lane
rollouts of ``safe_flat_env`` (next-step autoreset) and of ``SafeFlatWrapper`` on the pool (same-step
autoreset, the SB3 mode). (d) PPO trains on it through the SB3 adapter.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.safety import SafeFlatWrapper, project_action, safe_flat_env
from agents.safety_vector import SafeFlatVectorEnv, project_actions, safe_flat_vector_env, safe_sb3_vec_env
from envs import CarbonAwareDCEnv, make_scenario
from envs.vector import CarbonAwareDCVectorEnv, lane_info
from envs.wrappers import ScaleReward
from tests.conftest import make_tiny

torch.set_num_threads(1)

RTOL = 1e-9
SEEDS = [1000, 1001, 1002, 1003, 1004]


def close(actual, expected, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=RTOL, atol=0,
        err_msg=what,
    )  # fmt: skip


def lane(batch: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {key: np.array(value[i]) for key, value in batch.items()}


def wild_actions(rng: np.random.Generator, venv, k: int) -> dict[str, np.ndarray]:
    """Random Dict actions outside the boxes: starts -1 .. S+1 (not allowed, not sites), routes
    in [-0.2, 1.2] (every 4th step all 1.0, and every 4th all to site 0: more than the free GPUs),
    battery and generator beyond their bounds."""
    N, S, K, J = venv.num_envs, venv.S, venv.K, venv.n_slots
    route = rng.uniform(-0.2, 1.2, (N, K, S))
    if k % 4 == 0:
        route[:] = 1.0
    elif k % 4 == 2:  # everything to site 0: its overflow goes to the other routes by latency
        route[:] = 0.0
        route[:, :, 0] = 1.0
    return {
        "start": rng.integers(-1, S + 2, (N, J)),
        "route": route,
        "battery": rng.uniform(-1.5, 1.5, (N, S)),
        "generator": rng.uniform(-0.2, 1.2, (N, S)),
    }


def check_accessors(venv, singles: list) -> int:
    """Every lane's forecasts and state against its single env (exact); returns how many lanes have a
    job running (started before the current period, not finished)."""
    forecasts, states = venv.forecasts(), venv.state_snapshots()
    running = 0
    for i, env in enumerate(singles):
        want = env.unwrapped.forecast()
        assert list(forecasts) == list(want)
        for key, value in want.items():
            assert forecasts[key][i].dtype == value.dtype and np.array_equal(forecasts[key][i], value), key
        snap = env.unwrapped.state_snapshot()
        assert venv.state_snapshot(i) == snap
        assert states["period"][i] == snap.period and states["emissions_t"][i] == snap.emissions_t
        assert tuple(states["soc_mwh"][i]) == snap.soc_mwh
        started = np.flatnonzero(states["start_period"][i] >= 0)
        assert [(j, states["start_site"][i, j], states["start_period"][i, j]) for j in started] == list(
            snap.job_starts
        )
        sc = env.unwrapped.scenario
        running += any(tau < snap.period < tau + sc.jobs[j].duration for j, _, tau in snap.job_starts)
    return running


# ---------------------------------------------------------------- (a) accessors
@pytest.mark.parametrize("level", [None, "typical"])
def test_accessors_equal_the_single_envs_lane_by_lane(level):
    kw = dict(preset="paper", scenario_seeds=SEEDS[:3], forecast_level=level)
    venv = CarbonAwareDCVectorEnv(3, **kw)
    venv.keep_forecasts()
    singles = [CarbonAwareDCEnv(**kw) for _ in range(3)]
    venv.reset(seed=4)
    for i, env in enumerate(singles):
        env.reset(seed=4 + i)
    check_accessors(venv, singles)
    rng = np.random.default_rng(0)
    done, running, resets = [False] * 3, 0, 0
    for k in range(60):
        actions = wild_actions(rng, venv, k)
        venv.step(actions)
        for i, env in enumerate(singles):
            if done[i]:
                env.reset()
                done[i], resets = False, resets + 1
            else:
                done[i] = env.step(lane(actions, i))[2]
        running += check_accessors(venv, singles)  # also at t = T before a next-step reset
    assert resets >= 3 and running > 20
    assert venv.lane_scenario(0) is venv.pool_scenarios[venv.lane_scenario_index()[0]]


def test_noisy_forecasts_need_keep_forecasts_exact_ones_do_not():
    noisy = CarbonAwareDCVectorEnv(2, preset="paper", scenario_seeds=SEEDS[:2], forecast_level="good")
    noisy.reset(seed=0)
    with pytest.raises(RuntimeError, match="keep_forecasts"):
        noisy.forecasts()
    noisy.keep_forecasts()
    with pytest.raises(RuntimeError, match="keep_forecasts"):  # the lanes' draws came before it
        noisy.forecasts()
    noisy.reset(seed=0)
    assert noisy.forecasts()["price_import"].shape == (2, 3, 25)
    assert noisy.forecast_model.name == "good"  # the kept model answers as the model
    exact = CarbonAwareDCVectorEnv(2, preset="paper", scenario_seeds=SEEDS[:2])
    with pytest.raises(RuntimeError, match="reset"):
        exact.forecasts()
    exact.reset(seed=0)
    assert exact.forecasts()["demand_gpus"].shape == (2, 3, 25)


# ---------------------------------------------------------------- (b) differential projection
def adversarial_scenarios() -> list:
    """Lanes reaching every rule: a budget nearly used, too little import, a zero budget with
    negative prices, export dearer than import at site 0, all sites routes with latency ties."""
    base = make_scenario("paper", 3)
    tight = base.replace(carbon_budget_t=150.0)  # room for about one or two jobs
    starved = base.replace_sites(import_limit_mw=3.0)
    strict = base.replace(
        jobs=tuple(dataclasses.replace(job, mandatory=True) for job in base.jobs),
        carbon_budget_t=0.0,
        price_import=base.price_import - 60.0,
        price_export=base.price_export - 60.0,
    )
    export = base.price_export.copy()
    export[0] = base.price_import[0] + 10.0
    dear_export = make_scenario("paper", 4).replace(price_export=export, carbon_budget_t=170.0)
    ties = make_scenario("paper", 5)
    ties = ties.replace(
        classes=tuple(
            dataclasses.replace(c, latency_ms=(30.0, 20.0, 20.0), slo_ms=100.0) for c in ties.classes
        )
    )
    return [tight, starved, strict, dear_export, ties]


def run_differential(venv, singles, steps: int, seed: int) -> dict[str, int]:
    """Step ``venv`` and the single envs in lockstep (next-step autoreset by hand), on projected
    actions two steps in three and raw ones otherwise (to reach bad states); at every step compare
    ``project_actions`` with ``project_action`` per lane. Returns how often each rule changed something."""
    rng = np.random.default_rng(seed)
    seen = dict.fromkeys(("ignored", "rerouted", "guard", "last_period", "gen_cut", "dear", "cheap"), 0)
    obs, _ = venv.reset(seed=seed)
    lane_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    done = [False] * len(singles)
    for k in range(steps):
        actions = wild_actions(rng, venv, k)
        projected = project_actions(actions, obs, venv)
        for i, env in enumerate(singles):
            if done[i]:
                continue
            a = lane(actions, i)
            sc, state, forecast = env.scenario, env.state_snapshot(), env.forecast()
            want = project_action(a, lane_obs[i], sc, state, forecast)
            for key in ("start", "route", "battery", "generator"):
                assert projected[key][i].shape == want[key].shape
                close(projected[key][i], want[key], f"step {k} lane {i} {key}")
            unguarded = project_action(a, lane_obs[i], sc)
            placed = np.where(a["start"] == 0, 0, unguarded["start"])
            seen["ignored"] += int((placed != a["start"]).any())
            seen["rerouted"] += int(not np.array_equal(want["route"], a["route"]))
            seen["guard"] += int((want["start"] != unguarded["start"]).any())
            seen["last_period"] += int(state.period == sc.T - 1)
            dear = forecast["price_export"][:, 0] < forecast["price_import"][:, 0]
            seen["dear"] += int(dear.any())
            seen["cheap"] += int((~dear).any())
            seen["gen_cut"] += int((want["generator"] != unguarded["generator"]).any())
        step = projected if k % 3 else actions
        obs = venv.step(step)[0]
        for i, env in enumerate(singles):
            if done[i]:
                lane_obs[i] = env.reset()[0]
                done[i] = False
            else:
                lane_obs[i], _, done[i], _, _ = env.step(lane(step, i))
    return seen


@pytest.mark.parametrize("level", [None, "typical"])
def test_projection_equals_the_single_layer_on_adversarial_lanes(level):
    scenarios = adversarial_scenarios()
    venv = CarbonAwareDCVectorEnv(len(scenarios), scenarios=scenarios, preset="paper", forecast_level=level)
    venv.keep_forecasts()
    singles = [CarbonAwareDCEnv(scenario=sc, preset="paper", forecast_level=level) for sc in scenarios]
    seen = run_differential(venv, singles, 75, seed=3)
    assert all(count > 0 for count in seen.values()), seen
    assert seen["guard"] >= 5 and seen["rerouted"] >= 10, seen


def test_projection_on_lanes_with_different_horizons_and_job_counts():
    two_jobs = make_tiny(T=5, S=2)
    two_jobs = two_jobs.replace(jobs=(*two_jobs.jobs, dataclasses.replace(two_jobs.jobs[0], name="job1")))
    scenarios = [two_jobs, make_tiny(T=3, S=2), make_tiny(T=4, S=2, carbon_budget_t=0.5)]
    venv = CarbonAwareDCVectorEnv(3, scenarios=scenarios)
    singles = []
    for sc in scenarios:
        env = CarbonAwareDCEnv(scenario=two_jobs, preset=None)  # the vector env's sizes
        env.set_scenario(sc)
        singles.append(env)
    seen = run_differential(venv, singles, 25, seed=1)
    assert seen["ignored"] > 0 and seen["guard"] > 0 and seen["last_period"] >= 6, seen


def test_carbon_guard_accepts_starts_in_slot_order():
    """Tiny two-job lanes (4 GPUs at 0.1 MW each, 0.5 t/MWh, 3 periods): routing alone emits 0.3 t,
    the 1-period job 0.2 t more, the 2-period job 0.4 t more; both requested at t = 0."""
    sc = make_tiny(T=3, S=2)
    short, long = sc.jobs[0], dataclasses.replace(sc.jobs[0], name="job1", duration=2)
    cases = [  # (jobs in slot order, budget t, starts kept)
        ((short, long), 0.8, [1, 0]),  # 0.5 fits, then 0.9 does not
        ((long, short), 0.8, [1, 0]),  # 0.7 fits, then 0.9 does not
        ((long, short), 0.6, [0, 1]),  # 0.7 does not fit, 0.5 does
        ((short, long), 1.0, [1, 1]),
        ((short, long), 0.45, [0, 0]),
    ]
    scenarios = [sc.replace(jobs=jobs, carbon_budget_t=budget) for jobs, budget, _ in cases]
    venv = CarbonAwareDCVectorEnv(len(cases), scenarios=scenarios)
    obs, _ = venv.reset(seed=0)
    n = len(cases)
    actions = {
        "start": np.ones((n, 2), dtype=np.int64),
        "route": np.full((n, 1, 2), 0.5),
        "battery": np.zeros((n, 2)),
        "generator": np.zeros((n, 2)),
    }
    got = project_actions(actions, obs, venv)
    for i, (scenario, (_, _, kept)) in enumerate(zip(scenarios, cases, strict=True)):
        env = CarbonAwareDCEnv(scenario=scenario)
        o, _ = env.reset(seed=i)
        want = project_action(lane(actions, i), o, scenario, env.state_snapshot(), env.forecast())
        assert want["start"].tolist() == kept and got["start"][i].tolist() == kept, i


def test_flat_and_dict_observations_give_the_same_projection():
    venv = CarbonAwareDCVectorEnv(4, preset="paper", scenario_seeds=SEEDS)
    flat = safe_flat_vector_env(4, scenario_seeds=SEEDS)
    obs, _ = venv.reset(seed=2)
    flat_obs, _ = flat.reset(seed=2)
    actions = wild_actions(np.random.default_rng(5), venv, 0)
    a, b = project_actions(actions, obs, venv), project_actions(actions, flat_obs, flat)
    assert all(np.array_equal(a[key], b[key]) for key in actions)


# ---------------------------------------------------------------- (c) rollouts
def test_safe_vector_rollout_equals_safe_flat_env_per_lane():
    scenarios = [make_scenario("paper", s) for s in (7, 8, 9)]
    venv = safe_flat_vector_env(3, scenarios=scenarios, forecast_level="typical", reward_scale=1e-4)
    singles = [
        safe_flat_env("paper", scenario=sc, forecast_level="typical", reward_scale=1e-4) for sc in scenarios
    ]
    rng = np.random.default_rng(8)
    obs, _ = venv.reset(seed=6)
    for i, env in enumerate(singles):
        close(obs[i], env.reset(seed=6 + i)[0], f"reset lane {i}")
    done, resets, stepped = [False] * 3, 0, 0
    for k in range(55):
        actions = rng.uniform(-1.2, 1.2, venv.action_space.shape).astype(np.float32)
        obs, reward, terminated, _, info = venv.step(actions)
        for i, env in enumerate(singles):
            if done[i]:
                o, r, term = env.reset()[0], 0.0, False
                resets += 1
            else:
                o, r, term, _, want = env.step(actions[i])
                got = lane_info(info, i)
                for key, value in want["reward_terms"].items():
                    close(got["reward_terms"][key], value, f"step {k} lane {i} {key}")
                assert set(got["repairs"]) == set(want["repairs"]) and "start_ignored" not in want["repairs"]
                stepped += 1
            done[i] = term
            close(obs[i], o, f"step {k} lane {i} obs")
            close(reward[i], r, f"step {k} lane {i} reward")
            assert bool(terminated[i]) == term
    assert resets >= 3 and stepped >= 150


def test_same_step_autoreset_on_the_pool_equals_safe_flat_wrappers():
    kw = dict(preset="paper", scenario_seeds=SEEDS, forecast_level="good")
    venv = SafeFlatVectorEnv(3, reward_scale=1e-4, autoreset_mode=AutoresetMode.SAME_STEP, **kw)
    singles = [ScaleReward(SafeFlatWrapper(CarbonAwareDCEnv(**kw)), 1e-4) for _ in range(3)]
    rng = np.random.default_rng(9)
    obs, _ = venv.reset(seed=1)
    for i, env in enumerate(singles):
        close(obs[i], env.reset(seed=1 + i)[0], f"reset lane {i}")
    finals = 0
    for k in range(50):
        actions = rng.uniform(-1.0, 1.0, venv.action_space.shape).astype(np.float32)
        obs, reward, terminated, _, info = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, term, _, _ = env.step(actions[i])
            close(reward[i], r, f"step {k} lane {i} reward")
            assert bool(terminated[i]) == term
            if term:
                close(info["final_obs"][i], o, f"step {k} lane {i} final obs")
                o = env.reset()[0]
                finals += 1
            close(obs[i], o, f"step {k} lane {i} obs")
    assert finals >= 6


# ---------------------------------------------------------------- (d) SB3
def test_ppo_trains_on_the_safe_vector_env_through_the_sb3_adapter():
    from stable_baselines3 import PPO

    vec = safe_sb3_vec_env(8, preset="paper", scenario_seeds=SEEDS, forecast_level="typical", seed=0)
    assert isinstance(vec.venv, SafeFlatVectorEnv)
    model = PPO("MlpPolicy", vec, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    repairs = vec.last_info["repairs"]
    assert not repairs["_start_ignored"].any()  # the layer placed every start the env kept
