"""CarbonAwareDCEnv: hand-computed steps to the cent, penalties, API, checkers, wrappers."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import CarbonAwareDCEnv, ScenarioError, TrainingJob, make_scenario
from envs.dynamics import REWARD_KEYS
from envs.wrappers import FlatObsActionWrapper, ScaleReward
from tests.conftest import make_site, make_tiny

CENT = 0.005


def tiny_env(sc=None, **kw) -> CarbonAwareDCEnv:
    env = CarbonAwareDCEnv(scenario=sc if sc is not None else make_tiny(), preset=None, **kw)
    env.reset(seed=0)
    return env


def act(start=0, route=0.0, battery=0.0, generator=0.0, S=1, K=1, slots=1):
    return {
        "start": np.full(slots, start, dtype=np.int64),
        "route": np.full((K, S), route, dtype=np.float64),
        "battery": np.full(S, battery, dtype=np.float64),
        "generator": np.full(S, generator, dtype=np.float64),
    }


def check_terms(reward, info):
    assert tuple(info["reward_terms"]) == REWARD_KEYS
    assert reward == sum(info["reward_terms"].values())


# ----------------------------------------------------------------- hand-computed single steps
def test_start_a_job_and_serve_all_inference():
    """Job 4 GPUs + 2 inference GPUs at 0.1 MW each = 0.6 MW imported at 50 USD/MWh.
    Reward = 100 (job) + 2 * 10 (inference) - 0.6 * 50 = 90.00 USD; emissions 0.6 * 0.5 = 0.3 t."""
    env = tiny_env()
    obs, reward, terminated, truncated, info = env.step(act(start=1, route=1.0))
    assert reward == pytest.approx(90.0, abs=CENT)
    assert info["emissions_t"] == pytest.approx(0.3)
    assert info["flows"]["grid_import_mw"][0] == pytest.approx(0.6)
    assert info["repairs"] == {}
    assert not terminated and not truncated
    check_terms(reward, info)
    assert env.state_snapshot().job_starts == ((0, 0, 0),)
    assert obs["jobs"][0, 2] == 0.0 and obs["jobs"][0, 3] == 1.0  # 1-period job: done at t=1


def test_charge_and_generator_with_a_carbon_price():
    """Serve 1 of 2 GPUs (0.1 MW), charge 5 MW, generator 20 % of 5 MW = 1 MW:
    import 0.1 + 5 - 1 = 4.1 MW. Revenue 10, unserved -20, import -205, gen -90,
    emissions 4.1 * 0.5 + 1 * 0.45 = 2.5 t at 10 USD/t = -25: reward -330.00 USD."""
    env = tiny_env(make_tiny(carbon_price_usd_per_t=10.0))
    _, reward, _, _, info = env.step(act(route=0.5, battery=1.0, generator=0.2))
    assert reward == pytest.approx(-330.0, abs=CENT)
    assert info["emissions_t"] == pytest.approx(2.5)
    assert info["flows"]["soc_mwh"][0] == pytest.approx(10.0)
    check_terms(reward, info)


def test_surplus_export_and_discharge_cut():
    """Renewables 3 MW, full discharge 5 MW, generator 5 MW, no load: surplus 13 MW, export 5
    at 40 USD/MWh, curtail 3, the remaining 5 MW removed from the discharge (repair).
    Reward = 200 (export) - 450 (gen) - 40 (2 unserved GPUs) = -290.00 USD; SoC stays 5 MWh."""
    env = tiny_env(make_tiny(renewable_mw=np.full((1, 3), 3.0)))
    _, reward, _, _, info = env.step(act(battery=-1.0, generator=1.0))
    assert reward == pytest.approx(-290.0, abs=CENT)
    f = info["flows"]
    assert (f["grid_export_mw"][0], f["curtailed_mw"][0], f["discharge_mw"][0]) == (5.0, 3.0, 0.0)
    assert f["soc_mwh"][0] == 5.0
    assert info["repairs"] == {"discharge_cut_mw": 5.0}
    check_terms(reward, info)


def test_no_export_at_negative_price():
    env = tiny_env(make_tiny(renewable_mw=np.full((1, 3), 3.0), price_export=np.full((1, 3), -10.0)))
    _, reward, _, _, info = env.step(act(route=1.0))
    assert info["flows"]["grid_export_mw"][0] == 0.0
    assert info["flows"]["curtailed_mw"][0] == pytest.approx(2.8)
    assert reward == pytest.approx(20.0, abs=CENT)


def test_import_limit_cascade_sheds_inference_then_loses_load():
    """Import limit 0.1 MW, no generator: job 0.4 MW + inference 0.2 MW. All inference is shed
    (0.2 MW) and 0.3 MW is lost load at 10,000 USD/MWh. Reward = 100 - 2 * 20 - 0.1 * 50 - 3000
    = -2945.00 USD."""
    site = make_site(import_limit_mw=0.1, gen_capacity_mw=0.0)
    env = tiny_env(make_tiny(sites=(site,)))
    _, reward, _, _, info = env.step(act(start=1, route=1.0))
    assert reward == pytest.approx(-2945.0, abs=CENT)
    assert info["reward_terms"]["lost_load_usd"] == pytest.approx(-3000.0)
    assert info["flows"]["serve_gpus"].sum() == pytest.approx(0.0, abs=1e-9)
    assert info["flows"]["unserved_gpus"][0] == pytest.approx(2.0)
    assert set(info["repairs"]) == {"shed_gpus", "lost_load_mw"}
    check_terms(reward, info)


def test_carbon_overrun_charged_on_the_excess_when_crossed():
    """6 GPUs served = 0.6 MW imported at 0.5 t/MWh = 0.3 t per step against a 0.4 t budget:
    step 0 no overrun, step 1 0.2 t over (-200 USD), step 2 0.3 t more (-300 USD) at 1,000 USD/t."""
    env = tiny_env(make_tiny(carbon_budget_t=0.4, demand_gpus=np.full((1, 3), 6.0)))
    overruns = []
    for _ in range(3):
        _, reward, _, _, info = env.step(act(route=1.0))
        overruns.append(info["reward_terms"]["carbon_overrun_usd"])
        check_terms(reward, info)
    assert overruns == pytest.approx([0.0, -200.0, -300.0])
    assert env.state_snapshot().emissions_t == pytest.approx(0.9)


def test_terminal_soc_shortfall_and_mandatory_miss_penalties():
    """T=2; the battery is emptied (5 MWh below its initial 5 MWh) -> -5,000 USD at the last step;
    a mandatory job whose window closes at t=1 unstarted -> -100,000 USD then."""
    job = TrainingJob("job0", 4, 1, 0, 2, 100.0, (True,), mandatory=True)
    env = tiny_env(make_tiny(T=2, jobs=(job,)))
    _, _, _, _, i0 = env.step(act(route=1.0, battery=-1.0))
    assert i0["reward_terms"]["mandatory_miss_usd"] == 0.0 and i0["reward_terms"]["soc_shortfall_usd"] == 0.0
    _, r1, terminated, _, i1 = env.step(act(route=1.0))
    assert terminated
    assert i1["reward_terms"]["soc_shortfall_usd"] == pytest.approx(-5000.0)
    assert i1["reward_terms"]["mandatory_miss_usd"] == pytest.approx(-100_000.0)
    check_terms(r1, i1)
    with pytest.raises(RuntimeError):
        env.step(act())


def test_invalid_starts_and_routes_are_repaired_and_reported():
    env = tiny_env(make_tiny(jobs=(TrainingJob("big", 20, 1, 1, 3, 5.0, (True,)),)))
    assert not env._mask[0, 1]  # not released yet
    _, _, _, _, info = env.step(act(start=1, route=3.0, battery=2.0))
    assert info["repairs"]["start_ignored"] == [0]
    assert info["repairs"]["action_clipped"] == pytest.approx(3.0)
    assert env.state_snapshot().job_starts == ()
    _, _, _, _, info = env.step(act(start=1))  # released, but 20 GPUs never fit on 10
    assert info["repairs"]["start_ignored"] == [0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("part", ["route", "battery", "generator", "start"])
def test_nan_or_inf_in_an_action_raises(part, bad):
    env = tiny_env()
    a = act()
    a[part] = np.array(a[part], dtype=np.float64)
    a[part].flat[0] = bad
    with pytest.raises(ValueError):
        env.step(a)


# ----------------------------------------------------------------------------- API
def test_scenario_sizes_must_match_the_preset():
    with pytest.raises(ScenarioError, match="S"):
        CarbonAwareDCEnv(scenario=make_tiny(), preset="paper")
    sc = make_scenario("paper", 0)
    extra = TrainingJob("extra", 1000, 4, 0, 10, 1.0, (True, True, True))
    with pytest.raises(ScenarioError, match=r"scenario\.J: .* 6 job slots \(got 7"):
        CarbonAwareDCEnv(preset="paper").set_scenario(sc.replace(jobs=(*sc.jobs, extra)))
    with pytest.raises(ScenarioError, match=r"scenario\.S: the env.s sizes have 5 sites"):
        CarbonAwareDCEnv(scenario=make_scenario("week", 0), preset=None).set_scenario(sc)
    env = CarbonAwareDCEnv(scenario=make_scenario("paper", 3))
    assert env.reset(seed=1)[1]["scenario"] == "paper-s3"


def test_shapes_come_from_a_given_scenario_unless_a_preset_is_asked_for() -> None:
    week = make_scenario("week", 0)
    env = CarbonAwareDCEnv(scenario=week)
    assert (env.S, env.K, env.n_slots, env.T_max) == (week.S, week.K, week.J, week.T) == (5, 6, 40, 168)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs["jobs"].shape[0] == 40
    assert gym.make("CarbonAwareDC-v0", scenario=week).unwrapped.S == 5
    assert CarbonAwareDCEnv().preset == "paper"  # no scenario, no preset: the paper preset
    paper = make_scenario("paper", 0)
    seven = paper.replace(jobs=(*paper.jobs, TrainingJob("extra", 1000, 4, 0, 10, 1.0, (True, True, True))))
    assert CarbonAwareDCEnv(scenario=seven).n_slots == 7
    with pytest.raises(ScenarioError, match=r"scenario\.J: preset 'paper' has 6 job slots.*pass preset=None"):
        CarbonAwareDCEnv(scenario=seven, preset="paper")
    with pytest.raises(ScenarioError, match=r"scenario\.S: .*pass preset=None"):
        CarbonAwareDCEnv(scenario=week, preset="paper")


def test_reset_draws_scenarios_from_the_seed_range():
    env = CarbonAwareDCEnv(preset="paper", scenario_seeds=range(1000, 1010))
    seeds = {env.reset(seed=s)[1]["scenario_seed"] for s in range(20)}
    assert seeds <= set(range(1000, 1010)) and len(seeds) > 1
    assert env.reset(seed=5)[1]["scenario_seed"] == env.reset(seed=5)[1]["scenario_seed"]
    env = CarbonAwareDCEnv(preset="paper", seed_scenarios=False)
    assert env.reset(seed=3)[1]["scenario"] == "paper-s0"


def rollout(env, seed, n=30):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(n):
        obs, reward, terminated, _, info = env.step(env.action_space.sample())
        out.append((obs, reward, info["emissions_t"]))
        if terminated:
            obs, _ = env.reset()
    return out


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(a, b)


def test_same_seed_same_rollout_with_noisy_forecasts():
    a = rollout(CarbonAwareDCEnv(preset="paper", forecast_noise=0.05), 7)
    b = rollout(CarbonAwareDCEnv(preset="paper", forecast_noise=0.05), 7)
    assert all(same(x, y) for x, y in zip(a, b, strict=True))
    c = rollout(CarbonAwareDCEnv(preset="paper", forecast_noise=0.05), 8)
    assert not all(same(x, y) for x, y in zip(a, c, strict=True))


def test_env_pickles_mid_episode():
    env = CarbonAwareDCEnv(preset="paper")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    a = env.action_space.sample()
    o1, r1, *_ = env.step(a)
    o2, r2, *_ = clone.step(a)
    assert r1 == r2 and same(o1, o2)


def test_observation_layout_and_forecasts():
    sc = make_scenario("paper", 0)
    env = CarbonAwareDCEnv(scenario=sc, forecast_horizon=4, forecast_noise=0.1)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["price_import"].shape == (3, 5) and obs["demand"].shape == (3, 5)
    fc = env.forecast()
    np.testing.assert_array_equal(fc["price_import"][:, 0], sc.price_import[:, 0])  # lead 0 exact
    np.testing.assert_allclose(obs["price_import"], fc["price_import"] / 200.0, rtol=1e-6)
    assert not np.allclose(fc["price_import"][:, 1:], sc.price_import[:, 1:5])
    for _ in range(sc.T):
        obs, _, terminated, _, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
    assert terminated and obs["period"][0] == sc.T
    assert info["action_mask"][:, 1:].sum() == 0
    np.testing.assert_array_equal(env.forecast()["demand_gpus"][:, 0], sc.demand_gpus[:, -1])  # padded


def test_action_mask_and_state_snapshot():
    sc = make_scenario("paper", 0)
    env = CarbonAwareDCEnv(scenario=sc)
    _, info = env.reset(seed=0)
    mask = info["action_mask"]
    assert mask.shape == (6, 4) and mask[:, 0].all()
    for j, job in enumerate(sc.jobs):
        assert mask[j, 1:].tolist() == [job.release == 0 and e for e in job.eligible]
    snap = env.state_snapshot()
    assert snap == sc.initial_state()


@pytest.mark.parametrize("mode", ["ansi", "rgb_array"])
def test_render(mode):
    env = CarbonAwareDCEnv(preset="paper", render_mode=mode)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    out = env.render()
    if mode == "ansi":
        assert "period 1/24" in out and "site" in out
    else:
        assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8


# ----------------------------------------------------------------------------- checkers
GYM_ALLOWED = ("is different from the unwrapped version",)
"""gymnasium's check_env is run on the registered (wrapped) envs on purpose."""
SB3_ALLOWED_DICT = ("action space is not based off a numpy array", "unconventional shape")
"""The Dict id is for custom policies; the Flat id is the SB3 one and must pass clean."""


