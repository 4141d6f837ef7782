"""Invariants of every step for arbitrary action sequences, out-of-range values included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import CarbonAwareDCEnv, make_scenario
from envs.dc_env import ACTION_ABS_MAX
from tests.conftest import make_site, make_tiny

PAPER = make_scenario("paper", 0)
# A cramped two-site scenario where every cascade fires: small import limits, a tiny battery,
# big jobs, renewables that can exceed the load and an export price that changes sign.
STRESSED = make_tiny(
    T=6,
    S=2,
    sites=(
        make_site("a", import_limit_mw=0.5, gen_capacity_mw=0.3, export_limit_mw=0.2, capacity_mwh=1.0),
        make_site("b", import_limit_mw=2.0, eta_charge=0.9, eta_discharge=0.8, soc_min_frac=0.2),
    ),
    renewable_mw=np.array([[0.0, 3.0, 0.5, 0.0, 6.0, 0.0], [1.0, 0.0, 4.0, 0.2, 0.0, 2.0]]),
    price_export=np.array([[40.0, -5.0, 0.0, 30.0, 20.0, 10.0], [-1.0, 40.0, 40.0, 40.0, 0.0, 5.0]]),
    cooling=np.full((2, 6), 0.3),
    demand_gpus=np.array([[4.0, 9.0, 12.0, 0.0, 20.0, 3.0]]),
    carbon_budget_t=1.0,
)

wild = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)
# Up to the largest magnitude the env accepts (beyond it an action is an error, tested below).
huge = st.floats(min_value=-ACTION_ABS_MAX, max_value=ACTION_ABS_MAX, allow_nan=False, allow_infinity=False)
value = st.one_of(wild, wild, wild, huge, st.sampled_from([0.0, 1.0, -1.0]))


def actions(env: CarbonAwareDCEnv):
    S, K, slots = env.S, env.K, env.n_slots
    return st.fixed_dictionaries(
        {
            "start": st.lists(st.integers(-2, S + 2), min_size=slots, max_size=slots),
            "route": st.lists(value, min_size=K * S, max_size=K * S),
            "battery": st.lists(value, min_size=S, max_size=S),
            "generator": st.lists(value, min_size=S, max_size=S),
        }
    )


def as_action(a, env):
    return {
        "start": np.array(a["start"], dtype=np.int64),
        "route": np.array(a["route"]).reshape(env.K, env.S),
        "battery": np.array(a["battery"]),
        "generator": np.array(a["generator"]),
    }


def check_episode(env: CarbonAwareDCEnv, seq):
    sc = env.scenario
    cap = sc.site_array("gpu_capacity")
    ren = sc.renewable_mw
    for t, a in enumerate(seq):
        snap = env.state_snapshot()
        obs, reward, terminated, _, info = env.step(as_action(a, env))
        assert env.observation_space.contains(obs)
        f = info["flows"]
        assert reward == sum(info["reward_terms"].values())
        assert math.isfinite(reward)
        for key, amount in info["repairs"].items():
            assert key == "start_ignored" or math.isfinite(amount), (key, amount)
        supply = f["renewable_used_mw"] + f["gen_mw"] + f["discharge_mw"] + f["grid_import_mw"]
        demand = f["load_mw"] + f["charge_mw"] + f["grid_export_mw"]
        np.testing.assert_allclose(demand, supply + f["lost_load_mw"], atol=1e-9)
        assert (np.minimum(f["grid_import_mw"], f["grid_export_mw"]) == 0).all()
        assert (np.minimum(f["charge_mw"], f["discharge_mw"]) == 0).all()
        assert (f["grid_import_mw"] <= sc.site_array("import_limit_mw") + 1e-9).all()
        assert (f["grid_export_mw"] <= sc.site_array("export_limit_mw") + 1e-9).all()
        assert (f["renewable_used_mw"] >= -1e-12).all() and (f["renewable_used_mw"] <= ren[:, t] + 1e-9).all()
        assert (f["gen_mw"] >= 0).all() and (f["gen_mw"] <= sc.site_array("gen_capacity_mw") + 1e-9).all()
        lo = np.array([s.soc_min_mwh for s in sc.sites])
        hi = np.array([s.soc_max_mwh for s in sc.sites])
        assert (f["soc_mwh"] >= lo - 1e-9).all() and (f["soc_mwh"] <= hi + 1e-9).all()
        assert (f["serve_gpus"] >= 0).all() and (f["unserved_gpus"] >= 0).all()
        np.testing.assert_allclose(
            f["serve_gpus"].sum(axis=1) + f["unserved_gpus"], sc.demand_gpus[:, t], atol=1e-6
        )
        held = np.zeros(sc.S)
        for j, s, start in env.state_snapshot().job_starts:
            if start <= t < start + sc.jobs[j].duration:
                held[s] += sc.jobs[j].gpus
        assert (held + f["serve_gpus"].sum(axis=0) <= cap + 1e-6).all()
        assert (f["serve_gpus"][~sc.routes] == 0).all()
        assert info["emissions_total_t"] == snap.emissions_t + info["emissions_t"]
        assert (info["action_mask"] == mask_from_state(env, t + 1)).all()
        if terminated:
            break


def mask_from_state(env: CarbonAwareDCEnv, t: int) -> np.ndarray:
    """The action mask of period ``t`` recomputed from the scenario and the starts so far: hold
    always; site s iff the job is present, not started, released, before its latest start,
    eligible at s and its GPUs fit beside the jobs running at s in period t."""
    sc = env.scenario
    mask = np.zeros((env.n_slots, env.S + 1), dtype=bool)
    mask[:, 0] = True
    if t >= sc.T:
        return mask
    starts = {j: (s, p) for j, s, p in env.state_snapshot().job_starts}
    free = sc.site_array("gpu_capacity").astype(float)
    for j, (s, p) in starts.items():
        if p <= t < p + sc.jobs[j].duration:
            free[s] -= sc.jobs[j].gpus
    for j, job in enumerate(sc.jobs):
        if j in starts or not (job.release <= t <= job.latest_start):
            continue
        mask[j, 1:] = sc.eligible[j] & (job.gpus <= free)
    return mask


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_invariants_on_a_stressed_scenario(data):
    env = CarbonAwareDCEnv(scenario=STRESSED, preset=None)
    env.reset(seed=0)
    check_episode(env, data.draw(st.lists(actions(env), min_size=STRESSED.T, max_size=STRESSED.T)))


@SETTINGS
@given(data=st.data())
def test_invariants_on_paper(data):
    env = CarbonAwareDCEnv(scenario=PAPER)
    env.reset(seed=0)
    check_episode(env, data.draw(st.lists(actions(env), min_size=1, max_size=PAPER.T)))


def test_out_of_range_magnitudes_and_fractional_starts_are_errors_not_repairs():
    env = CarbonAwareDCEnv(scenario=PAPER)
    env.reset(seed=0)
    ok = {
        "start": np.zeros(env.n_slots, dtype=np.int64),
        "route": np.zeros((env.K, env.S)),
        "battery": np.zeros(env.S),
        "generator": np.zeros(env.S),
    }
    for part in ("route", "battery", "generator"):
        bad = dict(ok)
        bad[part] = np.full_like(ok[part], 1e300)
        with pytest.raises(ValueError, match="within"):
            env.step(bad)
    fractional = dict(ok, start=np.array([1.9] + [0.0] * (env.n_slots - 1)))
    with pytest.raises(ValueError, match=r"start'\]\[0\].*whole-number"):
        env.step(fractional)
    with pytest.raises(ValueError, match="integers"):
        env.step(dict(ok, start=np.zeros(env.n_slots, dtype=bool)))
    # A whole float means that choice: 2.0 starts at site 1 exactly like the integer 2.
    _, info = env.reset(seed=0)
    slot, choice = (int(x) for x in np.argwhere(info["action_mask"][:, 1:])[0])
    as_int = ok["start"].copy()
    as_int[slot] = choice + 1
    _, r_float, _, _, i_float = env.step(dict(ok, start=as_int.astype(np.float64)))
    env.reset(seed=0)
    _, r_int, *_ = env.step(dict(ok, start=as_int))
    assert r_float == r_int and i_float["reward_terms"]["training_value_usd"] > 0
    assert env.state_snapshot().job_starts == ((slot, choice, 0),)
