"""Invariants of every step for arbitrary action sequences, out-of-range values included."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import CarbonAwareDCEnv, make_scenario
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
huge = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False)
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
        if terminated:
            break


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
