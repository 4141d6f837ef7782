"""The batched env (envs/vector.py) is the single env, lane by lane.

The differential tests step a ``CarbonAwareDCVectorEnv`` and, beside it, one ``CarbonAwareDCEnv`` per
lane seeded ``seed + i`` with Gymnasium's next-step autoreset done by hand, on the same actions, and
compare every lane's observation, reward, termination and info (reward terms, flows, emissions,
repairs and their amounts, action mask, scenario seed) to 1e-9 relative. Action sequences: random
(with values outside the boxes and invalid start choices), and adversarial per-lane policies on
modified scenarios that trigger every repair kind, negative prices, carbon budget overruns, lost
load, a terminal SoC shortfall and mandatory misses; the test asserts that they did. The oracle's
schedules replayed in all lanes at once return their objectives (the replay identity per lane).
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the ids)
from agents.replay import schedule_action
from envs import CarbonAwareDCEnv, make_scenario
from envs.dynamics import REWARD_KEYS
from envs.scenario import ScenarioError
from envs.vector import CarbonAwareDCVectorEnv, lane_info, single_spaces
from envs.vector_flat import CarbonAwareDCFlatVectorEnv
from envs.wrappers import DEFAULT_REWARD_SCALE, FlatObsActionWrapper, make_flat_env
from tests.conftest import make_tiny

RTOL = 1e-9
REPAIR_KEYS = {
    "start_ignored",
    "discharge_cut_mw",
    "gen_cut_mw",
    "charge_cut_mw",
    "gen_raised_mw",
    "shed_gpus",
    "lost_load_mw",
    "action_clipped",
    "route_removed",
    "route_scaled",
    "serve_cut_gpus",
    "battery_clipped_mw",
}
SEEDS = [1000, 1001, 1002, 1003, 1004]


def close(actual, expected, what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), expected, rtol=RTOL, atol=0, err_msg=what
    )


def lane_action(actions: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {key: np.array(value[i]) for key, value in actions.items()}


def compare_info(got: dict, want: dict, where: str, seen: set[str]) -> None:
    """One lane's batched info (via lane_info) against the single env's info."""
    assert set(got) >= set(want) - {"scenario"} or set(got) == set(want), (where, set(got) ^ set(want))
    assert got["period"] == want["period"], where
    assert np.array_equal(got["action_mask"], want["action_mask"]), where
    assert got["scenario_seed"] == want["scenario_seed"], where
    if "reward_terms" not in want:  # a reset
        assert "reward_terms" not in got and got["scenario"] == want["scenario"], where
        assert got["forecast_level"] == want["forecast_level"], where
        return
    assert list(got["reward_terms"]) == list(REWARD_KEYS) == list(want["reward_terms"]), where
    for key, value in want["reward_terms"].items():
        close(got["reward_terms"][key], value, f"{where} reward_terms[{key}]")
    assert set(got["flows"]) == set(want["flows"]), where
    for key, value in want["flows"].items():
        close(got["flows"][key], value, f"{where} flows[{key}]")
    close(got["emissions_t"], want["emissions_t"], f"{where} emissions_t")
    close(got["emissions_total_t"], want["emissions_total_t"], f"{where} emissions_total_t")
    assert set(got["repairs"]) == set(want["repairs"]), (where, got["repairs"], want["repairs"])
    for key, value in want["repairs"].items():
        if key == "start_ignored":
            assert got["repairs"][key] == value, where
        else:
            close(got["repairs"][key], value, f"{where} repairs[{key}]")
        seen.add(key)


def run_lockstep(venv, singles, policy, steps: int, seed: int, flat: bool = False) -> dict:
    """Step ``venv`` and the single envs (next-step autoreset by hand) on ``policy(k, venv)`` actions;
    compare everything; return what was seen (repair keys, nonzero reward terms, resets)."""
    seen: dict = {"repairs": set(), "terms": set(), "resets": 0, "min_price": np.inf}
    obs, info = venv.reset(seed=seed)
    done = [False] * len(singles)
    for i, env in enumerate(singles):
        o, want = env.reset(seed=seed + i)
        compare_obs(obs, o, i, flat, "reset")
        compare_info(lane_info(info, i), want, f"reset lane {i}", seen["repairs"])
    for k in range(steps):
        actions = policy(k, venv)
        obs, reward, terminated, truncated, info = venv.step(actions)
        assert reward.shape == (len(singles),) and reward.dtype == np.float64
        assert terminated.dtype == bool and not truncated.any()
        for i, env in enumerate(singles):
            where = f"step {k} lane {i}"
            if done[i]:
                o, want = env.reset()
                r, term = 0.0, False
                seen["resets"] += 1
            else:
                a = actions[i] if flat else lane_action(actions, i)
                o, r, term, trunc, want = env.step(a)
                assert not trunc
                seen["terms"] |= {key for key, v in want["reward_terms"].items() if v != 0}
                seen["min_price"] = min(seen["min_price"], env.unwrapped.scenario.price_import.min())
            done[i] = term
            compare_obs(obs, o, i, flat, where)
            close(reward[i], r, f"{where} reward")
            assert bool(terminated[i]) == term, where
            compare_info(lane_info(info, i), want, where, seen["repairs"])
    return seen


def compare_obs(obs, single, i: int, flat: bool, where: str) -> None:
    if flat:
        close(obs[i], single, f"{where} flat obs")
        return
    assert set(obs) == set(single), where
    for key, value in single.items():
        assert obs[key][i].dtype == value.dtype, (where, key)
        close(obs[key][i], value, f"{where} obs[{key}]")


def random_policy(seed: int, wild: bool = True):
    """Random Dict actions; ``wild``: values outside the boxes and invalid start choices too."""
    rng = np.random.default_rng(seed)

    def policy(k: int, venv) -> dict[str, np.ndarray]:
        N, S, K, J = venv.num_envs, venv.S, venv.K, venv.n_slots
        start = rng.integers(0, S + 1, (N, J))
        route = rng.random((N, K, S))
        battery = rng.uniform(-1, 1, (N, S))
        generator = rng.random((N, S))
        if wild:
            start[rng.random((N, J)) < 0.05] = -1
            start[rng.random((N, J)) < 0.05] = S + 3
            route = route * 1.4 - 0.2
            battery = battery * 1.3
            generator = generator * 1.3 - 0.15
        return {"start": start, "route": route, "battery": battery, "generator": generator}

    return policy


@pytest.mark.parametrize(
    ("preset", "n", "steps", "level", "order"),
    [
        ("paper", 4, 75, None, "random"),
        ("paper", 3, 60, "typical", "shuffle"),
        ("week", 2, 180, "good", "cycle"),
    ],
)
def test_random_actions_every_lane_equals_the_single_env(preset, n, steps, level, order):
    kw = dict(preset=preset, scenario_seeds=SEEDS[:3], scenario_order=order, forecast_level=level)
    venv = CarbonAwareDCVectorEnv(n, **kw)
    singles = [CarbonAwareDCEnv(**kw) for _ in range(n)]
    seen = run_lockstep(venv, singles, random_policy(7), steps, seed=11)
    assert seen["resets"] >= n  # every lane went through at least one autoreset
    assert {"start_ignored", "action_clipped", "route_removed", "route_scaled"} <= seen["repairs"]


def adversarial_scenarios() -> list:
    """Four lanes of paper seed 3, each modified to reach some corner of the dynamics."""
    base = make_scenario("paper", 3)
    starved = base.replace_sites(import_limit_mw=3.0)  # import-limit cascade, lost load
    surplus = base.replace_sites(export_limit_mw=0.0).replace(renewable_mw=3.0 * base.renewable_mw)
    strict = base.replace(  # mandatory misses, a zero budget, negative prices
        jobs=tuple(dataclasses.replace(job, mandatory=True) for job in base.jobs),
        carbon_budget_t=0.0,
        price_import=base.price_import - 60.0,
        price_export=base.price_export - 60.0,
    )
    tight = base.replace(carbon_budget_t=30.0)  # the budget is crossed mid-episode
    return [starved, surplus, strict, tight]


def adversarial_policy(seed: int):
    """Per lane: 0 charges flat out and serves everything (import above the limit); 1 discharges and
    runs the generator with nothing to serve (surplus beyond curtailment); 2 never starts its
    mandatory jobs and drains the battery (misses, SoC shortfall); 3 starts every job at one site at
    once and routes every class fully to every site (ignored starts, scaled routes, cut service)."""
    rng = np.random.default_rng(seed)

    def policy(k: int, venv) -> dict[str, np.ndarray]:
        N, S, K, J = venv.num_envs, venv.S, venv.K, venv.n_slots
        start = np.zeros((N, J), dtype=np.int64)
        route = np.zeros((N, K, S))
        battery = np.zeros((N, S))
        generator = np.zeros((N, S))
        start[0] = rng.integers(0, S + 1, J)
        route[0], battery[0], generator[0] = 1.0, 1.0, 0.3
        battery[1], generator[1] = -1.0, 1.0
        route[2], battery[2] = 0.5, -1.0 if k % 24 < 20 else 2.0
        start[3] = 1 + (k % S)
        route[3], battery[3], generator[3] = 1.0, rng.uniform(-1.5, 1.5, S), rng.uniform(-0.2, 1.2, S)
        return {"start": start, "route": route, "battery": battery, "generator": generator}

    return policy


def test_adversarial_actions_cover_every_repair_and_penalty():
    scenarios = adversarial_scenarios()
    venv = CarbonAwareDCVectorEnv(4, scenarios=scenarios, preset="paper")
    singles = [CarbonAwareDCEnv(scenario=sc, preset="paper") for sc in scenarios]
    seen = run_lockstep(venv, singles, adversarial_policy(3), 60, seed=5)
    assert seen["repairs"] == REPAIR_KEYS
    assert {"lost_load_usd", "carbon_overrun_usd", "soc_shortfall_usd", "mandatory_miss_usd"} <= seen["terms"]
    assert seen["min_price"] < 0 and seen["resets"] >= 4


def test_lanes_with_different_horizons_and_job_counts():
    two_jobs = make_tiny(T=5, S=2)
    two_jobs = two_jobs.replace(jobs=(*two_jobs.jobs, dataclasses.replace(two_jobs.jobs[0], name="job1")))
    scenarios = [two_jobs, make_tiny(T=3, S=2), make_tiny(T=4, S=2, carbon_budget_t=0.5)]
    venv = CarbonAwareDCVectorEnv(3, scenarios=scenarios)
    assert (venv.S, venv.K, venv.n_slots, venv.T_max) == (2, 1, 2, 5)
    singles = []
    for sc in scenarios:
        env = CarbonAwareDCEnv(scenario=two_jobs, preset=None)  # the vector env's sizes
        env.set_scenario(sc)
        singles.append(env)
    seen = run_lockstep(venv, singles, random_policy(1), 25, seed=0)
    assert seen["resets"] >= 6


def test_flat_variant_equals_the_flat_single_env():
    kw = dict(preset="paper", scenario_seeds=SEEDS, forecast_level="poor")
    venv = CarbonAwareDCFlatVectorEnv(3, reward_scale=1e-4, **kw)
    singles = [make_flat_env(reward_scale=1e-4, **kw) for _ in range(3)]
    wrapper = singles[0]
    while not isinstance(wrapper, FlatObsActionWrapper):
        wrapper = wrapper.env
    assert venv.obs_layout == wrapper.obs_layout and venv.action_layout == wrapper.action_layout
    assert venv.single_observation_space == wrapper.observation_space
    assert venv.single_action_space == wrapper.action_space
    assert (
        CarbonAwareDCFlatVectorEnv(1, scenario_seeds=[1]).reward_scale == DEFAULT_REWARD_SCALE
    )  # as the id's
    rng = np.random.default_rng(2)

    def policy(k, env):
        if k % 2:  # out of the box: clipped (ties at the bounds)
            return (rng.uniform(-1.2, 1.2, env.action_space.shape)).astype(np.float32)
        # in the box (the decoder's no-clip path), on a grid of 0.25 for tied start scores
        return (np.round(rng.uniform(-1.0, 1.0, env.action_space.shape) * 4) / 4).astype(np.float32)

    seen = run_lockstep(venv, singles, policy, 60, seed=3, flat=True)
    assert seen["resets"] >= 3


def test_oracle_schedules_replayed_in_every_lane_return_their_objectives():
    from oracle import solve

    schedules = [solve(make_scenario("paper", s), config="joint", time_limit_s=60.0) for s in (0, 1, 2)]
    assert all(s.status in ("optimal", "time_limit") for s in schedules)
    venv = CarbonAwareDCVectorEnv(3, scenarios=[s.scenario for s in schedules], preset="paper")
    obs, _ = venv.reset(seed=0)
    totals, repairs = np.zeros(3), []
    for _ in range(venv.T_max):
        parts = [schedule_action(s, int(obs["period"][i, 0]), venv.n_slots) for i, s in enumerate(schedules)]
        actions = {key: np.stack([p[key] for p in parts]) for key in parts[0]}
        obs, reward, terminated, _, info = venv.step(actions)
        totals += reward
        repairs += [(i, lane_info(info, i)["repairs"]) for i in range(3) if lane_info(info, i)["repairs"]]
    assert terminated.all() and repairs == []
    for total, schedule in zip(totals, schedules, strict=True):
        assert total == pytest.approx(schedule.objective_usd, rel=1e-6)


def test_spaces_and_dtypes_are_the_single_envs():
    for preset in ("paper", "week"):
        single = CarbonAwareDCEnv(preset=preset)
        venv = CarbonAwareDCVectorEnv(2, preset=preset, scenario_seeds=[5])
        assert venv.single_observation_space == single.observation_space
        assert venv.single_action_space == single.action_space
        obs, info = venv.reset(seed=0)
        assert venv.observation_space.contains(obs)
        assert obs["period"].dtype == np.int64 and obs["jobs"].dtype == np.float32
        venv.action_space.seed(0)
        obs, _, _, _, info = venv.step(venv.action_space.sample())
        assert venv.observation_space.contains(obs)
        assert info["action_mask"].shape == (2, venv.n_slots, venv.S + 1)
        assert info["flows"]["serve_gpus"].shape == (2, venv.K, venv.S)
    tiny = make_tiny(T=4, S=2)
    obs_space, act_space = single_spaces(2, 1, 1, 4, 24)
    env = CarbonAwareDCEnv(scenario=tiny, preset=None)
    assert obs_space == env.observation_space and act_space == env.action_space


def rollout(venv, seed, steps=30):
    out = [venv.reset(seed=seed)]
    venv.action_space.seed(seed)
    for _ in range(steps):
        out.append(venv.step(venv.action_space.sample()))
    return out


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_same_seed_same_batch_rollout():
    kw = dict(preset="paper", scenario_seeds=SEEDS, forecast_level="typical")
    first = rollout(CarbonAwareDCVectorEnv(3, **kw), seed=4)
    assert same(first, rollout(CarbonAwareDCVectorEnv(3, **kw), seed=4))
    assert not same(first, rollout(CarbonAwareDCVectorEnv(3, **kw), seed=5))
    a, b = CarbonAwareDCVectorEnv(3, **kw), CarbonAwareDCVectorEnv(3, **kw)
    assert same(a.reset(seed=4), b.reset(seed=[4, 5, 6]))
    # The default pool is drawn from the training seeds with pool_seed, independent of reset seeds.
    pool = CarbonAwareDCVectorEnv(1, pool_size=8).scenario_seeds
    assert pool == CarbonAwareDCVectorEnv(1, pool_size=8).scenario_seeds and len(set(pool)) == 8
    assert min(pool) >= 1000 and pool != CarbonAwareDCVectorEnv(1, pool_size=8, pool_seed=1).scenario_seeds


@pytest.mark.parametrize("level", ["exact", "typical"])
def test_gather_thread_changes_nothing(level):
    """The observation rows copied on the gather thread (re-copied for lanes that reset) equal the
    rows copied in the calling thread, in both autoreset modes and with per-lane forecast draws."""
    kw = dict(preset="paper", scenario_seeds=SEEDS, forecast_level=level)
    threaded = CarbonAwareDCVectorEnv(4, gather_thread=True, **kw)
    plain = CarbonAwareDCVectorEnv(4, gather_thread=False, **kw)
    assert same(rollout(threaded, seed=2, steps=60), rollout(plain, seed=2, steps=60))
    threaded.close()
    assert same(rollout(threaded, seed=3, steps=30), rollout(plain, seed=3, steps=30))  # usable after close
    a = CarbonAwareDCVectorEnv(3, gather_thread=True, autoreset_mode="SameStep", **kw)
    b = CarbonAwareDCVectorEnv(3, gather_thread=False, autoreset_mode="SameStep", **kw)
    for env in (a, b):
        env.reset(seed=7)
        env.action_space.seed(7)
    for _ in range(50):
        actions = a.action_space.sample()
        (oa, ra, ta, _, ia), (ob, rb, tb, _, ib) = a.step(actions), b.step(actions)
        assert same(oa, ob) and np.array_equal(ra, rb) and np.array_equal(ta, tb)
        for i in np.flatnonzero(ia.get("_final_obs", np.zeros(3, dtype=bool))):
            assert same(ia["final_obs"][i], ib["final_obs"][i])


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_gather_thread_guesses_the_rows_of_reset_lanes(mode):
    """With exact forecasts the gather thread copies the right rows for lanes reset in the step (their
    next scenario's first period: observation and physics rows) and none is copied twice; the
    rollout equals the unthreaded one."""
    kw = dict(preset="paper", scenario_seeds=SEEDS, autoreset_mode=mode)
    threaded = CarbonAwareDCVectorEnv(5, gather_thread=True, **kw)
    plain = CarbonAwareDCVectorEnv(5, gather_thread=False, **kw)
    for env in (threaded, plain):
        env.reset(seed=11)
    threaded.action_space.seed(11)
    for _ in range(24 * 3 + 2):  # three autoresets of every lane
        actions = threaded.action_space.sample()
        (oa, ra, *_), (ob, rb, *_) = threaded.step(actions), plain.step(actions)
        assert same(oa, ob) and np.array_equal(ra, rb)
    assert threaded._stale_rows == 0 and threaded._stale_periods == 0
    noisy = CarbonAwareDCVectorEnv(2, gather_thread=True, forecast_level="typical", **kw)
    noisy.reset(seed=1)
    for _ in range(26):
        noisy.step(noisy.action_space.sample())
    assert noisy._stale_rows == 2  # noisy forecasts rewrite a reset lane's rows: copied again
    assert noisy._stale_periods == 2  # and the next scenario is not peeked: its period rows too


def test_autoreset_modes():
    kw = dict(preset="paper", scenario_seeds=SEEDS[:2])
    nxt = CarbonAwareDCVectorEnv(2, **kw)
    same_step = CarbonAwareDCVectorEnv(2, autoreset_mode="SameStep", **kw)
    assert nxt.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert same_step.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    nxt.reset(seed=1)
    same_step.reset(seed=1)
    policy = random_policy(0, wild=False)
    for k in range(24):
        actions = policy(k, nxt)
        o1, r1, t1, _, i1 = nxt.step(actions)
        o2, r2, t2, _, i2 = same_step.step(actions)
        assert np.array_equal(r1, r2) and np.array_equal(t1, t2)
    assert t1.all() and (o1["period"] == 24).all() and (o2["period"] == 0).all()
    for i in range(2):
        assert same(i2["final_obs"][i], {key: v[i] for key, v in o1.items()})
        assert same(lane_info(i2["final_info"], i), lane_info(i1, i))
        assert lane_info(i2, i)["period"] == 0 and "reward_terms" not in lane_info(i2, i)
    ignored = policy(24, nxt)
    ignored["battery"][0, 0] = np.nan  # a resetting lane's action is ignored, as SyncVectorEnv does
    o1, r1, t1, _, i1 = nxt.step(ignored)  # the next-step reset
    assert (r1 == 0).all() and not t1.any() and (o1["period"] == 0).all() and not i1["_reward_terms"].any()
    assert same(o1, o2)
    disabled = CarbonAwareDCVectorEnv(2, autoreset_mode=AutoresetMode.DISABLED, **kw)
    disabled.reset(seed=1)
    with pytest.raises(ValueError, match="first reset"):
        CarbonAwareDCVectorEnv(2, autoreset_mode="Disabled", **kw).reset(
            options={"reset_mask": np.array([1, 0]) > 0}
        )
    for k in range(24):
        obs, *_ = disabled.step(policy(k, disabled))
    with pytest.raises(RuntimeError, match="done"):
        disabled.step(policy(0, disabled))
    obs, info = disabled.reset(options={"reset_mask": np.array([True, False])})
    assert obs["period"][:, 0].tolist() == [0, 24] and info["_scenario"].tolist() == [True, False]


def test_sb3_adapter_trains_ppo():
    from stable_baselines3 import PPO

    from envs.vector_sb3 import make_sb3_vec_env

    vec = make_sb3_vec_env(8, preset="paper", scenario_seeds=SEEDS, seed=0)
    obs = vec.reset()
    assert obs.shape == (8, vec.observation_space.shape[0]) and obs.dtype == np.float32
    vec.action_space.seed(0)
    for _ in range(24):
        obs, reward, dones, infos = vec.step(np.stack([vec.action_space.sample() for _ in range(8)]))
    assert dones.all() and reward.dtype == np.float32
    assert all(info["terminal_observation"].shape == obs.shape[1:] for info in infos)
    assert np.allclose(obs[:, vec.venv.obs_layout["time"][0]][:, 0], 0.0)  # already reset: t/T = 0
    model = PPO("MlpPolicy", vec, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512


def test_make_vec_builds_the_batched_envs():
    venv = gym.make_vec(
        "CarbonAwareDC-v0", num_envs=3, vectorization_mode="vector_entry_point", scenario_seeds=[9]
    )
    assert isinstance(venv, CarbonAwareDCVectorEnv) and venv.num_envs == 3
    flat = gym.make_vec(
        "CarbonAwareDC-Flat-v0", num_envs=2, vectorization_mode="vector_entry_point", scenario_seeds=[9]
    )
    assert isinstance(flat, CarbonAwareDCFlatVectorEnv)
    obs, _ = flat.reset(seed=0)
    assert flat.observation_space.contains(obs)
    assert isinstance(gym.make("CarbonAwareDC-v0").unwrapped, CarbonAwareDCEnv)


def test_bad_input_fails_early_naming_the_field():
    kw = dict(preset="paper", scenario_seeds=[5])
    with pytest.raises(ValueError, match="num_envs"):
        CarbonAwareDCVectorEnv(0, **kw)
    with pytest.raises(ValueError, match="render_mode"):
        CarbonAwareDCVectorEnv(1, render_mode="ansi", **kw)
    with pytest.raises(ValueError, match="autoreset_mode"):
        CarbonAwareDCVectorEnv(1, autoreset_mode="later", **kw)
    with pytest.raises(ValueError, match="scenario_seeds: empty"):
        CarbonAwareDCVectorEnv(1, preset="paper", scenario_seeds=[])
    with pytest.raises(ValueError, match="max_pool_mib"):
        CarbonAwareDCVectorEnv(1, preset="paper", scenario_seeds=[1, 2], max_pool_mib=0.01)
    with pytest.raises(ValueError, match="scenarios: need one per lane"):
        CarbonAwareDCVectorEnv(2, scenarios=[make_scenario("paper", 0)])
    with pytest.raises(ScenarioError, match=r"scenarios\[1\].S"):
        CarbonAwareDCVectorEnv(2, scenarios=[make_scenario("paper", 0), make_scenario("week", 0)])
    venv = CarbonAwareDCVectorEnv(2, **kw)
    venv.action_space.seed(0)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(venv.action_space.sample())
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="reset options"):
        venv.reset(options={"scenario_seed": 3})
    bad = venv.action_space.sample()
    bad["battery"] = bad["battery"].copy()
    bad["battery"][1, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(lanes \[1\]\)"):
        venv.step(bad)
    with pytest.raises(ValueError, match=r"actions\['route'\]: shape"):
        venv.step({**venv.action_space.sample(), "route": np.zeros((2, 3))})
    # The single env's rules (issue 14): values beyond ±1e9, fractional or boolean starts are errors.
    single = CarbonAwareDCEnv(preset="paper", scenario_seeds=[5])
    single.reset(seed=0)
    good = venv.action_space.sample()
    for part, value, match in (
        ("generator", 2e9, r"beyond ±1e\+09 \(lanes \[0\]\)"),
        ("start", 1.5, r"not a whole-number choice \(0 hold, 1\+s site s\) \(lanes \[0\]\)"),
        ("start", True, "must be integers"),
    ):
        bad = {key: np.array(v) for key, v in good.items()}
        if value is True:
            bad["start"] = bad["start"] > 0
        else:
            bad[part] = bad[part].astype(np.float64)
            bad[part][0, 0] = value
        with pytest.raises(ValueError, match=match):
            venv.step(bad)
        with pytest.raises(ValueError):
            single.step(lane_action(bad, 0))
    whole = CarbonAwareDCVectorEnv(2, **kw)
    whole.reset(seed=0)
    venv.reset(seed=0)
    floats = {**good, "start": good["start"].astype(np.float64)}  # whole floats are choices
    assert same(venv.step(floats), whole.step(good))


def test_carbon_features_short_path_equals_the_general_one():
    """The all-budgets-positive path of ``carbon_features`` (taken when every lane has a budget > 0)
    gives the general path's values bit for bit, below, at and far above the budget."""
    from envs.dc_env import OBS_BOUND
    from envs.vector_step import carbon_features

    rng = np.random.default_rng(3)
    budget = rng.uniform(0.5, 50.0, 64)
    emissions = budget * np.concatenate([rng.uniform(0, 1, 32), [1.0] * 4, rng.uniform(1, 40, 28)])
    emissions[:3] = 0.0
    general, short = carbon_features(emissions, budget), carbon_features(emissions, budget, True)
    assert np.array_equal(general, short)
    assert short[:, 1].max() == OBS_BOUND and (short[:, 2] == 0).any() and (short[:, 2] == 1).any()