def run_checker(check, env, allowed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check(env)
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]
    assert unexpected == []


@pytest.mark.parametrize("env_id", [envs.ENV_ID, envs.FLAT_ENV_ID])
def test_gymnasium_check_env(env_id):
    from gymnasium.utils.env_checker import check_env

    run_checker(check_env, gym.make(env_id), GYM_ALLOWED)


@pytest.mark.parametrize("env_id", [envs.ENV_ID, envs.FLAT_ENV_ID])
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env

    run_checker(check_env, gym.make(env_id), SB3_ALLOWED_DICT if env_id == envs.ENV_ID else ())


def test_make_from_a_fresh_interpreter():
    import subprocess
    import sys

    code = (
        "import gymnasium as gym; e = gym.make('envs:CarbonAwareDC-v0', preset='week'); "
        "print(e.reset(seed=0)[0]['soc'].shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(5,)"


# ----------------------------------------------------------------------------- wrappers
def test_flat_wrapper_round_trip_and_layout():
    env = gym.make(envs.FLAT_ENV_ID, preset="paper")
    flat = env.unwrapped  # the base env
    wrapper = env.env.env  # OrderEnforcing(PassiveEnvChecker(FlatObsActionWrapper))
    assert isinstance(wrapper, FlatObsActionWrapper) and isinstance(flat, CarbonAwareDCEnv)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    sl, shape = wrapper.obs_layout["soc"]
    assert shape == (3,) and obs[sl].shape == (3,)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = flat.action_space.sample()
        a["route"] = a["route"] * rng.integers(0, 2, a["route"].shape)  # some all-zero rows
        back = wrapper.decode_action(wrapper.encode_action(a))
        np.testing.assert_array_equal(back["start"], a["start"])
        frac = np.clip(a["route"], 0, 1) / np.maximum(np.clip(a["route"], 0, 1).sum(1, keepdims=True), 1)
        np.testing.assert_allclose(back["route"], frac, atol=1e-6)
        np.testing.assert_allclose(back["battery"], a["battery"], atol=1e-6)
        np.testing.assert_allclose(back["generator"], a["generator"], atol=1e-6)
    # A forbidden start decodes to hold under the mask.
    a = flat.action_space.sample()
    a["start"][:] = 1
    decoded = wrapper.decode_action(wrapper.encode_action(a), info["action_mask"])
    assert ((decoded["start"] == 1) == info["action_mask"][:, 1]).all()


def test_scale_reward():
    base = CarbonAwareDCEnv(preset="paper")
    env = ScaleReward(FlatObsActionWrapper(CarbonAwareDCEnv(preset="paper")), 1e-4)
    base.reset(seed=0)
    env.reset(seed=0)
    a = env.action_space.sample()
    _, r_scaled, *_, info = env.step(a)
    assert r_scaled == pytest.approx(1e-4 * sum(info["reward_terms"].values()))


# ----------------------------------------------------------------------------- reset semantics
def test_reset_options_pick_the_scenario_for_one_episode() -> None:
    env = CarbonAwareDCEnv(preset="paper")
    _, info = env.reset(seed=0, options={"scenario_seed": 7})
    assert info["scenario_seed"] == 7 and env.scenario == make_scenario("paper", 7)
    sc = make_scenario("paper", 3)
    _, info = env.reset(options={"scenario": sc})
    assert env.scenario is sc and info["scenario_seed"] is None
    _, info = env.reset()
    assert info["scenario_seed"] >= 1000  # back to drawing
    with pytest.raises(ValueError, match="scenario_seed"):
        env.reset(options={"scenario_seed": -1})
    with pytest.raises(ValueError, match="at most one"):
        env.reset(options={"scenario_seeds": 1})
    with pytest.raises(ScenarioError, match=r"scenario\.S"):
        env.reset(options={"scenario": make_scenario("week", 0)})


def test_scenario_seeds_cycle_in_order_and_shuffle_without_replacement() -> None:
    env = CarbonAwareDCEnv(preset="paper", scenario_seeds=[5, 1, 9], scenario_order="cycle")
    seen = [env.reset(seed=0)[1]["scenario_seed"]] + [env.reset()[1]["scenario_seed"] for _ in range(4)]
    assert seen == [5, 1, 9, 5, 1]
    assert env.reset(seed=3)[1]["scenario_seed"] == 5  # seeding starts the cycle over
    env = CarbonAwareDCEnv(preset="paper", scenario_seeds=list(range(20)), scenario_order="shuffle")
    first = [env.reset(seed=1)[1]["scenario_seed"]] + [env.reset()[1]["scenario_seed"] for _ in range(19)]
    assert sorted(first) == list(range(20)) and first != list(range(20))
    env2 = CarbonAwareDCEnv(preset="paper", scenario_seeds=list(range(20)), scenario_order="shuffle")
    again = [env2.reset(seed=1)[1]["scenario_seed"]] + [env2.reset()[1]["scenario_seed"] for _ in range(19)]
    assert again == first  # same seed, same order
    with pytest.raises(ValueError, match="scenario_order"):
        CarbonAwareDCEnv(preset="paper", scenario_order="sorted")
